package envoycheck

import (
	"os"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// TestDocumentedFragments: the Envoy fragments of the documentation
// (```yaml envoy blocks: parts of an HTTP connection manager) decode
// strictly with the API mcpauthz is checked against.
func TestDocumentedFragments(t *testing.T) {
	for _, doc := range []string{"../../docs/operations.md"} {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for i, block := range strings.Split(string(data), "```yaml envoy\n")[1:] {
			end := strings.Index(block, "\n```")
			if end < 0 {
				t.Fatalf("%s: block %d is not closed", doc, i)
			}
			n++
			if r, err := DecodeAs(t.Context(), []byte(block[:end+1]), &hcmv3.HttpConnectionManager{}); err != nil {
				t.Errorf("%s: Envoy block %d: %v\n%s", doc, i, err, dump(r))
			}
		}
		if n == 0 {
			t.Errorf("%s has no Envoy fragment to check", doc)
		}
	}
}
