package app

import (
	"testing"

	"google.golang.org/grpc/metadata"
)

// BenchmarkUpstreamCredential compares an allowed tools/call whose policy
// decision names a token-exchange source (warm cache) with one that names
// none, on the same runtime and token: the difference is what a credential
// costs on the hot path (the budget: ≤ 10 µs).
func BenchmarkUpstreamCredential(b *testing.B) {
	e := newUpstreamEnv(b)
	tok := e.token(b, "tools:create_issue", "tools:get_weather")
	for _, c := range []struct{ name, tool, header string }{
		{"no_credential", "get_weather", ""},
		{"token_exchange_warm", "create_issue", "authorization"},
	} {
		b.Run(c.name, func(b *testing.B) {
			req := toolCallRequest(tok, c.tool, nil)
			d, resp := e.rt.Server.Evaluate(b.Context(), req)
			if d.Status != 200 || (c.header != "") != (d.UpstreamCredential != "") {
				b.Fatalf("Evaluate: %d %s, credential %q: %v", d.Status, d.Reason, d.UpstreamCredential, resp)
			}
			b.ReportAllocs()
			for b.Loop() {
				e.rt.Server.Evaluate(b.Context(), req)
			}
		})
	}
}

// BenchmarkTracing is the cost of tracing on an allowed, cached tools/call
// (decision log and metrics on, as serve runs): off (no configuration),
// on with the caller's trace sampled (four spans recorded and queued for
// export to a loopback collector), and on with the caller's trace not
// sampled (spans made but not recorded).
func BenchmarkTracing(b *testing.B) {
	recv := newOTLPReceiver(b)
	none := func(string) string { return "" }
	for _, c := range []struct {
		name, yaml, traceparent string
	}{
		{"off", "", ""},
		{"on_sampled", "tracing: {endpoint: http://" + recv.addr + ", protocol: grpc}\n", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"on_unsampled", "tracing: {endpoint: http://" + recv.addr + ", protocol: grpc}\n", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := newUpstreamEnvWith(b, c.yaml, Options{Trace: true, Getenv: none})
			tok := e.token(b, "tools:get_weather")
			req := toolCallRequest(tok, "get_weather", nil)
			ctx := b.Context()
			if c.traceparent != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("traceparent", c.traceparent))
			}
			if d, _ := e.rt.Server.Evaluate(ctx, req); d.Status != 200 {
				b.Fatalf("Evaluate: %d %s", d.Status, d.Reason)
			}
			b.ReportAllocs()
			for b.Loop() {
				e.rt.Server.Evaluate(ctx, req)
			}
			b.StopTimer()
			e.rt.Close()
		})
	}
}
