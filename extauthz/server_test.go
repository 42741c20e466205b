package extauthz_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/extproc"
	"github.com/mcpauthz/mcpauthz/internal/app"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
	"github.com/mcpauthz/mcpauthz/policy"
)

var update = flag.Bool("update", false, "rewrite the golden CheckResponses in testdata/check")

const (
	issuerURL = "https://idp.example.com"
	resource  = "https://mcp.example.com/mcp"
)

// env is a running mcpauthz: real JWKS server, real verifier, real policy
// from ../rego, real gRPC server and client.
type env struct {
	client authv3.AuthorizationClient
	iss    *devissuer.Issuer
	other  *devissuer.Issuer // same issuer URL, a key the JWKS does not hold
	server *extauthz.Server
}

type envOption func(*config.Config, *envSetup)

type envSetup struct {
	policy    extauthz.Policy
	jwksDown  bool
	policySrc *policy.Source
}

func withConfig(f func(*config.Config)) envOption {
	return func(c *config.Config, _ *envSetup) { f(c) }
}

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	key := testKey(t, "main")
	iss := &devissuer.Issuer{URL: issuerURL, Key: key}
	other := &devissuer.Issuer{URL: issuerURL, Key: testKey(t, "other")}
	jwks := httptest.NewServer(iss.Handler())
	t.Cleanup(jwks.Close)

	cfg := &config.Config{
		Resource:             resource,
		ResourceName:         "Test MCP server",
		AuthorizationServers: []string{issuerURL},
		Issuers:              []config.Issuer{{Issuer: issuerURL, JWKSURI: jwks.URL + "/jwks"}},
		MCP:                  config.MCP{AllowedOrigins: []string{"https://app.example.com"}},
		// Generous: -race on a busy machine.
		Policy: config.Policy{Paths: []string{"../rego/mcp", "../rego/data.json"}, EvalTimeout: config.Duration(30 * time.Second)},
	}
	setup := &envSetup{}
	for _, o := range opts {
		o(cfg, setup)
	}
	if setup.jwksDown {
		cfg.Issuers[0].JWKSURI = "http://127.0.0.1:1/jwks"
	}
	if setup.policySrc != nil {
		cfg.Policy.Paths = setup.policySrc.Paths
	}
	// The server is built exactly as `mcpauthz serve` builds it.
	rt, err := app.Compile(cfg, app.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	rt.Start()
	t.Cleanup(func() { rt.Close() })
	if !setup.jwksDown {
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		if err := rt.WaitReady(wctx); err != nil {
			t.Fatalf("not ready: %v", err)
		}
	}
	srv := rt.Server
	if setup.policy != nil {
		srv.SetPolicy(setup.policy)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{client: authv3.NewAuthorizationClient(conn), iss: iss, other: other, server: srv}
}

// keyCache holds the signing keys, generated once per name for the test
// binary's lifetime (RSA generation is slow).
var (
	keyMu    sync.Mutex
	keyCache = map[string]jwk.Key{}
)

func testKey(t testing.TB, name string) jwk.Key {
	t.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	if k, ok := keyCache[name]; ok {
		return k
	}
	k, err := devissuer.LoadOrCreateKey(filepath.Join(t.TempDir(), name), true)
	if err != nil {
		t.Fatal(err)
	}
	keyCache[name] = k
	return k
}

// token mints a token for the test issuer; scopes are space-separated.
func (e *env) token(t testing.TB, scopes string, mod ...func(*devissuer.MintOptions)) string {
	t.Helper()
	o := devissuer.MintOptions{
		Subject:  "alice",
		ClientID: "client-1",
		Audience: []string{resource},
		Scopes:   strings.Fields(scopes),
		TTL:      time.Hour,
		Now:      time.Now(),
	}
	for _, m := range mod {
		m(&o)
	}
	tok, err := e.iss.Mint(o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// req is a readable description of one Envoy CheckRequest.
type req struct {
	method  string
	path    string
	headers map[string]string
	body    string
	// rawHeaders switches to encode_raw_headers: header_map with repeats.
	rawHeaders [][2]string
	// bodyString sends the body in the (UTF-8) body field, not raw_body.
	bodyString bool
	// noBody keeps the content-length but does not forward the body.
	noBody bool
}

// checkRequest builds what Envoy sends: lowercase headers including
// pseudo-headers, the body in raw_body, x-envoy-auth-partial-body.
func checkRequest(r req) *authv3.CheckRequest {
	if r.method == "" {
		r.method = "POST"
	}
	if r.path == "" {
		r.path = "/mcp"
	}
	h := map[string]string{
		":method":           r.method,
		":path":             r.path,
		":authority":        "mcp.example.com",
		":scheme":           "https",
		"x-request-id":      "req-1",
		"x-forwarded-proto": "https",
	}
	if r.body != "" {
		h["content-type"] = "application/json"
		h["accept"] = "application/json, text/event-stream"
		h["content-length"] = strconv.Itoa(len(r.body))
		h["x-envoy-auth-partial-body"] = "false"
	}
	for k, v := range r.headers {
		if v == "" {
			delete(h, k)
			continue
		}
		h[k] = v
	}
	hr := &authv3.AttributeContext_HttpRequest{
		Id:       "42",
		Method:   r.method,
		Path:     r.path,
		Host:     "mcp.example.com",
		Scheme:   "https",
		Protocol: "HTTP/2",
		Size:     int64(len(r.body)),
	}
	switch {
	case r.noBody:
	case r.bodyString:
		hr.Body = r.body
	default:
		hr.RawBody = []byte(r.body)
	}
	if r.rawHeaders != nil {
		hm := &corev3.HeaderMap{}
		for k, v := range h {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
		for _, kv := range r.rawHeaders {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])})
		}
		hr.HeaderMap = hm
	} else {
		hr.Headers = h
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: hr}}}
}

func bearer(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func b64(s string) string { return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?=" }

const (
	callWeather = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_weather","arguments":{"city":"Paris"}}}`
	callDelete  = `{"jsonrpc":"2.0","id":"c-8","method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/etc"}}}`
	initialize  = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
)

// TestCheckLadder walks every rung of the decision ladder through a real
// gRPC connection and compares the whole CheckResponse with a golden file.
func TestCheckLadder(t *testing.T) {
	e := newEnv(t)
	weather := e.token(t, "tools:get_weather")
	// An agent (planner) acting for alice, on behalf of an orchestrator:
	// the RFC 8693 act chain, current actor first.
	delegated := e.token(t, "tools:get_weather", func(o *devissuer.MintOptions) {
		o.ExtraClaims = map[string]any{"azp": "planner", "act": map[string]any{"sub": "agent-7", "client_id": "planner",
			"act": map[string]any{"sub": "orchestrator", "client_id": "orchestrator-app"}}}
	})
	star := e.token(t, "tools:* prompts:* resources:*")
	expired := e.token(t, "tools:*", func(o *devissuer.MintOptions) { o.Now = time.Now().Add(-3 * time.Hour) })
	otherAud := e.token(t, "tools:*", func(o *devissuer.MintOptions) { o.Audience = []string{"https://other.example.com/mcp"} })
	forged := func() string {
		tok, err := e.other.Mint(devissuer.MintOptions{Subject: "mallory", Audience: []string{resource}, Scopes: []string{"tools:*"}, TTL: time.Hour, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}()
	wrongIss := func() string {
		i := &devissuer.Issuer{URL: "https://evil.example.com", Key: e.iss.Key}
		tok, err := i.Mint(devissuer.MintOptions{Subject: "alice", Audience: []string{resource}, Scopes: []string{"tools:*"}, TTL: time.Hour, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}()
	modern := func(method, name string) map[string]string {
		h := map[string]string{"mcp-protocol-version": "2026-07-28", "mcp-method": method}
		if name != "" {
			h["mcp-name"] = name
		}
		return h
	}
	modernCall := func(tool string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	}

	tests := []struct {
		name string
		req  req
	}{
		// 1. metadata
		{"metadata_path_form", req{method: "GET", path: "/.well-known/oauth-protected-resource/mcp"}},
		{"metadata_root_form", req{method: "GET", path: "/.well-known/oauth-protected-resource"}},
		{"metadata_head", req{method: "HEAD", path: "/.well-known/oauth-protected-resource/mcp"}},
		{"metadata_options", req{method: "OPTIONS", path: "/.well-known/oauth-protected-resource/mcp", headers: map[string]string{"origin": "https://evil.example"}}},
		{"metadata_unknown_path", req{method: "GET", path: "/.well-known/oauth-protected-resource/other"}},
		{"metadata_post", req{method: "POST", path: "/.well-known/oauth-protected-resource/mcp", body: "{}"}},
		// 2. origin
		{"origin_forbidden", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"origin": "https://evil.example"})}},
		{"origin_allowed", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"origin": "https://app.example.com"})}},
		// 3. preflight
		{"cors_preflight", req{method: "OPTIONS", headers: map[string]string{"origin": "https://app.example.com", "access-control-request-method": "POST"}}},
		{"options_without_preflight_headers", req{method: "OPTIONS"}},
		{"preflight_content_length_zero", req{method: "OPTIONS", headers: map[string]string{"origin": "https://app.example.com", "access-control-request-method": "POST", "content-length": "0"}}},
		{"preflight_not_mcp_path", req{method: "OPTIONS", path: "/admin", headers: map[string]string{"origin": "https://app.example.com", "access-control-request-method": "POST"}}},
		{"preflight_with_body", req{method: "OPTIONS", body: "{}", headers: map[string]string{"origin": "https://app.example.com", "access-control-request-method": "POST"}}},
		{"preflight_method_override", req{method: "OPTIONS", headers: map[string]string{"origin": "https://app.example.com", "access-control-request-method": "POST", "x-http-method-override": "POST"}}},
		{"preflight_upgrade", req{method: "OPTIONS", headers: map[string]string{"origin": "https://app.example.com", "access-control-request-method": "GET", "upgrade": "websocket", "connection": "upgrade"}}},
		// 4. transport shapes
		{"method_override", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"x-http-method-override": "GET"})}},
		{"upgrade", req{method: "GET", headers: merge(bearer(weather), map[string]string{"upgrade": "websocket", "connection": "upgrade"})}},
		// 5. credentials
		{"no_token", req{body: callWeather}},
		{"no_token_get", req{method: "GET"}},
		{"token_in_query", req{path: "/mcp?access_token=abc", body: callWeather}},
		{"token_in_query_and_header", req{path: "/mcp?Access_Token=abc", body: callWeather, headers: bearer(weather)}},
		{"token_in_query_semicolon", req{path: "/mcp?session=1;access_token=abc", body: callWeather, headers: bearer(weather)}},
		{"token_in_path_parameter", req{path: "/mcp;access_token=abc", body: callWeather, headers: bearer(weather)}},
		{"two_authorization_joined", req{body: callWeather, headers: map[string]string{"authorization": "Bearer " + weather + ",Bearer " + star}}},
		{"two_authorization_raw", req{body: callWeather, rawHeaders: [][2]string{{"authorization", "Bearer " + weather}, {"authorization", "Bearer " + star}}}},
		{"basic_scheme", req{body: callWeather, headers: map[string]string{"authorization": "Basic YWxpY2U6cHc="}}},
		{"bearer_empty", req{body: callWeather, headers: map[string]string{"authorization": "Bearer "}}},
		{"bearer_lowercase", req{body: callWeather, headers: map[string]string{"authorization": "bearer " + weather}}},
		{"token_garbage", req{body: callWeather, headers: bearer("not.a.jwt")}},
		{"token_expired", req{body: callWeather, headers: bearer(expired)}},
		{"token_wrong_audience", req{body: callWeather, headers: bearer(otherAud)}},
		{"token_wrong_issuer", req{body: callWeather, headers: bearer(wrongIss)}},
		{"token_bad_signature", req{body: callWeather, headers: bearer(forged)}},
		// 6. MCP transport and body
		{"get_stream", req{method: "GET", headers: merge(bearer(weather), map[string]string{"accept": "text/event-stream", "mcp-session-id": "s-1"})}},
		{"delete_session", req{method: "DELETE", headers: merge(bearer(weather), map[string]string{"mcp-session-id": "s-1"})}},
		{"put_not_allowed", req{method: "PUT", body: callWeather, headers: bearer(weather)}},
		{"partial_body", req{body: callWeather[:40], headers: merge(bearer(weather), map[string]string{"x-envoy-auth-partial-body": "true"})}},
		{"partial_body_spoofed_pair", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"x-envoy-auth-partial-body": "false,true"})}},
		{"body_shorter_than_content_length", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"content-length": "4096"})}},
		{"body_not_forwarded", req{body: callWeather, noBody: true, headers: bearer(weather)}},
		{"gzip_body", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"content-encoding": "gzip"})}},
		{"text_plain", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"content-type": "text/plain"})}},
		{"utf16_charset", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"content-type": "application/json; charset=utf-16"})}},
		{"json_charset_utf8", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"content-type": "APPLICATION/JSON; charset=UTF-8"})}},
		{"duplicate_key", req{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","name":"delete_file"}}`, headers: bearer(weather)}},
		{"case_variant_key", req{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"tools/list","params":{"name":"delete_file"}}`, headers: bearer(weather)}},
		{"bom", req{body: "\ufeff" + callWeather, headers: bearer(weather)}},
		{"trailing_data", req{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_file"}}`, headers: bearer(weather)}},
		{"not_jsonrpc", req{body: `{"jsonrpc":"1.0","id":1,"method":"tools/list"}`, headers: bearer(weather)}},
		{"invalid_tool_name", req{body: `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get weather"}}`, headers: bearer(star)}},
		{"unsupported_protocol_version", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"mcp-protocol-version": "2099-01-01"})}},
		{"body_in_string_field", req{body: callWeather, bodyString: true, headers: bearer(weather)}},
		// batches
		{"batch_2025_03_26_allowed", req{body: `[` + callWeather + `,{"jsonrpc":"2.0","method":"notifications/initialized"}]`, headers: merge(bearer(weather), map[string]string{"mcp-protocol-version": "2025-03-26"})}},
		{"batch_2025_03_26_one_denied", req{body: `[` + callWeather + `,` + callDelete + `]`, headers: merge(bearer(weather), map[string]string{"mcp-protocol-version": "2025-03-26"})}},
		{"batch_no_version_allowed", req{body: `[` + callWeather + `]`, headers: bearer(weather)}},
		{"batch_2025_06_18", req{body: `[` + callWeather + `]`, headers: merge(bearer(weather), map[string]string{"mcp-protocol-version": "2025-06-18"})}},
		// 2026-07-28 headers
		{"modern_match", req{body: modernCall("get_weather"), headers: merge(bearer(weather), modern("tools/call", "get_weather"))}},
		{"modern_name_base64", req{body: modernCall("get_weather"), headers: merge(bearer(weather), modern("tools/call", b64("get_weather")))}},
		{"modern_name_mismatch", req{body: modernCall("delete_file"), headers: merge(bearer(weather), modern("tools/call", "get_weather"))}},
		{"modern_method_mismatch", req{body: modernCall("delete_file"), headers: merge(bearer(weather), modern("tools/list", "delete_file"))}},
		{"modern_missing_method", req{body: modernCall("get_weather"), headers: merge(bearer(weather), map[string]string{"mcp-protocol-version": "2026-07-28", "mcp-name": "get_weather"})}},
		{"modern_batch", req{body: `[` + modernCall("get_weather") + `]`, headers: merge(bearer(weather), map[string]string{"mcp-protocol-version": "2026-07-28"})}},
		// 7. policy
		{"initialize", req{body: initialize, headers: bearer(weather)}},
		{"notification", req{body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`, headers: merge(bearer(weather), map[string]string{"mcp-protocol-version": "2025-11-25", "mcp-session-id": "s-1"})}},
		{"client_response", req{body: `{"jsonrpc":"2.0","id":"srv-1","result":{}}`, headers: bearer(weather)}},
		{"tools_list", req{body: `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, headers: bearer(weather)}},
		{"tool_allowed", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"mcp-protocol-version": "2025-11-25", "mcp-session-id": "s-1"})}},
		{"tool_allowed_wildcard", req{body: callDelete, headers: bearer(star)}},
		{"tool_insufficient_scope", req{body: callDelete, headers: bearer(weather)}},
		{"prompt_insufficient_scope", req{body: `{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"summarize"}}`, headers: bearer(weather)}},
		{"resource_insufficient_scope", req{body: `{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}`, headers: bearer(weather)}},
		{"unknown_method", req{body: `{"jsonrpc":"2.0","id":6,"method":"admin/shutdown"}`, headers: bearer(star)}},
		{"method_case_variant", req{body: `{"jsonrpc":"2.0","id":6,"method":"Tools/Call","params":{"name":"get_weather"}}`, headers: bearer(star)}},
		{"not_mcp_path", req{method: "GET", path: "/admin", headers: bearer(star)}},
		{"mcp_path_variant", req{path: "//MCP/", body: callDelete, headers: bearer(weather)}},
		{"identity_spoofing", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"x-mcp-subject": "admin", "x-mcp-client-id": "evil", "x-mcp-scopes": "tools:*"})}},
		{"raw_header_map", req{body: callWeather, rawHeaders: [][2]string{{"authorization", "Bearer " + weather}}}},
		{"delegated_actor_chain", req{body: callWeather, headers: merge(bearer(delegated), map[string]string{"x-mcp-actor": "admin-bot"})}},
		{"actor_spoofing_without_delegation", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"x-mcp-actor": "admin-bot"})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := e.client.Check(context.Background(), checkRequest(tt.req))
			if err != nil {
				t.Fatalf("Check() error = %v, want a CheckResponse", err)
			}
			golden(t, filepath.Join("testdata", "check", tt.name+".json"), resp)
		})
	}
}

// stableList replaces the policy input recorded for the list filter (it
// holds the token's claims, which differ per minted token) and the policy
// revision by markers, after
// checking that it is what the filter will parse. TestListMetadata checks
// its content.
func stableList(t *testing.T, resp *authv3.CheckResponse) *authv3.CheckResponse {
	t.Helper()
	list := resp.GetDynamicMetadata().GetFields()[extproc.KeyList].GetStructValue()
	if list == nil {
		return resp
	}
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{extproc.MetadataNamespace: resp.GetDynamicMetadata()}}
	if _, err := extproc.ParseMetadata(md); err != nil {
		t.Errorf("the list filter cannot parse the recorded metadata: %v", err)
	}
	resp = proto.Clone(resp).(*authv3.CheckResponse)
	f := resp.GetDynamicMetadata().GetFields()[extproc.KeyList].GetStructValue().Fields
	f["input"] = structpb.NewStringValue("<policy input>")
	f["policy_revision"] = structpb.NewStringValue("<revision>") // changes with every edit of ../rego
	return resp
}

// stableJSON is protojson with fixed formatting: protojson varies its
// white space on purpose, which would make every -update rewrite every file.
func stableJSON(m proto.Message) ([]byte, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return nil, err
	}
	err = json.Indent(&out, compact.Bytes(), "", "  ")
	return out.Bytes(), err
}

// golden compares resp with the protojson file at path (rewritten with
// -update).
func golden(t *testing.T, path string, resp *authv3.CheckResponse) {
	t.Helper()
	resp = stableList(t, resp)
	if *update {
		b, err := stableJSON(resp)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden %s: %v (run go test -update)", path, err)
	}
	want := &authv3.CheckResponse{}
	if err := protojson.Unmarshal(raw, want); err != nil {
		t.Fatalf("golden %s: %v", path, err)
	}
	if diff := cmp.Diff(want, resp, protocmp.Transform()); diff != "" {
		t.Errorf("CheckResponse differs from %s (-want +got):\n%s", path, diff)
	}
}

func TestCheckWithoutHTTPAttributesIsAnError(t *testing.T) {
	e := newEnv(t)
	_, err := e.client.Check(context.Background(), &authv3.CheckRequest{})
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Fatalf("Check(empty) code = %v, want InvalidArgument", got)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSharedDenial: repeated 403s of one identity share every part but
// the body, which keeps each request's JSON-RPC id; another tool, another
// identity or no identity at all get parts of their own; and what goes
// over gRPC is the whole denial.
func TestSharedDenial(t *testing.T) {
	e := newEnv(t)
	alice := e.token(t, "tools:get_weather")
	bob := e.token(t, "tools:get_weather", func(o *devissuer.MintOptions) { o.Subject = "bob" })
	call := func(id, tool string) string {
		return `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"` + tool + `"}}`
	}
	check := func(tok, body string) *authv3.CheckResponse {
		t.Helper()
		h := map[string]string{}
		if tok != "" {
			h = bearer(tok)
		}
		d, err := e.server.Check(context.Background(), checkRequest(req{body: body, headers: h}))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first, second := check(alice, call("1", "delete_file")), check(alice, call(`"two"`, "delete_file"))
	f, s := first.GetDeniedResponse(), second.GetDeniedResponse()
	if f.GetStatus().GetCode() != 403 || f.Headers[0] != s.Headers[0] || first.DynamicMetadata != second.DynamicMetadata || first.Status != second.Status || f.Status != s.Status {
		t.Errorf("two 403s of one identity for one tool do not share their parts")
	}
	if !strings.Contains(f.Body, `"id":1,`) || !strings.Contains(s.Body, `"id":"two",`) {
		t.Errorf("bodies %q and %q do not echo their ids", f.Body, s.Body)
	}
	for name, other := range map[string]*authv3.CheckResponse{
		"another tool":     check(alice, call("3", "write_file")),
		"another identity": check(bob, call("4", "delete_file")),
		"no identity":      check("", call("5", "delete_file")),
	} {
		if other.DynamicMetadata == first.DynamicMetadata {
			t.Errorf("%s shares the metadata of alice's delete_file denial", name)
		}
	}
	if got := check(bob, call("4", "delete_file")).GetDynamicMetadata().GetFields()["subject"].GetStringValue(); got != "bob" {
		t.Errorf("bob's denial names subject %q", got)
	}
	// Over gRPC (the codec builds the denial from its parts).
	resp, err := e.client.Check(context.Background(), checkRequest(req{body: call("9", "delete_file"), headers: bearer(alice)}))
	if err != nil {
		t.Fatal(err)
	}
	want := check(alice, call("9", "delete_file"))
	if !proto.Equal(resp, want) {
		t.Errorf("over gRPC:\n%v\nwant\n%v", resp, want)
	}
}
