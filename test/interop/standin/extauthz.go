package standin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// extAuthzNamespace is the dynamic metadata namespace of Envoy's ext_authz
// filter (hard-coded in Envoy).
const extAuthzNamespace = "envoy.filters.http.ext_authz"

// Outcome is how Envoy classifies a check.
type Outcome string

// The outcomes of a check, as Envoy's ext_authz filter counts them.
const (
	OutcomeOK     Outcome = "ok"
	OutcomeDenied Outcome = "denied"
	OutcomeError  Outcome = "error"
)

// Check is one Check call and what the stand-in made of it.
type Check struct {
	// Stream is the Stream.ID of the request.
	Stream uint64
	// Request is the CheckRequest sent.
	Request *authv3.CheckRequest
	// Response is the CheckResponse received; nil when the call failed.
	Response *authv3.CheckResponse
	// Err is the call's error (transport, timeout, gRPC status).
	Err error
	// Outcome is ok, denied or error.
	Outcome Outcome
	// Status is the HTTP status of the local reply for a denied or failed
	// check; 0 when the request went on upstream.
	Status int
}

// Metadata returns a string field of the check's dynamic metadata (the
// namespace envoy.filters.http.ext_authz), or "".
func (c Check) Metadata(key string) string {
	return c.Response.GetDynamicMetadata().GetFields()[key].GetStringValue()
}

// Header returns a request header as the CheckRequest carried it (either
// form; repeated raw headers joined with ",").
func (c Check) Header(name string) string {
	h := c.Request.GetAttributes().GetRequest().GetHttp()
	if v, ok := h.GetHeaders()[name]; ok {
		return v
	}
	var vs []string
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if hv.GetKey() == name {
			vs = append(vs, string(hv.GetRawValue()))
		}
	}
	return strings.Join(vs, ",")
}

// ExtAuthz is the ext_authz HTTP filter: its configuration, its gRPC client
// and the record of every check it made. Factory creates its per-stream
// filter.
type ExtAuthz struct {
	cfg    Config
	client authv3.AuthorizationClient
	log    *slog.Logger

	mu     sync.Mutex
	checks []Check
}

// NewExtAuthz returns the filter calling Authorization/Check over conn.
func NewExtAuthz(cfg Config, conn grpc.ClientConnInterface, log *slog.Logger) *ExtAuthz {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ExtAuthz{cfg: cfg, client: authv3.NewAuthorizationClient(conn), log: log}
}

// Checks returns a copy of the checks made so far, in order.
func (e *ExtAuthz) Checks() []Check {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.checks)
}

func (e *ExtAuthz) record(c Check) {
	e.mu.Lock()
	e.checks = append(e.checks, c)
	e.mu.Unlock()
}

// Factory is the FilterFactory of the filter.
func (e *ExtAuthz) Factory(*Stream) Filter { return &extAuthzStream{e: e} }

// extAuthzStream is the filter of one stream; it keeps the response
// headers an OK check asked for until the response comes.
type extAuthzStream struct {
	e                  *ExtAuthz
	responseHeaders    []*corev3.HeaderValueOption
	responseHeadersSet bool
}

func (f *extAuthzStream) DecodeHeaders(ctx context.Context, s *Stream) *LocalReply {
	cfg := f.e.cfg
	r := s.Request
	var (
		body     []byte
		buffered bool
		partial  bool
		size     int
	)
	// Envoy buffers a request that has a body (headers without end_stream);
	// GET and DELETE without a body are checked on their headers alone.
	if cfg.WithRequestBody && r.Body != nil && r.Body != http.NoBody && !isUpgrade(r) {
		buf, err := io.ReadAll(io.LimitReader(r.Body, int64(cfg.MaxRequestBytes)+1))
		if err != nil {
			return &LocalReply{Status: http.StatusBadRequest, Body: []byte("Bad Request")}
		}
		buffered, size, body = true, len(buf), buf
		if len(buf) > cfg.MaxRequestBytes {
			if !cfg.AllowPartialMessage {
				// Envoy answers itself and never calls the authorizer.
				return &LocalReply{Status: http.StatusRequestEntityTooLarge, Body: []byte("Payload Too Large")}
			}
			partial, body = true, buf[:cfg.MaxRequestBytes]
		}
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	}
	req := f.checkRequest(s, body, buffered, partial, size)

	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	resp, err := f.e.client.Check(cctx, req)
	cancel()
	c := Check{Stream: s.ID, Request: req, Response: resp, Err: err}
	if md := resp.GetDynamicMetadata(); md != nil {
		// Envoy's ext_authz filter writes its namespace, whatever the
		// filter's name.
		if s.DynamicMetadata == nil {
			s.DynamicMetadata = map[string]*structpb.Struct{}
		}
		s.DynamicMetadata[extAuthzNamespace] = md
	}
	lr := f.decide(s, &c)
	if lr != nil {
		c.Status = lr.Status
	}
	f.e.record(c)
	return lr
}

// decide turns the check's result into a local reply, or applies the OK
// response's mutations and returns nil.
func (f *extAuthzStream) decide(s *Stream, c *Check) *LocalReply {
	cfg := f.e.cfg
	failed := func(lr *LocalReply) *LocalReply {
		c.Outcome = OutcomeError
		if cfg.FailureModeAllow {
			if cfg.FailureModeAllowHeaderAdd {
				s.Request.Header.Set("X-Envoy-Auth-Failure-Mode-Allowed", "true")
			}
			return nil
		}
		return lr
	}
	if c.Err != nil {
		f.e.log.Warn("ext_authz check failed", "stream", s.ID, "error", c.Err)
		return failed(&LocalReply{Status: cfg.StatusOnError})
	}
	resp := c.Response
	code := codes.Code(resp.GetStatus().GetCode())
	switch {
	case code == codes.OK:
		c.Outcome = OutcomeOK
		ok := resp.GetOkResponse()
		if err := f.applyOK(s, ok); err != nil {
			f.e.log.Warn("ext_authz OK response not applied", "stream", s.ID, "error", err)
			return &LocalReply{Status: http.StatusInternalServerError}
		}
		f.responseHeaders = ok.GetResponseHeadersToAdd()
		f.responseHeadersSet = true
		return nil
	case resp.GetErrorResponse() != nil:
		er := resp.GetErrorResponse()
		lr := &LocalReply{Status: cfg.StatusOnError, Header: localBaseHeader(er.GetBody()), Body: []byte(er.GetBody())}
		if st := int(er.GetStatus().GetCode()); st > 0 {
			lr.Status = st
		}
		if !applyHeaderOptions(lr.Header, er.GetHeaders()) && cfg.ValidateMutations {
			lr = &LocalReply{Status: http.StatusInternalServerError}
		}
		return failed(lr)
	default:
		c.Outcome = OutcomeDenied
		d := resp.GetDeniedResponse()
		lr := &LocalReply{Status: http.StatusForbidden, Header: localBaseHeader(d.GetBody()), Body: []byte(d.GetBody())}
		if st := int(d.GetStatus().GetCode()); st > 0 {
			lr.Status = st
		}
		if !applyHeaderOptions(lr.Header, d.GetHeaders()) && cfg.ValidateMutations {
			return &LocalReply{Status: http.StatusInternalServerError}
		}
		return lr
	}
}

// errPseudoHeader marks mutations of pseudo-headers, which the stand-in
// does not follow (Envoy would rewrite the request line).
var errPseudoHeader = errors.New("mutation of a pseudo-header or host: not supported by the stand-in")

// applyOK applies an OkHttpResponse to the upstream request in Envoy's
// order: header mutations as listed, then removals, then query parameters.
func (f *extAuthzStream) applyOK(s *Stream, ok *authv3.OkHttpResponse) error {
	h := s.Request.Header
	for _, o := range ok.GetHeaders() {
		if k := strings.ToLower(o.GetHeader().GetKey()); strings.HasPrefix(k, ":") || k == "host" {
			return errPseudoHeader
		}
	}
	if !applyHeaderOptions(h, ok.GetHeaders()) && f.e.cfg.ValidateMutations {
		return errors.New("invalid header mutation")
	}
	for _, name := range ok.GetHeadersToRemove() {
		// Envoy never removes pseudo-headers or host this way.
		if n := strings.ToLower(name); strings.HasPrefix(n, ":") || n == "host" {
			continue
		}
		h.Del(name)
	}
	if len(ok.GetQueryParametersToSet()) > 0 || len(ok.GetQueryParametersToRemove()) > 0 {
		q := s.Request.URL.Query()
		for _, p := range ok.GetQueryParametersToSet() {
			q.Set(p.GetKey(), p.GetValue())
		}
		for _, k := range ok.GetQueryParametersToRemove() {
			q.Del(k)
		}
		s.Request.URL.RawQuery = q.Encode()
		s.Request.RequestURI = s.Request.URL.RequestURI()
	}
	return nil
}

func (f *extAuthzStream) EncodeHeaders(_ context.Context, s *Stream) *LocalReply {
	if f.responseHeadersSet && !applyHeaderOptions(s.Response.Header, f.responseHeaders) && f.e.cfg.ValidateMutations {
		return &LocalReply{Status: http.StatusInternalServerError}
	}
	return nil
}

// checkRequest builds the CheckRequest Envoy sends for s.
func (f *extAuthzStream) checkRequest(s *Stream, body []byte, buffered, partial bool, size int) *authv3.CheckRequest {
	cfg := f.e.cfg
	r := s.Request
	type kv struct{ k, v string }
	hs := []kv{
		{":authority", r.Host},
		{":path", r.URL.RequestURI()},
		{":method", r.Method},
		{":scheme", "http"},
	}
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		lower := strings.ToLower(name)
		// A client cannot claim the body was (not) truncated.
		if lower == "x-envoy-auth-partial-body" {
			continue
		}
		for _, v := range r.Header[name] {
			hs = append(hs, kv{lower, v})
		}
	}
	if buffered {
		hs = append(hs, kv{"x-envoy-auth-partial-body", strconv.FormatBool(partial)})
	}
	httpReq := &authv3.AttributeContext_HttpRequest{
		Id:       strconv.FormatUint(s.ID, 10),
		Method:   r.Method,
		Path:     r.URL.RequestURI(),
		Host:     r.Host,
		Scheme:   "http",
		Protocol: protocol(r),
		Size:     int64(size),
	}
	if cfg.EncodeRawHeaders {
		hm := &corev3.HeaderMap{}
		for _, h := range hs {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: h.k, RawValue: []byte(h.v)})
		}
		httpReq.HeaderMap = hm
	} else {
		httpReq.Headers = make(map[string]string, len(hs))
		for _, h := range hs {
			v := sanitizeUTF8(h.v)
			if prev, ok := httpReq.Headers[h.k]; ok {
				v = prev + "," + v
			}
			httpReq.Headers[h.k] = v
		}
	}
	if buffered {
		if cfg.PackAsBytes {
			httpReq.RawBody = body
		} else {
			httpReq.Body = sanitizeUTF8(string(body))
		}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(s.Remote)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress(s.Local)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(s.Start),
			Http: httpReq,
		},
	}}
}

func protocol(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "HTTP/2"
	case 3:
		return "HTTP/3"
	}
	return r.Proto
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != ""
}

func socketAddress(a net.Addr) *corev3.Address {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return nil
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       tcp.IP.String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(tcp.Port)},
	}}}
}

// sanitizeUTF8 replaces each byte that is not part of valid UTF-8 with "!",
// as Envoy's MessageUtil::sanitizeUtf8String does.
func sanitizeUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteByte('!')
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// localBaseHeader is the header of an Envoy local reply before the
// authorizer's headers are applied.
func localBaseHeader(body string) http.Header {
	h := http.Header{}
	if body != "" {
		h.Set("Content-Type", "text/plain")
	}
	return h
}

// applyHeaderOptions applies header mutations the way Envoy's ext_authz
// client reads them: the deprecated append, when set, wins (true appends to
// an existing value with ",", false overwrites); otherwise append_action,
// whose proto default APPEND_IF_EXISTS_OR_ADD adds another header line. It
// reports false if any mutation was invalid (an unknown action, a bad
// header name or value); valid ones are still applied, as Envoy does.
func applyHeaderOptions(h http.Header, opts []*corev3.HeaderValueOption) bool {
	valid := true
	for _, o := range opts {
		k, v := o.GetHeader().GetKey(), o.GetHeader().GetValue()
		if v == "" && len(o.GetHeader().GetRawValue()) > 0 {
			v = string(o.GetHeader().GetRawValue())
		}
		if !validHeaderName(k) || !validHeaderValue(v) {
			valid = false
			continue
		}
		_, exists := h[http.CanonicalHeaderKey(k)]
		if o.GetAppend() != nil {
			switch {
			case !o.GetAppend().GetValue():
				h.Set(k, v)
			case exists:
				h.Set(k, strings.Join(append(h.Values(k), v), ","))
			default:
				h.Add(k, v)
			}
			continue
		}
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h.Add(k, v)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				h.Add(k, v)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h.Set(k, v)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				h.Set(k, v)
			}
		default:
			valid = false
		}
	}
	return valid
}

// validHeaderName reports whether k is an RFC 9110 token.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v has no CR, LF or NUL.
func validHeaderValue(v string) bool {
	return !strings.ContainsAny(v, "\r\n\x00")
}
