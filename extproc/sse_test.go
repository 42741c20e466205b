package extproc

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// richStream has comments, CRLF, LF and CR line ends, id/event/retry
// fields, a list result over three data lines with non-ASCII text, and
// notifications before and after it.
const richStream = ": keepalive\r\n" +
	"\r\n" +
	"event: message\r\n" +
	"id: 1\r\n" +
	`data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}` + "\r\n" +
	"\r\n" +
	"id: 2\n" +
	"event: message\n" +
	"retry: 3000\n" +
	`data: {"jsonrpc":"2.0","id":1,` + "\n" +
	`data:  "result":{"tools":[{"name":"get_weather"},{"name":"delete_repo","description":"naïve ☃ 😀"},` + "\n" +
	`data:{"name":"search"}]}}` + "\n" +
	": after\n" +
	"\n" +
	`data: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"héllo"}}` + "\r" +
	"\r"

const richStreamFiltered = ": keepalive\r\n" +
	"\r\n" +
	"event: message\r\n" +
	"id: 1\r\n" +
	`data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}` + "\r\n" +
	"\r\n" +
	"id: 2\n" +
	"event: message\n" +
	"retry: 3000\n" +
	`data: {"jsonrpc":"2.0","id":1,` + "\n" +
	`data:  "result":{"tools":[{"name":"get_weather"},` + "\n" +
	`data: {"name":"search"}]}}` + "\n" +
	": after\n" +
	"\n" +
	`data: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"héllo"}}` + "\r" +
	"\r"

func sseEvent(data string) string { return "event: message\ndata: " + data + "\n\n" }

func TestSSEScanner(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		events []string // complete events; the rest is pending
		rest   string
	}{
		{"lf", "data: a\n\ndata: b\n\n", []string{"data: a\n\n", "data: b\n\n"}, ""},
		{"crlf", "data: a\r\n\r\ndata: b\r\n", []string{"data: a\r\n\r\n"}, "data: b\r\n"},
		{"cr", "data: a\r\rdata: b\r\r", []string{"data: a\r\r"}, "data: b\r\r"}, // the last CR may be half a CRLF
		{"mixed", "data: a\r\n\rx\n\n", []string{"data: a\r\n\r", "x\n\n"}, ""},
		{"blank_lines", "\n\r\n\r", []string{"\n", "\r\n"}, "\r"},
		{"no_end", "data: a\ndata: b", nil, "data: a\ndata: b"},
		{"cr_then_lf_is_one_line_end", "a\r\nb\r\n\r\n", []string{"a\r\nb\r\n\r\n"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Same result whether the stream comes whole or byte by byte.
			for _, pieces := range [][]string{{tt.stream}, bytewise(tt.stream)} {
				var sc sseScanner
				sc.reset()
				var events []string
				var buf []byte
				for _, p := range pieces {
					pos := len(buf)
					buf = append(buf, p...)
					for {
						end := sc.scan(buf, pos)
						if end < 0 {
							break
						}
						events = append(events, string(buf[:end]))
						buf, pos = buf[end:], 0
					}
				}
				if !slices.Equal(events, tt.events) || string(buf) != tt.rest {
					t.Errorf("%d pieces: events %q rest %q, want %q %q", len(pieces), events, buf, tt.events, tt.rest)
				}
			}
		})
	}
}

func TestSSEFiltering(t *testing.T) {
	meta := listMetadata(req("tools/list", "1"))
	list := toolsBody("1", "get_weather", "delete_repo", "search")
	listFiltered := toolsBody("1", "get_weather", "search")
	note := sseEvent(`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`)
	tests := []exchangeCase{
		{
			name:     "rich_stream",
			meta:     meta,
			up:       upstream{headers: sseHeaders(), chunks: []string{richStream}},
			body:     richStreamFiltered,
			headers:  map[string]string{"content-type": "text/event-stream", "cache-control": "no-cache", "content-length": ""},
			outcomes: []Outcome{{Method: "tools/list", Items: 3, Removed: 1}},
		},
		{
			name: "rich_stream_bytewise",
			meta: meta,
			up:   upstream{headers: sseHeaders(), chunks: bytewise(richStream)},
			body: richStreamFiltered,
		},
		{
			name: "list_changed_and_server_requests_pass",
			meta: meta,
			up: upstream{headers: sseHeaders(), chunks: []string{note +
				sseEvent(`{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{"messages":[]}}`) +
				sseEvent(list)}},
			body: note + sseEvent(`{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{"messages":[]}}`) + sseEvent(listFiltered),
		},
		{
			name: "non_json_and_empty_data_pass",
			meta: meta,
			up: upstream{headers: sseHeaders(), chunks: []string{"id: prime\ndata:\n\n" + "event: endpoint\ndata: /messages?session=1\n\n" +
				"data: ping\n\n" + "retry: 10\n\n" + sseEvent(list)}},
			body: "id: prime\ndata:\n\n" + "event: endpoint\ndata: /messages?session=1\n\n" + "data: ping\n\n" + "retry: 10\n\n" + sseEvent(listFiltered),
		},
		{
			name: "bad_json_event_replaced_other_lines_kept",
			meta: meta,
			up: upstream{headers: sseHeaders(), chunks: []string{note + "id: 9\nevent: message\ndata: " +
				`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_repo"}],"Tools":[]}}` + "\n\n" + note}},
			body:     note + "id: 9\nevent: message\ndata: " + errorBody("1") + "\n\n" + note,
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonBadBody}},
		},
		{
			name:     "policy_error_event",
			meta:     meta,
			policy:   &fakePolicy{err: errPolicy},
			up:       upstream{headers: sseHeaders(), chunks: []string{note + sseEvent(list) + note}},
			body:     note + sseEvent(errorBody("1")) + note,
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonPolicyError, Items: 3}},
		},
		{
			name:     "too_large_event_replaced_stream_goes_on",
			meta:     meta,
			opts:     func(o *Options) { o.MaxBufferedBytes = 120 },
			up:       upstream{headers: sseHeaders(), chunks: split(note+"id: 5\n"+sseEvent(list)+note, 70, 140, 200)},
			body:     note + "data: " + errorBody("1") + "\n\n" + note,
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonTooLarge}},
		},
		{
			name: "long_stream_is_not_buffered",
			meta: meta,
			opts: func(o *Options) { o.MaxBufferedBytes = 256 },
			up:   upstream{headers: sseHeaders(), chunks: split(strings.Repeat(note, 200)+sseEvent(`{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`), 1000, 5000, 9000)},
			body: strings.Repeat(note, 200) + sseEvent(`{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`),
		},
		{
			name:     "missing_metadata_refuses_list_event",
			up:       upstream{headers: sseHeaders(), chunks: []string{note + sseEvent(list)}},
			body:     note + sseEvent(errorBody("1")),
			outcomes: []Outcome{{Reason: ReasonMissingMetadata}},
		},
		{
			name: "batch_in_one_event",
			meta: listMetadata(req("tools/list", "1"), req("prompts/list", "2")),
			up: upstream{headers: sseHeaders(), chunks: []string{sseEvent(`[` + list + `,{"jsonrpc":"2.0","id":2,"result":{"prompts":[{"name":"x"}]}},` +
				`{"jsonrpc":"2.0","id":3,"result":{}}]`)}},
			body: sseEvent(`[` + listFiltered + `,{"jsonrpc":"2.0","id":2,"result":{"prompts":[]}},{"jsonrpc":"2.0","id":3,"result":{}}]`),
		},
		{
			name: "bom_opens_the_stream",
			meta: meta,
			up:   upstream{headers: sseHeaders(), chunks: []string{"\xef\xbb", "\xbfdata: " + list + "\n\n"}},
			body: "\ufeffdata: " + listFiltered + "\n\n",
		},
		{
			name: "final_event_without_blank_line_filtered_too",
			meta: meta,
			up:   upstream{headers: sseHeaders(), chunks: []string{note + "data: " + list}},
			body: note + "data: " + listFiltered,
		},
		{
			name: "final_event_ends_in_cr",
			meta: meta,
			up:   upstream{headers: sseHeaders(), chunks: []string{"data: " + list + "\r", "\r"}},
			body: "data: " + listFiltered + "\r\r",
		},
		{
			name: "trailers",
			meta: meta,
			up:   upstream{headers: sseHeaders(), chunks: split(note+sseEvent(list), 30, 90), trailers: [][2]string{{"x-done", "1"}}},
			body: note + sseEvent(listFiltered),
		},
		{
			name: "empty_final_chunk_and_duplicate",
			meta: meta,
			cfg:  func(c *envoyConfig) { c.duplicateFinal = true },
			up:   upstream{headers: sseHeaders(), chunks: []string{note + sseEvent(list), ""}},
			body: note + sseEvent(listFiltered),
		},
		{
			name: "two_list_events_for_one_id",
			meta: meta,
			up:   upstream{headers: sseHeaders(), chunks: []string{sseEvent(list) + sseEvent(list)}},
			body: sseEvent(listFiltered) + sseEvent(listFiltered),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

// TestSSEEveryBoundary splits the rich stream at every offset, and at
// every pair of offsets in a shorter stream, and expects the same output as
// the whole stream gives. This covers splits inside line ends (CRLF),
// inside "data:", inside UTF-8 sequences and inside JSON tokens.
func TestSSEEveryBoundary(t *testing.T) {
	srv := newTestServer(t, defaultPolicy(), nil)
	cfg := envoyConfig{metadata: listMetadata(req("tools/list", "1"))}
	for i := 1; i < len(richStream); i++ {
		v := runMem(t, srv, cfg, upstream{headers: sseHeaders(), chunks: split(richStream, i)})
		if string(v.body) != richStreamFiltered || len(v.violations) > 0 {
			t.Fatalf("split at %d: %q (violations %q)", i, v.body, v.violations)
		}
	}
	short := "id: 1\r\ndata: " + toolsBody("1", "delete_repo", "s\u00e9arch") + "\r\n\r\n"
	shortWant := "id: 1\r\ndata: " + toolsBody("1") + "\r\n\r\n"
	for i := 1; i < len(short); i++ {
		for j := i + 1; j < len(short); j++ {
			v := runMem(t, srv, cfg, upstream{headers: sseHeaders(), chunks: split(short, i, j)})
			if string(v.body) != shortWant {
				t.Fatalf("split at %d,%d: %q", i, j, v.body)
			}
		}
	}
}

// TestSSEEventsLeaveWhenComplete drives the processor chunk by chunk over
// gRPC: a complete event must come back before the next chunk is sent,
// and an event is held only until its end arrives.
func TestSSEEventsLeaveWhenComplete(t *testing.T) {
	note := sseEvent(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":5}}`)
	list := sseEvent(toolsBody("1", "get_weather", "delete_repo"))
	env := startServer(t, newTestServer(t, defaultPolicy(), nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := env.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	meta := listMetadata(req("tools/list", "1"))
	st := newEnvoyState(envoyConfig{metadata: meta}, upstream{headers: sseHeaders(), chunks: []string{"x"}})
	send := func(m *extprocv3.ProcessingRequest) {
		t.Helper()
		m.MetadataContext = meta
		st.sent(m)
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	body := func(b string, eos bool) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: eos},
		}}
	}
	expect := func(want string, eos bool) {
		t.Helper()
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		st.apply(r)
		sr := r.GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		if sr == nil || string(sr.GetBody()) != want || sr.GetEndOfStream() != eos {
			t.Fatalf("reply %v, want streamed body %q eos=%v", r, want, eos)
		}
	}
	send(st.messages()[0])
	r, err := stream.Recv()
	if err != nil || r.GetResponseHeaders() == nil {
		t.Fatalf("header reply %v %v", r, err)
	}
	st.apply(r)
	// A notification and the first 40 bytes of the list event: the
	// notification leaves now, the partial list waits.
	send(body(note+list[:40], false))
	expect(note, false)
	// The rest of the list event and a second notification in one chunk.
	send(body(list[40:]+note, false))
	expect(sseEvent(toolsBody("1", "get_weather"))+note, false)
	send(body("", true))
	expect("", true)
	if !st.complete || len(st.view.violations) > 0 {
		t.Fatalf("complete=%v violations=%q", st.complete, st.view.violations)
	}
	_ = stream.CloseSend()
}

// TestSSEZeroCopy checks that complete, unchanged events arriving in one
// chunk go back as that chunk's bytes, without a copy.
func TestSSEZeroCopy(t *testing.T) {
	var f filter
	f.init(newTestServer(t, defaultPolicy(), nil), ListContext{Requests: []ListRequest{req("tools/list", "1")}}, "")
	var s sseStream
	s.init(&f, 1<<20)
	chunk := []byte(sseEvent(`{"jsonrpc":"2.0","method":"a"}`) + sseEvent(`{"jsonrpc":"2.0","method":"b"}`) + "data: {")
	out := s.write(context.Background(), chunk)
	if len(out) == 0 || &out[0] != &chunk[0] || len(out) != len(chunk)-len("data: {") {
		t.Fatalf("output does not alias the chunk: %q", out)
	}
	if got := string(s.pend); got != "data: {" {
		t.Fatalf("pending %q", got)
	}
	for i := range 3 {
		n := strconv.Itoa(i)
		if got := string(s.write(context.Background(), []byte(`"jsonrpc":"2.0","method":"`+n+`"}`+"\n\ndata: {"))); got != `data: {"jsonrpc":"2.0","method":"`+n+`"}`+"\n\n" {
			t.Fatalf("event %d: %q", i, got)
		}
	}
}
