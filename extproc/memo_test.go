package extproc

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// memoEnvelopes are bodies around a result (%R): ids before and after it,
// white space, a "result" inside a string, duplicate and case-variant
// members, trailing data, batches, an error beside the result.
var memoEnvelopes = []string{
	`{"jsonrpc":"2.0","id":7,"result":%R}`,
	`{"jsonrpc":"2.0","id":"abc","result":%R}`,
	`{"result":%R,"id":8,"jsonrpc":"2.0"}`,
	"{ \"jsonrpc\" : \"2.0\" , \"id\" : 9 , \"result\" : %R \n}\n",
	`{"jsonrpc":"2.0","id":"\"result\":%R","result":%R}`,
	`{"jsonrpc":"2.0","id":1,"result":%R,"result":%R}`,
	`{"jsonrpc":"2.0","id":1,"Result":%R}`,
	`{"jsonrpc":"2.0","id":1,"result":%R} x`,
	`{"jsonrpc":"2.0","id":1,"result":%R,"error":{"code":1}}`,
	`[{"jsonrpc":"2.0","id":1,"result":%R}]`,
	`{"jsonrpc":"1.0","id":1,"result":%R}`,
	`{"jsonrpc":"2.0","id":1,"result":%R,"extra":"\u00e9"}`,
	`{"jsonrpc":"2.0","id":1,"result":%R`,
	`{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"x":%R}`,
}

// memoResults are list results and near misses.
var memoResults = []string{
	`{"tools":[{"name":"search"},{"name":"delete_repo"}],"nextCursor":"c"}`,
	`{"tools":[ {"name":"delete_repo"} , {"name":"get_weather","inputSchema":{"type":"object"}} ]}`,
	`{"prompts":[{"name":"greeting"},{"name":"secret_prompt"}]}`,
	`{"tools":[{"name":"search","NAME":"delete_repo"}]}`,
	`{"tools":[{"name":"search"}],"Tools":[{"name":"delete_repo"}]}`,
	`{"tools":{"name":"delete_repo"}}`,
	`{"resources":[{"uri":"file:///public/a"},{"uri":"file:///secret/b"}]}`,
	`{}`,
}

// FuzzParseMemo: a filter that remembers result parses answers every body
// exactly as one that parses every body whole, whatever envelope surrounds a
// result it has seen (the remembered result is seeded from a plain body
// first), as JSON and as an event stream.
func FuzzParseMemo(f *testing.F) {
	for _, env := range memoEnvelopes {
		for _, res := range memoResults {
			f.Add(env, res)
		}
	}
	p := &fakePolicy{allow: map[string]bool{"search": true, "get_weather": true, "greeting": true}, prefixes: []string{"file:///public/"}}
	whole := newTestServer(f, p, nil, func(o *Options) { o.ParseMemoSize = -1 })
	memo := newTestServer(f, p, nil)
	cfg := envoyConfig{metadata: listMetadata(req("tools/list", "1"), req("prompts/list", "7"), req("resources/list", "8"), req("tools/list", `"abc"`), req("tools/list", "9"))}
	f.Fuzz(func(t *testing.T, env, res string) {
		body := strings.ReplaceAll(env, "%R", res)
		seed := `{"jsonrpc":"2.0","id":1,"result":` + res + `}`
		for _, headers := range [][][2]string{jsonHeaders(), sseHeaders()} {
			wrap := func(s string) string { return s }
			if headers[1][1] == "text/event-stream" {
				wrap = func(s string) string { return sseEvent(s) }
			}
			runMem(t, memo, cfg, upstream{headers: headers, chunks: []string{wrap(seed)}})
			want := runMem(t, whole, cfg, upstream{headers: headers, chunks: []string{wrap(body)}})
			got := runMem(t, memo, cfg, upstream{headers: headers, chunks: []string{wrap(body)}})
			if !bytes.Equal(got.body, want.body) || got.status != want.status || len(got.violations) != len(want.violations) {
				t.Fatalf("%s: with the memo\n got %d %q\nwant %d %q", headers[1][1], got.status, got.body, want.status, want.body)
			}
		}
	})
}

// TestParseMemoHits: a body whose result was seen is answered from the
// memo (one entry, whatever the id), a result over half the byte bound is
// not kept, and the oldest entries go first, counted.
func TestParseMemoHits(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, defaultPolicy(), nil, func(o *Options) { o.ParseMemoSize, o.ParseMemoBytes = 2, 4096 })
	cfg := envoyConfig{metadata: listMetadata(req("tools/list", "1"), req("tools/list", "2"))}
	run := func(body string) string {
		t.Helper()
		return string(runMem(t, srv, cfg, upstream{headers: jsonHeaders(), chunks: []string{body}}).body)
	}
	first := run(toolsBody("1", "get_weather", "delete_repo"))
	if got := srv.ParseMemoStats(); got.Entries != 1 || got.Bytes == 0 {
		t.Fatalf("after one list: %+v, want one entry", got)
	}
	second := run(toolsBody("2", "get_weather", "delete_repo"))
	if want := strings.Replace(first, `"id":1`, `"id":2`, 1); second != want || strings.Contains(second, "delete_repo") {
		t.Errorf("the same result under another id:\n got %s\nwant %s", second, want)
	}
	if got := srv.ParseMemoStats(); got.Entries != 1 {
		t.Errorf("the same result twice: %+v, want one entry", got)
	}
	names := make([]string, 200)
	for i := range names {
		names[i] = "tool_with_a_long_name_" + strings.Repeat("x", i%7)
	}
	run(toolsBody("1", names...))
	if got := srv.ParseMemoStats(); got.Entries != 1 {
		t.Errorf("a result over half the byte bound was kept: %+v", got)
	}
	run(toolsBody("1", "search"))
	run(toolsBody("1", "greeting"))
	if got := srv.ParseMemoStats(); got.Entries != 2 || got.Evictions != 1 {
		t.Errorf("after three small results with room for two: %+v, want 2 entries, 1 eviction", got)
	}
	off := newTestServer(t, defaultPolicy(), nil, func(o *Options) { o.ParseMemoSize = -1 })
	runMem(t, off, cfg, upstream{headers: jsonHeaders(), chunks: []string{toolsBody("1", "search")}})
	if got := off.ParseMemoStats(); got != (MemoStats{}) {
		t.Errorf("memo off: %+v", got)
	}
}

// TestParseMemoConcurrent: streams filtering the same and different results
// at once share the memo safely and each gets its own filtered list; run
// with -race.
func TestParseMemoConcurrent(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, defaultPolicy(), nil, func(o *Options) { o.ParseMemoSize = 2 })
	cfg := envoyConfig{metadata: listMetadata(req("tools/list", "1"))}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 40 {
				extra := "other_" + strconv.Itoa((w+i)%5)
				got := runMem(t, srv, cfg, upstream{headers: jsonHeaders(), chunks: []string{toolsBody("1", "get_weather", extra, "search")}})
				want := toolsBody("1", "get_weather", "search")
				if string(got.body) != want {
					t.Errorf("got %s, want %s", got.body, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
