package extauthz

import (
	"net/http"

	"github.com/mcpauthz/mcpauthz/internal/prm"
)

// MetadataHandler serves the protected resource metadata (RFC 9728) over
// plain HTTP exactly as Check answers it through Envoy: the same document,
// statuses and headers for every path under the well-known prefix. Mount it
// at WellKnownPrefix and WellKnownPrefix + "/".
func (s *Server) MetadataHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := s.state.Load()
		d := &Decision{}
		s.decideMetadata(st, &httpRequest{method: r.Method, path: r.URL.EscapedPath()}, d)
		h := w.Header()
		for _, kv := range deniedHeaders(s.loc, d) {
			h.Set(kv[0], kv[1])
		}
		w.WriteHeader(d.Status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(d.body)
		}
	})
}

// WellKnownPrefix is the RFC 9728 well-known path under which the metadata
// is served.
const WellKnownPrefix = prm.WellKnownPrefix
