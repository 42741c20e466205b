package extauthz_test

import (
	"context"
	"fmt"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/policy"
)

// staticTokens is an Authenticator of a program that embeds the ext_authz
// server with its own token check.
type staticTokens map[string]*extauthz.Identity

func (s staticTokens) Authenticate(_ context.Context, token string) (*extauthz.Identity, error) {
	if id, ok := s[token]; ok {
		return id, nil
	}
	return nil, &extauthz.TokenError{Reason: "unknown_token"}
}

// allowTools is a Policy that allows tools/call of the tools it names.
type allowTools map[string]bool

func (p allowTools) Decide(_ context.Context, _ *policy.Request, _ *policy.Token, msgs []policy.MCP) ([]policy.Decision, error) {
	out := make([]policy.Decision, len(msgs))
	for i, m := range msgs {
		out[i].Allow = m.Method != "tools/call" || p[m.Tool]
		if !out[i].Allow {
			out[i].RequiredScopes = []string{"tools:" + m.Tool}
		}
	}
	return out, nil
}
func (allowTools) Revision() string          { return "example" }
func (allowTools) ScopesSupported() []string { return nil }
func (allowTools) ScopePrefixes() []string   { return []string{"tools:"} }
func (allowTools) BaselineScopes() []string  { return nil }

// The server is usable from other programs with their own authenticator
// and policy: nothing in its API is internal to mcpauthz.
func Example() {
	srv, err := extauthz.New(extauthz.Options{
		Resource:             "https://mcp.example.com/mcp",
		AuthorizationServers: []string{"https://as.example.com"},
		Authenticator:        staticTokens{"t0ken": {Issuer: "https://as.example.com", Subject: "alice"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv.SetPolicy(allowTools{"get_weather": true})
	check := func(token, tool string) {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `"}}`
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/mcp", Host: "mcp.example.com", RawBody: []byte(body),
				Headers: map[string]string{"authorization": "Bearer " + token, "content-type": "application/json"}},
		}}}
		d, _ := srv.Evaluate(context.Background(), req)
		fmt.Println(tool, d.Status, d.Reason)
	}
	check("t0ken", "get_weather")
	check("t0ken", "delete_file")
	check("forged", "get_weather")
	// Output:
	// get_weather 200 policy_allow
	// delete_file 403 insufficient_scope
	// get_weather 401 invalid_token
}
