package extproc

import (
	"context"
	"encoding/base64"
	stdjson "encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite the golden conversations in testdata/conversations")

func TestNew(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without a policy succeeded")
	}
	s, err := New(Options{Policy: defaultPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	if s.maxBuffered != DefaultMaxBufferedBytes || s.maxChunk != DefaultMaxChunkBytes || s.policyTimeout != DefaultPolicyTimeout {
		t.Errorf("defaults: %d %d %v", s.maxBuffered, s.maxChunk, s.policyTimeout)
	}
}

// TestConversationGoldens records whole conversations over gRPC: every
// message each side sent (protojson) and what the client got.
func TestConversationGoldens(t *testing.T) {
	tools := toolsBody("1", "get_weather", "delete_repo", "search")
	tests := []struct {
		name   string
		policy *fakePolicy
		cfg    envoyConfig
		up     upstream
	}{
		{"json_filtered", nil, envoyConfig{metadata: listMetadata(req("tools/list", "1"))},
			upstream{headers: jsonHeaders([2]string{"content-length", strconv.Itoa(len(tools))}, [2]string{"mcp-session-id", "s-1"}), chunks: split(tools, 100)}},
		{"json_trailers", nil, envoyConfig{metadata: listMetadata(req("tools/list", "1"))},
			upstream{headers: jsonHeaders(), chunks: []string{tools}, trailers: [][2]string{{"x-upstream-done", "1"}}}},
		{"sse_filtered", nil, envoyConfig{metadata: listMetadata(req("tools/list", "1"))},
			upstream{headers: sseHeaders(), chunks: split(richStream, 60, 200, 260)}},
		{"policy_error", &fakePolicy{err: errPolicy}, envoyConfig{metadata: listMetadata(req("tools/list", "1"))},
			upstream{headers: jsonHeaders(), chunks: []string{tools}}},
		{"missing_metadata", nil, envoyConfig{},
			upstream{headers: sseHeaders(), chunks: []string{sseEvent(tools)}}},
		{"gzip_immediate", nil, envoyConfig{metadata: listMetadata(req("tools/list", "1"))},
			upstream{headers: jsonHeaders([2]string{"content-encoding", "gzip"}), chunks: []string{"\x1f\x8b"}}},
		{"pass_through", nil, envoyConfig{metadata: authzOnlyMetadata(), allowContentLength: true},
			upstream{headers: jsonHeaders([2]string{"content-length", "11"}), chunks: []string{`{"a":`, `"b"}`, ""}}},
		{"buffered_mode_refused", nil, envoyConfig{metadata: listMetadata(req("tools/list", "1")),
			protocol: &extprocv3.ProtocolConfiguration{ResponseBodyMode: procv3.ProcessingMode_BUFFERED}},
			upstream{headers: jsonHeaders(), chunks: []string{tools}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol := tt.policy
			if pol == nil {
				pol = defaultPolicy()
			}
			v := startServer(t, newTestServer(t, pol, nil)).run(t, tt.cfg, tt.up)
			if len(v.violations) > 0 || v.failOpen {
				t.Fatalf("violations %q failOpen=%v", v.violations, v.failOpen)
			}
			golden(t, filepath.Join("testdata", "conversations", tt.name+".json"), v)
		})
	}
}

// golden compares a conversation with its file (rewritten with -update).
// Messages are protojson, made canonical by one encoding/json round trip
// (protojson output is deliberately unstable).
func golden(t *testing.T, path string, v *clientView) {
	t.Helper()
	conv := map[string]any{}
	msgs := func(ms []proto.Message) []any {
		out := []any{}
		for _, m := range ms {
			raw, err := protojson.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var x any
			if err := stdjson.Unmarshal(raw, &x); err != nil {
				t.Fatal(err)
			}
			annotateBytes(x)
			out = append(out, x)
		}
		return out
	}
	var sent, received []proto.Message
	for _, m := range v.sent {
		sent = append(sent, m)
	}
	for _, m := range v.received {
		received = append(received, m)
	}
	conv["envoy_to_processor"] = msgs(sent)
	conv["processor_to_envoy"] = msgs(received)
	hs := []string{}
	for _, h := range v.headers {
		hs = append(hs, h[0]+": "+h[1])
	}
	conv["client"] = map[string]any{"status": v.status, "headers": hs, "body": string(v.body), "local_reply": v.local, "reset": v.reset}
	got, err := stdjson.MarshalIndent(conv, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden %s: %v (run go test -update)", path, err)
	}
	if string(got) != string(want) {
		t.Errorf("conversation differs from %s (run go test -update and review the diff):\n%s", path, got)
	}
}

// annotateBytes adds a readable "<name>Text" next to every base64 bytes
// field (bodies, raw header values) of a protojson value.
func annotateBytes(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "body" || k == "rawValue") {
				if b, err := base64.StdEncoding.DecodeString(s); err == nil {
					v[k+"Text"] = string(b)
				}
				continue
			}
			annotateBytes(x)
		}
	case []any:
		for _, x := range v {
			annotateBytes(x)
		}
	}
}

// TestProtocolErrors sends message sequences that do not follow the
// configured mode: the stream ends with a gRPC error, which Envoy answers
// with status_on_error, and the response is never forwarded unfiltered.
func TestProtocolErrors(t *testing.T) {
	meta := listMetadata(req("tools/list", "1"))
	headers := func() *extprocv3.ProcessingRequest {
		return newEnvoyState(envoyConfig{metadata: meta}, upstream{headers: jsonHeaders(), chunks: []string{"x"}}).messages()[0]
	}
	body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte("{}"), EndOfStream: true}}}
	tests := []struct {
		name string
		msgs []*extprocv3.ProcessingRequest
		code codes.Code
	}{
		{"body_before_headers", []*extprocv3.ProcessingRequest{body}, codes.InvalidArgument},
		{"trailers_before_headers", []*extprocv3.ProcessingRequest{{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}}}, codes.InvalidArgument},
		{"headers_twice", []*extprocv3.ProcessingRequest{headers(), headers()}, codes.InvalidArgument},
		{"request_body", []*extprocv3.ProcessingRequest{{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{}}}}, codes.FailedPrecondition},
		{"streamed_mode", []*extprocv3.ProcessingRequest{func() *extprocv3.ProcessingRequest {
			m := headers()
			m.ProtocolConfig = &extprocv3.ProtocolConfiguration{ResponseBodyMode: procv3.ProcessingMode_STREAMED}
			return m
		}()}, codes.FailedPrecondition},
		{"request_body_mode", []*extprocv3.ProcessingRequest{func() *extprocv3.ProcessingRequest {
			m := headers()
			m.ProtocolConfig.RequestBodyMode = procv3.ProcessingMode_BUFFERED
			return m
		}()}, codes.FailedPrecondition},
		{"observability_mode", []*extprocv3.ProcessingRequest{func() *extprocv3.ProcessingRequest {
			m := headers()
			m.ObservabilityMode = true
			return m
		}()}, codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			env := startServer(t, newTestServer(t, defaultPolicy(), rec))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stream, err := env.client.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.msgs {
				if err := stream.Send(m); err != nil {
					break
				}
			}
			var last error
			for {
				r, err := stream.Recv()
				if err != nil {
					last = err
					break
				}
				if r.GetResponseBody() != nil {
					t.Fatalf("body forwarded: %v", r)
				}
			}
			if status.Code(last) != tt.code {
				t.Fatalf("stream ended with %v, want %v", last, tt.code)
			}
			if got := rec.outcomes(); len(got) != 1 || got[0].Reason != ReasonProtocol {
				t.Errorf("outcomes %v", got)
			}
		})
	}
}

// TestRequestPhaseAnswered: a deployment that sends request headers and
// trailers still works; they are answered unchanged, and client request
// headers named like the metadata keys change nothing.
func TestRequestPhaseAnswered(t *testing.T) {
	env := startServer(t, newTestServer(t, defaultPolicy(), nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := env.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	meta := listMetadata(req("tools/list", "1"))
	forged := &corev3.HeaderMap{}
	for _, h := range [][2]string{
		{":method", "POST"}, {":path", "/mcp"}, {"list_filter", "false"}, {"mcpauthz_list", `{"v":1,"requests":[]}`},
		{"x-envoy-dynamic-metadata", `{"envoy.filters.http.ext_authz":{"list_filter":false}}`},
	} {
		forged.Headers = append(forged.Headers, &corev3.HeaderValue{Key: h[0], RawValue: []byte(h[1])})
	}
	up := upstream{headers: jsonHeaders(), chunks: []string{toolsBody("1", "delete_repo", "search")}}
	st := newEnvoyState(envoyConfig{metadata: meta}, up)
	response := st.messages()
	response[0].ProtocolConfig = nil // only in the first message of the stream
	in := append([]*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: forged}},
			ProtocolConfig: &extprocv3.ProtocolConfiguration{ResponseBodyMode: procv3.ProcessingMode_FULL_DUPLEX_STREAMED}},
		{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}},
	}, response...)
	for _, m := range in {
		m.MetadataContext = meta
		st.sent(m)
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := stream.Recv(); err != nil || r.GetRequestHeaders() == nil || r.GetRequestHeaders().GetResponse() != nil {
		t.Fatalf("request headers reply %v %v", r, err)
	}
	if r, err := stream.Recv(); err != nil || r.GetRequestTrailers() == nil {
		t.Fatalf("request trailers reply %v %v", r, err)
	}
	for !st.complete {
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		st.apply(r)
	}
	if got, want := string(st.view.body), toolsBody("1", "search"); got != want || len(st.view.violations) > 0 {
		t.Fatalf("body %s, want %s (violations %q)", got, want, st.view.violations)
	}
	_ = stream.CloseSend()
}

// TestStreamEnd checks how Process ends: Envoy's half-close and reset are
// a normal end; other errors are returned; Process never returns by itself
// while Envoy keeps the stream open.
func TestStreamEnd(t *testing.T) {
	srv := newTestServer(t, defaultPolicy(), nil)
	for name, end := range map[string]error{
		"canceled":     status.Error(codes.Canceled, "context canceled"),
		"ctx_canceled": context.Canceled,
		"half_close":   io.EOF,
	} {
		t.Run(name, func(t *testing.T) {
			ms := &endingStream{memStream: memStream{ctx: context.Background()}, end: end}
			if err := srv.Process(ms); err != nil {
				t.Fatalf("Process = %v, want nil", err)
			}
		})
	}
	ms := &endingStream{memStream: memStream{ctx: context.Background()}, end: status.Error(codes.Unavailable, "transport closing")}
	if err := srv.Process(ms); status.Code(err) != codes.Unavailable {
		t.Fatalf("Process = %v, want Unavailable", err)
	}

	// Over gRPC: the handler's result, seen through an interceptor, after
	// Envoy closes mid-body.
	results := make(chan error, 1)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		err := h(srv, ss)
		results <- err
		return err
	}))
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	defer func() { gs.Stop(); <-done }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := newEnvoyState(envoyConfig{metadata: listMetadata(req("tools/list", "1"))}, upstream{headers: sseHeaders(), chunks: []string{"data: {", "}\n\n"}})
	msgs := st.messages()
	for _, m := range msgs[:2] {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-results:
		t.Fatalf("Process returned %v while the stream was open", err)
	default:
	}
	_ = stream.CloseSend()
	cancel()
	if err := <-results; err != nil {
		t.Fatalf("Process after Envoy's close = %v, want nil", err)
	}
}

type endingStream struct {
	memStream
	end error
}

func (e *endingStream) Recv() (*extprocv3.ProcessingRequest, error) { return nil, e.end }

// panickingRecorder makes the processor itself panic.
type panickingRecorder struct{}

func (panickingRecorder) Record(context.Context, Outcome) { panic("recorder bug") }

func TestPanicIsAnError(t *testing.T) {
	srv, err := New(Options{Policy: defaultPolicy(), Recorder: panickingRecorder{}})
	if err != nil {
		t.Fatal(err)
	}
	v := startServer(t, srv).run(t, envoyConfig{metadata: listMetadata(req("tools/list", "1"))},
		upstream{headers: jsonHeaders(), chunks: []string{toolsBody("1", "delete_repo")}})
	if v.status != 503 || v.local != "ext_proc_error_gRPC_error_13" || strings.Contains(string(v.body), "delete_repo") {
		t.Fatalf("status %d local %q body %q", v.status, v.local, v.body)
	}
}

// TestLargeLists filters 50- and 1000-tool lists over gRPC, in one policy
// evaluation each.
func TestLargeLists(t *testing.T) {
	for _, n := range []int{50, 1000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			body, allowed := manyTools(n)
			pol := &fakePolicy{allow: allowed}
			for _, transport := range []string{"json", "sse"} {
				srv := newTestServer(t, pol, nil)
				up := upstream{headers: jsonHeaders(), chunks: split(body, len(body)/3, 2*len(body)/3)}
				if transport == "sse" {
					up = upstream{headers: sseHeaders(), chunks: split("data: "+body+"\n\n", 16<<10, 32<<10, 48<<10)}
				}
				v := startServer(t, srv).run(t, envoyConfig{metadata: listMetadata(req("tools/list", "7"))}, up)
				out := string(v.body)
				if transport == "sse" {
					out = strings.TrimSuffix(strings.TrimPrefix(out, "data: "), "\n\n")
				}
				var res struct {
					Result struct {
						Tools []struct {
							Name        string
							InputSchema map[string]any
						}
						NextCursor string
					}
				}
				if err := stdjson.Unmarshal([]byte(out), &res); err != nil {
					t.Fatalf("%s: output is not JSON: %v", transport, err)
				}
				if len(res.Result.Tools) != len(allowed) || res.Result.NextCursor != "page-2" {
					t.Fatalf("%s: %d tools, cursor %q; want %d", transport, len(res.Result.Tools), res.Result.NextCursor, len(allowed))
				}
				for _, tool := range res.Result.Tools {
					if !allowed[tool.Name] || tool.InputSchema["type"] != "object" {
						t.Fatalf("%s: unexpected tool %+v", transport, tool)
					}
				}
				for _, chunk := range v.injected {
					if len(chunk) > DefaultMaxChunkBytes {
						t.Fatalf("%s: injected chunk of %d bytes", transport, len(chunk))
					}
				}
			}
			if calls := pol.calls(); len(calls) != 2 || len(calls[0].Items) != n {
				t.Fatalf("%d policy calls", len(calls))
			}
		})
	}
}

// TestPolicySeesListContext: the policy gets the metadata's context and
// the list as documented.
func TestPolicySeesListContext(t *testing.T) {
	pol := defaultPolicy()
	v := runMem(t, newTestServer(t, pol, nil), envoyConfig{metadata: listMetadata(req("tools/list", `"x"`))},
		upstream{headers: jsonHeaders(), chunks: []string{toolsBody(`"x"`, "search")}})
	if len(v.violations) > 0 {
		t.Fatal(v.violations)
	}
	pol.mu.Lock()
	defer pol.mu.Unlock()
	lc, list := pol.lcs[0], pol.lists[0]
	if lc.ProtocolVersion != "2025-06-18" || lc.PolicyRevision != "rev-1" || string(lc.Input) != testInput ||
		len(lc.Requests) != 1 || string(lc.Requests[0].ID) != `"x"` {
		t.Errorf("list context %+v", lc)
	}
	if list.Kind != KindTools || string(list.ID) != `"x"` || len(list.Items) != 1 || list.Items[0] != (Item{Name: "search"}) {
		t.Errorf("list %+v", list)
	}
}

// TestHeaderValueField: senders that fill value instead of raw_value are
// read too.
func TestHeaderValueField(t *testing.T) {
	if got := headerValue(&corev3.HeaderValue{Key: "content-type", Value: "text/event-stream"}); got != "text/event-stream" {
		t.Fatal(got)
	}
	if got := headerValue(&corev3.HeaderValue{Key: "content-type", Value: "x", RawValue: []byte("application/json")}); got != "application/json" {
		t.Fatal(got)
	}
}

func TestReasonsClosed(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons() {
		if seen[r] || r == "" || strings.ToLower(string(r)) != string(r) {
			t.Errorf("reason %q", r)
		}
		seen[r] = true
	}
	if !errors.Is(ErrNoListFilter, ErrNoListFilter) || len(seen) != 9 {
		t.Errorf("%d reasons", len(seen))
	}
}
