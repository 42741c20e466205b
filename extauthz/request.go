package extauthz

import (
	"net/url"
	"path"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// httpRequest is the part of a CheckRequest that decisions read, extracted
// once. Header names are lowercase; repeated headers are joined with ",",
// which is what Envoy does in the headers map (encode_raw_headers: false).
type httpRequest struct {
	method  string
	rawPath string // :path including the query
	path    string // :path without the query
	query   string
	host    string
	headers map[string]string
	// authorizations counts Authorization header fields; with the headers map
	// Envoy has already joined repeats, detected by the comma.
	authorizations int
	body           []byte
	size           int64
}

func newHTTPRequest(h *authv3.AttributeContext_HttpRequest) *httpRequest {
	r := &httpRequest{
		method:  h.GetMethod(),
		rawPath: h.GetPath(),
		host:    h.GetHost(),
		size:    h.GetSize(),
	}
	if raw := h.GetHeaderMap().GetHeaders(); len(raw) > 0 {
		r.headers = make(map[string]string, len(raw))
		for _, hv := range raw {
			k := strings.ToLower(hv.GetKey())
			v := string(hv.GetRawValue())
			if v == "" {
				v = hv.GetValue()
			}
			if k == "authorization" {
				r.authorizations++
			}
			if old, ok := r.headers[k]; ok {
				v = old + "," + v
			}
			r.headers[k] = v
		}
	} else {
		r.headers = h.GetHeaders()
		if r.headers == nil {
			r.headers = map[string]string{}
		}
		if _, ok := r.headers["authorization"]; ok {
			r.authorizations = 1
		}
	}
	if r.method == "" {
		r.method = r.headers[":method"]
	}
	if r.rawPath == "" {
		r.rawPath = r.headers[":path"]
	}
	if r.host == "" {
		r.host = r.headers[":authority"]
	}
	r.path, r.query, _ = strings.Cut(r.rawPath, "?")
	if b := h.GetRawBody(); len(b) > 0 {
		r.body = b
	} else if h.GetBody() != "" {
		r.body = []byte(h.GetBody())
	}
	return r
}

func (r *httpRequest) header(name string) string { return r.headers[name] }

// queryValues parses the query; a query that does not parse yields what
// could be read, and ok=false.
func (r *httpRequest) queryValues() (url.Values, bool) {
	if r.query == "" {
		return nil, true
	}
	v, err := url.ParseQuery(r.query)
	return v, err == nil
}

// hasQueryToken reports whether the query carries an access token in any
// spelling a framework might accept.
func (r *httpRequest) hasQueryToken() bool {
	if r.query == "" {
		return false
	}
	for _, part := range strings.Split(r.query, "&") {
		name, _, _ := strings.Cut(part, "=")
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if strings.EqualFold(name, "access_token") {
			return true
		}
	}
	return false
}

// canonicalPath maps a request path to the form used to recognise MCP
// endpoints: percent-decoded, ";" parameters removed from segments, slashes
// merged, dot segments resolved, lowercased, no trailing slash. It only ever
// widens what counts as an MCP endpoint, so every spelling of the path that
// the upstream's router might send to its MCP handler gets the full body
// authorization.
func canonicalPath(p string) string {
	if dec, err := url.PathUnescape(p); err == nil {
		p = dec
	}
	p = strings.ReplaceAll(p, `\`, "/")
	if strings.Contains(p, ";") {
		segs := strings.Split(p, "/")
		for i, s := range segs {
			segs[i], _, _ = strings.Cut(s, ";")
		}
		p = strings.Join(segs, "/")
	}
	p = path.Clean("/" + p)
	return strings.ToLower(p)
}
