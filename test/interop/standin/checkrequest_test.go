package standin

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The CheckRequest is a wire format mcpauthz reads field by field: compare
// it whole with goldens. Addresses' ports, the request id and the time vary
// per run and are replaced.
func TestCheckRequestGolden(t *testing.T) {
	mapForm := shipped
	mapForm.EncodeRawHeaders = false
	tests := []struct {
		golden string
		cfg    Config
		method string
		body   string
	}{
		{golden: "post-header-map.json", cfg: shipped, method: "POST", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather"}}`},
		{golden: "post-headers.json", cfg: mapForm, method: "POST", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`},
		{golden: "get-stream.json", cfg: mapForm, method: "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			fa := &fakeAuthz{answer: allow()}
			base, _ := startProxy(t, tt.cfg, startAuthz(t, fa), &upstreamRecorder{})
			req := newRequest(t, tt.method, base+"/mcp?x=1", tt.body)
			req.Host = "mcp.example.com"
			req.Header.Set("Authorization", "Bearer abc")
			req.Header.Add("Accept", "application/json")
			req.Header.Add("Accept", "text/event-stream")
			req.Header.Set("Mcp-Session-Id", "s1")
			req.Header.Set("X-Envoy-Auth-Partial-Body", "false") // a client's own: dropped
			req.Header.Set("X-Forwarded-For", "192.0.2.7")
			req.Header.Set("X-Request-Id", "req-1")
			if tt.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			do(t, req)
			got := fa.requests()
			if len(got) != 1 {
				t.Fatalf("%d checks", len(got))
			}
			raw, err := protojson.Marshal(got[0])
			if err != nil {
				t.Fatal(err)
			}
			// protojson varies its whitespace on purpose; json.Indent below
			// makes it canonical.
			norm := regexp.MustCompile(`"portValue":\s*\d+`).ReplaceAll(raw, []byte(`"portValue":0`))
			norm = regexp.MustCompile(`"time":\s*"[^"]+"`).ReplaceAll(norm, []byte(`"time":"T"`))
			var buf bytes.Buffer
			if err := json.Indent(&buf, norm, "", "  "); err != nil {
				t.Fatal(err)
			}
			buf.WriteByte('\n')
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(want, buf.Bytes()) {
				t.Errorf("CheckRequest differs from %s:\n%s", path, buf.String())
			}
		})
	}
}
