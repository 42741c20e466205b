package extauthz_test

import (
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// BenchmarkCheck measures the whole in-process decision path (no gRPC):
// request extraction, token verification, body parsing, policy, response.
func BenchmarkCheck(b *testing.B) {
	e := newEnv(b)
	weather := e.token(b, "tools:get_weather")
	cases := []struct {
		name string
		req  *authv3.CheckRequest
		want int
	}{
		{"allow", checkRequest(req{body: callWeather, headers: bearer(weather)}), 200},
		{"no_token_401", checkRequest(req{body: callWeather}), 401},
		{"insufficient_scope_403", checkRequest(req{body: callDelete, headers: bearer(weather)}), 403},
		{"batch_of_10", checkRequest(req{body: batchOf(10), headers: merge(bearer(weather), map[string]string{"mcp-protocol-version": "2025-03-26"})}), 200},
	}
	ctx := context.Background()
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if d, _ := e.server.Evaluate(ctx, c.req); d.Status != c.want {
				b.Fatalf("status = %d (%s), want %d", d.Status, d.Reason, c.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				e.server.Evaluate(ctx, c.req)
			}
		})
	}
}

func batchOf(n int) string {
	s := "["
	for i := 0; i < n; i++ {
		if i > 0 {
			s += ","
		}
		s += callWeather
	}
	return s + "]"
}
