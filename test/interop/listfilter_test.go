package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/devissuer"
	"github.com/mcpauthz/mcpauthz/test/interop/standin"
)

// TestListFiltering: with list filtering on (mcpauthz's default), the
// official TypeScript SDK client, through the Envoy stand-in running the
// shipped envoy/envoy.yaml (ext_authz, then the composite filter that runs
// ext_proc on list responses), sees in tools/list only the tools its token
// may call, whether the MCP server (the TypeScript SDK's) answers with JSON
// or with an SSE stream; tools/call responses pass unchanged.
func TestListFiltering(t *testing.T) {
	RequireNode(t)
	bin := BuildMcpauthz(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	key, err := devissuer.LoadOrCreateKey(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dir, "jwks.json")
	if err := devissuer.WriteJWKS(jwks, key); err != nil {
		t.Fatal(err)
	}
	iss := &devissuer.Issuer{URL: "https://idp.example.com", Key: key}

	for _, mode := range []struct {
		name     string
		args     []string
		wantType string
	}{
		{name: "SSE", wantType: "text/event-stream"},
		{name: "JSON", args: []string{"--json"}, wantType: "application/json"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			front := NewStandin(t)
			resource := front.BaseURL() + "/mcp"
			cfg := "resource: " + resource + `
authorization_servers: [https://idp.example.com]
issuers: [{issuer: https://idp.example.com, jwks_file: ` + jwks + `}]
`
			sub := t.TempDir() // mcpauthz's address file
			m := StartMcpauthz(t, bin, sub, "--config", writeFile(t, sub, "mcpauthz.yaml", cfg),
				"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
			up := startNode(t, "upstream", "upstream.mjs", mode.args...)
			var upReady struct{ Addr string }
			if err := up.ready(ctx, &upReady); err != nil {
				t.Fatal(err)
			}
			front.Start(t, m.GRPCAddr, upReady.Addr)
			m.WaitReady(t)

			for _, tt := range []struct {
				scope string
				want  []string
			}{
				{scope: "tools:get_weather", want: []string{"get_weather"}},
				{scope: "tools:*", want: []string{"get_weather", "delete_file", "whoami", "announce"}},
			} {
				tok, err := iss.Mint(devissuer.MintOptions{Subject: "alice", ClientID: "agent-1", Audience: []string{resource},
					Scopes: []string{tt.scope}, TTL: time.Hour, Now: time.Now()})
				if err != nil {
					t.Fatal(err)
				}
				got := sdkList(ctx, t, resource, tok)
				if diff := cmp.Diff(tt.want, got.Tools); diff != "" {
					t.Errorf("scope %s: tools/list (-want +got):\n%s", tt.scope, diff)
				}
				for method, ct := range got.ContentTypes {
					if !strings.HasPrefix(ct, mode.wantType) {
						t.Errorf("scope %s: %s answered with %q, want %s", tt.scope, method, ct, mode.wantType)
					}
				}
				wantCall := `{"content":[{"type":"text","text":"Sunny in Paris"}]}`
				if string(got.Call) != wantCall {
					t.Errorf("scope %s: tools/call get_weather = %s, want %s", tt.scope, got.Call, wantCall)
				}
			}

			// Every tools/list went through one complete ext_proc
			// conversation; no other request opened one.
			exs := front.proxy.Exchanges()
			if len(exs) != 2 {
				t.Fatalf("%d ext_proc conversations, want 2 (one per tools/list)", len(exs))
			}
			for _, ex := range exs {
				if ex.Err != nil || ex.Reset || ex.FailOpen || ex.Status != 0 {
					t.Errorf("ext_proc conversation of stream %d: err %v, reset %v, fail-open %v, status %d", ex.Stream, ex.Err, ex.Reset, ex.FailOpen, ex.Status)
				}
			}
			var lists int
			for _, c := range front.Checks() {
				if c.Metadata("mcp_method") == "tools/list" {
					lists++
					if !slices.ContainsFunc(exs, func(ex standin.Exchange) bool { return ex.Stream == c.Stream }) {
						t.Errorf("tools/list of stream %d: no ext_proc conversation", c.Stream)
					}
				}
			}
			if lists != 2 {
				t.Errorf("%d tools/list checks, want 2", lists)
			}
		})
	}
}

// sdkListResult is what node/list.mjs prints.
type sdkListResult struct {
	Tools        []string
	Call         json.RawMessage
	ContentTypes map[string]string
}

// sdkList runs node/list.mjs: the official SDK client lists the tools and
// calls get_weather with token.
func sdkList(ctx context.Context, t *testing.T, url, token string) sdkListResult {
	t.Helper()
	cmd := exec.CommandContext(ctx, "node", "list.mjs", "--url", url)
	cmd.Dir = NodeDir()
	cmd.Env = append(os.Environ(), "MCP_TOKEN="+token)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node list.mjs: %v\n%s", err, stderr.String())
	}
	var res sdkListResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node list.mjs printed %q: %v", out, err)
	}
	if len(res.ContentTypes) != 2 {
		t.Errorf("content types seen: %v, want tools/list and tools/call", res.ContentTypes)
	}
	return res
}
