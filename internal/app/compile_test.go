package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// wantProblems checks that compiling yaml reports exactly want, one problem
// a line, each located in the file.
func wantProblems(t *testing.T, yaml string, want []string) {
	t.Helper()
	cfg, err := config.Parse("c.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	rt, err := Compile(cfg, Options{Observe: true})
	if err == nil {
		rt.Close()
		t.Fatalf("Compile() = nil, want errors")
	}
	if diff := cmp.Diff(want, strings.Split(err.Error(), "\n")); diff != "" {
		t.Errorf("Compile() problems (-want +got):\n%s", diff)
	}
}

// TestCompileProblems: every value problem of a configuration, whichever
// package owns the key, is reported at once with its file:line.
func TestCompileProblems(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.rego")
	secret := writeFile(t, "secret", "s3cret")
	t.Setenv("MCPAUTHZ_TEST_SECRET", "s3cret")
	head := "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://as.example.com]\nissuers:\n"
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "values of every section",
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
				"log: {level: loud, decisions: {allow_sample_rate: 2}}\n" +
				"grpc_addr: nowhere\n",
			want: []string{
				`c.yaml:1: resource: "http://mcp.example.com/mcp#frag" must not contain a fragment`,
				`c.yaml:2: authorization_servers[0]: "ftp://idp" must use https`,
				`c.yaml:3: scopes_supported[0]: offline_access must not be advertised by a resource server (MCP 2026-07-28)`,
				`c.yaml:3: scopes_supported[1]: "a b" is not a valid scope token (printable ASCII without space, quote or backslash)`,
				`c.yaml:6: issuers[0].algorithms[0]: "none" is never accepted`,
				`c.yaml:6: issuers[0].algorithms[1]: HS256 requires hmac_secret_file`,
				`c.yaml:6: issuers[0].algorithms[2]: "XY1" is not one of ES256, ES384, ES512, EdDSA, HS256, HS384, HS512, PS256, PS384, PS512, RS256, RS384, RS512`,
				`c.yaml:7: issuers[0].token_type: "jwt" is not one of at+jwt, any`,
				`c.yaml:8: issuers[0].leeway: must be at most 10m`,
				`c.yaml:10: policy.paths[0]: cannot read "` + missing + `": no such file or directory`,
				`c.yaml:12: mcp.paths[0]: "mcp" must be an absolute path without query or fragment`,
				`c.yaml:13: mcp.allowed_origins[0]: "not-an-origin" is not an origin (scheme://host[:port])`,
				`c.yaml:15: upstream.identity_headers.subject: "X-Envoy-Sub" is not a lowercase header name mcpauthz may set (no pseudo-headers, host, authorization, x-envoy-*)`,
				`c.yaml:16: log.level: "loud" is not one of debug, info, warn, error`,
				`c.yaml:16: log.decisions.allow_sample_rate: must be between 0 and 1`,
				`c.yaml:17: grpc_addr: "nowhere" is not host:port`,
			},
		},
		{
			name: "empty file",
			yaml: "",
			want: []string{
				"c.yaml: issuers: at least one trusted issuer is required",
				"c.yaml: resource: required: the canonical URI of the MCP server, e.g. https://mcp.example.com/mcp",
				"c.yaml: authorization_servers: at least one authorization server (issuer URL) is required",
			},
		},
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
			name: "introspection values",
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
				`c.yaml:6: issuers[0].max_lifetime: must not be negative`,
				`c.yaml:7: issuers[0].introspection: not supported for an issuer with {tenantid}: the introspection answer cannot select a tenant`,
				`c.yaml:7: issuers[0].introspection.client_id: required: introspection endpoints must authenticate the caller (RFC 7662 §2.1)`,
				`c.yaml:8: issuers[0].introspection.endpoint: "http://as.example.com/introspect" must use https (http is allowed only for loopback hosts)`,
				`c.yaml:9: issuers[0].introspection.client_secret_env: environment variable MCPAUTHZ_TEST_UNSET_VARIABLE is not set or empty`,
				`c.yaml:10: issuers[0].introspection.cache_ttl: must not be negative`,
				`c.yaml:11: issuers[0].introspection.negative_cache_ttl: must not be negative`,
				`c.yaml:12: issuers[0].introspection.timeout: must be at most 30s`,
				`c.yaml:13: issuers[0].introspection.max_concurrent: must be between 1 and 1024`,
				`c.yaml:14: issuers[0].introspection.rate_limit: must be between 1 and 100000 calls per second`,
			},
		},
		{
			name: "introspection secrets",
			yaml: head +
				"  - issuer: https://as.example.com\n" +
				"    introspection:\n" +
				"      endpoint: https://user:pw@as.example.com/introspect#x\n" +
				"      client_id: a\n" +
				"      client_secret_file: /nonexistent/secret\n" +
				"      client_secret_env: MCPAUTHZ_TEST_SECRET\n",
			want: []string{
				`c.yaml:5: issuers[0].introspection: set exactly one of client_secret_file or client_secret_env`,
				`c.yaml:6: issuers[0].introspection.endpoint: must not contain user information; use the credential options instead`,
			},
		},
		{
			name: "drain as long as the shutdown",
			yaml: head + "  - {issuer: https://as.example.com, jwks_uri: https://as.example.com/jwks}\n" +
				"shutdown: {drain_delay: 10s, timeout: 10s}\n",
			want: []string{`c.yaml:5: shutdown.drain_delay: must be shorter than shutdown.timeout (10s), which bounds the whole shutdown`},
		},
		{
			name: "negative drain",
			yaml: head + "  - {issuer: https://as.example.com, jwks_uri: https://as.example.com/jwks}\n" +
				"shutdown: {drain_delay: -1s}\n",
			want: []string{`c.yaml:5: shutdown.drain_delay: must not be negative`},
		},
		{
			name: "shutdown timeout",
			yaml: head + "  - {issuer: https://as.example.com, jwks_uri: https://as.example.com/jwks}\n" +
				"shutdown: {timeout: 1h}\n",
			want: []string{`c.yaml:5: shutdown.timeout: must be positive and at most 10m (0 selects the default, 15s)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantProblems(t, tt.yaml, tt.want) })
	}
}

// TestShutdownSettings: the drain delay defaults to 5s, or a third of a
// shorter shutdown timeout; 0s is kept (no drain).
func TestShutdownSettings(t *testing.T) {
	tests := []struct {
		shutdown     string
		drain, total time.Duration
	}{
		{"", 5 * time.Second, 15 * time.Second},
		{"{timeout: 3s}", time.Second, 3 * time.Second},
		{"{timeout: 1m}", 5 * time.Second, time.Minute},
		{"{drain_delay: 0s}", 0, 15 * time.Second},
		{"{drain_delay: 20s, timeout: 30s}", 20 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.shutdown, func(t *testing.T) {
			yaml := "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\n" +
				"issuers: [{issuer: https://idp.example.com, jwks_uri: https://idp.example.com/jwks}]\n"
			if tt.shutdown != "" {
				yaml += "shutdown: " + tt.shutdown + "\n"
			}
			cfg, err := config.Parse("c.yaml", []byte(yaml))
			if err != nil {
				t.Fatal(err)
			}
			rt, err := Compile(cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer rt.Close()
			if rt.DrainDelay != tt.drain || rt.ShutdownTimeout != tt.total {
				t.Errorf("drain %v, timeout %v; want %v, %v", rt.DrainDelay, rt.ShutdownTimeout, tt.drain, tt.total)
			}
		})
	}
}

// TestCompileAcceptsLoopbackAndHMAC: plain http on loopback is a valid
// development setup, and an HMAC issuer with a 32-byte secret (which
// docs/idp.md calls enough) compiles: HS256 is allowed, HS384/HS512 are
// not, instead of a start-up failure.
func TestCompileAcceptsLoopbackAndHMAC(t *testing.T) {
	secret := writeFile(t, "hmac", strings.Repeat("k", 32)+"\n")
	cfg, err := config.Parse("c.yaml", []byte(`
resource: http://localhost:10000/mcp
authorization_servers: [http://127.0.0.1:9193]
issuers:
  - {issuer: "http://127.0.0.1:9193", hmac_secret_file: "`+secret+`"}
  - {issuer: "http://[::1]:9194", jwks_uri: "http://[::1]:9194/jwks"}
`))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Compile(cfg, Options{})
	if err != nil {
		t.Fatalf("Compile(loopback, 32-byte HMAC secret) = %v", err)
	}
	rt.Close()
}

// TestLifecycleLeavesNothingRunning: Compile starts nothing, Start starts
// every loop, Close stops them all; a Compile that fails half way (after
// the verifier is built, on a policy that does not compile) leaves nothing
// running either.
func TestLifecycleLeavesNothingRunning(t *testing.T) {
	defer goleak.VerifyNone(t)
	dev := t.TempDir()
	key, err := devissuer.LoadOrCreateKey(dev, true)
	if err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dev, "jwks.json")
	if err := devissuer.WriteJWKS(jwks, key); err != nil {
		t.Fatal(err)
	}
	bad := writeFile(t, "bad.rego", "package mcp.authz\n\ndecision := {\n")
	base := "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\n" +
		"issuers: [{issuer: https://idp.example.com, jwks_uri: https://idp.example.com/jwks}, {issuer: https://static.example.com, jwks_file: " + jwks + "}]\n"
	for name, yaml := range map[string]string{
		"compile fails on the policy": base + "policy: {paths: [" + bad + "]}\n",
		"compile fails on a value":    base + "mcp: {max_depth: 1}\n",
	} {
		cfg, err := config.Parse("c.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		if rt, err := Compile(cfg, Options{Observe: true}); err == nil {
			rt.Close()
			t.Errorf("%s: Compile = nil", name)
		}
	}
	cfg, err := config.Parse("c.yaml", []byte(base+"policy: {reload_interval: 10ms, paths: [../../rego/mcp, ../../rego/data.json]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Compile(cfg, Options{Observe: true})
	if err != nil {
		t.Fatal(err)
	}
	rt.Start() // key fetches (failing: no network), file watch, readiness watch
	time.Sleep(50 * time.Millisecond)
	rt.Close()
	rt.Close() // idempotent
	rt.Start() // a no-op after Close
}

// TestHealthFollowsReadiness: gRPC health and Ready change together, on the
// readiness event itself (no polling), and both report not serving from the
// first moment of a drain.
func TestHealthFollowsReadiness(t *testing.T) {
	dev := t.TempDir()
	key, err := devissuer.LoadOrCreateKey(dev, true)
	if err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dev, "jwks.json")
	if err := devissuer.WriteJWKS(jwks, key); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("c.yaml", []byte("resource: https://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\n"+
		"issuers: [{issuer: https://idp.example.com, jwks_file: "+jwks+"}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Compile(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	health := func() grpc_health_v1.HealthCheckResponse_ServingStatus {
		resp, err := rt.health.Check(context.Background(), &grpc_health_v1.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	if rt.Ready() || health() != grpc_health_v1.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("before Start: Ready() = %v, health %v; want false, NOT_SERVING", rt.Ready(), health())
	}
	rt.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// At every observation the two agree: health changes first, Ready
	// with it, in the one function that moves both.
	for !rt.Ready() {
		if ctx.Err() != nil {
			t.Fatal("never ready")
		}
		time.Sleep(time.Millisecond)
	}
	if got := health(); got != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("Ready() = true but health %v", got)
	}
	rt.Drain()
	if rt.Ready() || health() != grpc_health_v1.HealthCheckResponse_NOT_SERVING || rt.NotReadyReason() != "draining" {
		t.Fatalf("after Drain: Ready() = %v, health %v, reason %q", rt.Ready(), health(), rt.NotReadyReason())
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
