// Package metrics defines the Prometheus metrics of mcpauthz. Collectors are
// registered into an injected registry, never the global one, and every
// label takes its values from a closed set so that no client can create
// series.
package metrics

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/extproc"
	"github.com/mcpauthz/mcpauthz/internal/jwtauth"
	"github.com/mcpauthz/mcpauthz/internal/mcprpc"
	"github.com/mcpauthz/mcpauthz/internal/upstream"
	"github.com/mcpauthz/mcpauthz/policy"
)

// Metrics records decisions and serves as an extauthz.Recorder.
type Metrics struct {
	decisions    *prometheus.CounterVec
	duration     prometheus.Histogram
	policyEval   prometheus.Histogram
	tokens       *prometheus.CounterVec
	inFlight     prometheus.Gauge
	jwksRefresh  *prometheus.CounterVec
	jwksKeys     *prometheus.GaugeVec
	jwksSuccess  *prometheus.GaugeVec
	reloads      *prometheus.CounterVec
	refusals     *prometheus.CounterVec
	policyInfo   *prometheus.GaugeVec
	reloadTime   prometheus.Gauge
	lastReloadOK prometheus.Gauge
	lastReload   prometheus.Gauge
	lists        *prometheus.CounterVec
	listRemoved  *prometheus.CounterVec
	listErrors   *prometheus.CounterVec
	listDuration prometheus.Histogram
	credFetches  *prometheus.CounterVec
	credLatency  *prometheus.HistogramVec
	credCache    *prometheus.CounterVec
	credSources  map[string]bool
	grpc         *grpcprom.ServerMetrics
	caches       *cacheCollector
	issuers      map[string]bool
	lastRevision atomic.Pointer[string]
	// tools are the tool names that may appear as label values (from policy
	// data); anything else is "other".
	tools atomic.Pointer[map[string]bool]
}

var _ extauthz.Recorder = (*Metrics)(nil)

// latencyBuckets start at 25µs: a warm check takes tens of microseconds.
var latencyBuckets = []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1}

// New creates the collectors and registers them with reg, together with the
// Go and process collectors. issuers are the configured issuer identifiers,
// the only values the issuer label takes (besides "other").
func New(reg prometheus.Registerer, issuers []string) *Metrics {
	m := &Metrics{
		issuers: map[string]bool{},
		policyEval: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mcpauthz_policy_eval_duration_seconds",
			Help:    "Time to evaluate the policy for one request (all messages of a batch).",
			Buckets: latencyBuckets,
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_token_validations_total",
			Help: "Bearer token validations by issuer and result (valid, or the rejection reason).",
		}, []string{"issuer", "result"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcpauthz_checks_in_flight",
			Help: "ext_authz checks being decided.",
		}),
		jwksRefresh: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_jwks_refreshes_total",
			Help: "JWKS fetches by issuer and result (success, error).",
		}, []string{"issuer", "result"}),
		jwksKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcpauthz_jwks_keys",
			Help: "Usable verification keys per issuer.",
		}, []string{"issuer"}),
		jwksSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcpauthz_jwks_last_success_timestamp_seconds",
			Help: "Unix time of the last successful JWKS fetch per issuer.",
		}, []string{"issuer"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_policy_reloads_total",
			Help: "Policy loads by result: success, error (unreadable, does not compile, download failed) or refused (compiles but fails its activation check).",
		}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_policy_activation_refusals_total",
			Help: "Policies that compiled but were not activated because their activation check failed, by reason (test_failed, test_error, eval_error, invalid_decision, invalid_visibility).",
		}, []string{"reason"}),
		lastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcpauthz_policy_last_reload_successful",
			Help: "1 if the last policy load attempt succeeded, 0 if it failed or was refused (the last good policy serves) or none was made yet.",
		}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcpauthz_policy_last_reload_timestamp_seconds",
			Help: "Unix time of the last policy load attempt, successful or not; 0 before the first.",
		}),
		policyInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcpauthz_policy_info",
			Help: "The active policy revision (value 1).",
		}, []string{"revision"}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcpauthz_policy_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful policy load.",
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_decisions_total",
			Help: "Authorization decisions by outcome, HTTP status, reason, MCP method and tool.",
		}, []string{"decision", "status", "reason", "mcp_method", "tool"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mcpauthz_check_duration_seconds",
			Help:    "Time to decide one ext_authz Check.",
			Buckets: latencyBuckets,
		}),
		lists: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_list_filter_total",
			Help: "List responses handled by the list filter (ext_proc), by list method and result (filtered, or error).",
		}, []string{"mcp_method", "result"}),
		listRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_list_items_removed_total",
			Help: "Items the list filter removed from list responses, by list method.",
		}, []string{"mcp_method"}),
		listErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_list_filter_errors_total",
			Help: "List responses the list filter answered with a JSON-RPC error (it fails closed), by reason.",
		}, []string{"reason"}),
		listDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mcpauthz_list_filter_duration_seconds",
			Help:    "Time to filter one list response: reading it, the policy, writing the result.",
			Buckets: latencyBuckets,
		}),
		credFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_upstream_credential_fetches_total",
			Help: "Requests to obtain an upstream credential from its origin (token exchange, client credentials, static file reads), by source and result (ok, or the failure reason).",
		}, []string{"source", "result"}),
		credLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcpauthz_upstream_credential_fetch_duration_seconds",
			Help:    "Time to obtain an upstream credential from its origin, by source.",
			Buckets: latencyBuckets,
		}, []string{"source"}),
		credCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_upstream_credential_cache_total",
			Help: "Token exchange cache events (hit, miss, eviction), by source.",
		}, []string{"source", "event"}),
		credSources: map[string]bool{},
		caches:      newCacheCollector(),
		grpc:        grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(latencyBuckets))),
	}
	for _, is := range issuers {
		m.issuers[is] = true
	}
	// Every list-filter series exists from the start, at 0.
	for _, method := range []string{"tools/list", "prompts/list", "resources/list", "resources/templates/list"} {
		m.lists.WithLabelValues(method, "filtered")
		m.lists.WithLabelValues(method, "error")
		m.listRemoved.WithLabelValues(method)
	}
	for _, r := range extproc.Reasons() {
		m.listErrors.WithLabelValues(string(r))
	}
	// Every decision and token series of the request path exists from the
	// start, at 0: rate() and increase() need a sample before the first
	// event to count it, and a ratio needs both sides to exist. Decisions
	// are pre-created without MCP method and tool (the labels of a
	// request that carries none).
	for _, o := range extauthz.Outcomes() {
		m.decisions.WithLabelValues(o.Outcome, strconv.Itoa(o.Status), o.Reason, "", "")
	}
	for _, is := range issuers {
		m.tokens.WithLabelValues(is, "valid")
	}
	for _, r := range jwtauth.Reasons() {
		// A rejected token has no verified issuer.
		m.tokens.WithLabelValues("unknown", r)
	}
	for _, r := range policy.ReloadResults() {
		m.reloads.WithLabelValues(r)
	}
	for _, r := range policy.ActivationReasons() {
		m.refusals.WithLabelValues(r)
	}
	reg.MustRegister(m.decisions, m.duration, m.policyEval, m.tokens, m.inFlight,
		m.jwksRefresh, m.jwksKeys, m.jwksSuccess, m.reloads, m.refusals, m.policyInfo, m.reloadTime,
		m.lastReloadOK, m.lastReload, m.grpc,
		m.lists, m.listRemoved, m.listErrors, m.listDuration,
		m.credFetches, m.credLatency, m.credCache, m.caches,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// JWKSRefresh records one JWKS fetch; it has the signature of
// jwtauth.Options.OnJWKSRefresh.
func (m *Metrics) JWKSRefresh(issuer string, keys int, err error) {
	issuer = m.issuerLabel(issuer)
	if err != nil {
		m.jwksRefresh.WithLabelValues(issuer, "error").Inc()
		return
	}
	m.jwksRefresh.WithLabelValues(issuer, "success").Inc()
	m.jwksKeys.WithLabelValues(issuer).Set(float64(keys))
	m.jwksSuccess.WithLabelValues(issuer).SetToCurrentTime()
}

// PolicyReload records one policy load attempt; it has the signature of
// policy.Options.OnReload. The last attempt's outcome stays in
// mcpauthz_policy_last_reload_successful until the next attempt, so an
// alert on it holds for as long as the last change is not serving, however
// long ago it failed.
func (m *Metrics) PolicyReload(revision string, err error) {
	m.reloads.WithLabelValues(policy.ReloadResult(err)).Inc()
	m.lastReload.SetToCurrentTime()
	if err != nil {
		m.lastReloadOK.Set(0)
		var ae *policy.ActivationError
		if errors.As(err, &ae) {
			m.refusals.WithLabelValues(ae.Reason()).Inc()
		}
		return
	}
	m.lastReloadOK.Set(1)
	m.reloadTime.SetToCurrentTime()
	if old := m.lastRevision.Swap(&revision); old == nil || *old != revision {
		m.policyInfo.Reset()
		m.policyInfo.WithLabelValues(revision).Set(1)
	}
}

func (m *Metrics) issuerLabel(issuer string) string {
	if m.issuers[issuer] {
		return issuer
	}
	return "other"
}

// GRPCUnaryInterceptor records gRPC server metrics and checks in flight.
func (m *Metrics) GRPCUnaryInterceptor() grpc.UnaryServerInterceptor {
	inner := m.grpc.UnaryServerInterceptor()
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		m.inFlight.Inc()
		defer m.inFlight.Dec()
		return inner(ctx, req, info, handler)
	}
}

// InitGRPC pre-creates the gRPC series of the registered services.
func (m *Metrics) InitGRPC(s *grpc.Server) { m.grpc.InitializeMetrics(s) }

// SetTools sets the tool names allowed as label values.
func (m *Metrics) SetTools(names []string) {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	m.tools.Store(&set)
}

// Record implements extauthz.Recorder.
func (m *Metrics) Record(_ context.Context, d *extauthz.Decision) {
	m.decisions.WithLabelValues(d.Outcome(), strconv.Itoa(d.Status), d.Reason, MethodLabel(d.MCPMethod()), m.toolLabel(d.Tool())).Inc()
	m.duration.Observe(d.Duration.Seconds())
	if d.PolicyDuration > 0 {
		m.policyEval.Observe(d.PolicyDuration.Seconds())
	}
	if d.TokenResult != "" {
		issuer := "unknown"
		if d.Identity != nil {
			issuer = m.issuerLabel(d.Identity.Issuer)
		}
		m.tokens.WithLabelValues(issuer, d.TokenResult).Inc()
	}
}

func (m *Metrics) toolLabel(tool string) string {
	if tool == "" {
		return ""
	}
	if set := m.tools.Load(); set != nil && (*set)[tool] {
		return tool
	}
	return "other"
}

// SetCredentialSources declares the configured upstream credential sources,
// the only values the source label takes (besides "other"), and pre-creates
// their series.
func (m *Metrics) SetCredentialSources(names []string) {
	for _, n := range names {
		m.credSources[n] = true
		m.credFetches.WithLabelValues(n, upstream.ResultOK)
		for _, r := range upstream.Reasons() {
			m.credFetches.WithLabelValues(n, string(r))
		}
		for _, e := range []upstream.CacheEvent{upstream.CacheHit, upstream.CacheMiss, upstream.CacheEviction} {
			m.credCache.WithLabelValues(n, string(e))
		}
	}
}

// UpstreamObserver returns the observer of the upstream credential
// sources.
func (m *Metrics) UpstreamObserver() upstream.Observer { return credObserver{m} }

type credObserver struct{ m *Metrics }

func (o credObserver) source(name string) string {
	if o.m.credSources[name] {
		return name
	}
	return "other"
}

func (o credObserver) ObserveFetch(source, result string, d time.Duration) {
	source = o.source(source)
	o.m.credFetches.WithLabelValues(source, result).Inc()
	o.m.credLatency.WithLabelValues(source).Observe(d.Seconds())
}

func (o credObserver) ObserveCache(source string, event upstream.CacheEvent) {
	o.m.credCache.WithLabelValues(o.source(source), string(event)).Inc()
}

// ListFilter returns the recorder of the list filter's outcomes.
func (m *Metrics) ListFilter() extproc.Recorder { return listRecorder{m} }

type listRecorder struct{ m *Metrics }

// Record implements extproc.Recorder.
func (r listRecorder) Record(_ context.Context, o extproc.Outcome) {
	method := o.Method
	if extproc.KindOf(method) == "" {
		method = "" // not tied to a list (a body that could not be read at all)
	}
	if o.Reason != "" {
		r.m.listErrors.WithLabelValues(string(o.Reason)).Inc()
		if method != "" {
			r.m.lists.WithLabelValues(method, "error").Inc()
		}
		return
	}
	r.m.lists.WithLabelValues(method, "filtered").Inc()
	r.m.listRemoved.WithLabelValues(method).Add(float64(o.Removed))
	r.m.listDuration.Observe(o.Duration.Seconds())
}

// MethodLabel folds an MCP method into the closed label set.
func MethodLabel(method string) string {
	if method == "" || mcprpc.KnownMethod(method) {
		return method
	}
	return "other"
}
