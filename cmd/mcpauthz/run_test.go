package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
	"github.com/mcpauthz/mcpauthz/policy"
)

func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func exitCodeOf(err error) int {
	if err == nil {
		return 0
	}
	if ex, ok := err.(*exitError); ok {
		return ex.code
	}
	return 2
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "Usage:"},
		{"unknown command", []string{"bogus"}, 2, `unknown command "bogus"`},
		{"serve without config", []string{"serve"}, 2, "--config FILE or --dev is required"},
		{"serve both", []string{"serve", "--dev", "--config", "x.yaml"}, 2, "use either --config or --dev"},
		{"bad flag", []string{"check", "--nope"}, 2, "flag provided but not defined: -nope"},
		{"help", []string{"serve", "-h"}, 0, "-config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, err := runCmd(t, tt.args...)
			if got := exitCodeOf(err); got != tt.code {
				t.Errorf("run(%v) exit = %d, want %d (err %v)", tt.args, got, tt.code, err)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("run(%v) stderr = %q, want it to contain %q", tt.args, stderr, tt.want)
			}
		})
	}
}

func TestBadConfigListsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.rego")
	write(t, bad, "package mcp.authz\n\ndecision := {\n")
	cfg := filepath.Join(dir, "c.yaml")
	write(t, cfg, "resource: http://mcp.example.com/mcp\nbogus: 1\nissuers: []\n")
	_, _, err := runCmd(t, "validate", "--config", cfg)
	if err == nil {
		t.Fatal("validate(bad) = nil")
	}
	for _, want := range []string{cfg + `:2: unknown key "bogus"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("validate error:\n%v\nwant it to contain %q", err, want)
		}
	}
	// Semantic problems and a broken policy, all at once.
	write(t, cfg, "resource: http://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\nissuers: []\npolicy:\n  paths: ["+bad+"]\n")
	_, _, err = runCmd(t, "validate", "--config", cfg)
	if err == nil {
		t.Fatal("validate(bad) = nil")
	}
	for _, want := range []string{
		cfg + `:1: resource: "http://mcp.example.com/mcp" must use https`,
		cfg + `:3: issuers: at least one trusted issuer is required`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("validate error:\n%v\nwant it to contain %q", err, want)
		}
	}
	// A config that is fine but whose policy does not compile names the
	// policy file and line.
	write(t, cfg, "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\nissuers: [{issuer: https://idp.example.com, jwks_uri: https://idp.example.com/jwks}]\npolicy:\n  paths: ["+bad+"]\n")
	_, _, err = runCmd(t, "validate", "--config", cfg)
	if err == nil || !strings.Contains(err.Error(), "bad.rego:") {
		t.Errorf("validate(broken policy) = %v, want the policy file and line", err)
	}
}

func TestTokenAndCheckDev(t *testing.T) {
	dev := t.TempDir()
	tok, _, err := runCmd(t, "token", "--dev-dir", dev, "--scope", "tools:get_weather")
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	tok = strings.TrimSpace(tok)
	call := func(tool string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{}}}`
	}
	out, _, err := runCmd(t, "check", "--dev", "--dev-dir", dev, "--token", tok, "--body", call("get_weather"))
	if err != nil {
		t.Fatalf("check allowed: %v\n%s", err, out)
	}
	for _, want := range []string{"decision: allow", "status:   200 OK", "x-mcp-subject: dev-user", "upstream headers removed: authorization"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output missing %q:\n%s", want, out)
		}
	}
	out, _, err = runCmd(t, "check", "--dev", "--dev-dir", dev, "--token", tok, "--body", call("delete_file"))
	if got := exitCodeOf(err); got != 1 {
		t.Fatalf("check denied exit = %d, want 1", got)
	}
	for _, want := range []string{"decision: deny", "status:   403 Forbidden", "reason:   insufficient_scope", `scope="tools:delete_file tools:get_weather"`} {
		if !strings.Contains(out, want) {
			t.Errorf("check output missing %q:\n%s", want, out)
		}
	}
	tampered := []byte(tok)
	i := strings.LastIndexByte(tok, '.') + 5 // inside the signature
	tampered[i] = map[bool]byte{true: 'B', false: 'A'}[tampered[i] == 'A']
	out, _, err = runCmd(t, "check", "--dev", "--dev-dir", dev, "--token", string(tampered), "--body", call("get_weather"))
	if got := exitCodeOf(err); got != 1 || !strings.Contains(out, "detail:   bad_signature") {
		t.Errorf("check with a tampered token: exit %d, output:\n%s\nwant exit 1 and detail bad_signature", got, out)
	}
}

// TestServeAndCheckAgree runs the real server and checks that the gRPC
// answer equals what `mcpauthz check --request` prints for the same
// CheckRequest, and that health, metadata and metrics are served.
func TestServeAndCheckAgree(t *testing.T) {
	dev := t.TempDir()
	_, cfg, err := devSetup(dev, "", "", true, true)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, cfg)
	ctx := context.Background()
	tok, _, err := runCmd(t, "token", "--dev-dir", dev, "--scope", "tools:get_weather")
	if err != nil {
		t.Fatal(err)
	}
	req, err := buildCheckRequest(cfg, "POST", "", strings.TrimSpace(tok), nil,
		[]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file"}}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := srv.client.Check(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	reqFile := filepath.Join(t.TempDir(), "req.json")
	b, _ := protojson.Marshal(req)
	write(t, reqFile, string(b))
	out, _, err := runCmd(t, "check", "--dev", "--dev-dir", dev, "--request", reqFile, "--json")
	if exitCodeOf(err) != 1 {
		t.Fatalf("check --request exit = %d (%v), want 1 (deny)", exitCodeOf(err), err)
	}
	want := &authv3.CheckResponse{}
	if err := protojson.Unmarshal([]byte(out), want); err != nil {
		t.Fatalf("check --json output: %v\n%s", err, out)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("server and check disagree (-check +server):\n%s", diff)
	}

	hc := healthpb.NewHealthClient(srv.conn)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && st.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gRPC health never SERVING: %v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	base := srv.httpBase
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/.well-known/oauth-protected-resource/mcp": `"resource":"http://localhost:10000/mcp"`,
		"/metrics": `mcpauthz_decisions_total{decision="deny",mcp_method="tools/call",reason="insufficient_scope",status="403",tool="other"} 1`,
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d\n%s\nwant 200 containing %q", path, resp.StatusCode, body, want)
		}
	}

	if err := srv.stop(t); err != nil {
		t.Errorf("serve returned %v after cancel, want nil", err)
	}
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownWithChecksInFlight stops the server while checks are being
// decided (each waits on a slow JWKS refetch for an unknown kid): every
// in-flight check must still get its CheckResponse, and serve must return
// cleanly.
func TestShutdownWithChecksInFlight(t *testing.T) {
	dev := t.TempDir()
	iss, cfg, err := devSetup(dev, "", "", true, true)
	if err != nil {
		t.Fatal(err)
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/jwks") {
			time.Sleep(700 * time.Millisecond)
		}
		iss.Handler().ServeHTTP(w, r)
	}))
	defer slow.Close()
	cfg.Issuers[0].JWKSFile = ""
	cfg.Issuers[0].JWKSURI = slow.URL + "/jwks"
	// Checks wait for the slow refetch, well past the moment shutdown
	// begins (the default wait is bounded far below the JWKS's 700ms).
	cfg.Issuers[0].JWKS.UnknownKIDWait = config.Duration(5 * time.Second)
	cfg.Shutdown.Timeout = config.Duration(10 * time.Second)
	srv := startServer(t, cfg)
	client := srv.client
	ctx := context.Background()
	// Wait until the keys are loaded, so the checks below are decided by the
	// unknown-kid refetch and not by a cold start.
	tok, _, _ := runCmd(t, "token", "--dev-dir", dev)
	for deadline := time.Now().Add(10 * time.Second); ; {
		req, _ := buildCheckRequest(cfg, "POST", "", strings.TrimSpace(tok), nil, []byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		resp, err := client.Check(ctx, req)
		if err == nil && resp.GetOkResponse() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never allowed a ping: %v %v", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	otherKey := filepath.Join(t.TempDir(), "other")
	otherIss, _, err := devSetup(otherKey, iss.URL, "", true, true)
	if err != nil {
		t.Fatal(err)
	}
	unknownKid, err := otherIss.Mint(devissuer.MintOptions{Subject: "x", Audience: []string{cfg.Resource}, TTL: time.Hour, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	results := make(chan error, n)
	var cancelAt atomic.Int64
	for i := 0; i < n; i++ {
		go func() {
			req, _ := buildCheckRequest(cfg, "POST", "", unknownKid, nil, []byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
			resp, err := client.Check(context.Background(), req)
			if err == nil && resp.GetDeniedResponse() == nil {
				err = fmt.Errorf("unexpected response %v", resp)
			}
			if at := cancelAt.Load(); err == nil && (at == 0 || time.Now().UnixNano() < at) {
				err = fmt.Errorf("check finished before shutdown began: it was not in flight")
			}
			results <- err
		}()
	}
	time.Sleep(200 * time.Millisecond) // the checks are now waiting on the slow JWKS
	cancelAt.Store(time.Now().UnixNano())
	stopped := make(chan error, 1)
	go func() { stopped <- srv.stop(t) }()
	for i := 0; i < n; i++ {
		if err := <-results; err != nil {
			t.Errorf("in-flight check %d: %v", i, err)
		}
	}
	if err := <-stopped; err != nil {
		t.Errorf("serve() = %v after shutdown", err)
	}
}

// TestPolicyBundleConfig serves the default policy as an OPA bundle and
// checks that policy.bundle is validated and drives `check` (the same
// component wiring as serve).
func TestPolicyBundleConfig(t *testing.T) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, src := range map[string]string{"mcp/authz.rego": "../../rego/mcp/authz.rego", "data.json": "../../rego/data.json", ".manifest": ""} {
		body := []byte(`{"revision":"bundle-r1","roots":["mcp"]}`)
		if src != "" {
			var err error
			if body, err = os.ReadFile(src); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: "/" + name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	gz.Close()
	bundleSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/gzip")
		w.Write(buf.Bytes())
	}))
	defer bundleSrv.Close()

	dev := t.TempDir()
	iss, _, err := devSetup(dev, "", "", true, true)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "c.yaml")
	base := "resource: http://localhost:10000/mcp\nauthorization_servers: [" + iss.URL + "]\n" +
		"issuers: [{issuer: \"" + iss.URL + "\", jwks_file: \"" + filepath.Join(dev, "jwks.json") + "\"}]\n"
	write(t, cfgFile, base+"policy:\n  paths: [../../rego]\n  bundle: {url: \"http://example.com/b.tar.gz\"}\n")
	_, _, err = runCmd(t, "validate", "--config", cfgFile)
	for _, want := range []string{"policy.bundle: set either policy.paths or policy.bundle, not both", `policy.bundle.url: "http://example.com/b.tar.gz" must use https`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate = %v, want it to contain %q", err, want)
		}
	}

	write(t, cfgFile, base+"policy:\n  bundle: {url: \""+bundleSrv.URL+"/b.tar.gz\"}\n")
	tok, _, err := runCmd(t, "token", "--dev-dir", dev, "--scope", "tools:get_weather")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := runCmd(t, "check", "--config", cfgFile, "--token", strings.TrimSpace(tok),
		"--body", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather"}}`)
	if err != nil || !strings.Contains(out, "decision: allow") {
		t.Fatalf("check with a bundle policy: %v\n%s", err, out)
	}
}

// TestMetricsAfterScriptedDecisions drives a real server through a fixed set
// of decisions and compares the exported series exactly.
func TestMetricsAfterScriptedDecisions(t *testing.T) {
	dev := t.TempDir()
	iss, cfg, err := devSetup(dev, "", "", true, true)
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(iss.Handler())
	defer jwks.Close()
	cfg.Issuers[0].JWKSFile, cfg.Issuers[0].JWKSURI = "", jwks.URL+"/jwks"
	srv := startServer(t, cfg)
	client := srv.client
	ctx := context.Background()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r, err := http.Get(srv.httpBase + "/readyz"); err == nil && r.StatusCode == 200 {
			r.Body.Close()
			break
		} else if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
	}
	tok, _, _ := runCmd(t, "token", "--dev-dir", dev, "--scope", "tools:get_weather")
	tok = strings.TrimSpace(tok)
	call := func(tool string) []byte {
		return []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `"}}`)
	}
	script := []struct {
		token string
		body  []byte
	}{
		{tok, call("get_weather")}, // allow; the default data names no tool → other
		{tok, call("get_weather")}, // again (cached decision, same series)
		{tok, call("delete_file")}, // 403, other
		{tok, []byte(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)},
		{"", call("get_weather")},                                         // 401 no token
		{tok[:len(tok)-4] + "AAAA", call("get_weather")},                  // 401 bad signature
		{tok, []byte(`{"jsonrpc":"2.0","id":3,"method":"weird/method"}`)}, // 403, method label other
	}
	for i, s := range script {
		req, _ := buildCheckRequest(cfg, "POST", "", s.token, nil, s.body)
		if _, err := client.Check(ctx, req); err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
	}
	resp, err := http.Get(srv.httpBase + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasSuffix(l, "} 0") {
			continue // pre-created at startup, never moved (internal/metrics tests them)
		}
		if strings.HasPrefix(l, "mcpauthz_decisions_total{") || strings.HasPrefix(l, "mcpauthz_token_validations_total{") ||
			strings.HasPrefix(l, "mcpauthz_policy_reloads_total{") || strings.HasPrefix(l, "mcpauthz_jwks_keys{") ||
			strings.HasPrefix(l, "mcpauthz_checks_in_flight") || strings.HasPrefix(l, "mcpauthz_policy_info{") {
			got = append(got, l)
		}
	}
	issuer := cfg.Issuers[0].Issuer
	want := []string{
		`mcpauthz_checks_in_flight 0`,
		`mcpauthz_decisions_total{decision="allow",mcp_method="tools/call",reason="policy_allow",status="200",tool="other"} 2`,
		`mcpauthz_decisions_total{decision="allow",mcp_method="tools/list",reason="policy_allow",status="200",tool=""} 1`,
		`mcpauthz_decisions_total{decision="deny",mcp_method="",reason="invalid_token",status="401",tool=""} 1`,
		`mcpauthz_decisions_total{decision="deny",mcp_method="",reason="no_token",status="401",tool=""} 1`,
		`mcpauthz_decisions_total{decision="deny",mcp_method="other",reason="policy_deny",status="403",tool=""} 1`,
		`mcpauthz_decisions_total{decision="deny",mcp_method="tools/call",reason="insufficient_scope",status="403",tool="other"} 1`,
		`mcpauthz_jwks_keys{issuer="` + issuer + `"} 1`,
		`mcpauthz_policy_info{revision="` + mustRevision(t) + `"} 1`,
		`mcpauthz_policy_reloads_total{result="success"} 1`,
		`mcpauthz_token_validations_total{issuer="` + issuer + `",result="valid"} 5`,
		`mcpauthz_token_validations_total{issuer="unknown",result="bad_signature"} 1`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

// mustRevision is the revision of the embedded default policy.
func mustRevision(t *testing.T) string {
	t.Helper()
	e := policy.New(policy.Options{})
	if err := e.Load(context.Background(), policy.DefaultSource()); err != nil {
		t.Fatal(err)
	}
	return e.Revision()
}

// testServer is a running `serve` on loopback ports with a gRPC client.
type testServer struct {
	client   authv3.AuthorizationClient
	conn     *grpc.ClientConn
	httpBase string
	stopOnce sync.Once
	stopErr  error
	cancel   context.CancelFunc
	done     chan error
}

// startServer runs serve with cfg on 127.0.0.1:0 until the test ends (or
// stop).
func startServer(t *testing.T, cfg *config.Config) *testServer {
	t.Helper()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Policy.EvalTimeout = config.Duration(30 * time.Second) // -race on a busy machine
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan [2]string, 1)
	go func() {
		s.done <- serve(ctx, cfg, newLogger(cfg, io.Discard), serveOptions{stdout: io.Discard, ready: ready})
	}()
	var addrs [2]string
	select {
	case addrs = <-ready:
	case err := <-s.done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("serve did not start")
	}
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	s.conn, s.client, s.httpBase = conn, authv3.NewAuthorizationClient(conn), "http://"+addrs[1]
	t.Cleanup(func() { conn.Close(); s.stop(t) })
	return s
}

// stop cancels serve and returns its result.
func (s *testServer) stop(t *testing.T) error {
	s.stopOnce.Do(func() {
		s.cancel()
		select {
		case s.stopErr = <-s.done:
		case <-time.After(20 * time.Second):
			s.stopErr = fmt.Errorf("serve did not stop")
		}
	})
	return s.stopErr
}

// TestValidateEnvoyAliasBomb: a tiny YAML alias bomb is refused at once,
// naming the alias, instead of being expanded.
func TestValidateEnvoyAliasBomb(t *testing.T) {
	if slimBuild {
		t.Skip("the slim build has no validate --envoy (TestSlimBuildCommands)")
	}
	bomb := filepath.Join(t.TempDir(), "bomb.yaml")
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	write(t, bomb, b.String())
	start := time.Now()
	out, _, err := runCmd(t, "validate", "--envoy", bomb)
	if err == nil || !strings.Contains(out, "(an alias bomb?): alias *a") {
		t.Fatalf("validate --envoy bomb = %v\n%s\nwant a refusal naming the alias", err, out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("validate --envoy took %v on a %d-byte bomb", d, b.Len())
	}
}
