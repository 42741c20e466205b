package app

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcpauthz/mcpauthz/extauthz"
)

// HTTPHandler serves http_addr: the protected resource metadata (the same
// answers the ext_authz service gives through Envoy), /healthz (alive),
// /readyz (ready exactly when gRPC health says SERVING; the body is
// Readiness as JSON, with the serving policy and its last reload) and, when
// observing, /metrics.
func (rt *Runtime) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	md := rt.Server.MetadataHandler()
	mux.Handle(extauthz.WellKnownPrefix, md)
	mux.Handle(extauthz.WellKnownPrefix+"/", md)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ready := rt.Readiness()
		body, _ := json.Marshal(ready)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if ready.Status != "ready" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write(append(body, '\n'))
	})
	if rt.Registry != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(rt.Registry, promhttp.HandlerOpts{Registry: rt.Registry}))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"not_found"}`))
	})
	return mux
}
