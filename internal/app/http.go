package app

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	"golang.org/x/time/rate"

	"github.com/mcpauthz/mcpauthz/extauthz"
)

// HTTPLimits bound what the HTTP server of http_addr may cost. It serves
// probes, Prometheus and the metadata document; none of them may take the
// CPU, memory or connections the checks need.
type HTTPLimits struct {
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are
	// those of http.Server; MaxHeaderBytes too.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// MaxConnections bounds the open connections (≤ 0: no bound); beyond
	// it, new connections wait in the listen backlog.
	MaxConnections int
	// ScrapesPerSecond and ScrapeBurst pace /metrics: a scrape beyond the
	// pace waits for its turn, up to ScrapeWait, then gets 503.
	ScrapesPerSecond float64
	ScrapeBurst      int
	ScrapeWait       time.Duration
	// MaxScrapesInFlight bounds the scrapes being gathered at once (503
	// beyond), and ScrapeTimeout the time to gather and encode one (503
	// after it).
	MaxScrapesInFlight int
	ScrapeTimeout      time.Duration
}

// DefaultHTTPLimits are the limits Compile sets.
//
// The idle timeout is short because every client of http_addr either
// opens a connection per request (kubelet probes) or requests rarely
// (Prometheus, every 15s or more): reconnecting costs one handshake per
// scrape, while idle connections held for long fill MaxConnections.
//
// Scrapes are paced rather than only refused when too many are in flight:
// a refusal is answered at once, so a client that pipelines scrapes gets
// the next refusal at once too, and a few such connections keep cores
// busy with nothing but 503s. A paced scrape waits without using CPU, so
// a flood costs about ScrapesPerSecond gathers per second whatever its
// size; Prometheus scrapes a few times a minute per replica.
func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{
		ReadHeaderTimeout:  5 * time.Second,
		ReadTimeout:        10 * time.Second,
		WriteTimeout:       15 * time.Second, // > ScrapeWait + ScrapeTimeout
		IdleTimeout:        10 * time.Second,
		MaxHeaderBytes:     16 << 10,
		MaxConnections:     128,
		ScrapesPerSecond:   2,
		ScrapeBurst:        4,
		ScrapeWait:         5 * time.Second,
		MaxScrapesInFlight: 4,
		ScrapeTimeout:      5 * time.Second,
	}
}

// HTTPServer returns the server of http_addr: HTTPHandler with the
// timeouts of rt.HTTP. Serve it on HTTPListener(ln).
func (rt *Runtime) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           rt.HTTPHandler(),
		ReadHeaderTimeout: rt.HTTP.ReadHeaderTimeout,
		ReadTimeout:       rt.HTTP.ReadTimeout,
		WriteTimeout:      rt.HTTP.WriteTimeout,
		IdleTimeout:       rt.HTTP.IdleTimeout,
		MaxHeaderBytes:    rt.HTTP.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(rt.log.Handler(), slog.LevelDebug),
	}
}

// HTTPListener bounds the connections ln accepts at once to
// rt.HTTP.MaxConnections.
func (rt *Runtime) HTTPListener(ln net.Listener) net.Listener {
	if rt.HTTP.MaxConnections <= 0 {
		return ln
	}
	return netutil.LimitListener(ln, rt.HTTP.MaxConnections)
}

// HTTPHandler serves http_addr: the protected resource metadata (the same
// answers the ext_authz service gives through Envoy), /healthz (alive),
// /readyz (ready exactly when gRPC health says SERVING; the body is
// Readiness as JSON, with the serving policy and its last reload) and, when
// observing, /metrics, paced and bounded by rt.HTTP.
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
		h := promhttp.HandlerFor(rt.Registry, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(rt.log.Handler(), slog.LevelWarn),
			// One failing collector must not blind every dashboard: the
			// rest is served, and the failure is logged and counted in
			// promhttp_metric_handler_errors_total.
			ErrorHandling:       promhttp.ContinueOnError,
			Registry:            rt.Registry,
			MaxRequestsInFlight: rt.HTTP.MaxScrapesInFlight,
			Timeout:             rt.HTTP.ScrapeTimeout,
		})
		mux.Handle("/metrics", promhttp.InstrumentMetricHandler(rt.Registry, pace(h, rt.HTTP)))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"not_found"}`))
	})
	return mux
}

// pace lets requests through to next at l.ScrapesPerSecond (bursts of
// l.ScrapeBurst); the others wait for their turn. A request whose turn
// is more than l.ScrapeWait away is held for l.ScrapeWait anyway before
// its 503, so that a client that retries or pipelines at once cannot turn
// refusals into a busy loop.
func pace(next http.Handler, l HTTPLimits) http.Handler {
	if l.ScrapesPerSecond <= 0 {
		return next
	}
	lim := rate.NewLimiter(rate.Limit(l.ScrapesPerSecond), max(l.ScrapeBurst, 1))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res := lim.Reserve()
		wait := res.Delay()
		refuse := wait > l.ScrapeWait
		if refuse {
			res.Cancel() // the turn goes back to requests that can wait for it
			wait = l.ScrapeWait
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done(): // the client left
			res.Cancel()
			return
		}
		if refuse {
			tooMany(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func tooMany(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte("too many scrapes: /metrics is paced; scrape less often\n"))
}
