package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// This file is a test double of Envoy's ext_proc filter on the response
// path, in the configuration the package documents (request phase off,
// response headers SEND, response body FULL_DUPLEX_STREAMED, trailers
// SEND). It follows what Envoy v1.40's ext_proc filter does:
//
//   - one stream per HTTP response, opened at the response headers (the
//     first message), protocol_config only in it, metadata_context on every
//     message, lower-case keys with values in raw_value, :status included,
//     end_of_stream on the headers when there is no body;
//   - body chunks sent as they arrive, without waiting for the header reply;
//     trailers sent when the upstream has them (then the last chunk has
//     end_of_stream false);
//   - the header reply must come first and within message_timeout (else
//     504); it may be an immediate response; anything else is spurious
//     (status_on_error before the headers left, a reset after);
//   - body replies must be streamed_response (M:N); the last carries
//     end_of_stream, allowed only after Envoy sent end_of_stream, or the
//     trailers reply ends the response when Envoy sent trailers; no body
//     timer;
//   - headers leave with the first injected chunk; content-length is
//     stripped at header time unless allow_content_length_header, and is
//     dropped from set_headers while stripping; set_headers reads raw_value
//     only, overwrites (append false), and cannot touch host, :authority,
//     :scheme, :method or x-envoy-*;
//   - mode_override is ignored (static FULL_DUPLEX_STREAMED);
//   - an immediate response before the headers left is the client's
//     response (status < 200 becomes 200); after, a reset;
//   - a gRPC error is status_on_error (or a reset after the headers left);
//     the processor ending the stream with OK before the response is
//     complete is fail-open (recorded, and a test failure);
//   - the close is a half-close followed by a reset (the server sees
//     Canceled).

// upstream is the response the upstream sends through Envoy.
type upstream struct {
	headers  [][2]string // lower-case, with :status
	chunks   []string
	trailers [][2]string
}

// envoyConfig is the part of the ext_proc filter configuration the double
// honours.
type envoyConfig struct {
	metadata           *corev3.Metadata                 // forwarded on every message; nil: none
	protocol           *extprocv3.ProtocolConfiguration // default FULL_DUPLEX_STREAMED response body
	headerTimeout      time.Duration                    // message_timeout (response headers only)
	allowContentLength bool
	duplicateFinal     bool // send the final chunk twice (Envoy #46237)
	statusOnError      int  // default 503
}

// clientView is what the downstream client gets, and the conversation.
type clientView struct {
	status   int
	headers  [][2]string
	body     []byte
	trailers [][2]string
	reset    bool   // the downstream stream was reset
	local    string // response code details of a local reply
	failOpen bool   // the processor ended the stream with OK too early

	sent       []*extprocv3.ProcessingRequest
	received   []*extprocv3.ProcessingResponse
	injected   [][]byte // body of each streamed_response, in order
	violations []string
}

func (c *clientView) header(name string) (string, bool) {
	for _, h := range c.headers {
		if h[0] == name {
			return h[1], true
		}
	}
	return "", false
}

// envoyState applies the processor's replies as Envoy does.
type envoyState struct {
	cfg           envoyConfig
	up            upstream
	view          *clientView
	headers       [][2]string // response headers as they will leave
	headerReplied bool
	released      bool
	sentEOS       bool // Envoy sent end_of_stream (on headers or a chunk)
	sentTrailers  bool
	complete      bool
	statusOnError int
}

func newEnvoyState(cfg envoyConfig, up upstream) *envoyState {
	s := &envoyState{cfg: cfg, up: up, view: &clientView{}, statusOnError: cfg.statusOnError}
	if s.statusOnError == 0 {
		s.statusOnError = 503
	}
	s.headers = slices.Clone(up.headers)
	if !cfg.allowContentLength {
		s.headers = slices.DeleteFunc(s.headers, func(h [2]string) bool { return h[0] == "content-length" })
	}
	return s
}

// messages returns what Envoy sends for the upstream response, in order.
func (s *envoyState) messages() []*extprocv3.ProcessingRequest {
	pc := s.cfg.protocol
	if pc == nil {
		pc = &extprocv3.ProtocolConfiguration{ResponseBodyMode: procv3.ProcessingMode_FULL_DUPLEX_STREAMED}
	}
	hm := &corev3.HeaderMap{}
	for _, h := range s.up.headers {
		if h[0] == "content-length" && !s.cfg.allowContentLength {
			continue // stripped at encodeHeaders in FULL_DUPLEX_STREAMED
		}
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: h[0], RawValue: []byte(h[1])})
	}
	noBody := len(s.up.chunks) == 0 && len(s.up.trailers) == 0
	msgs := []*extprocv3.ProcessingRequest{{
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: hm, EndOfStream: noBody,
		}},
		ProtocolConfig: pc,
	}}
	for i, c := range s.up.chunks {
		eos := i == len(s.up.chunks)-1 && len(s.up.trailers) == 0
		msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: []byte(c), EndOfStream: eos},
		}})
		if eos && s.cfg.duplicateFinal {
			msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: []byte(c), EndOfStream: true},
			}})
		}
	}
	if len(s.up.trailers) > 0 {
		tm := &corev3.HeaderMap{}
		for _, h := range s.up.trailers {
			tm.Headers = append(tm.Headers, &corev3.HeaderValue{Key: h[0], RawValue: []byte(h[1])})
		}
		msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{
			ResponseTrailers: &extprocv3.HttpTrailers{Trailers: tm},
		}})
	}
	for _, m := range msgs {
		if s.cfg.metadata != nil {
			m.MetadataContext = s.cfg.metadata
		}
	}
	return msgs
}

// sent notes a message Envoy sent.
func (s *envoyState) sent(m *extprocv3.ProcessingRequest) {
	s.view.sent = append(s.view.sent, m)
	switch r := m.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		s.sentEOS = s.sentEOS || r.ResponseHeaders.GetEndOfStream()
	case *extprocv3.ProcessingRequest_ResponseBody:
		s.sentEOS = s.sentEOS || r.ResponseBody.GetEndOfStream()
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		s.sentTrailers = true
	}
}

func (s *envoyState) violate(format string, args ...any) {
	s.view.violations = append(s.view.violations, fmt.Sprintf(format, args...))
}

// fail ends the response as Envoy does on a processor error.
func (s *envoyState) fail(details string, code int) {
	s.complete = true
	if s.released {
		s.view.reset = true
		return
	}
	s.local(code, nil, []byte("ext_proc error"), details)
}

func (s *envoyState) local(code int, hs [][2]string, body []byte, details string) {
	if code < 200 {
		code = 200
	}
	s.view.status = code
	s.view.headers = append([][2]string{{":status", strconv.Itoa(code)}}, hs...)
	if _, ok := s.view.header("content-type"); !ok {
		s.view.headers = append(s.view.headers, [2]string{"content-type", "text/plain"})
	}
	s.view.body = body
	s.view.local = details
	s.complete = true
}

func (s *envoyState) release() {
	if s.released {
		return
	}
	s.released = true
	s.view.headers = s.headers
	for _, h := range s.headers {
		if h[0] == ":status" {
			s.view.status, _ = strconv.Atoi(h[1])
		}
	}
}

// apply handles one reply; it reports whether the response is complete.
func (s *envoyState) apply(r *extprocv3.ProcessingResponse) bool {
	s.view.received = append(s.view.received, r)
	if s.complete {
		s.violate("reply after the response completed: %T", r.GetResponse())
		return true
	}
	if r.GetModeOverride() != nil {
		s.violate("mode_override sent; ignored with a static FULL_DUPLEX_STREAMED body mode")
	}
	if !s.headerReplied {
		switch x := r.GetResponse().(type) {
		case *extprocv3.ProcessingResponse_ResponseHeaders:
			s.headerReplied = true
			s.mutate(x.ResponseHeaders.GetResponse())
			if bm := x.ResponseHeaders.GetResponse().GetBodyMutation(); bm != nil {
				s.violate("body_mutation in a header reply")
			}
			if s.sentEOS && len(s.up.chunks) == 0 && len(s.up.trailers) == 0 {
				s.release()
				s.complete = true
			}
		case *extprocv3.ProcessingResponse_ImmediateResponse:
			s.immediate(x.ImmediateResponse)
		default:
			s.violate("spurious reply while the header reply is pending: %T", r.GetResponse())
			s.fail("ext_proc_error_spurious_message", s.statusOnError)
		}
		return s.complete
	}
	switch x := r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_ResponseBody:
		sr := x.ResponseBody.GetResponse().GetBodyMutation().GetStreamedResponse()
		if sr == nil {
			s.violate("body reply without streamed_response in FULL_DUPLEX_STREAMED")
			s.fail("ext_proc_error_spurious_message", s.statusOnError)
			return true
		}
		if hm := x.ResponseBody.GetResponse().GetHeaderMutation(); hm != nil {
			s.violate("header_mutation in a body reply in FULL_DUPLEX_STREAMED")
		}
		s.release()
		s.view.injected = append(s.view.injected, sr.GetBody())
		s.view.body = append(s.view.body, sr.GetBody()...)
		if sr.GetEndOfStream() {
			if !s.sentEOS || s.sentTrailers {
				s.violate("streamed_response end_of_stream before Envoy's end_of_stream")
				s.fail("ext_proc_error_spurious_message", s.statusOnError)
				return true
			}
			s.complete = true
		}
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		if !s.sentTrailers {
			s.violate("trailers reply without trailers")
			s.fail("ext_proc_error_spurious_message", s.statusOnError)
			return true
		}
		s.release()
		s.view.trailers = s.up.trailers
		s.complete = true
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		s.immediate(x.ImmediateResponse)
	default:
		s.violate("spurious reply in the body phase: %T", r.GetResponse())
		s.fail("ext_proc_error_spurious_message", s.statusOnError)
	}
	return s.complete
}

func (s *envoyState) immediate(ir *extprocv3.ImmediateResponse) {
	if s.released {
		s.complete = true
		s.view.reset = true
		return
	}
	var hs [][2]string
	for _, h := range ir.GetHeaders().GetSetHeaders() {
		hs = append(hs, [2]string{strings.ToLower(h.GetHeader().GetKey()), string(h.GetHeader().GetRawValue())})
	}
	s.local(int(ir.GetStatus().GetCode()), hs, ir.GetBody(), ir.GetDetails())
}

var protectedHeaders = []string{"host", ":authority", ":scheme", ":method", ":status", ":path"}

func protected(name string) bool {
	return slices.Contains(protectedHeaders, name) || strings.HasPrefix(name, "x-envoy-")
}

func (s *envoyState) mutate(cr *extprocv3.CommonResponse) {
	hm := cr.GetHeaderMutation()
	for _, name := range hm.GetRemoveHeaders() {
		name = strings.ToLower(name)
		if protected(name) {
			continue
		}
		s.headers = slices.DeleteFunc(s.headers, func(h [2]string) bool { return h[0] == name })
	}
	for _, o := range hm.GetSetHeaders() {
		name := strings.ToLower(o.GetHeader().GetKey())
		if protected(name) || name == "content-length" && !s.cfg.allowContentLength {
			continue
		}
		value := string(o.GetHeader().GetRawValue()) // value is ignored
		if !o.GetAppend().GetValue() {
			s.headers = slices.DeleteFunc(s.headers, func(h [2]string) bool { return h[0] == name })
		}
		s.headers = append(s.headers, [2]string{name, value})
	}
}

// endStream handles the end of the processor's side of the stream.
func (s *envoyState) endStream(err error) {
	if s.complete {
		return
	}
	if err == io.EOF {
		// The processor closed with OK: Envoy continues without it, so
		// the rest of the response is not filtered.
		s.view.failOpen = true
		s.complete = true
		return
	}
	s.fail("ext_proc_error_gRPC_error_"+strconv.Itoa(int(status.Code(err))), s.statusOnError)
}

// grpcEnvoy plays Envoy against a processor served over real gRPC.
type grpcEnvoy struct {
	client extprocv3.ExternalProcessorClient
}

// startServer serves srv on 127.0.0.1:0 and returns an Envoy double
// connected to it.
func startServer(t testing.TB, srv *Server) *grpcEnvoy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		<-done
	})
	return &grpcEnvoy{client: extprocv3.NewExternalProcessorClient(conn)}
}

type reply struct {
	r   *extprocv3.ProcessingResponse
	err error
}

// run sends the upstream response through the processor and returns what
// the client gets.
func (e *grpcEnvoy) run(t testing.TB, cfg envoyConfig, up upstream) *clientView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sctx, reset := context.WithCancel(ctx)
	stream, err := e.client.Process(sctx)
	if err != nil {
		t.Fatal(err)
	}
	st := newEnvoyState(cfg, up)
	replies := make(chan reply, 16)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			r, err := stream.Recv()
			replies <- reply{r, err}
			if err != nil {
				return
			}
		}
	}()
	// FULL_DUPLEX_STREAMED: chunks go out as they arrive, without waiting
	// for any reply.
	for _, m := range st.messages() {
		st.sent(m)
		if err := stream.Send(m); err != nil {
			break // the processor ended the stream; its status is read below
		}
	}
	timeout := cfg.headerTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for !st.complete {
		select {
		case rp := <-replies:
			if rp.err != nil {
				st.endStream(rp.err)
				continue
			}
			st.apply(rp.r)
			if st.headerReplied {
				timer.Stop() // no timer on FULL_DUPLEX_STREAMED body messages
			}
		case <-timer.C:
			if !st.headerReplied {
				st.local(504, nil, []byte("ext_proc timeout"), "ext_proc_error_timeout")
			}
		case <-ctx.Done():
			t.Fatalf("processor hung: no complete response after %d replies", len(st.view.received))
		}
	}
	// Envoy's close: half-close, then reset.
	_ = stream.CloseSend()
	reset()
	<-readerDone
	return st.view
}

// memStream is an in-memory ext_proc stream for benchmarks and fuzzing:
// the same Process code path without the transport.
type memStream struct {
	grpc.ServerStream
	ctx  context.Context
	in   []*extprocv3.ProcessingRequest
	out  []*extprocv3.ProcessingResponse
	next int
}

func (m *memStream) Context() context.Context { return m.ctx }

func (m *memStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if m.next == len(m.in) {
		return nil, status.Error(codes.Canceled, "context canceled")
	}
	m.next++
	return m.in[m.next-1], nil
}

func (m *memStream) Send(r *extprocv3.ProcessingResponse) error {
	m.out = append(m.out, r)
	return nil
}

func (m *memStream) SetHeader(metadata.MD) error  { return nil }
func (m *memStream) SendHeader(metadata.MD) error { return nil }
func (m *memStream) SetTrailer(metadata.MD)       {}

// runMem runs one response through srv in memory. Process gets every
// message at once (which FULL_DUPLEX_STREAMED allows) and the replies are
// applied afterwards.
func runMem(t testing.TB, srv *Server, cfg envoyConfig, up upstream) *clientView {
	t.Helper()
	st := newEnvoyState(cfg, up)
	ms := &memStream{ctx: context.Background()}
	for _, m := range st.messages() {
		st.sent(m)
		ms.in = append(ms.in, m)
	}
	err := srv.Process(ms)
	for _, r := range ms.out {
		st.apply(r)
	}
	if !st.complete {
		if err == nil {
			err = errors.New("stream ended without a complete response")
			st.violate("%v", err)
		}
		st.endStream(err)
	}
	return st.view
}
