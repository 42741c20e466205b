package extproc

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/mcpauthz/mcpauthz/policy"
)

// The benchmarks run Server.Process over an in-memory stream: the whole
// processor path for one HTTP response (metadata parsing, header decision,
// body reading, the policy call, splicing, the replies), without gRPC
// transport. The policy is the fake (a map lookup per item); real Rego
// evaluation comes on top.
//
// Go 1.26.8, linux/amd64, AMD EPYC, 2 shared CPUs (load 3-5), -count 5,
// at the time of writing (go test -run XXX -bench . -benchmem ./extproc):
//
//	FilterTools50 (17 KiB)        72-83 µs/op      44 KB/op    102 allocs/op
//	FilterTools1000 (350 KiB)     1.1-1.7 ms/op   832 KB/op   1059 allocs/op
//	FilterToolsSSE50              75-120 µs/op     44 KB/op    103 allocs/op
//	FilterToolsSSE1000            1.3-1.8 ms/op  1250 KB/op   1063 allocs/op
//	PassThroughHeaders            0.74-1.0 µs/op  331 B/op      10 allocs/op
//	PassThroughNon2xx             3.8-4.3 µs/op  1880 B/op      38 allocs/op
//	SSENotifications (100+1)      108-128 µs/op    44 KB/op    755 allocs/op
//	ParseMetadata                 1.8-1.9 µs/op  1152 B/op      22 allocs/op
//
// Before the single-pass list reading and pooled buffers: 299 µs, 3.1 ms,
// 174 µs, 3.3 ms, 1.1 µs (same machine, busier).

func benchExchange(b *testing.B, srv *Server, cfg envoyConfig, up upstream) (body []byte) {
	b.Helper()
	st := newEnvoyState(cfg, up)
	msgs := st.messages()
	size := 0
	for _, c := range up.chunks {
		size += len(c)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	ms := &memStream{ctx: context.Background()}
	for b.Loop() {
		ms.in, ms.out, ms.next = msgs, ms.out[:0], 0
		if err := srv.Process(ms); err != nil {
			b.Fatal(err)
		}
	}
	return checkBench(b, cfg, up, ms.out)
}

// checkBench verifies the last iteration's replies, so a benchmark of a
// broken path fails instead of reporting a fast number, and returns the
// body the client gets.
func checkBench(b *testing.B, cfg envoyConfig, up upstream, out []*extprocv3.ProcessingResponse) []byte {
	b.Helper()
	st := newEnvoyState(cfg, up)
	for _, m := range st.messages() {
		st.sent(m)
	}
	for _, r := range out {
		st.apply(r)
	}
	if !st.complete || len(st.view.violations) > 0 || st.view.status != 200 || strings.Contains(string(st.view.body), `"error"`) {
		b.Fatalf("bad exchange: complete=%v violations=%q status=%d body %.200q", st.complete, st.view.violations, st.view.status, st.view.body)
	}
	return st.view.body
}

func benchTools(b *testing.B, n int, sse bool) {
	body, allowed := manyTools(n)
	srv := newTestServer(b, &fakePolicy{allow: allowed}, nil)
	cfg := envoyConfig{metadata: listMetadata(req("tools/list", "7"))}
	up := upstream{headers: jsonHeaders(), chunks: split(body, 16<<10, 32<<10, 48<<10)}
	if sse {
		stream := "id: 1\nevent: message\ndata: " + body + "\n\n"
		up = upstream{headers: sseHeaders(), chunks: split(stream, 16<<10, 32<<10, 48<<10)}
	}
	benchExchange(b, srv, cfg, up)
}

func BenchmarkFilterTools50(b *testing.B)      { benchTools(b, 50, false) }
func BenchmarkFilterTools1000(b *testing.B)    { benchTools(b, 1000, false) }
func BenchmarkFilterToolsSSE50(b *testing.B)   { benchTools(b, 50, true) }
func BenchmarkFilterToolsSSE1000(b *testing.B) { benchTools(b, 1000, true) }

// BenchmarkPassThroughHeaders is a response that needs no filtering: the
// ext_authz metadata without list_filter, headers only.
func BenchmarkPassThroughHeaders(b *testing.B) {
	srv := newTestServer(b, defaultPolicy(), nil)
	benchExchange(b, srv, envoyConfig{metadata: authzOnlyMetadata()}, upstream{headers: jsonHeaders([2]string{"content-length", "0"})})
}

// BenchmarkPassThroughNon2xx is a list request answered 404 with a body:
// headers plus one chunk returned as it came.
func BenchmarkPassThroughNon2xx(b *testing.B) {
	srv := newTestServer(b, defaultPolicy(), nil)
	up := upstream{headers: [][2]string{{":status", "404"}, {"content-type", "application/json"}}, chunks: []string{`{"error":"not found"}`}}
	st := newEnvoyState(envoyConfig{metadata: listMetadata(req("tools/list", "1"))}, up)
	msgs := st.messages()
	b.ReportAllocs()
	ms := &memStream{ctx: context.Background()}
	for b.Loop() {
		ms.in, ms.out, ms.next = msgs, ms.out[:0], 0
		if err := srv.Process(ms); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSSENotifications is a list-filter SSE stream of 100 progress
// notifications (one per chunk) before a small list result: the per-event
// cost of events that pass.
func BenchmarkSSENotifications(b *testing.B) {
	var chunks []string
	for i := range 100 {
		chunks = append(chunks, sseEvent(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":`+strconv.Itoa(i)+`}}`))
	}
	chunks = append(chunks, sseEvent(toolsBody("1", "get_weather", "delete_repo")))
	srv := newTestServer(b, defaultPolicy(), nil)
	benchExchange(b, srv, envoyConfig{metadata: listMetadata(req("tools/list", "1"))}, upstream{headers: sseHeaders(), chunks: chunks})
}

// BenchmarkParseMetadata is the metadata read alone.
func BenchmarkParseMetadata(b *testing.B) {
	md := listMetadata(req("tools/list", "1"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseMetadata(md); err != nil {
			b.Fatal(err)
		}
	}
}

// regoTools decides a tools list with the real policy engine, as serve
// wires it (internal/app's listPolicy, tools only).
type regoTools struct{ e *policy.Engine }

func (p regoTools) Visible(ctx context.Context, lc ListContext, l List) (Visibility, error) {
	names := make([]string, len(l.Items))
	for i, it := range l.Items {
		names[i] = it.Name
	}
	keep, err := p.e.Current().Visible(ctx, policy.ListQuery{Input: lc.Input, ProtocolVersion: lc.ProtocolVersion, Kind: string(l.Kind), Items: names})
	return Visibility{Keep: keep}, err
}

// BenchmarkFilterToolsRego is the whole cost of filtering a tools list
// with the default Rego policy, for a caller granted three of the tools by
// name: "first" is a caller's first list of a result the filter has parsed
// before for any caller (the visibility cache off, so every list is
// evaluated), "first_unseen" the same with a result never seen (the parse
// memo off too: the first list after a start or a change of the server's
// tools), "repeated" the same caller again (or any caller with the same
// scopes).
func BenchmarkFilterToolsRego(b *testing.B) {
	tok := &policy.Token{Issuer: "https://idp.example.com", Subject: "alice", ClientID: "client-1",
		Scopes: []string{"tools:tool_1", "tools:tool_7", "tools:tool_42"}, Claims: jsontext.Value(`{"sub":"alice","jti":"j-1"}`)}
	input, err := policy.InputJSON(&policy.Request{Method: "POST", Path: "/mcp", Host: "mcp.example.com"}, tok)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{50, 1000} {
		body, _ := manyTools(n)
		up := upstream{headers: jsonHeaders(), chunks: split(body, 16<<10, 32<<10, 48<<10)}
		for _, c := range []struct {
			name                string
			cacheSize, memoSize int
		}{{"first", -1, 0}, {"first_unseen", -1, -1}, {"repeated", 0, 0}} {
			b.Run(fmt.Sprintf("tools%d/%s", n, c.name), func(b *testing.B) {
				e := policy.New(policy.Options{DecisionCacheSize: c.cacheSize, EvalTimeout: 10 * time.Second})
				if err := e.Load(b.Context(), policy.DefaultSource()); err != nil {
					b.Fatal(err)
				}
				md := EncodeListMetadata(ListContext{ProtocolVersion: "2025-11-25", PolicyRevision: "rev-1", Requests: []ListRequest{req("tools/list", "7")}, Input: input})
				srv := newTestServer(b, regoTools{e}, nil, func(o *Options) { o.ParseMemoSize = c.memoSize })
				out := benchExchange(b, srv, envoyConfig{metadata: namespace(md)}, up)
				if kept := strings.Count(string(out), `"name":"tool_`); kept != 3 {
					b.Fatalf("%d tools kept, want 3: %.300s", kept, out)
				}
			})
		}
	}
}
