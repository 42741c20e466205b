package policy

import (
	"testing"
	"time"
)

// BenchmarkDecideCached is the hot path of the decision: the same token
// and tool call again, answered from the decision cache (the key: a hash
// of the fields the policy reads).
func BenchmarkDecideCached(b *testing.B) {
	e := newEngine(b, DefaultSource(), Options{})
	tok := testToken("tools:get_weather")
	tok.Expiry = time.Now().Add(time.Hour).Unix()
	tok.Claims = []byte(`{"iss":"https://as.example","sub":"alice","aud":"https://mcp.example/mcp","jti":"0f9c2a4e-5d1b-4c8e-9a7f-3b6d2e1c0a9b","iat":1800000000,"exp":1800003600,"scope":"tools:get_weather","client_id":"client-1","tid":"tenant-7"}`)
	msgs := []MCP{call("get_weather")}
	b.ReportAllocs()
	for b.Loop() {
		ds, err := e.Decide(b.Context(), testRequest, tok, msgs)
		if err != nil || !ds[0].Allow {
			b.Fatalf("Decide() = %+v, %v", ds, err)
		}
	}
}
