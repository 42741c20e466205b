package app

import (
	"encoding/json"
	"log/slog"
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

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// exchangeEndpoint is an RFC 8693 token endpoint that checks every request
// exactly: grant type, token types, audience, scope, client_secret_basic,
// and that the subject token is the one the client presented.
type exchangeEndpoint struct {
	t        testing.TB
	calls    atomic.Int32
	mu       sync.Mutex
	subjects []string // subject tokens seen
	fail     atomic.Bool
}

func (x *exchangeEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x.calls.Add(1)
	if x.fail.Load() {
		http.Error(w, `{"error":"temporarily_unavailable"}`, http.StatusServiceUnavailable)
		return
	}
	id, secret, ok := r.BasicAuth()
	if err := r.ParseForm(); err != nil || !ok || id != "mcp-gateway" || secret != "gateway-secret-do-not-log" {
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		return
	}
	f := r.PostForm
	want := map[string]string{
		"grant_type":           "urn:ietf:params:oauth:grant-type:token-exchange",
		"subject_token_type":   "urn:ietf:params:oauth:token-type:access_token",
		"requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
		"audience":             "github",
		"scope":                "repo",
	}
	for k, v := range want {
		if got := f[k]; len(got) != 1 || got[0] != v {
			x.t.Errorf("token exchange %s = %q, want %q", k, got, v)
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
	}
	if f.Has("client_id") || f.Has("client_secret") || f.Has("actor_token") {
		x.t.Errorf("token exchange form has client credentials or an actor token: %v", f)
	}
	x.mu.Lock()
	x.subjects = append(x.subjects, f.Get("subject_token"))
	x.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token":      "gho_exchanged_for_alice",
		"issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
		"token_type":        "Bearer",
		"expires_in":        600,
	})
}

type upstreamEnv struct {
	authz    authv3.AuthorizationClient
	iss      *devissuer.Issuer
	rt       *Runtime
	exchange *exchangeEndpoint
	logs     *syncBuffer
}

// newUpstreamEnv compiles a runtime with two credential sources, github
// (token exchange at a token endpoint run here) and db (a static secret in
// x-db-token), and the example policy data that gives create_issue the
// first and query_db the second.
func newUpstreamEnv(t testing.TB) *upstreamEnv { return newUpstreamEnvWith(t, "", Options{}) }

// newUpstreamEnvWith is newUpstreamEnv with extra configuration lines and
// options (Observe and Logger are always set).
func newUpstreamEnvWith(t testing.TB, extraYAML string, opts Options) *upstreamEnv {
	t.Helper()
	dir := t.TempDir()
	key, err := devissuer.LoadOrCreateKey(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dir, "jwks.json")
	if err := devissuer.WriteJWKS(jwks, key); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	x := &exchangeEndpoint{t: t}
	ts := httptest.NewServer(x)
	t.Cleanup(ts.Close)
	yaml := "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\n" +
		"issuers: [{issuer: https://idp.example.com, jwks_file: " + jwks + "}]\n" +
		"policy: {paths: [../../rego/mcp/authz.rego, ../../rego/examples/upstream-credentials/data.json]}\n" +
		"upstream_credentials:\n" +
		"  github:\n    type: token_exchange\n    token_endpoint: " + ts.URL + "/token\n    audiences: [github]\n    scopes: [repo, admin]\n" +
		"    client: {id: mcp-gateway, auth: client_secret_basic, secret_file: " + write("client-secret", "gateway-secret-do-not-log\n") + "}\n" +
		"  db:\n    type: static\n    file: " + write("db-token", "db-static-secret-do-not-log\n") + "\n    header: x-db-token\n" + extraYAML
	cfg, err := config.Parse("c.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	opts.Observe, opts.Logger = true, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rt, conn := startRuntime(t, cfg, opts)
	return &upstreamEnv{authz: authv3.NewAuthorizationClient(conn), rt: rt, exchange: x, logs: logs,
		iss: &devissuer.Issuer{URL: "https://idp.example.com", Key: key}}
}

func (e *upstreamEnv) token(t testing.TB, scopes ...string) string {
	t.Helper()
	tok, err := e.iss.Mint(devissuer.MintOptions{Subject: "alice", ClientID: "agent-1", Audience: []string{"https://mcp.example.com/mcp"},
		Scopes: scopes, TTL: time.Hour, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (e *upstreamEnv) call(t *testing.T, tok, tool string, extra map[string]string) *authv3.CheckResponse {
	t.Helper()
	resp, err := e.authz.Check(t.Context(), toolCallRequest(tok, tool, extra))
	if err != nil {
		t.Fatalf("Check: %v (a gRPC error would leave the decision to Envoy's failure_mode_allow)", err)
	}
	return resp
}

// toolCallRequest is Envoy's CheckRequest for a tools/call of tool with
// token tok and extra headers.
func toolCallRequest(tok, tool string, extra map[string]string) *authv3.CheckRequest {
	h := map[string]string{"authorization": "Bearer " + tok, "content-type": "application/json"}
	for k, v := range extra {
		h[k] = v
	}
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{}}}`
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/mcp", Host: "mcp.example.com", RawBody: []byte(body), Headers: h},
	}}}
}

// upstreamHeaders returns the headers an allow sets on the upstream request,
// and the headers it removes.
func upstreamHeaders(t *testing.T, resp *authv3.CheckResponse) (map[string]string, []string) {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("want an allow, got status %d %s", resp.GetDeniedResponse().GetStatus().GetCode(), resp.GetDeniedResponse().GetBody())
	}
	set := map[string]string{}
	for _, h := range ok.GetHeaders() {
		set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return set, ok.GetHeadersToRemove()
}

// TestUpstreamCredentialsChosenByPolicy is the "done when": the
// policy gives create_issue an exchanged GitHub-audience token and query_db
// a static secret; the upstream sees exactly those and never the client's
// token, every failure is a 503, and no secret reaches the logs.
func TestUpstreamCredentialsChosenByPolicy(t *testing.T) {
	e := newUpstreamEnv(t)
	tok := e.token(t, "tools:create_issue", "tools:query_db", "tools:get_weather")

	t.Run("create_issue gets the exchanged token in authorization", func(t *testing.T) {
		set, removed := upstreamHeaders(t, e.call(t, tok, "create_issue", map[string]string{"x-db-token": "client-sent"}))
		if got := set["authorization"]; got != "Bearer gho_exchanged_for_alice" {
			t.Errorf("authorization = %q, want the exchanged token", got)
		}
		if strings.Contains(strings.Join(removed, ","), "authorization") {
			t.Errorf("headers_to_remove %v removes the credential it sets", removed)
		}
		if !containsString(removed, "x-db-token") {
			t.Errorf("headers_to_remove %v keeps the client's x-db-token, the header of another source", removed)
		}
		e.exchange.mu.Lock()
		subjects := append([]string(nil), e.exchange.subjects...)
		e.exchange.mu.Unlock()
		if len(subjects) != 1 || subjects[0] != tok {
			t.Errorf("token endpoint saw subject tokens %d, want the client's token once", len(subjects))
		}
	})

	t.Run("warm cache: no second exchange", func(t *testing.T) {
		before := e.exchange.calls.Load()
		for range 5 {
			set, _ := upstreamHeaders(t, e.call(t, tok, "create_issue", nil))
			if set["authorization"] != "Bearer gho_exchanged_for_alice" {
				t.Fatalf("authorization = %q", set["authorization"])
			}
		}
		if n := e.exchange.calls.Load() - before; n != 0 {
			t.Errorf("%d exchanges for a cached credential, want 0", n)
		}
		if hits := metricValue(t, e.rt, "mcpauthz_upstream_credential_cache_total", map[string]string{"source": "github", "event": "hit"}); hits < 5 {
			t.Errorf("cache hits = %v, want ≥ 5", hits)
		}
	})

	t.Run("query_db gets the static secret in x-db-token, no authorization", func(t *testing.T) {
		set, removed := upstreamHeaders(t, e.call(t, tok, "query_db", map[string]string{"x-db-token": "client-sent"}))
		if got := set["x-db-token"]; got != "db-static-secret-do-not-log" {
			t.Errorf("x-db-token = %q, want the static secret", got)
		}
		if _, ok := set["authorization"]; ok || !containsString(removed, "authorization") {
			t.Errorf("the client's token is not removed: set %v, removed %v", set, removed)
		}
	})

	t.Run("a tool without a credential gets neither", func(t *testing.T) {
		set, removed := upstreamHeaders(t, e.call(t, tok, "get_weather", map[string]string{"x-db-token": "client-sent"}))
		if _, ok := set["authorization"]; ok {
			t.Errorf("authorization set: %v", set)
		}
		for _, h := range []string{"authorization", "x-db-token"} {
			if !containsString(removed, h) {
				t.Errorf("headers_to_remove %v lacks %s", removed, h)
			}
		}
	})

	t.Run("exchange fails: 503 upstream_credential_unavailable, never a forward", func(t *testing.T) {
		e.exchange.fail.Store(true)
		defer e.exchange.fail.Store(false)
		other := e.token(t, "tools:create_issue", "tools:get_weather") // not in the cache
		resp := e.call(t, other, "create_issue", nil)
		d := resp.GetDeniedResponse()
		if d == nil || d.GetStatus().GetCode() != 503 {
			t.Fatalf("want a 503 denial, got %v", resp)
		}
		if got := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue(); got != "upstream_credential_unavailable" {
			t.Errorf("reason = %q", got)
		}
		if n := metricValue(t, e.rt, "mcpauthz_decisions_total", map[string]string{"status": "503", "reason": "upstream_credential_unavailable"}); n != 1 {
			t.Errorf("decisions_total{reason=upstream_credential_unavailable} = %v, want 1", n)
		}
		// Only the calls that need the credential fail: mcpauthz stays
		// ready, and a tool without a credential is still allowed.
		if !e.rt.Ready() {
			t.Error("not ready while the token endpoint fails; readiness must not depend on an upstream authorization server")
		}
		upstreamHeaders(t, e.call(t, other, "get_weather", nil))
	})

	t.Run("no secret in any log line", func(t *testing.T) {
		logs := e.logs.String()
		for _, secret := range []string{tok, "gho_exchanged_for_alice", "db-static-secret-do-not-log", "gateway-secret-do-not-log"} {
			if strings.Contains(logs, secret) {
				t.Errorf("a log line contains a secret (%.12s…)", secret)
			}
		}
		if !strings.Contains(logs, "upstream_credential=github") || !strings.Contains(logs, "upstream_credential=db") {
			t.Errorf("the decision log does not name the credential sources:\n%s", logs)
		}
	})
}

// metricValue sums the series of a counter family whose labels include
// want.
func metricValue(t *testing.T, rt *Runtime, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := rt.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
