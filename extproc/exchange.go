package extproc

import (
	"context"
	"errors"
	"mime"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// phase is where one exchange is.
type phase int

const (
	phaseHeaders phase = iota // waiting for the response headers
	phasePass                 // body passes unchanged
	phaseJSON                 // JSON body being buffered
	phaseSSE                  // event stream being filtered
	phaseDone                 // response complete, or replaced by an immediate response
)

// exchange is the processor side of one ext_proc stream.
type exchange struct {
	srv      *Server
	send     func(*extprocv3.ProcessingResponse) error
	received int
	phase    phase
	f        filter
	chunks   [][]byte // the JSON body so far, as received (Envoy does not reuse them)
	size     int
	joined   []byte // the body of several chunks, reused across streams up to maxJoined
	sse      sseStream
}

// reset prepares a pooled exchange for the next stream, keeping buffers of
// reasonable size and dropping every reference to the last response.
func (x *exchange) reset() {
	clear(x.chunks)
	x.chunks = trim(x.chunks, 64)
	x.joined = trim(x.joined, maxJoined)
	x.send, x.received, x.phase, x.size = nil, 0, phaseHeaders, 0
	x.f.reset()
	x.sse.reset()
}

// maxJoined is the largest joined body a pooled exchange keeps for the
// next stream: a 50-tool list is about 17 KiB.
const maxJoined = 64 << 10

// trim empties s, and forgets its array when it grew past max elements.
func trim[S ~[]E, E any](s S, max int) S {
	if cap(s) > max {
		return nil
	}
	return s[:0]
}

func (x *exchange) handle(ctx context.Context, req *extprocv3.ProcessingRequest) error {
	x.received++
	if x.received == 1 {
		if err := x.checkConfig(ctx, req.GetProtocolConfig()); err != nil {
			return err
		}
	}
	if req.GetObservabilityMode() {
		return x.configError(ctx, "observability_mode cannot filter responses")
	}
	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		// Not sent by the documented configuration (request_header_mode
		// SKIP); answering keeps a deployment that sends them working.
		return x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{},
		}})
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{},
		}})
	case *extprocv3.ProcessingRequest_RequestBody:
		return x.configError(ctx, "request body sent: request_body_mode must be NONE")
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return x.responseHeaders(ctx, req, r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		return x.responseBody(ctx, r.ResponseBody)
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return x.responseTrailers(ctx)
	}
	return nil // a message without a request part asks for nothing
}

// checkConfig refuses processing modes the state machine is not written
// for: replies that are right for FULL_DUPLEX_STREAMED are spurious in any
// other body mode. An Envoy that sends no protocol_config is trusted to run
// the documented configuration.
func (x *exchange) checkConfig(ctx context.Context, pc *extprocv3.ProtocolConfiguration) error {
	if pc == nil {
		return nil
	}
	if pc.GetResponseBodyMode() != procv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		return x.configError(ctx, "response_body_mode must be FULL_DUPLEX_STREAMED, not "+pc.GetResponseBodyMode().String())
	}
	if pc.GetRequestBodyMode() != procv3.ProcessingMode_NONE {
		return x.configError(ctx, "request_body_mode must be NONE, not "+pc.GetRequestBodyMode().String())
	}
	return nil
}

func (x *exchange) configError(ctx context.Context, msg string) error {
	x.srv.log.ErrorContext(ctx, "ext_proc configuration not supported by the list filter", "detail", msg)
	x.recordStream(ctx, ReasonProtocol)
	return status.Error(codes.FailedPrecondition, "list filter: "+msg)
}

func (x *exchange) orderError(ctx context.Context, msg string) error {
	x.srv.log.ErrorContext(ctx, "ext_proc message out of order", "detail", msg)
	x.recordStream(ctx, ReasonProtocol)
	return status.Error(codes.InvalidArgument, "list filter: "+msg)
}

func (x *exchange) recordStream(ctx context.Context, r Reason) {
	if x.srv.rec != nil {
		x.srv.rec.Record(ctx, Outcome{Reason: r})
	}
}

// responseHeaders decides what the response needs: nothing (not a list
// request, not 2xx, not JSON or SSE), filtering, or an immediate error
// (a body the processor cannot read).
func (x *exchange) responseHeaders(ctx context.Context, req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) error {
	if x.phase != phaseHeaders {
		return x.orderError(ctx, "response headers after the response headers")
	}
	var statusCode, contentTypes, encodings []string
	for _, hv := range h.GetHeaders().GetHeaders() {
		// Envoy sends lower-case keys; a sender that does not must not
		// hide the content type and so skip the filter.
		switch strings.ToLower(hv.GetKey()) {
		case ":status":
			statusCode = append(statusCode, headerValue(hv))
		case "content-type":
			contentTypes = append(contentTypes, headerValue(hv))
		case "content-encoding":
			encodings = append(encodings, headerValue(hv))
		}
	}
	lc, err := ParseMetadata(req.GetMetadataContext())
	var fail Reason
	if err != nil {
		var me *MetadataError
		if !errors.As(err, &me) {
			return x.pass(h.GetEndOfStream()) // ErrNoListFilter
		}
		fail = me.Reason
	}
	if !success(statusCode) {
		return x.pass(h.GetEndOfStream())
	}
	ct := classify(contentTypes)
	if ct == ctOther {
		return x.pass(h.GetEndOfStream())
	}
	if fail != "" {
		x.srv.log.WarnContext(ctx, "list response without usable metadata: result responses are refused", "reason", string(fail), "detail", err.Error())
	}
	x.f.init(x.srv, lc, fail)
	switch {
	case ct == ctAmbiguous:
		return x.immediate(ctx, ReasonBadBody, "content type is neither exactly application/json nor text/event-stream")
	case encoded(encodings):
		return x.immediate(ctx, ReasonContentEncoding, "encoded list response")
	}
	if h.GetEndOfStream() {
		// No body: nothing to filter, nothing to leak.
		x.phase = phaseDone
		return x.send(headersResponse(nil))
	}
	x.phase = phaseJSON
	if ct == ctSSE {
		x.phase = phaseSSE
		x.sse.init(&x.f, x.srv.maxBuffered)
	}
	// The body changes size: a Content-Length left by a deployment with
	// allow_content_length_header would be wrong (Envoy strips it in
	// FULL_DUPLEX_STREAMED otherwise).
	return x.send(headersResponse([]string{"content-length"}))
}

func (x *exchange) pass(endOfStream bool) error {
	x.phase = phasePass
	if endOfStream {
		x.phase = phaseDone
	}
	return x.send(headersResponse(nil))
}

func (x *exchange) responseBody(ctx context.Context, b *extprocv3.HttpBody) error {
	chunk, eos := b.GetBody(), b.GetEndOfStream()
	switch x.phase {
	case phaseHeaders:
		return x.orderError(ctx, "response body before the response headers (response_header_mode must be SEND)")
	case phaseDone:
		// A repeated final chunk, or the rest of a response already
		// answered with an immediate response: nothing to add.
		return nil
	case phasePass:
		if eos {
			x.phase = phaseDone
		}
		return x.sendBody(chunk, eos)
	case phaseJSON:
		if x.size+len(chunk) > x.srv.maxBuffered {
			clear(x.chunks)
			x.chunks = x.chunks[:0]
			return x.immediate(ctx, ReasonTooLarge, "JSON list response larger than the buffer limit")
		}
		if len(chunk) > 0 {
			x.chunks = append(x.chunks, chunk)
			x.size += len(chunk)
		}
		if eos {
			return x.finishJSON(ctx, true)
		}
		return nil
	default: // phaseSSE
		out := x.sse.write(ctx, chunk)
		if eos {
			x.phase = phaseDone
			if tail := x.sse.finish(ctx); len(tail) > 0 {
				out = append(out[:len(out):len(out)], tail...)
			}
		}
		return x.sendBody(out, eos)
	}
}

func (x *exchange) responseTrailers(ctx context.Context) error {
	switch x.phase {
	case phaseHeaders:
		return x.orderError(ctx, "response trailers before the response headers")
	case phaseJSON:
		if err := x.finishJSON(ctx, false); err != nil {
			return err
		}
	case phaseSSE:
		if err := x.sendBody(x.sse.finish(ctx), false); err != nil {
			return err
		}
	case phaseDone:
		// After an immediate response Envoy expects nothing more; after
		// end_of_stream there are no trailers.
		return nil
	}
	x.phase = phaseDone
	return x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
		ResponseTrailers: &extprocv3.TrailersResponse{},
	}})
}

func (x *exchange) finishJSON(ctx context.Context, eos bool) error {
	x.phase = phaseDone
	var body []byte
	switch len(x.chunks) {
	case 0:
	case 1:
		body = x.chunks[0] // no copy for a body that came in one chunk
	default:
		// Into a buffer this exchange keeps for the next stream, unless it
		// is sent as it is (below): a sent message must never change
		// (grpc-go's stats handlers may read it after Send returned), and a
		// rewritten body is a new buffer.
		body = slices.Grow(x.joined[:0], x.size)
		for _, c := range x.chunks {
			body = append(body, c...)
		}
		x.joined = body
	}
	clear(x.chunks)
	x.chunks = x.chunks[:0]
	out, changed := x.f.rewrite(ctx, body, false)
	if !changed {
		out = body
		x.joined = nil // given away with the reply
	}
	return x.sendBody(out, eos)
}

// sendBody sends b as streamed responses of at most MaxChunkBytes; the last
// one carries eos. Nothing is sent for an empty b without eos.
func (x *exchange) sendBody(b []byte, eos bool) error {
	for len(b) > 0 || eos {
		n := min(len(b), x.srv.maxChunk)
		last := n == len(b)
		if err := x.send(streamedResponse(b[:n], eos && last)); err != nil {
			return err
		}
		b = b[n:]
		if last {
			break
		}
	}
	return nil
}

// immediate replaces the whole response by JSON-RPC errors for the list
// requests. Envoy has not sent the response headers downstream yet (they
// leave with the first body chunk the processor returns), so the client
// gets this reply instead of the upstream's.
func (x *exchange) immediate(ctx context.Context, reason Reason, detail string) error {
	x.phase = phaseDone
	body := x.f.failPending(ctx, reason, detail)
	return x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_OK},
			Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "content-type", RawValue: []byte("application/json")},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}}},
			Body:    body,
			Details: "mcpauthz_list_filter_" + string(reason),
		},
	}})
}

func headersResponse(remove []string) *extprocv3.ProcessingResponse {
	hr := &extprocv3.HeadersResponse{}
	if len(remove) > 0 {
		hr.Response = &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: remove}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}}
}

func streamedResponse(b []byte, eos bool) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
				StreamedResponse: &extprocv3.StreamedBodyResponse{Body: b, EndOfStream: eos},
			}},
		}},
	}}
}

// headerValue reads a header as Envoy sends it: in raw_value (value only
// from senders that do not set raw_value).
func headerValue(hv *corev3.HeaderValue) string {
	if len(hv.GetRawValue()) > 0 {
		return string(hv.GetRawValue())
	}
	return hv.GetValue()
}

// success reports whether the response status is 2xx. A missing or
// unreadable status is treated as success: the body is then filtered.
func success(values []string) bool {
	if len(values) != 1 {
		return true
	}
	code, err := strconv.Atoi(values[0])
	return err != nil || code >= 200 && code < 300
}

type contentClass int

const (
	ctOther     contentClass = iota // nothing a client reads as JSON-RPC
	ctJSON                          // application/json
	ctSSE                           // text/event-stream
	ctAmbiguous                     // mentions JSON or an event stream, but is neither exactly
)

// classify sorts the content type the way clients read it, which is
// loosely: some look for "application/json" or "text/event-stream"
// anywhere in the value, others for a prefix. A value that any client could
// take for JSON or an event stream, but that is not exactly one of them,
// is ambiguous (and refused) rather than passed unfiltered.
func classify(values []string) contentClass {
	mentions := func(v string) bool {
		v = strings.ToLower(v)
		return strings.Contains(v, "json") || strings.Contains(v, "event-stream")
	}
	switch len(values) {
	case 0:
		return ctOther
	case 1:
	default:
		for _, v := range values {
			if mentions(v) {
				return ctAmbiguous
			}
		}
		return ctOther
	}
	v := values[0]
	if !mentions(v) {
		return ctOther
	}
	lower := strings.ToLower(v)
	if strings.Contains(lower, "json") && strings.Contains(lower, "event-stream") {
		return ctAmbiguous
	}
	mt, _, err := mime.ParseMediaType(v)
	switch {
	case err != nil:
		return ctAmbiguous
	case mt == "application/json":
		return ctJSON
	case mt == "text/event-stream":
		return ctSSE
	}
	return ctAmbiguous
}

// encoded reports a content coding other than identity.
func encoded(values []string) bool {
	for _, v := range values {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return true
			}
		}
	}
	return false
}
