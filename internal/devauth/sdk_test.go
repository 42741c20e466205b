package devauth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/devauth"
)

// sdkPackage is the Node package that pins the MCP TypeScript SDK for the
// whole repository (the interop test's); testdata/sdkflow.mjs loads the SDK
// from there.
const sdkPackage = "../../test/interop/node"

// TestTypeScriptSDK runs the OAuth client of the official MCP TypeScript SDK
// (testdata/sdkflow.mjs, the SDK pinned in test/interop/node's
// package-lock.json) against the server, in both approval modes. It needs
// node and `npm ci` in test/interop/node (make test does it); without them
// it skips.
func TestTypeScriptSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed: skipping the MCP TypeScript SDK test")
	}
	pkg, err := filepath.Abs(sdkPackage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pkg, "node_modules", "@modelcontextprotocol", "sdk")); err != nil {
		t.Skip("the MCP TypeScript SDK is not installed: run `make test-interop` (npm ci in test/interop/node)")
	}
	for _, mode := range []devauth.ApproveMode{devauth.ApproveAuto, devauth.ApprovePage} {
		t.Run(string(mode), func(t *testing.T) {
			// The protected resource: its metadata names the server (as
			// mcpauthz's would), on the origin of the MCP URL.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			mcpURL := "http://" + ln.Addr().String() + "/mcp"
			e := newEnv(t, func(o *devauth.Options) { o.Resources = []string{mcpURL}; o.Approve = mode })
			rs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/.well-known/oauth-protected-resource/mcp" {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"resource":%q,"authorization_servers":[%q],"scopes_supported":["tools:get_weather"]}`, mcpURL, e.issuer)
			}))
			rs.Listener.Close()
			rs.Listener = ln
			rs.Start()
			defer rs.Close()

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "sdkflow.mjs"))
			cmd.Env = append(os.Environ(), "MCP_URL="+mcpURL, "SDK_PACKAGE_DIR="+pkg)
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("sdkflow.mjs: %v\n%s\nserver log:\n%s", err, out, e.logs.String())
			}
			var got struct {
				Start, Exchange, Refresh, StepUpStart, StepUpExchange string
				ConsentPage                                           bool
				First, Refreshed, StepUp                              tokens
				ClientID                                              string
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("sdkflow.mjs printed %s: %v", out, err)
			}
			if got.Start != "REDIRECT" || got.Exchange != "AUTHORIZED" || got.Refresh != "AUTHORIZED" || got.StepUpStart != "REDIRECT" || got.StepUpExchange != "AUTHORIZED" {
				t.Fatalf("auth() results %+v", got)
			}
			if got.ConsentPage != (mode == devauth.ApprovePage) {
				t.Errorf("consent page shown: %v in mode %s", got.ConsentPage, mode)
			}
			if got.First.Scope != "tools:get_weather" || got.Refreshed.Access == got.First.Access || got.StepUp.Scope != "tools:get_weather tools:delete_file" {
				t.Fatalf("tokens: first %q, refreshed (new %v), step-up %q", got.First.Scope, got.Refreshed.Access != got.First.Access, got.StepUp.Scope)
			}
			for name, tc := range map[string]struct {
				token  string
				active bool
			}{
				"first access token (refreshed since)": {got.First.Access, false},
				"refreshed access token":               {got.Refreshed.Access, true},
				"step-up access token":                 {got.StepUp.Access, true},
			} {
				in := introspect(t, e, tc.token)
				if in["active"] != tc.active || tc.active && (in["aud"] != mcpURL || in["client_id"] != got.ClientID) {
					t.Errorf("%s: introspection %v", name, in)
				}
			}
		})
	}
}
