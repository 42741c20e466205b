package standin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
)

// ExtProc is the composite filter that creates an ext_proc filter for the
// requests its matcher matches, processing their responses in
// FULL_DUPLEX_STREAMED mode over a real gRPC stream, the way Envoy v1.40's
// ext_proc filter does:
//
//   - the stream opens at the response headers, the first message, which
//     alone carries protocol_config; every message carries metadata_context
//     with the forwarded namespaces of the stream's dynamic metadata;
//     headers are lower-case with values in raw_value, :status included,
//     end_of_stream set when there is no body;
//   - content-length is removed at header time (unless
//     allow_content_length_header) and dropped from set_headers;
//   - body chunks are sent as they arrive from the upstream, without waiting
//     for the header reply; the last carries end_of_stream (an empty one
//     when the upstream's end comes after its last bytes), or the upstream's
//     trailers follow in a trailers message;
//   - the header reply must come first, within message_timeout (else 504);
//     it may be an immediate_response; anything else is spurious
//     (status_on_error);
//   - body replies must be streamed_response, any number; the one with
//     end_of_stream, allowed only after Envoy's end_of_stream, or the
//     trailers reply ends the response; no timer on them;
//   - the response headers go downstream with the first streamed_response:
//     until then every failure is a local reply (status_on_error, 504, or
//     the immediate_response, status < 200 made 200), after it a reset;
//   - mode_override is ignored (static FULL_DUPLEX_STREAMED);
//   - the close is a half-close followed by a reset (the processor sees
//     Canceled).
//
// Where Envoy would continue without the processor (the processor ending
// the stream with OK before the response is complete: fail-open), the
// stand-in fails closed instead (a local reply or a reset) and records
// FailOpen on the Exchange, so that a test can assert it never happens.
type ExtProc struct {
	cfg    ExtProcConfig
	client extprocv3.ExternalProcessorClient
	log    *slog.Logger

	mu        sync.Mutex
	exchanges []Exchange
}

// Exchange is one ext_proc conversation: one HTTP response.
type Exchange struct {
	// Stream is the Stream.ID of the request.
	Stream uint64
	// Sent and Received are the messages of the conversation, in order.
	Sent     []*extprocv3.ProcessingRequest
	Received []*extprocv3.ProcessingResponse
	// Err is why the response failed (nil when it completed): a gRPC
	// error, a spurious reply, a timeout, an upstream read error.
	Err error
	// Status is the status of a local reply the filter gave instead of the
	// upstream's response (an immediate_response included); 0 otherwise.
	Status int
	// Reset is set when the response failed after its headers had gone
	// downstream: the client's response is cut off.
	Reset bool
	// FailOpen is set when the processor ended the stream with OK before
	// the response was complete (Envoy would pass the rest unprocessed).
	FailOpen bool
}

// NewExtProc returns the filter opening its streams over conn.
func NewExtProc(cfg ExtProcConfig, conn grpc.ClientConnInterface, log *slog.Logger) *ExtProc {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ExtProc{cfg: cfg, client: extprocv3.NewExternalProcessorClient(conn), log: log}
}

// Exchanges returns a copy of the conversations that ended so far.
func (e *ExtProc) Exchanges() []Exchange {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.exchanges)
}

// Factory is the FilterFactory of the filter.
func (e *ExtProc) Factory(*Stream) Filter { return extProcFilter{e: e} }

type extProcFilter struct{ e *ExtProc }

func (extProcFilter) DecodeHeaders(context.Context, *Stream) *LocalReply { return nil }

// matches is the composite filter's matcher on the stream's dynamic
// metadata.
func (e *ExtProc) matches(s *Stream) bool {
	v, ok := s.DynamicMetadata[e.cfg.MatchNamespace].GetFields()[e.cfg.MatchKey]
	if !ok {
		return false
	}
	_, isBool := v.GetKind().(*structpb.Value_BoolValue)
	return isBool && v.GetBoolValue() == e.cfg.MatchValue
}

func (f extProcFilter) EncodeHeaders(ctx context.Context, s *Stream) *LocalReply {
	e := f.e
	if !e.matches(s) {
		return nil
	}
	ctx, reset := context.WithCancel(ctx)
	x := &exchange{
		e: e, s: s, up: s.Response.Body, reset: reset,
		replies:  make(chan reply, 16),
		stop:     make(chan struct{}),
		pumpDone: make(chan struct{}),
		recvDone: make(chan struct{}),
		rec:      Exchange{Stream: s.ID},
	}
	// Whatever happens, the proxy closes the body it ends up with: the
	// exchange is that body, so its Close ends the conversation.
	s.Response.Body = x
	stream, err := e.client.Process(ctx)
	if err != nil {
		close(x.pumpDone)
		close(x.recvDone)
		return x.localFailure(fmt.Errorf("open stream: %w", err), e.cfg.StatusOnError)
	}
	x.stream = stream
	go x.receive()

	hdrs, noBody := x.responseHeaders()
	first := &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: hdrs, EndOfStream: noBody,
		}},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{ResponseBodyMode: procv3.ProcessingMode_FULL_DUPLEX_STREAMED},
	}
	if noBody {
		x.noBody = true
		x.sentEOS.Store(true)
	}
	if err := x.send(first); err != nil {
		close(x.pumpDone)
		return x.localFailure(x.sendError(err), e.cfg.StatusOnError)
	}
	// FULL_DUPLEX_STREAMED: the body goes out as it arrives, without
	// waiting for the header reply.
	if noBody {
		close(x.pumpDone)
	} else {
		go x.pump()
	}

	timer := time.NewTimer(e.cfg.MessageTimeout)
	defer timer.Stop()
	for !x.headerReplied {
		select {
		case rp := <-x.replies:
			if lr := x.beforeRelease(rp); lr != nil {
				return lr
			}
		case <-timer.C:
			return x.localFailure(errors.New("ext_proc message_timeout expired"), http.StatusGatewayTimeout)
		}
	}
	// The headers leave with the first injected chunk: hold them until the
	// processor sends body data, ends the response, or fails.
	for !x.released && !x.complete {
		if lr := x.beforeRelease(<-x.replies); lr != nil {
			return lr
		}
	}
	x.released = true
	s.Response.Header = x.header
	return nil
}

type reply struct {
	r   *extprocv3.ProcessingResponse
	err error
}

// exchange is the state of one conversation. Everything but sentEOS,
// sentTrailers and the record's Sent list is touched only by the proxy's
// goroutine (EncodeHeaders, then the body's Read and Close).
type exchange struct {
	e      *ExtProc
	s      *Stream
	up     io.ReadCloser // the upstream's body
	stream extprocv3.ExternalProcessor_ProcessClient
	reset  context.CancelFunc

	replies  chan reply
	stop     chan struct{} // closed by Close: the goroutines give up
	pumpDone chan struct{}
	recvDone chan struct{}

	sentEOS, sentTrailers atomic.Bool

	header        http.Header // the response headers as they will leave
	noBody        bool        // the headers message had end_of_stream
	immediate     *LocalReply // the processor's immediate_response
	headerReplied bool
	released      bool
	complete      bool
	failed        error
	pending       []byte
	closeOnce     sync.Once

	mu  sync.Mutex // guards rec
	rec Exchange
}

// responseHeaders returns the header message's map and strips
// content-length from the response, as Envoy does at encodeHeaders time.
func (x *exchange) responseHeaders() (*corev3.HeaderMap, bool) {
	r := x.s.Response
	x.header = r.Header.Clone()
	if x.header == nil {
		x.header = http.Header{}
	}
	cl := x.header.Get("Content-Length")
	noBody := cl == "0" || r.Body == nil || r.Body == http.NoBody
	if !x.e.cfg.AllowContentLengthHeader {
		x.header.Del("Content-Length")
	}
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte(strconv.Itoa(r.Status))}}}
	names := make([]string, 0, len(x.header))
	for k := range x.header {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		for _, v := range x.header[k] {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: strings.ToLower(k), RawValue: []byte(v)})
		}
	}
	return hm, noBody
}

// metadata is the metadata_context of every message: the forwarded
// namespaces of the stream's dynamic metadata.
func (x *exchange) metadata() *corev3.Metadata {
	var md *corev3.Metadata
	for _, ns := range x.e.cfg.ForwardingNamespaces {
		if st, ok := x.s.DynamicMetadata[ns]; ok {
			if md == nil {
				md = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
			}
			md.FilterMetadata[ns] = st
		}
	}
	return md
}

func (x *exchange) send(m *extprocv3.ProcessingRequest) error {
	m.MetadataContext = x.metadata()
	x.mu.Lock()
	x.rec.Sent = append(x.rec.Sent, m)
	x.mu.Unlock()
	return x.stream.Send(m)
}

// sendError turns a failed Send into the stream's status: grpc-go reports
// io.EOF from Send when the stream ended, and the status from Recv.
func (x *exchange) sendError(err error) error {
	if err != io.EOF {
		return err
	}
	select {
	case rp := <-x.replies:
		if rp.err != nil && rp.err != io.EOF {
			return rp.err
		}
	case <-time.After(time.Second):
	}
	return errors.New("ext_proc stream ended while sending")
}

// receive reads the processor's replies until the stream ends.
func (x *exchange) receive() {
	defer close(x.recvDone)
	for {
		r, err := x.stream.Recv()
		select {
		case x.replies <- reply{r, err}:
		case <-x.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// pump sends the upstream's body to the processor as it arrives. The
// upstream's end is end_of_stream on the chunk that reaches the
// content-length, or an empty chunk with end_of_stream (HTTP/1.1 chunked:
// the end comes after the last data), or the trailers.
func (x *exchange) pump() {
	defer close(x.pumpDone)
	remaining := int64(-1)
	if n, err := strconv.ParseInt(x.s.Response.Header.Get("Content-Length"), 10, 64); err == nil {
		remaining = n
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := x.up.Read(buf)
		if n > 0 {
			remaining -= int64(n)
			eos := remaining == 0
			if eos {
				x.sentEOS.Store(true)
			}
			if x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: slices.Clone(buf[:n]), EndOfStream: eos},
			}}) != nil || eos {
				return // a failed send: the stream's status reaches receive
			}
		}
		if err == io.EOF {
			if len(x.s.Response.Trailer) > 0 {
				x.sentTrailers.Store(true)
				_ = x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{
					ResponseTrailers: &extprocv3.HttpTrailers{Trailers: trailerMap(x.s.Response.Trailer)},
				}})
				return
			}
			x.sentEOS.Store(true)
			_ = x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{EndOfStream: true},
			}})
			return
		}
		if err != nil {
			// The upstream reset: Envoy resets the downstream stream.
			select {
			case x.replies <- reply{err: fmt.Errorf("upstream body: %w", err)}:
			case <-x.stop:
			}
			return
		}
	}
}

func trailerMap(t http.Header) *corev3.HeaderMap {
	hm := &corev3.HeaderMap{}
	for k, vs := range t {
		for _, v := range vs {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: strings.ToLower(k), RawValue: []byte(v)})
		}
	}
	return hm
}

// beforeRelease handles a reply while the response headers have not left:
// a failure is a local reply.
func (x *exchange) beforeRelease(rp reply) *LocalReply {
	if err := x.handle(rp); err != nil {
		if x.immediate != nil {
			return x.immediate
		}
		return x.localFailure(err, x.e.cfg.StatusOnError)
	}
	return nil
}

// handle applies one reply as Envoy does; an error fails the response.
func (x *exchange) handle(rp reply) error {
	if rp.err != nil {
		if rp.err == io.EOF {
			x.mu.Lock()
			x.rec.FailOpen = true
			x.mu.Unlock()
			return errors.New("the processor ended the stream with OK before the response was complete (Envoy would fail open)")
		}
		return rp.err
	}
	r := rp.r
	x.mu.Lock()
	x.rec.Received = append(x.rec.Received, r)
	x.mu.Unlock()
	// mode_override is ignored: the body mode is FULL_DUPLEX_STREAMED.
	if ir, ok := r.GetResponse().(*extprocv3.ProcessingResponse_ImmediateResponse); ok {
		return x.immediateResponse(ir.ImmediateResponse)
	}
	if !x.headerReplied {
		hr, ok := r.GetResponse().(*extprocv3.ProcessingResponse_ResponseHeaders)
		if !ok {
			return fmt.Errorf("spurious reply while the header reply is pending: %T", r.GetResponse())
		}
		x.headerReplied = true
		x.mutate(hr.ResponseHeaders.GetResponse().GetHeaderMutation())
		if x.noBody {
			x.complete = true
		}
		return nil
	}
	switch b := r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_ResponseBody:
		sr := b.ResponseBody.GetResponse().GetBodyMutation().GetStreamedResponse()
		if sr == nil {
			return errors.New("body reply without streamed_response in FULL_DUPLEX_STREAMED")
		}
		if sr.GetEndOfStream() && (!x.sentEOS.Load() || x.sentTrailers.Load()) {
			return errors.New("streamed_response end_of_stream before Envoy's end_of_stream")
		}
		x.released = true
		x.pending = append(x.pending, sr.GetBody()...)
		x.complete = sr.GetEndOfStream()
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		if !x.sentTrailers.Load() {
			return errors.New("trailers reply without trailers")
		}
		x.released = true
		x.complete = true
	default:
		return fmt.Errorf("spurious reply in the body phase: %T", r.GetResponse())
	}
	return nil
}

// protectedHeader reports whether the processor may not change a header.
func protectedHeader(name string) bool {
	switch name {
	case "host", ":authority", ":scheme", ":method", ":status", ":path":
		return true
	}
	return strings.HasPrefix(name, "x-envoy-")
}

// mutate applies a header reply's header mutation: removals, then
// set_headers (raw_value only, overwriting unless append).
func (x *exchange) mutate(hm *extprocv3.HeaderMutation) {
	for _, name := range hm.GetRemoveHeaders() {
		if name = strings.ToLower(name); !protectedHeader(name) {
			x.header.Del(name)
		}
	}
	for _, o := range hm.GetSetHeaders() {
		name := strings.ToLower(o.GetHeader().GetKey())
		if protectedHeader(name) || name == "content-length" && !x.e.cfg.AllowContentLengthHeader {
			continue
		}
		v := string(o.GetHeader().GetRawValue())
		if o.GetAppend().GetValue() {
			x.header.Add(name, v)
		} else {
			x.header.Set(name, v)
		}
	}
}

func (x *exchange) immediateResponse(ir *extprocv3.ImmediateResponse) error {
	if x.released {
		return errors.New("immediate_response after the response headers were sent")
	}
	code := int(ir.GetStatus().GetCode())
	if code < 200 {
		code = 200
	}
	h := http.Header{}
	for _, o := range ir.GetHeaders().GetSetHeaders() {
		h.Set(o.GetHeader().GetKey(), string(o.GetHeader().GetRawValue()))
	}
	if len(ir.GetBody()) > 0 && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "text/plain")
	}
	x.immediate = &LocalReply{Status: code, Header: h, Body: ir.GetBody()}
	x.mu.Lock()
	x.rec.Status = code
	x.mu.Unlock()
	return errors.New("immediate_response")
}

// localFailure ends the conversation with a local reply.
func (x *exchange) localFailure(err error, code int) *LocalReply {
	x.e.log.Warn("ext_proc failed", "stream", x.s.ID, "error", err)
	x.mu.Lock()
	x.rec.Err, x.rec.Status = err, code
	x.mu.Unlock()
	x.failed = err
	return &LocalReply{Status: code, Body: []byte("ext_proc error")}
}

// Read returns the processor's body mutations as they come.
func (x *exchange) Read(p []byte) (int, error) {
	for len(x.pending) == 0 {
		if x.failed != nil {
			return 0, x.failed
		}
		if x.complete {
			return 0, io.EOF
		}
		if err := x.handle(<-x.replies); err != nil {
			x.e.log.Warn("ext_proc failed after the response headers were sent", "stream", x.s.ID, "error", err)
			x.mu.Lock()
			x.rec.Err, x.rec.Reset, x.rec.Status = err, true, 0
			x.mu.Unlock()
			x.failed = err
		}
	}
	n := copy(p, x.pending)
	x.pending = x.pending[n:]
	return n, nil
}

// Close ends the conversation as Envoy does (half-close, then reset),
// stops the goroutines and records the exchange.
func (x *exchange) Close() error {
	x.closeOnce.Do(func() {
		_ = x.up.Close()
		// gRPC forbids CloseSend concurrent with Send: half-close only
		// once the pump is done (it is, for a complete response); a pump
		// still running is stopped by the reset.
		select {
		case <-x.pumpDone:
			if x.stream != nil {
				_ = x.stream.CloseSend()
			}
		default:
		}
		x.reset()
		close(x.stop)
		<-x.pumpDone
		<-x.recvDone
		x.mu.Lock()
		if x.rec.Err == nil && !x.complete && x.rec.Status == 0 {
			// The client went away, or the proxy gave up on the response.
			x.rec.Err = errors.New("response not complete when the stream ended")
		}
		rec := x.rec
		x.mu.Unlock()
		x.e.mu.Lock()
		x.e.exchanges = append(x.e.exchanges, rec)
		x.e.mu.Unlock()
	})
	return nil
}
