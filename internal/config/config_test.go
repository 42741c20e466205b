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
		t.Run(tt.name, func(t *testing.T) { wantProblems(t, tt.yaml, tt.want) })
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

func TestIntrospectionDefaults(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("c.yaml", []byte(`
resource: https://mcp.example.com/mcp
authorization_servers: [https://as.example.com]
issuers:
  - issuer: https://as.example.com
    max_lifetime: 24h
    introspection:
      endpoint: https://as.example.com/oauth2/introspect
      client_id: mcpauthz
      client_secret_file: `+secret+`
`))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	is := cfg.Issuers[0]
	want := &Introspection{
		Endpoint: "https://as.example.com/oauth2/introspect", ClientID: "mcpauthz", ClientSecretFile: secret,
		CacheTTL: Duration(5 * time.Minute), NegativeCacheTTL: Duration(10 * time.Second), Timeout: Duration(2 * time.Second),
		MaxConcurrent: 16, RateLimit: 100,
	}
	if diff := cmp.Diff(want, is.Introspection); diff != "" {
		t.Errorf("introspection defaults (-want +got):\n%s", diff)
	}
	if is.MaxLifetime.D() != 24*time.Hour {
		t.Errorf("max_lifetime = %v", is.MaxLifetime.D())
	}
	// Without introspection nothing is added, and max_lifetime stays 0
	// (unlimited).
	cfg, err = Parse("c.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Issuers[0].Introspection != nil || cfg.Issuers[0].MaxLifetime != 0 {
		t.Errorf("defaults added introspection %+v or max_lifetime %v", cfg.Issuers[0].Introspection, cfg.Issuers[0].MaxLifetime)
	}
}

func TestIntrospectionProblems(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MCPAUTHZ_TEST_SECRET", "s3cret")
	head := "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://as.example.com]\nissuers:\n"
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "two issuers with introspection",
			yaml: head +
				"  - issuer: https://as.example.com\n" +
				"    introspection: {endpoint: https://as.example.com/introspect, client_id: a, client_secret_file: " + secret + "}\n" +
				"  - issuer: https://other.example.com\n" +
				"    introspection: {endpoint: https://other.example.com/introspect, client_id: b, client_secret_env: MCPAUTHZ_TEST_SECRET}\n",
			want: []string{`c.yaml:7: issuers[1].introspection: only one issuer may use introspection; issuers[0] already does (opaque tokens would be sent to the wrong authorization server)`},
		},
		{
			name: "bad values",
			yaml: head +
				"  - issuer: https://login.microsoftonline.com/{tenantid}/v2.0\n" +
				"    jwks_uri: https://login.microsoftonline.com/common/discovery/v2.0/keys\n" +
				"    max_lifetime: -1h\n" +
				"    introspection:\n" +
				"      endpoint: http://as.example.com/introspect\n" +
				"      client_secret_env: MCPAUTHZ_TEST_UNSET_VARIABLE\n" +
				"      cache_ttl: -1s\n" +
				"      negative_cache_ttl: -1s\n" +
				"      timeout: 1m\n" +
				"      max_concurrent: 5000\n" +
				"      rate_limit: -3\n",
			want: []string{
				`c.yaml:6: issuers[0].max_lifetime: must not be negative (0 means unlimited)`,
				`c.yaml:7: issuers[0].introspection: not supported for an issuer pattern: the introspection answer cannot select a tenant`,
				`c.yaml:8: issuers[0].introspection.endpoint: "http://as.example.com/introspect" must use https (http is allowed only for loopback hosts)`,
				`c.yaml:7: issuers[0].introspection.client_id: required: introspection endpoints must authenticate the caller (RFC 7662 §2.1)`,
				`c.yaml:9: issuers[0].introspection.client_secret_env: environment variable MCPAUTHZ_TEST_UNSET_VARIABLE is not set or empty`,
				`c.yaml:10: issuers[0].introspection.cache_ttl: must be positive (it bounds how long a revoked token is still accepted)`,
				`c.yaml:11: issuers[0].introspection.negative_cache_ttl: must be positive`,
				`c.yaml:12: issuers[0].introspection.timeout: must be positive and at most 30s`,
				`c.yaml:13: issuers[0].introspection.max_concurrent: must be between 1 and 1024`,
				`c.yaml:14: issuers[0].introspection.rate_limit: must be between 1 and 100000 calls per second`,
			},
		},
		{
			name: "secrets",
			yaml: head +
				"  - issuer: https://as.example.com\n" +
				"    introspection:\n" +
				"      endpoint: https://user:pw@as.example.com/introspect#x\n" +
				"      client_id: a\n" +
				"      client_secret_file: /nonexistent/secret\n" +
				"      client_secret_env: MCPAUTHZ_TEST_SECRET\n",
			want: []string{
				`c.yaml:6: issuers[0].introspection.endpoint: must not contain user information (use client_id and the client secret)`,
				`c.yaml:6: issuers[0].introspection.endpoint: must not contain a fragment`,
				`c.yaml:5: issuers[0].introspection: set exactly one of client_secret_file or client_secret_env`,
			},
		},
		{
			name: "missing secret file",
			yaml: head +
				"  - issuer: https://as.example.com\n" +
				"    introspection: {endpoint: https://as.example.com/i, client_id: a, client_secret_file: /nonexistent/secret}\n",
			want: []string{`c.yaml:5: issuers[0].introspection.client_secret_file: cannot read "/nonexistent/secret"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantProblems(t, tt.yaml, tt.want) })
	}
}

// wantProblems checks that Parse reports exactly want, one problem a line.
func wantProblems(t *testing.T, yaml string, want []string) {
	t.Helper()
	_, err := Parse("c.yaml", []byte(yaml))
	if err == nil {
		t.Fatalf("Parse() = nil, want errors")
	}
	got := strings.Split(err.Error(), "\n")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse() problems (-want +got):\n%s", diff)
	}
}
