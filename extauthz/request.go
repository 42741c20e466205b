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

// hasURLToken reports whether the URL carries a parameter that some
// server or framework reads as access_token, in the query or as a path
// parameter (see isTokenParam for the spellings).
//
// The query is split on "&" and on ";": Envoy, Go and the WHATWG URL
// parser split on "&" only, but HTML 4 recommended ";" as well and
// servers that follow it (Python's parse_qs before 3.9.2, Rack 2) read
// "?a=1;access_token=t" as two parameters. Path parameters
// ("/mcp;access_token=t", the form of ";jsessionid=") are read by
// servlet containers and Spring's matrix variables; no bearer token
// reader takes a token from there, but it leaks into logs and Referer
// headers exactly as a query token does, and no MCP client sends one.
// The path is checked as sent and percent-decoded ("%3B" for ";").
// Whatever the spelling, such a request is refused: an over-refusal costs
// a legitimate client nothing, a miss lets a token reach the server's
// logs, or a server that honours it.
func (r *httpRequest) hasURLToken() bool {
	if hasTokenParam(r.query, "&;") {
		return true
	}
	if strings.IndexByte(r.path, ';') < 0 && !strings.Contains(r.path, "%") {
		return false
	}
	paths := []string{r.path}
	if dec, err := url.PathUnescape(r.path); err == nil && dec != r.path {
		paths = append(paths, dec)
	}
	for _, p := range paths {
		for _, seg := range strings.Split(p, "/") {
			if _, params, ok := strings.Cut(seg, ";"); ok && hasTokenParam(params, ";") {
				return true
			}
		}
	}
	return false
}

// hasTokenParam reports whether one of the parameters of s, separated by
// any byte of seps, is named access_token (see isTokenParam).
func hasTokenParam(s, seps string) bool {
	for s != "" {
		part := s
		if i := strings.IndexAny(s, seps); i >= 0 {
			part, s = s[:i], s[i+1:]
		} else {
			s = ""
		}
		if isTokenParam(part) {
			return true
		}
	}
	return false
}

// accessTokenParam is the RFC 6750 §2.3 URI query parameter.
const accessTokenParam = "access_token"

// isTokenParam reports whether the parameter name=value (or a bare name)
// is named access_token in a spelling some server accepts: its name
// percent-decoded ("access%5Ftoken", "+" as a space), in any letter case,
// Unicode simple folding included (ASP.NET Core's query collection
// ignores case; .NET upper-cases "ſ" to "S"), with surrounding spaces
// (PHP drops leading ones), dots and spaces as underscores and an array
// suffix removed (PHP reads "access.token" and "access token" as
// access_token, PHP and Rack read "access_token[]" as an array named
// access_token), and an "=" that was encoded ("access_token%3Dt").
func isTokenParam(part string) bool {
	name, _, _ := strings.Cut(part, "=")
	if len(name) < len(accessTokenParam) {
		return false // no spelling is shorter: escapes only lengthen it
	}
	if n, err := url.QueryUnescape(name); err == nil {
		name, _, _ = strings.Cut(n, "=")
	}
	name = strings.Trim(name, " ")
	if i := strings.IndexByte(name, '['); i > 0 && strings.IndexByte(name[i:], ']') > 0 {
		name = name[:i]
	}
	name = strings.Map(func(c rune) rune {
		if c == '.' || c == ' ' || c == '[' {
			return '_'
		}
		return c
	}, name)
	return strings.EqualFold(name, accessTokenParam)
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
