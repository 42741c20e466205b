package extproc

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// stream handler and test server must end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
