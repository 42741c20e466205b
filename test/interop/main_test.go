package interop

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Every process, server and stream the test starts is stopped by its
// cleanup: nothing may outlive the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	// The test's own polling (waitHTTP) keeps idle keep-alive connections.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
