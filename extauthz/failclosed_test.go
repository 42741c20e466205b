package extauthz_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/policy"
)

// failingPolicy stands in for a policy engine that cannot decide. A real OPA
// evaluation error is covered by TestPolicyRuntimeErrorIs503; this fake adds
// the cases a real policy cannot produce on demand (a panic).
type failingPolicy struct {
	err   error
	panic bool
}

func (f failingPolicy) Decide(context.Context, *policy.Request, *policy.Token, []policy.MCP) ([]policy.Decision, error) {
	if f.panic {
		panic("boom")
	}
	return nil, f.err
}
func (failingPolicy) Revision() string          { return "test" }
func (failingPolicy) ScopesSupported() []string { return nil }
func (failingPolicy) ScopePrefixes() []string   { return nil }
func (failingPolicy) BaselineScopes() []string  { return nil }

func withPolicy(p interface {
	Decide(context.Context, *policy.Request, *policy.Token, []policy.MCP) ([]policy.Decision, error)
	Revision() string
	ScopesSupported() []string
	ScopePrefixes() []string
	BaselineScopes() []string
}) envOption {
	return func(_ *config.Config, s *envSetup) { s.policy = p }
}

// outcome is the part of a CheckResponse a client acts on.
type outcome struct {
	code    codes.Code
	status  int32
	wwwAuth string
	body    string
}

func summarize(resp *authv3.CheckResponse) outcome {
	o := outcome{code: codes.Code(resp.GetStatus().GetCode())}
	if d := resp.GetDeniedResponse(); d != nil {
		o.status = int32(d.GetStatus().GetCode())
		o.body = d.GetBody()
		for _, h := range d.GetHeaders() {
			if h.GetHeader().GetKey() == "www-authenticate" {
				o.wwwAuth = h.GetHeader().GetValue()
			}
		}
	}
	return o
}

func TestFailClosed(t *testing.T) {
	const unavailable = `{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"Authorization temporarily unavailable"}}`
	tests := []struct {
		name   string
		opts   []envOption
		reason string
	}{
		{"keys unavailable", []envOption{func(_ *config.Config, s *envSetup) { s.jwksDown = true }}, "keys_unavailable"},
		{"policy error", []envOption{withPolicy(failingPolicy{err: errors.New("eval failed")})}, "policy_error"},
		{"policy out of time", []envOption{withPolicy(failingPolicy{err: fmt.Errorf("policy: evaluate: %w", context.DeadlineExceeded)})}, "timeout"},
		{"policy panic", []envOption{withPolicy(failingPolicy{panic: true})}, "internal_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts...)
			resp, err := e.client.Check(context.Background(), checkRequest(req{body: callWeather, headers: bearer(e.token(t, "tools:*"))}))
			if err != nil {
				t.Fatalf("Check() error = %v, want a CheckResponse", err)
			}
			want := outcome{code: codes.Unavailable, status: 503, body: unavailable}
			if got := summarize(resp); got != want {
				t.Errorf("Check() = %+v, want %+v", got, want)
			}
			if got := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue(); got != tt.reason {
				t.Errorf("reason = %q, want %q", got, tt.reason)
			}
		})
	}
}

// TestPolicyTimeoutIs503Timeout: a real Rego evaluation that outlasts
// policy.eval_timeout is reported as timeout, not as a policy error. (It is
// slow for the test's caller only: a policy slow for every request would
// not pass the policy engine's activation check.)
func TestPolicyTimeoutIs503Timeout(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir+"/p.rego", `package mcp.authz

default decision := {"allow": false, "reason": "fast"}

decision := {"allow": count([x | some x in numbers.range(1, 50000000); x % 7 == 0]) > 0, "reason": "slow"} if input.token.subject == "alice"
`)
	e := newEnv(t, func(c *config.Config, s *envSetup) {
		s.policySrc = &policy.Source{Paths: []string{dir}}
		c.Policy.EvalTimeout = config.Duration(time.Millisecond)
	})
	resp, err := e.client.Check(context.Background(), checkRequest(req{body: callWeather, headers: bearer(e.token(t, ""))}))
	if err != nil {
		t.Fatal(err)
	}
	if got, reason := summarize(resp), resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue(); got.status != 503 || reason != "timeout" {
		t.Errorf("Check() = %+v reason %q, want 503 timeout", got, reason)
	}
}

// TestPolicyRuntimeErrorIs503 uses a real Rego policy that fails at
// evaluation time (a conflict between two complete rules), for the test's
// caller only: one that fails for every request would not pass the policy
// engine's activation check.
func TestPolicyRuntimeErrorIs503(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir+"/p.rego", `package mcp.authz

default decision := {"allow": false, "reason": "c", "required_scopes": [], "headers": {}}
decision := {"allow": true, "reason": "a", "required_scopes": [], "headers": {}} if input.mcp.kind == "request"
decision := {"allow": false, "reason": "b", "required_scopes": [], "headers": {}} if {
	input.mcp.method == "tools/call"
	input.token.subject == "alice"
}
scopes_supported := []
scope_prefixes := []
`)
	e := newEnv(t, func(_ *config.Config, s *envSetup) { s.policySrc = &policy.Source{Paths: []string{dir}} })
	resp, err := e.client.Check(context.Background(), checkRequest(req{body: callWeather, headers: bearer(e.token(t, ""))}))
	if err != nil {
		t.Fatal(err)
	}
	if got := summarize(resp); got.status != 503 || got.code != codes.Unavailable {
		t.Errorf("Check() = %+v, want 503 UNAVAILABLE", got)
	}
}

// TestChallenges asserts the exact WWW-Authenticate values MCP clients parse.
// A 401 asks for what the request needs, as the policy decides it, plus the
// policy's baseline scopes (here mcp:connect); never the configured
// scopes_supported, which only the metadata advertises.
func TestChallenges(t *testing.T) {
	dir := t.TempDir()
	authz, err := os.ReadFile("../rego/mcp/authz.rego")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir+"/authz.rego", string(authz))
	writeFile(t, dir+"/data.json", `{"mcp":{"config":{"open_methods":["initialize","tools/list"],"baseline_scopes":["mcp:connect"],
		"scopes":{"tools":{},"prompts":{},"resources":{}},"revoked":{"jti":[],"subjects":[]}}}}`)
	e := newEnv(t, withConfig(func(c *config.Config) {
		c.ScopesSupported = []string{"mcp:connect", "tools:get_weather", "tools:delete_file"}
		c.Policy.Paths = []string{dir}
	}))
	weather := e.token(t, "tools:get_weather openid offline_access")
	const rm = `resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"`
	tests := []struct {
		name string
		req  req
		want outcome
	}{
		{"missing token", req{body: callWeather}, outcome{codes.Unauthenticated, 401,
			`Bearer ` + rm + `, scope="mcp:connect tools:get_weather"`,
			`{"error_description":"Missing bearer token"}`}},
		{"missing token, open method", req{body: `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`}, outcome{codes.Unauthenticated, 401,
			`Bearer ` + rm + `, scope="mcp:connect"`,
			`{"error_description":"Missing bearer token"}`}},
		{"missing token, batch of two tools", req{body: `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"b"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a"}}]`,
			headers: map[string]string{"mcp-protocol-version": "2025-03-26"}}, outcome{codes.Unauthenticated, 401,
			`Bearer ` + rm + `, scope="mcp:connect tools:a tools:b"`,
			`{"error_description":"Missing bearer token"}`}},
		{"missing token, stream", req{method: "GET"}, outcome{codes.Unauthenticated, 401,
			`Bearer ` + rm + `, scope="mcp:connect"`,
			`{"error_description":"Missing bearer token"}`}},
		{"missing token, body that does not parse", req{body: `{"jsonrpc":"2.0",`}, outcome{codes.Unauthenticated, 401,
			`Bearer ` + rm + `, scope="mcp:connect"`,
			`{"error_description":"Missing bearer token"}`}},
		{"invalid token", req{body: callWeather, headers: bearer("a.b.c")}, outcome{codes.Unauthenticated, 401,
			`Bearer ` + rm + `, scope="mcp:connect tools:get_weather", error="invalid_token", error_description="The access token is invalid or expired"`,
			`{"error":"invalid_token","error_description":"The access token is invalid or expired"}`}},
		{"token in query", req{path: "/mcp?access_token=x", body: callWeather}, outcome{codes.InvalidArgument, 400,
			`Bearer ` + rm + `, error="invalid_request", error_description="Send exactly one bearer token in the Authorization header"`,
			`{"error":"invalid_request","error_description":"Send exactly one bearer token in the Authorization header"}`}},
		{"step up keeps relevant granted scopes", req{body: callDelete, headers: bearer(weather)}, outcome{codes.PermissionDenied, 403,
			`Bearer error="insufficient_scope", scope="tools:delete_file tools:get_weather", ` + rm,
			`{"jsonrpc":"2.0","id":"c-8","error":{"code":-32001,"message":"Insufficient scope"}}`}},
		{"non-scope denial", req{body: `{"jsonrpc":"2.0","id":9,"method":"admin/x"}`, headers: bearer(weather)}, outcome{codes.PermissionDenied, 403,
			"", `{"jsonrpc":"2.0","id":9,"error":{"code":-32001,"message":"Forbidden"}}`}},
		{"forbidden origin", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"origin": "http://evil"})}, outcome{codes.PermissionDenied, 403,
			"", `{"jsonrpc":"2.0","error":{"code":-32600,"message":"Forbidden origin"}}`}},
		{"header mismatch", req{body: callWeather, headers: merge(bearer(weather), map[string]string{"mcp-method": "tools/list"})}, outcome{codes.InvalidArgument, 400,
			"", `{"jsonrpc":"2.0","id":7,"error":{"code":-32020,"message":"Header mismatch: Mcp-Method header value 'tools/list' does not match body value 'tools/call'"}}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := e.client.Check(context.Background(), checkRequest(tt.req))
			if err != nil {
				t.Fatal(err)
			}
			if got := summarize(resp); got != tt.want {
				t.Errorf("Check() =\n  %+v\nwant\n  %+v", got, tt.want)
			}
		})
	}
}

func TestForwardToken(t *testing.T) {
	e := newEnv(t, withConfig(func(c *config.Config) { c.Upstream.ForwardToken = true }))
	resp, err := e.client.Check(context.Background(), checkRequest(req{body: callWeather, headers: bearer(e.token(t, "tools:get_weather"))}))
	if err != nil {
		t.Fatal(err)
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("Check() = %v, want OK", resp)
	}
	for _, h := range ok.GetHeadersToRemove() {
		if strings.EqualFold(h, "authorization") {
			t.Errorf("headers_to_remove contains authorization with forward_token: true")
		}
	}
}
