package policy_test

import (
	"context"
	"fmt"
	"log"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/mcpauthz/mcpauthz/policy"
)

func Example() {
	ctx := context.Background()
	e := policy.New(policy.Options{})
	if err := e.Load(ctx, policy.DefaultSource()); err != nil {
		log.Fatal(err)
	}

	req := &policy.Request{Method: "POST", Path: "/mcp", Host: "mcp.example"}
	tok := &policy.Token{
		Issuer:  "https://as.example",
		Subject: "alice",
		Scopes:  []string{"tools:get_weather"},
		Claims:  jsontext.Value(`{"sub":"alice"}`),
	}
	// A JSON-RPC batch: one evaluation, and one decision, per element.
	msgs := []policy.MCP{
		{Kind: "request", ID: jsontext.Value(`1`), Method: "tools/call", Tool: "get_weather"},
		{Kind: "request", ID: jsontext.Value(`2`), Method: "tools/call", Tool: "write_file"},
		{Kind: "notification", Method: "notifications/initialized"},
	}
	decisions, err := e.Decide(ctx, req, tok, msgs)
	if err != nil {
		log.Fatal(err) // cannot decide: answer 503
	}
	for i, d := range decisions {
		fmt.Println(msgs[i].Method, d.Allow, d.Reason, d.RequiredScopes)
	}
	// The default policy names no scope of its own: it advertises none.
	fmt.Println(e.ScopesSupported())
	// Output:
	// tools/call true tool_scope []
	// tools/call false insufficient_scope [tools:write_file]
	// notifications/initialized true open_method []
	// []
}
