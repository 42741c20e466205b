package standin

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
)

// A Filter is one HTTP filter of a stream, created per request by a
// FilterFactory, as Envoy creates its filters. DecodeHeaders runs on the
// request before it goes upstream, in chain order; a filter that needs the
// body reads s.Request.Body and puts back what the upstream must get.
// EncodeHeaders runs on the upstream's response before it goes downstream,
// in reverse chain order; a filter that needs the response body wraps
// s.Response.Body (it streams: nothing is buffered unless a filter
// buffers). A non-nil LocalReply ends the stream with that answer, as
// Envoy's sendLocalReply does; the filters after it do not run.
type Filter interface {
	DecodeHeaders(ctx context.Context, s *Stream) *LocalReply
	EncodeHeaders(ctx context.Context, s *Stream) *LocalReply
}

// FilterFactory creates the filter of one stream.
type FilterFactory func(s *Stream) Filter

// Stream is one request through the proxy.
type Stream struct {
	// ID numbers the streams of a Proxy from 1 (Envoy's stream id).
	ID uint64
	// Start is when the request arrived.
	Start time.Time
	// Request is the request as it will go upstream: filters change its
	// Header, URL and Body. Host is the :authority.
	Request *http.Request
	// Remote and Local are the downstream connection's addresses.
	Remote, Local net.Addr
	// Response is the upstream's response, set before EncodeHeaders.
	Response *Response
	// DynamicMetadata is the stream's dynamic metadata by namespace: what
	// the filters set (ext_authz's under envoy.filters.http.ext_authz).
	DynamicMetadata map[string]*structpb.Struct
}

// Response is an upstream response on its way to the client.
type Response struct {
	Status int
	Header http.Header
	Body   io.ReadCloser
	// Trailer is the upstream's trailers, filled once Body has been read
	// to its end.
	Trailer http.Header
}

// LocalReply is an answer the proxy gives itself instead of the upstream's.
type LocalReply struct {
	Status int
	Header http.Header
	Body   []byte
}

// Proxy is the stand-in: an HTTP/1.1 listener's connection manager with a
// filter chain and a router to one upstream.
type Proxy struct {
	cfg       Config
	upstream  *url.URL
	factories []FilterFactory
	rp        *httputil.ReverseProxy
	transport *http.Transport
	streams   atomic.Uint64
	log       *slog.Logger

	// ExtAuthz is the ext_authz filter of a proxy made by New.
	ExtAuthz *ExtAuthz
	// ExtProc is the composite ext_proc filter of a proxy made by New from
	// a Config with one; nil otherwise.
	ExtProc *ExtProc
}

// NewProxy returns a proxy to upstream (scheme://host:port) that runs the
// connection manager settings of cfg and then the filters the factories
// make, in order. Use New for the usual chain with ext_authz.
func NewProxy(cfg Config, upstream *url.URL, log *slog.Logger, factories ...FilterFactory) *Proxy {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, upstream: upstream, factories: factories, log: log}
	p.transport = http.DefaultTransport.(*http.Transport).Clone()
	p.rp = &httputil.ReverseProxy{
		Transport: p.transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.Host = pr.In.Host // Envoy keeps :authority
			// Rewrite drops these; the connection manager already set them.
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"} {
				if v := pr.In.Header.Values(h); len(v) > 0 {
					pr.Out.Header[h] = v
				}
			}
		},
		// Every write reaches the client at once: SSE events and long-lived
		// GET streams are never held back (Envoy does not buffer responses).
		FlushInterval:  -1,
		ModifyResponse: p.encode,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn("upstream request failed", "path", r.URL.Path, "error", err)
			writeLocalReply(w, &LocalReply{
				Status: http.StatusServiceUnavailable,
				Body:   []byte("upstream connect error or disconnect/reset before headers. reset reason: connection failure"),
			})
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return p
}

// Close closes the proxy's idle upstream connections. Streams in flight
// end with their downstream requests.
func (p *Proxy) Close() { p.transport.CloseIdleConnections() }

type streamKey struct{}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := &Stream{ID: p.streams.Add(1), Start: time.Now(), Request: r.Clone(r.Context())}
	if lr := p.connectionManager(s.Request); lr != nil {
		writeLocalReply(w, lr)
		return
	}
	if addr, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		s.Remote = addr
	}
	if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		s.Local = addr
	}
	p.decorate(s)
	filters := make([]Filter, len(p.factories))
	for i, f := range p.factories {
		filters[i] = f(s)
	}
	ctx := r.Context()
	for _, f := range filters {
		if lr := f.DecodeHeaders(ctx, s); lr != nil {
			writeLocalReply(w, lr)
			return
		}
	}
	ctx = context.WithValue(ctx, streamKey{}, &streamState{stream: s, filters: filters})
	p.rp.ServeHTTP(w, s.Request.WithContext(ctx))
}

type streamState struct {
	stream  *Stream
	filters []Filter
}

// encode runs the encoder filters on the upstream's response.
func (p *Proxy) encode(resp *http.Response) error {
	st, ok := resp.Request.Context().Value(streamKey{}).(*streamState)
	if !ok {
		return nil
	}
	s := st.stream
	s.Response = &Response{Status: resp.StatusCode, Header: resp.Header, Body: resp.Body, Trailer: resp.Trailer}
	for i := len(st.filters) - 1; i >= 0; i-- {
		if lr := st.filters[i].EncodeHeaders(resp.Request.Context(), s); lr != nil {
			_ = s.Response.Body.Close()
			s.Response = &Response{Status: lr.Status, Header: localReplyHeader(lr), Body: io.NopCloser(strings.NewReader(string(lr.Body)))}
			resp.ContentLength = int64(len(lr.Body))
			break
		}
	}
	resp.StatusCode = s.Response.Status
	resp.Status = fmt.Sprintf("%d %s", s.Response.Status, http.StatusText(s.Response.Status))
	resp.Header = s.Response.Header
	resp.Body = s.Response.Body
	return nil
}

// connectionManager applies the connection manager's request checks and
// rewrites before any filter sees the request.
func (p *Proxy) connectionManager(r *http.Request) *LocalReply {
	if p.cfg.RejectUnderscoreHeaders {
		for name := range r.Header {
			if strings.Contains(name, "_") {
				return &LocalReply{Status: http.StatusBadRequest, Body: []byte("Bad Request")}
			}
		}
	}
	path := r.URL.EscapedPath()
	if p.cfg.RejectEscapedSlashes {
		lower := strings.ToLower(path)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
			return &LocalReply{Status: http.StatusBadRequest, Body: []byte("Bad Request")}
		}
	}
	if p.cfg.NormalizePath {
		path = removeDotSegments(path)
	}
	if p.cfg.MergeSlashes {
		for strings.Contains(path, "//") {
			path = strings.ReplaceAll(path, "//", "/")
		}
	}
	if path != r.URL.EscapedPath() {
		u, err := url.Parse(path)
		if err != nil {
			return &LocalReply{Status: http.StatusBadRequest, Body: []byte("Bad Request")}
		}
		r.URL.Path, r.URL.RawPath = u.Path, u.RawPath
		r.RequestURI = r.URL.RequestURI()
	}
	for _, h := range p.cfg.RemoveHeaders {
		r.Header.Del(h)
	}
	return nil
}

// decorate adds the headers Envoy's connection manager adds before the
// filters run.
func (p *Proxy) decorate(s *Stream) {
	h := s.Request.Header
	if h.Get("X-Request-Id") == "" {
		h.Set("X-Request-Id", newRequestID())
	}
	h.Set("X-Forwarded-Proto", "http")
	if tcp, ok := s.Remote.(*net.TCPAddr); ok && p.cfg.UseRemoteAddress {
		ip := tcp.IP.String()
		if prior := h.Values("X-Forwarded-For"); len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h.Set("X-Forwarded-For", ip)
	}
}

// newRequestID returns a random UUID (version 4), the form Envoy uses.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func localReplyHeader(lr *LocalReply) http.Header {
	h := lr.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if len(lr.Body) > 0 && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "text/plain")
	}
	h.Set("Content-Length", strconv.Itoa(len(lr.Body)))
	return h
}

func writeLocalReply(w http.ResponseWriter, lr *LocalReply) {
	for k, v := range localReplyHeader(lr) {
		w.Header()[k] = v
	}
	w.WriteHeader(lr.Status)
	_, _ = w.Write(lr.Body)
}

// removeDotSegments is RFC 3986 §5.2.4 on an absolute path.
func removeDotSegments(p string) string {
	if !strings.Contains(p, ".") {
		return p
	}
	var out []string
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		last := i == len(segs)-1
		switch seg {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, seg)
		}
	}
	if len(out) == 0 || out[0] != "" {
		out = append([]string{""}, out...)
	}
	if len(out) == 1 {
		return "/"
	}
	return strings.Join(out, "/")
}

// New returns the stand-in for the Envoy of cfg: the connection manager,
// the ext_authz filter calling mcpauthz over authz, then the filters of
// extra (for example an ext_proc stand-in), and the router to upstream.
//
// When cfg has an ExtProc filter, it follows ext_authz and opens its
// ext_proc streams over authz too (the stand-in requires both filters to
// use one cluster).
func New(cfg Config, authz grpc.ClientConnInterface, upstream *url.URL, log *slog.Logger, extra ...FilterFactory) *Proxy {
	ea := NewExtAuthz(cfg, authz, log)
	chain := []FilterFactory{ea.Factory}
	var ep *ExtProc
	if cfg.ExtProc != nil {
		ep = NewExtProc(*cfg.ExtProc, authz, log)
		chain = append(chain, ep.Factory)
	}
	p := NewProxy(cfg, upstream, log, append(chain, extra...)...)
	p.ExtAuthz = ea
	p.ExtProc = ep
	return p
}

// Exchanges returns the ext_proc conversations of the proxy's list filter,
// in the order they ended; nil without one.
func (p *Proxy) Exchanges() []Exchange {
	if p.ExtProc == nil {
		return nil
	}
	return p.ExtProc.Exchanges()
}

// Checks returns the checks the proxy's ext_authz filter made, in order.
func (p *Proxy) Checks() []Check {
	if p.ExtAuthz == nil {
		return nil
	}
	return p.ExtAuthz.Checks()
}
