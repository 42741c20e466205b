package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const good = `
grpc_addr: 127.0.0.1:9191
http_addr: 127.0.0.1:9192
resource: https://mcp.example.com/mcp
resource_name: Example MCP server
authorization_servers: [https://idp.example.com]
scopes_supported: []
issuers:
  - issuer: https://idp.example.com
    jwks_uri: https://idp.example.com/jwks
    audiences: [https://mcp.example.com/mcp]
    leeway: 30s
policy:
  paths: []
mcp:
  paths: [/mcp]
  allowed_origins: []
upstream:
  forward_token: false
`

func TestParseGood(t *testing.T) {
	cfg, err := Parse("good.yaml", []byte(good))
	if err != nil {
		t.Fatalf("Parse(good) = %v", err)
	}
	if got, want := cfg.Issuers[0].Leeway.D(), 30*time.Second; got != want {
		t.Errorf("leeway = %v, want %v", got, want)
	}
	if diff := cmp.Diff(DefaultAlgorithms, cfg.Issuers[0].Algorithms); diff != "" {
		t.Errorf("default algorithms (-want +got):\n%s", diff)
	}
	if got := cfg.Upstream.IdentityHeaders.Subject; got != "x-mcp-subject" {
		t.Errorf("identity subject header = %q", got)
	}
	if got := cfg.MCP.MaxBatch; got != DefaultMaxBatch {
		t.Errorf("max_batch = %d", got)
	}
}

func TestDefaultAudienceIsResource(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(`
resource: https://mcp.example.com/mcp
authorization_servers: [https://idp.example.com]
issuers: [{issuer: https://idp.example.com}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"https://mcp.example.com/mcp"}, cfg.Issuers[0].Audiences); diff != "" {
		t.Errorf("audiences (-want +got):\n%s", diff)
	}
}

// TestParseProblems checks that every problem is reported at once, each
// with file:line and key.
func TestParseProblems(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.rego")
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "unknown keys and wrong types",
			yaml: "resource: https://mcp.example.com/mcp\nresorce_name: x\nmcp:\n  paths: /mcp\n  max_batch: many\n",
			want: []string{
				`c.yaml:2: unknown key "resorce_name"`,
				"c.yaml:4: cannot unmarshal !!str `/mcp` into []string",
				"c.yaml:5: cannot unmarshal !!str `many` into int",
			},
		},
		{
			name: "semantic problems",
			yaml: "resource: http://mcp.example.com/mcp#frag\n" +
				"authorization_servers: [ftp://idp]\n" +
				"scopes_supported: [offline_access, 'a b']\n" +
				"issuers:\n" +
				"  - issuer: https://idp.example.com\n" +
				"    algorithms: [none, HS256, XY1]\n" +
				"    token_type: jwt\n" +
				"    leeway: 1h\n" +
				"policy:\n" +
				"  paths: [" + missing + "]\n" +
				"mcp:\n" +
				"  paths: [mcp]\n" +
				"  allowed_origins: [not-an-origin]\n" +
				"upstream:\n" +
				"  identity_headers: {subject: X-Envoy-Sub}\n" +
				"log: {level: loud}\n",
			want: []string{
				`c.yaml:1: resource: "http://mcp.example.com/mcp#frag" must use https (http is allowed only for loopback hosts)`,
				`c.yaml:2: authorization_servers[0]: "ftp://idp" is not an absolute http(s) URL`,
				`c.yaml:3: scopes_supported[0]: offline_access must not be advertised by a resource server (MCP 2026-07-28)`,
				`c.yaml:3: scopes_supported[1]: "a b" is not a valid scope token (printable ASCII without space, quote or backslash)`,
				`c.yaml:6: issuers[0].algorithms[0]: "none" is never accepted`,
				`c.yaml:6: issuers[0].algorithms[2]: "XY1" is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384, HS512`,
				`c.yaml:6: issuers[0].algorithms: HS256/384/512 require hmac_secret_file`,
				`c.yaml:7: issuers[0].token_type: "jwt" is not one of at+jwt, any`,
				`c.yaml:8: issuers[0].leeway: must be between 0s and 10m`,
				`c.yaml:10: policy.paths[0]: cannot read "` + missing + `": no such file or directory`,
				`c.yaml:12: mcp.paths[0]: "mcp" must be an absolute path without query or fragment`,
				`c.yaml:13: mcp.allowed_origins[0]: "not-an-origin" is not an origin (scheme://host[:port])`,
				`c.yaml:15: upstream.identity_headers.subject: "X-Envoy-Sub" is not a lowercase header name mcpauthz may set (no pseudo-headers, host, authorization, x-envoy-*)`,
				`c.yaml:16: log.level: "loud" is not one of debug, info, warn, error`,
			},
		},
		{
			name: "empty file",
			yaml: "",
			want: []string{
				"c.yaml: resource: required: the canonical URI of the MCP server, e.g. https://mcp.example.com/mcp",
				"c.yaml: authorization_servers: at least one authorization server (issuer URL) is required",
				"c.yaml: issuers: at least one trusted issuer is required",
			},
		},
		{
			name: "bad duration",
			yaml: "resource: https://m.example/mcp\nissuers:\n  - issuer: https://i.example\n    leeway: soon\n",
			want: []string{`c.yaml:4: invalid duration "soon" (want e.g. "60s")`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse() = nil, want errors")
			}
			got := strings.Split(err.Error(), "\n")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse() problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("Load(missing) = %v", err)
	}
}

func TestLoopbackHTTPAllowed(t *testing.T) {
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Parse("c.yaml", []byte(`
resource: http://localhost:10000/mcp
authorization_servers: [http://127.0.0.1:9193]
issuers: [{issuer: "http://127.0.0.1:9193", jwks_file: "`+jwks+`"}]
`))
	if err != nil {
		t.Fatalf("Parse(loopback) = %v", err)
	}
}
