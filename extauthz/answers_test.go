package extauthz_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// TestAnswerCacheBounds: the answer parts of verified identities stay
// within the configured identities and bytes, whatever the number of
// callers; dropped identities are counted, and an identity answered again
// after its parts were dropped gets the same answer as the first time
// (over gRPC too: the codec forgets the dropped encodings, it does not
// send stale ones). With the cache off, nothing is kept.
func TestAnswerCacheBounds(t *testing.T) {
	tests := []struct {
		name                string
		size, bytes         int
		wantEntries, wantAt int // the most entries, and bytes at most wantAt
		evicts              bool
	}{
		{"entry bound", 16, 1 << 20, 16, 1 << 20, true},
		{"byte bound", 0, 65536, 4096, 65536, true},
		{"room for all", 0, 0, 4096, 2 << 20, false},
		{"off", -1, 0, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, withConfig(func(c *config.Config) { c.AnswerCacheSize, c.AnswerCacheBytes = tt.size, tt.bytes }))
			const callers = 120
			toks := make([]string, callers)
			for i := range toks {
				toks[i] = e.token(t, "tools:get_weather", func(o *devissuer.MintOptions) { o.Subject = fmt.Sprintf("caller-%03d", i) })
			}
			first := make([]*authv3.CheckResponse, callers)
			for round := range 2 {
				for i, tok := range toks {
					allow := checkRequest(req{body: callWeather, headers: bearer(tok)})
					deny := checkRequest(req{body: `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_file"}}`, headers: bearer(tok)})
					for j, r := range []*authv3.CheckRequest{allow, deny} {
						got, err := e.client.Check(context.Background(), r)
						if err != nil {
							t.Fatal(err)
						}
						if j == 0 && got.GetOkResponse() == nil || j == 1 && got.GetDeniedResponse().GetStatus().GetCode() != 403 {
							t.Fatalf("caller %d request %d: %v", i, j, got)
						}
						if j == 0 {
							if round == 0 {
								first[i] = got
							} else if !proto.Equal(got, first[i]) {
								t.Fatalf("caller %d: the second allow differs from the first:\n%v\nwant\n%v", i, got, first[i])
							}
							if sub := got.GetDynamicMetadata().GetFields()["subject"].GetStringValue(); sub != fmt.Sprintf("caller-%03d", i) {
								t.Fatalf("caller %d answered with subject %q", i, sub)
							}
						}
					}
				}
			}
			st := e.server.AnswerCacheStats()
			if st.Entries > tt.wantEntries || st.Bytes > tt.wantAt || st.Bytes < 0 {
				t.Errorf("stats %+v: want at most %d entries and %d bytes", st, tt.wantEntries, tt.wantAt)
			}
			if tt.evicts != (st.Evictions > 0) {
				t.Errorf("stats %+v: evictions want %v", st, tt.evicts)
			}
			if tt.size >= 0 && st.Entries == 0 {
				t.Errorf("stats %+v: nothing kept", st)
			}
			if !tt.evicts && tt.size >= 0 && st.Entries != callers {
				t.Errorf("stats %+v: want every caller kept", st)
			}
		})
	}
}

// TestAnswerCacheConcurrent: callers answered at once, with identities
// dropped while others are added and grow: what the cache counts is what
// it holds.
func TestAnswerCacheConcurrent(t *testing.T) {
	e := newEnv(t, withConfig(func(c *config.Config) { c.AnswerCacheSize, c.AnswerCacheBytes = 8, 65536 }))
	const callers, workers = 40, 4
	toks := make([]string, callers)
	for i := range toks {
		toks[i] = e.token(t, "tools:get_weather", func(o *devissuer.MintOptions) { o.Subject = fmt.Sprintf("caller-%03d", i) })
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range callers {
				tok := toks[(i+w*7)%callers]
				for _, body := range []string{callWeather, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_file"}}`} {
					if _, err := e.server.Check(context.Background(), checkRequest(req{body: body, headers: bearer(tok)})); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := e.server.AnswerCacheStats()
	entries, bytes := e.server.AnswerCacheRecount()
	if st.Entries != entries || st.Bytes != bytes || entries > 8 || st.Evictions == 0 {
		t.Errorf("stats %+v; holds %d entries of %d bytes: want them equal, at most 8 entries, and evictions", st, entries, bytes)
	}
}

// TestAnswerCacheConfigErrors: out-of-range bounds are refused with their
// keys.
func TestAnswerCacheConfigErrors(t *testing.T) {
	_, e := extauthz.New(extauthz.Options{Resource: "https://mcp.example.com/mcp", AuthorizationServers: []string{"https://idp.example.com"}, AnswerCacheSize: -2, AnswerCacheBytes: 100})
	if e == nil {
		t.Fatal("no error")
	}
	err := e.Error()
	for _, want := range []string{"answer_cache_size: must be -1 (disabled), 0 (default 4096)", "answer_cache_bytes: must be 0 (default 2097152) or from 65536"} {
		if !strings.Contains(err, want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// BenchmarkAnswerCacheMemory measures the live heap of the answer parts of
// distinct identities (each with one shared allow and one shared 403)
// against what the cache counts: the count must not be below the heap.
func BenchmarkAnswerCacheMemory(b *testing.B) {
	const n = 400
	e := newEnv(b, withConfig(func(c *config.Config) { c.AnswerCacheSize, c.AnswerCacheBytes = 4*n, 1<<30 }))
	reqs := make([][2]*authv3.CheckRequest, n)
	for i := range reqs {
		tok := e.token(b, "tools:get_weather", func(o *devissuer.MintOptions) { o.Subject = fmt.Sprintf("caller-%05d", i) })
		reqs[i] = [2]*authv3.CheckRequest{
			checkRequest(req{body: callWeather, headers: bearer(tok)}),
			checkRequest(req{body: `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_file"}}`, headers: bearer(tok)}),
		}
	}
	// The tokens' verification and the decisions are cached first, so
	// that the measured growth is the answer parts'.
	for _, r := range reqs {
		for _, q := range r {
			if _, err := e.server.Check(context.Background(), q); err != nil {
				b.Fatal(err)
			}
		}
	}
	for b.Loop() {
		e.server.ResetAnswerCache()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, r := range reqs {
			for _, q := range r {
				if _, err := e.server.Check(context.Background(), q); err != nil {
					b.Fatal(err)
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		st := e.server.AnswerCacheStats()
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(st.Entries), "heap-B/identity")
		b.ReportMetric(float64(st.Bytes)/float64(st.Entries), "counted-B/identity")
	}
}
