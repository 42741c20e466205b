package extproc

import (
	"bytes"
	stdjson "encoding/json"
	"slices"
	"strings"
	"testing"
)

// chunkTemplates are responses with a known filtered result, used to check
// that every way of splitting them into body chunks gives that result.
var chunkTemplates = []struct {
	name    string
	headers [][2]string
	body    string
	want    string
}{
	{"sse_rich", sseHeaders(), richStream, richStreamFiltered},
	{"json_pretty", jsonHeaders(), prettyTools,
		strings.Replace(prettyTools, "      {\"name\": \"delete_repo\", \"description\": \"Deletes\"},\n", "", 1)},
	{"json_batch", jsonHeaders(),
		`[{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"é😀"}]}},` + toolsBody("1", "delete_repo", "get_weather", "delete_repo") + `]`,
		`[{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"é😀"}]}},` + toolsBody("1", "get_weather") + `]`},
	{"sse_cr_only", sseHeaders(),
		"data: " + toolsBody("1", "delete_repo", "search") + "\r\rdata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\r\r",
		"data: " + toolsBody("1", "search") + "\r\rdata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\r\r"},
	{"sse_bom_crlf", sseHeaders(),
		"\ufeff: c\r\nid: 1\r\ndata: " + toolsBody("1", "s\u00e9arch", "delete_repo", "get_weather") + "\r\n\r\n",
		"\ufeff: c\r\nid: 1\r\ndata: " + toolsBody("1", "get_weather") + "\r\n\r\n"},
}

// cutsFrom turns fuzz bytes into sorted chunk offsets within n.
func cutsFrom(raw []byte, n int) []int {
	if n < 2 {
		return nil
	}
	var cuts []int
	for i := 0; i+1 < len(raw) && len(cuts) < 64; i += 2 {
		cuts = append(cuts, 1+(int(raw[i])|int(raw[i+1])<<8)%(n-1))
	}
	slices.Sort(cuts)
	return slices.Compact(cuts)
}

func FuzzChunkBoundaries(f *testing.F) {
	for i := range chunkTemplates {
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), []byte{1, 0, 7, 0, 40, 0, 41, 0})
	}
	srv := newTestServer(f, defaultPolicy(), nil)
	cfg := envoyConfig{metadata: listMetadata(req("tools/list", "1"))}
	f.Fuzz(func(t *testing.T, sel uint8, raw []byte) {
		tmpl := chunkTemplates[int(sel)%len(chunkTemplates)]
		whole := runMem(t, srv, cfg, upstream{headers: tmpl.headers, chunks: []string{tmpl.body}})
		cuts := cutsFrom(raw, len(tmpl.body))
		parts := runMem(t, srv, cfg, upstream{headers: tmpl.headers, chunks: split(tmpl.body, cuts...)})
		if string(whole.body) != tmpl.want {
			t.Fatalf("%s unsplit:\n got %q\nwant %q", tmpl.name, whole.body, tmpl.want)
		}
		if string(parts.body) != string(whole.body) || len(parts.violations) > 0 {
			t.Fatalf("%s split at %v:\n got %q\nwant %q (violations %q)", tmpl.name, cuts, parts.body, whole.body, parts.violations)
		}
	})
}

// FuzzArbitraryResponse feeds arbitrary bodies, as JSON and as an event
// stream, split at arbitrary offsets. The output must not depend on the
// split, the exchange must end cleanly, and a lenient client (encoding/json
// v1: case-insensitive members, last duplicate wins) must never find a
// denied tool or prompt in a list result of the output.
func FuzzArbitraryResponse(f *testing.F) {
	seeds := []string{
		toolsBody("1", "delete_repo", "search"),
		`{"jsonrpc":"2.0","id":1,"result":{"Tools":[{"name":"delete_repo"}]}}`,
		`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search","NAME":"delete_repo"}]}}`,
		`{"jsonrpc":"2.0","id":"1","result":{"tools":[{"name":"delete_repo"}]}}`,
		`[{"jsonrpc":"2.0","id":2,"result":{"prompts":[{"name":"secret_prompt"}]}}]`,
		"data: " + toolsBody("1", "delete_repo") + "\n\n",
		"data: {\"jsonrpc\":\"2.0\",\ndata: \"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_repo\"}]}}\r\n\r\n",
		"\ufeffdata: " + toolsBody("1", "delete_repo") + "\r\r",
		richStream,
	}
	for _, s := range seeds {
		f.Add([]byte(s), []byte{3, 0, 9, 0})
	}
	srv := newTestServer(f, &fakePolicy{allow: map[string]bool{"search": true, "get_weather": true, "greeting": true}}, nil)
	cfg := envoyConfig{metadata: listMetadata(req("tools/list", "1"), req("prompts/list", "2"))}
	f.Fuzz(func(t *testing.T, body, raw []byte) {
		for _, headers := range [][][2]string{jsonHeaders(), sseHeaders()} {
			sse := headers[1][1] == "text/event-stream"
			whole := runMem(t, srv, cfg, upstream{headers: headers, chunks: []string{string(body)}})
			parts := runMem(t, srv, cfg, upstream{headers: headers, chunks: split(string(body), cutsFrom(raw, len(body))...)})
			for _, v := range []*clientView{whole, parts} {
				if len(v.violations) > 0 || v.failOpen || v.reset || v.status != 200 {
					t.Fatalf("sse=%v: violations %q failOpen=%v reset=%v status=%d", sse, v.violations, v.failOpen, v.reset, v.status)
				}
			}
			if !bytes.Equal(whole.body, parts.body) {
				t.Fatalf("sse=%v: split output differs:\n whole %q\n parts %q", sse, whole.body, parts.body)
			}
			texts := [][]byte{whole.body}
			if sse {
				texts = clientEvents(whole.body)
			}
			for _, text := range texts {
				if name := leakedItem(text); name != "" {
					t.Fatalf("sse=%v: a lenient client reads the denied item %q in %q", sse, name, text)
				}
			}
		}
	})
}

// clientEvents parses an event stream as a client does and returns the
// data of every event, including an unterminated last one.
func clientEvents(stream []byte) [][]byte {
	stream = bytes.TrimPrefix(stream, utf8BOM)
	var events [][]byte
	var data []byte
	has := false
	for len(stream) > 0 {
		i := bytes.IndexAny(stream, "\r\n")
		line := stream
		if i >= 0 {
			line = stream[:i]
			if stream[i] == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
				i++
			}
			stream = stream[i+1:]
		} else {
			stream = nil
		}
		if len(line) == 0 {
			if has {
				events = append(events, data)
			}
			data, has = nil, false
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		if string(name) == "data" {
			if has {
				data = append(data, '\n')
			}
			data = append(data, value...)
			has = true
		}
	}
	if has {
		events = append(events, data)
	}
	return events
}

// leakedItem decodes text leniently and returns a denied item name found in
// a list result.
func leakedItem(text []byte) string {
	type result struct {
		Tools   []struct{ Name string }
		Prompts []struct{ Name string }
	}
	type message struct{ Result *result }
	var msgs []message
	var one message
	if stdjson.Unmarshal(text, &one) == nil {
		msgs = append(msgs, one)
	} else if stdjson.Unmarshal(text, &msgs) != nil {
		return ""
	}
	for _, m := range msgs {
		if m.Result == nil {
			continue
		}
		for _, it := range m.Result.Tools {
			if it.Name == "delete_repo" {
				return it.Name
			}
		}
		for _, it := range m.Result.Prompts {
			if it.Name == "secret_prompt" {
				return it.Name
			}
		}
	}
	return ""
}
