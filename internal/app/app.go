// Package app is the one place where a configuration becomes running parts.
//
// Compile maps a config.Config onto the options of each package (token
// verifier, policy engine and its source, ext_authz server, decision log,
// metrics), lets each package apply its defaults and check its rules, and
// returns every problem at once, located in the configuration file. A
// Runtime that Compile returned is complete: `mcpauthz serve`, `check`,
// `validate` and the benchmark all build through it, so any configuration
// `validate` accepts, `serve` accepts, and they decide exactly alike.
//
// Compile starts nothing and does no network I/O (it reads the files the
// configuration names). Start starts every background loop: key set
// refreshes, policy file watching or bundle polling, and the readiness
// watch that drives gRPC health and /readyz together. Close stops them all
// and waits for them; it is safe after a failed Compile's partial work
// because Compile cleans up after itself.
package app

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/extproc"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/grpcopts"
	"github.com/mcpauthz/mcpauthz/internal/jwtauth"
	"github.com/mcpauthz/mcpauthz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/internal/problem"
	"github.com/mcpauthz/mcpauthz/internal/traceparent"
	"github.com/mcpauthz/mcpauthz/internal/tracing"
	"github.com/mcpauthz/mcpauthz/internal/upstream"
	"github.com/mcpauthz/mcpauthz/policy"
)

// Defaults of the keys this package owns.
const (
	DefaultGRPCAddr        = "127.0.0.1:9191"
	DefaultHTTPAddr        = "127.0.0.1:9192"
	DefaultReloadInterval  = 2 * time.Second
	DefaultShutdownTimeout = 15 * time.Second
	// DefaultDrainDelay is long enough for Kubernetes to take a pod out
	// of its endpoints and for Envoy's health checks to see NOT_SERVING.
	DefaultDrainDelay = 5 * time.Second
	// TracingFlushTimeout bounds the export of the last spans in Close.
	TracingFlushTimeout = 3 * time.Second
)

// Options are what Compile needs besides the configuration.
type Options struct {
	// Logger receives every log line, the decision log included; nil
	// discards them.
	Logger *slog.Logger
	// Observe adds Prometheus metrics (in a registry of the Runtime's own)
	// and the decision log.
	Observe bool
	// HTTPClient fetches metadata and key sets; nil selects the default.
	HTTPClient *http.Client
	// Trace exports the spans of checks as the tracing block and the
	// OTEL_* variables say (`serve`); without it they are only validated
	// (`check`, `validate`).
	Trace bool
	// Getenv reads the OTEL_* variables of tracing; nil means os.Getenv.
	Getenv func(string) string
	// Version is reported as the service.version of traces.
	Version string
	// LogDropped, when set, counts the log lines the asynchronous log
	// output dropped; with Observe it is the metric
	// mcpauthz_log_lines_dropped_total.
	LogDropped func() uint64
}

// Runtime is a compiled configuration: the request path and its
// background work.
type Runtime struct {
	Server *extauthz.Server
	// ListFilter is the ext_proc service that filters list responses; nil
	// when list_filtering.enabled is false.
	ListFilter *extproc.Server
	Engine     *policy.Engine
	Verifier   *jwtauth.Verifier
	// Metrics and Registry are nil unless Options.Observe.
	Metrics  *metrics.Metrics
	Registry *prometheus.Registry

	// Settings of the process, from the configuration with defaults.
	GRPCAddr string
	HTTPAddr string
	// DrainDelay is how long new checks are still accepted after the
	// shutdown signal; ShutdownTimeout bounds the whole shutdown, from the
	// signal to the exit (shutdown.drain_delay and shutdown.timeout).
	DrainDelay      time.Duration
	ShutdownTimeout time.Duration
	Resource        string
	Shadow          bool
	// HTTP are the limits of the server of http_addr (HTTPServer); Compile
	// sets DefaultHTTPLimits.
	HTTP HTTPLimits

	log       *slog.Logger
	policySrc policy.Source        // files, when bundle is nil
	bundle    *policy.BundleSource // a bundle instead of files
	reload    time.Duration        // policy file polling; ≤ 0 off

	// credentials are the upstream credential sources, by name.
	credentials map[string]upstreamSource
	// tracing exports the spans of checks; disabled unless configured.
	tracing *tracing.Provider

	health *health.Server
	ready  atomic.Bool
	drain  atomic.Bool

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once
}

// Compile builds the Runtime of cfg. Every problem of the configuration is
// reported at once: values each package rejects, located by cfg.Locate at
// their file:line, and Rego that does not compile, at its own file:line.
func Compile(cfg *config.Config, opts Options) (_ *Runtime, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rt := &Runtime{
		GRPCAddr:        orDefault(cfg.GRPCAddr, DefaultGRPCAddr),
		HTTPAddr:        orDefault(cfg.HTTPAddr, DefaultHTTPAddr),
		ShutdownTimeout: cfg.Shutdown.Timeout.D(),
		Resource:        cfg.Resource,
		Shadow:          cfg.Shadow,
		HTTP:            DefaultHTTPLimits(),
		log:             log,
		health:          health.NewServer(),
	}
	rt.ctx, rt.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			// Whatever was built is released: a failed Compile leaves
			// nothing running.
			rt.Close()
			err = cfg.Locate(err)
		}
	}()
	if rt.ShutdownTimeout == 0 {
		rt.ShutdownTimeout = DefaultShutdownTimeout
	}
	if d := cfg.Shutdown.DrainDelay; d != nil {
		rt.DrainDelay = d.D()
	} else {
		rt.DrainDelay = min(DefaultDrainDelay, rt.ShutdownTimeout/3)
	}
	rt.setServing(false)

	var errs problem.List
	addr("grpc_addr", rt.GRPCAddr, &errs)
	addr("http_addr", rt.HTTPAddr, &errs)
	if !slices.Contains([]string{"", "debug", "info", "warn", "error"}, cfg.Log.Level) {
		errs.Add("log.level", "%q is not one of debug, info, warn, error", cfg.Log.Level)
	}
	if !slices.Contains([]string{"", "json", "text"}, cfg.Log.Format) {
		errs.Add("log.format", "%q is not one of json, text", cfg.Log.Format)
	}
	switch {
	case rt.ShutdownTimeout < 0 || rt.ShutdownTimeout > 10*time.Minute:
		errs.Add("shutdown.timeout", "must be positive and at most 10m (0 selects the default, %v)", DefaultShutdownTimeout)
	case rt.DrainDelay < 0:
		errs.Add("shutdown.drain_delay", "must not be negative")
	case rt.DrainDelay >= rt.ShutdownTimeout:
		// The timeout bounds the whole shutdown: a drain that uses all of
		// it would leave the checks in flight no time to finish.
		errs.Add("shutdown.drain_delay", "must be shorter than shutdown.timeout (%v), which bounds the whole shutdown", rt.ShutdownTimeout)
	}

	var recorders []extauthz.Recorder
	var onJWKS func(string, int, error)
	if opts.Observe {
		rt.Registry = prometheus.NewRegistry()
		issuers := make([]string, len(cfg.Issuers))
		for i, is := range cfg.Issuers {
			issuers[i] = is.Issuer
		}
		rt.Metrics = metrics.New(rt.Registry, issuers)
		if d := opts.LogDropped; d != nil {
			rt.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "mcpauthz_log_lines_dropped_total",
				Help: "Log lines (decision log included) dropped because the log output could not keep up.",
			}, func() float64 { return float64(d()) }))
		}
		dl := cfg.Log.Decisions
		lr, err := extauthz.NewLogRecorder(extauthz.LogOptions{
			Logger:          log,
			AllowSampleRate: dl.AllowSampleRate,
			Arguments:       dl.Arguments,
			RedactKeys:      dl.RedactKeys,
		})
		errs.Merge("log.decisions", err)
		recorders = []extauthz.Recorder{rt.Metrics, lr}
		onJWKS = rt.Metrics.JWKSRefresh
	}

	tcfg := tracing.Config{
		Enabled:     cfg.Tracing.Enabled,
		Endpoint:    cfg.Tracing.Endpoint,
		Protocol:    cfg.Tracing.Protocol,
		SampleRatio: cfg.Tracing.SampleRatio,
		ServiceName: cfg.Tracing.ServiceName,
	}
	topts := tracing.Options{Getenv: opts.Getenv, ServiceVersion: opts.Version, Logger: log}
	if opts.Trace {
		rt.tracing, err = tracing.New(rt.ctx, tcfg, topts)
	} else {
		err = tracing.Validate(tcfg, topts)
	}
	errs.Merge("tracing", err)
	httpClient := opts.HTTPClient
	var wrapTransport func(http.RoundTripper) http.RoundTripper
	if tp := rt.tracing.TracerProvider(); tp != nil {
		// Spans for the HTTP calls of a check (introspection, token
		// exchange) as children of its span, and for key set fetches.
		wrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			return otelhttp.NewTransport(rt, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(propagation.TraceContext{}))
		}
		c := &http.Client{}
		if httpClient != nil {
			*c = *httpClient
		}
		base := c.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		c.Transport = wrapTransport(base)
		httpClient = c
	}

	popts := policy.Options{
		Logger:             log,
		EvalTimeout:        cfg.Policy.EvalTimeout.D(),
		DecisionCacheSize:  cfg.Policy.DecisionCacheSize,
		DecisionCacheBytes: cfg.Policy.DecisionCacheBytes,
	}
	errs.Merge("policy", popts.Validate())
	switch b := cfg.Policy.Bundle; {
	case b != nil:
		if len(cfg.Policy.Paths) > 0 {
			errs.Add("policy.bundle", "set either policy.paths or policy.bundle, not both")
		}
		src, err := bundleSource(b)
		errs.Merge("policy.bundle", err)
		rt.bundle = &src
	default:
		rt.policySrc = policySource(cfg)
		errs.Merge("policy", rt.policySrc.Validate())
		rt.reload = cfg.Policy.ReloadInterval.D()
		if rt.reload == 0 {
			rt.reload = DefaultReloadInterval
		}
	}

	rt.Verifier, err = jwtauth.NewVerifier(jwtauth.Options{
		Issuers:         issuerOptions(cfg.Issuers),
		DefaultAudience: cfg.Resource,
		TokenCacheSize:  cfg.TokenCacheSize,
		TokenCacheBytes: cfg.TokenCacheBytes,
		Logger:          log,
		HTTPClient:      httpClient,
		OnJWKSRefresh:   onJWKS,
	})
	errs.Merge("", err)

	rt.credentials, err = credentialSources(cfg, upstream.Options{Logger: log, WrapTransport: wrapTransport}, rt.Metrics)
	errs.Merge("", err)
	credentials := make(map[string]extauthz.CredentialSource, len(rt.credentials))
	for name, src := range rt.credentials {
		credentials[name] = credentialSource{src}
	}

	var authn extauthz.Authenticator
	if rt.Verifier != nil {
		authn = NewAuthenticator(rt.Verifier)
	} else {
		authn = unavailable{}
	}
	rt.Server, err = extauthz.New(extauthz.Options{
		Resource:              cfg.Resource,
		ResourceName:          cfg.ResourceName,
		ResourceDocumentation: cfg.ResourceDocumentation,
		AuthorizationServers:  cfg.AuthorizationServers,
		ScopesSupported:       cfg.ScopesSupported,
		MCP: extauthz.MCPOptions{
			Paths:          cfg.MCP.Paths,
			AllowedOrigins: cfg.MCP.AllowedOrigins,
			MaxBatch:       cfg.MCP.MaxBatch,
			MaxDepth:       cfg.MCP.MaxDepth,
		},
		Upstream: extauthz.UpstreamOptions{
			ForwardToken: cfg.Upstream.ForwardToken,
			IdentityHeaders: extauthz.IdentityHeaders{
				Subject:  cfg.Upstream.IdentityHeaders.Subject,
				ClientID: cfg.Upstream.IdentityHeaders.ClientID,
				Scopes:   cfg.Upstream.IdentityHeaders.Scopes,
				Issuer:   cfg.Upstream.IdentityHeaders.Issuer,
				Actor:    cfg.Upstream.IdentityHeaders.Actor,
			},
		},
		Shadow:        cfg.Shadow,
		ListFilter:    listFiltering(cfg),
		Credentials:   credentials,
		Authenticator: authn,
		Logger:        log,
		Recorders:     recorders,
		Tracer:        rt.tracing.Tracer(),

		AnswerCacheSize:  cfg.AnswerCacheSize,
		AnswerCacheBytes: cfg.AnswerCacheBytes,
	})
	errs.Merge("", err)
	lf := cfg.ListFiltering
	if lf.PolicyTimeout < 0 {
		errs.Add("list_filtering.policy_timeout", "must be positive")
	}
	if lf.MaxBufferedBytes < 0 || lf.MaxBufferedBytes > 1<<30 {
		errs.Add("list_filtering.max_buffered_bytes", "must be between 1 and 1073741824 (0: the default, 8 MiB)")
	}
	if lf.ParseMemoSize < -1 || lf.ParseMemoSize > 4096 {
		errs.Add("list_filtering.parse_memo_size", "must be -1 (disabled), 0 (default %d) or a size up to 4096", extproc.DefaultParseMemoSize)
	}
	if lf.ParseMemoBytes != 0 && (lf.ParseMemoBytes < 65536 || lf.ParseMemoBytes > 1<<30) {
		errs.Add("list_filtering.parse_memo_bytes", "must be 0 (default %d) or from 65536 to 1073741824 bytes", extproc.DefaultParseMemoBytes)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}

	popts.OnActivate = func(g *policy.Generation) {
		rt.Server.SetPolicy(g)
		if rt.Metrics != nil {
			rt.Metrics.SetTools(g.Tools())
		}
	}
	if rt.Metrics != nil {
		popts.OnReload = rt.Metrics.PolicyReload
	}
	rt.Engine = policy.New(popts)
	if rt.Metrics != nil {
		rt.Metrics.ObserveCaches(rt.Verifier, rt.Engine, rt.Server)
	}
	if listFiltering(cfg) {
		lopts := extproc.Options{
			Policy:           listPolicy{rt.Engine},
			Logger:           log,
			PolicyTimeout:    lf.PolicyTimeout.D(),
			MaxBufferedBytes: lf.MaxBufferedBytes,
			ParseMemoSize:    lf.ParseMemoSize,
			ParseMemoBytes:   lf.ParseMemoBytes,
		}
		var recs listRecorders
		if opts.Observe {
			recs = append(recs, rt.Metrics.ListFilter(), listLog{log})
		}
		if rt.tracing.Enabled() {
			recs = append(recs, listSpan{})
		}
		if len(recs) > 0 {
			lopts.Recorder = recs
		}
		if rt.ListFilter, err = extproc.New(lopts); err != nil {
			return nil, err
		}
		if rt.Metrics != nil {
			rt.Metrics.SetCache(metrics.CacheListParse, func() metrics.CacheStats { return metrics.CacheStats(rt.ListFilter.ParseMemoStats()) })
		}
	}
	if rt.bundle == nil {
		if err := rt.Engine.Load(rt.ctx, rt.policySrc); err != nil {
			return nil, &problem.Error{Path: "policy", Msg: err.Error(), Err: err}
		}
	}
	return rt, nil
}

// Start starts the background work: key set refreshes, policy file
// watching or bundle polling, and the readiness watch. It returns at once
// and does nothing after the first call or after Close.
func (rt *Runtime) Start() {
	rt.startOnce.Do(func() {
		if rt.ctx.Err() != nil {
			return
		}
		rt.Verifier.Start()
		for _, src := range rt.credentials {
			src.Start()
		}
		switch {
		case rt.bundle != nil:
			src := *rt.bundle
			rt.goBackground(func(ctx context.Context) { _ = rt.Engine.RunBundle(ctx, src) })
		case rt.reload > 0:
			rt.goBackground(func(ctx context.Context) { rt.Engine.Watch(ctx, rt.policySrc, rt.reload) })
		}
		rt.goBackground(func(ctx context.Context) {
			for _, ch := range []<-chan struct{}{rt.Verifier.ReadyChan(), rt.Engine.ReadyChan()} {
				select {
				case <-ch:
				case <-ctx.Done():
					return
				}
			}
			rt.setServing(true)
			rt.log.Info("ready", "policy_revision", rt.Engine.Revision())
		})
	})
}

func (rt *Runtime) goBackground(f func(context.Context)) {
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		f(rt.ctx)
	}()
}

// Close stops every background loop and waits for them. It is idempotent.
func (rt *Runtime) Close() error {
	rt.closeOnce.Do(func() {
		rt.cancel()
		rt.wg.Wait()
		if rt.Verifier != nil {
			rt.Verifier.Close()
		}
		for _, src := range rt.credentials {
			src.Close()
		}
		// The spans still queued go out before the process ends, within
		// a bound: a collector that is down must not hold up the exit.
		ctx, cancel := context.WithTimeout(context.Background(), TracingFlushTimeout)
		if err := rt.tracing.Shutdown(ctx); err != nil {
			rt.log.Warn("tracing: spans not exported at shutdown", "error", err.Error())
		}
		cancel()
	})
	return nil
}

// Ready reports whether checks can be decided: a policy is compiled and
// every issuer has keys, and the process is not draining. gRPC health says
// SERVING exactly when Ready is true: both change in setServing.
func (rt *Runtime) Ready() bool { return rt.ready.Load() }

// WaitReady blocks until the policy is loaded and every issuer has keys, or
// ctx is done.
func (rt *Runtime) WaitReady(ctx context.Context) error {
	for _, ch := range []<-chan struct{}{rt.Verifier.ReadyChan(), rt.Engine.ReadyChan()} {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// NotReadyReason says why Ready is false ("" when it is true).
func (rt *Runtime) NotReadyReason() string {
	switch {
	case rt.drain.Load():
		return "draining"
	case rt.Ready():
		return ""
	case !rt.Engine.Ready() && !rt.Verifier.Ready():
		return "policy not loaded and keys not loaded for every issuer"
	case !rt.Engine.Ready():
		return "policy not loaded"
	case !rt.Verifier.Ready():
		return "keys not loaded for every issuer"
	default:
		return "starting"
	}
}

// Drain reports not-serving from now on (gRPC health and /readyz, with
// the reason "draining"), before a graceful stop; checks keep being
// decided exactly as before: nothing they need (key refreshes,
// introspection calls, policy reloads) stops before Close.
func (rt *Runtime) Drain() {
	rt.drain.Store(true)
	rt.health.Shutdown()
	rt.ready.Store(false)
}

// setServing moves gRPC health and Ready together; once draining, they
// stay not-serving.
func (rt *Runtime) setServing(serving bool) {
	if rt.drain.Load() {
		return
	}
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	rt.health.SetServingStatus("", st)
	rt.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
	if rt.ListFilter != nil {
		rt.health.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, st)
	}
	rt.ready.Store(serving)
}

// GRPCServer returns a gRPC server with the ext_authz and health services
// registered, the transport settings of grpcopts and, when observing, the
// metrics interceptor.
func (rt *Runtime) GRPCServer() *grpc.Server {
	opts := grpcopts.ServerOptions()
	if rt.Metrics != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(rt.Metrics.GRPCUnaryInterceptor()))
	}
	if tr := rt.tracing.Tracer(); tr != nil && rt.ListFilter != nil {
		opts = append(opts, grpc.ChainStreamInterceptor(listFilterSpans(tr)))
	}
	gs := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(gs, rt.Server)
	if rt.ListFilter != nil {
		extprocv3.RegisterExternalProcessorServer(gs, rt.ListFilter)
	}
	healthpb.RegisterHealthServer(gs, rt.health)
	if rt.Metrics != nil {
		rt.Metrics.InitGRPC(gs)
	}
	return gs
}

// NewAuthenticator adapts a token verifier to the ext_authz server: the
// verifier's identities and errors become the server's own types, so the
// public extauthz package does not depend on jwtauth.
func NewAuthenticator(v *jwtauth.Verifier) extauthz.Authenticator { return verifierAuthenticator{v} }

type verifierAuthenticator struct{ v *jwtauth.Verifier }

func (a verifierAuthenticator) Authenticate(ctx context.Context, token string) (*extauthz.Identity, error) {
	id, err := a.v.Verify(ctx, token)
	if err != nil {
		return nil, &extauthz.TokenError{
			Reason:      jwtauth.Reason(err),
			Unavailable: errors.Is(err, jwtauth.ErrKeysUnavailable),
			Err:         err,
		}
	}
	out := &extauthz.Identity{
		Issuer:   id.Issuer,
		Subject:  id.Subject,
		ClientID: id.ClientID,
		Audience: id.Audience,
		Scopes:   id.Scopes,
		JTI:      id.JTI,
		Azp:      id.Azp,
		MayAct:   id.MayAct,
		Claims:   id.Claims,
		Expiry:   id.Expiry,
	}
	if len(id.Actors) > 0 {
		out.Actors = make([]extauthz.Actor, len(id.Actors))
		for i, a := range id.Actors {
			out.Actors[i] = extauthz.Actor(a)
		}
	}
	return out, nil
}

// upstreamSource is a credential source of internal/upstream.
type upstreamSource interface {
	Header() string
	Credential(context.Context, upstream.SubjectToken) (upstream.Credential, error)
	Start()
	Close() error
}

// credentialSource adapts an upstream source to the ext_authz server.
type credentialSource struct{ src upstreamSource }

func (c credentialSource) Header() string { return c.src.Header() }

func (c credentialSource) Credential(ctx context.Context, req extauthz.CredentialRequest) (extauthz.UpstreamCredential, error) {
	sub := upstream.SubjectToken{Token: req.Token, Scopes: req.Scopes}
	if id := req.Identity; id != nil {
		sub.Issuer, sub.Subject, sub.ClientID = id.Issuer, id.Subject, id.ClientID
		if id.Expiry > 0 {
			sub.Expiry = time.Unix(id.Expiry, 0)
		}
	}
	cred, err := c.src.Credential(ctx, sub)
	if err != nil {
		return extauthz.UpstreamCredential{}, credentialError{err}
	}
	return extauthz.UpstreamCredential{Header: cred.Header, Value: cred.Value}, nil
}

// credentialError names the closed reason of an upstream failure.
type credentialError struct{ err error }

func (e credentialError) Error() string  { return e.err.Error() }
func (e credentialError) Unwrap() error  { return e.err }
func (e credentialError) Reason() string { return string(upstream.ReasonOf(e.err)) }

// credentialSources builds the sources of upstream_credentials; problems
// have the paths upstream_credentials.NAME.
func credentialSources(cfg *config.Config, opts upstream.Options, m *metrics.Metrics) (map[string]upstreamSource, error) {
	var errs problem.List
	if m != nil {
		m.SetCredentialSources(slices.Sorted(maps.Keys(cfg.UpstreamCredentials)))
		opts.Observer = m.UpstreamObserver()
	}
	out := map[string]upstreamSource{}
	for _, name := range slices.Sorted(maps.Keys(cfg.UpstreamCredentials)) {
		c := cfg.UpstreamCredentials[name]
		path := "upstream_credentials." + name
		client := upstream.ClientAuth{ID: c.Client.ID, Method: c.Client.Auth, SecretFile: c.Client.SecretFile,
			PrivateKeyFile: c.Client.PrivateKeyFile, KeyID: c.Client.KeyID, SigningAlgorithm: c.Client.SigningAlg,
			AssertionAudience: c.Client.AssertionAudience, CertificateFile: c.Client.CertificateFile,
			TLSCertFile: c.Client.TLSCertFile, TLSKeyFile: c.Client.TLSKeyFile}
		var src upstreamSource
		var err error
		switch c.Type {
		case "token_exchange":
			src, err = upstream.NewTokenExchange(upstream.TokenExchangeConfig{
				Name: name, Profile: c.Profile, TokenEndpoint: c.TokenEndpoint, Issuer: c.Issuer,
				Audiences: c.Audiences, Resources: c.Resources, Scopes: c.Scopes,
				SubjectTokenType: c.SubjectTokenType, RequestedTokenType: c.RequestedTokenType,
				AllowMissingIssuedTokenType: c.AllowMissingIssuedTokenType,
				Client:                      client, CAFile: c.CAFile, Header: c.Header, Scheme: c.Scheme,
				Timeout: c.Timeout.D(), CacheSize: c.CacheSize, CacheBytes: c.CacheBytes, MaxConcurrent: c.MaxConcurrent,
			}, opts)
		case "client_credentials":
			src, err = upstream.NewClientCredentials(upstream.ClientCredentialsConfig{
				Name: name, TokenEndpoint: c.TokenEndpoint, Issuer: c.Issuer,
				Audiences: c.Audiences, Resources: c.Resources, Scopes: c.Scopes,
				Client: client, CAFile: c.CAFile, Header: c.Header, Scheme: c.Scheme, Timeout: c.Timeout.D(),
			}, opts)
		case "static":
			src, err = upstream.NewStatic(upstream.StaticConfig{Name: name, File: c.File, Header: c.Header, Scheme: c.Scheme, PollInterval: c.PollInterval.D()}, opts)
		default:
			errs.Add(path+".type", "%q is not one of token_exchange, client_credentials, static", c.Type)
			continue
		}
		if err != nil {
			errs.Add(path, "%s", strings.TrimPrefix(err.Error(), "upstream credential "+strconv.Quote(name)+": "))
			continue
		}
		out[name] = src
	}
	if err := errs.Err(); err != nil {
		for _, src := range out {
			src.Close()
		}
		return nil, err
	}
	return out, nil
}

// listFiltering reports whether list_filtering.enabled (default true).
func listFiltering(cfg *config.Config) bool {
	return cfg.ListFiltering.Enabled == nil || *cfg.ListFiltering.Enabled
}

// listPolicy decides list visibility with the current policy generation:
// the same policy, in one evaluation per list.
type listPolicy struct{ e *policy.Engine }

func (p listPolicy) Visible(ctx context.Context, lc extproc.ListContext, l extproc.List) (extproc.Visibility, error) {
	items := make([]string, len(l.Items))
	for i, it := range l.Items {
		switch l.Kind {
		case extproc.KindResources:
			items[i] = it.URI
		case extproc.KindResourceTemplates:
			items[i] = it.URIPrefix
		default:
			items[i] = it.Name
		}
	}
	keep, err := p.e.Current().Visible(ctx, policy.ListQuery{Input: lc.Input, ProtocolVersion: lc.ProtocolVersion, Kind: string(l.Kind), Items: items})
	return extproc.Visibility{Keep: keep}, err
}

// listRecorders observe every list-filter outcome, in order.
type listRecorders []extproc.Recorder

func (rs listRecorders) Record(ctx context.Context, o extproc.Outcome) {
	for _, r := range rs {
		r.Record(ctx, o)
	}
}

// listLog writes one decision-log line per list-filter outcome: counts,
// never names or the caller's claims.
type listLog struct{ log *slog.Logger }

func (l listLog) Record(ctx context.Context, o extproc.Outcome) {
	attrs := traceparent.AppendLogAttrs(ctx, []slog.Attr{slog.String("mcp_method", o.Method), slog.Int("items", o.Items), slog.Int("removed", o.Removed), slog.Duration("latency", o.Duration)})
	if o.Reason != "" {
		l.log.LogAttrs(ctx, slog.LevelWarn, "list filter failed closed", append(attrs, slog.String("reason", string(o.Reason)))...)
		return
	}
	l.log.LogAttrs(ctx, slog.LevelInfo, "list filtered", attrs...)
}

// unavailable stands in for a verifier that could not be built, so that the
// server's own options are still checked (and reported) in the same pass.
type unavailable struct{}

func (unavailable) Authenticate(context.Context, string) (*extauthz.Identity, error) {
	return nil, &extauthz.TokenError{Reason: "keys_unavailable", Unavailable: true}
}

// policySource maps policy.paths to a Source: the embedded default policy
// when empty.
func policySource(cfg *config.Config) policy.Source {
	if len(cfg.Policy.Paths) == 0 {
		return policy.DefaultSource()
	}
	return policy.Source{Paths: cfg.Policy.Paths}
}

// bundleSource maps policy.bundle to a policy.BundleSource, reading the
// verification key; problems have paths relative to policy.bundle.
func bundleSource(b *config.Bundle) (policy.BundleSource, error) {
	var errs problem.List
	src := policy.BundleSource{URL: b.URL, PollMin: b.PollMin.D(), PollMax: b.PollMax.D(), BearerTokenFile: b.BearerTokenFile}
	if f := b.BearerTokenFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			errs.Add("bearer_token_file", "cannot read %q", f)
		}
	}
	if sg := b.Signing; sg != nil {
		path, file := "signing.public_key_file", sg.PublicKeyFile
		switch {
		case (sg.PublicKeyFile == "") == (sg.SecretFile == ""):
			errs.Add("signing", "set exactly one of public_key_file or secret_file")
		case sg.SecretFile != "":
			path, file = "signing.secret_file", sg.SecretFile
		}
		if file != "" {
			key, err := os.ReadFile(file)
			if err != nil {
				errs.Add(path, "cannot read %q", file)
			}
			src.VerificationKey = &policy.BundleKey{KeyID: sg.KeyID, Key: string(key), Algorithm: sg.Algorithm, Scope: sg.Scope}
		}
	}
	if errs.Err() == nil {
		errs.Merge("", src.Validate())
	}
	return src, errs.Err()
}

// issuerOptions maps the issuers of the configuration file onto the
// verifier's options, field by field.
func issuerOptions(in []config.Issuer) []jwtauth.Issuer {
	out := make([]jwtauth.Issuer, len(in))
	for i, c := range in {
		out[i] = jwtauth.Issuer{
			Issuer:         c.Issuer,
			TenantClaim:    c.TenantClaim,
			JWKSURI:        c.JWKSURI,
			JWKSFile:       c.JWKSFile,
			Audiences:      c.Audiences,
			Algorithms:     c.Algorithms,
			HMACSecretFile: c.HMACSecretFile,
			TokenType:      c.TokenType,
			Leeway:         c.Leeway.D(),
			ScopeClaims:    c.ScopeClaims,
			ClaimScopes:    c.ClaimScopes,
			RequiredClaims: c.RequiredClaims,
			RequireSubject: c.RequireSubject,
			MaxTokenSize:   c.MaxTokenSize,
			MaxLifetime:    c.MaxLifetime.D(),
			JWKS: jwtauth.JWKS{
				MinRefresh:         c.JWKS.MinRefresh.D(),
				MaxRefresh:         c.JWKS.MaxRefresh.D(),
				UnknownKIDInterval: c.JWKS.UnknownKIDInterval.D(),
				UnknownKIDWait:     c.JWKS.UnknownKIDWait.D(),
				FetchTimeout:       c.JWKS.FetchTimeout.D(),
			},
		}
		if in := c.Introspection; in != nil {
			out[i].Introspection = &jwtauth.Introspection{
				Endpoint:         in.Endpoint,
				ClientID:         in.ClientID,
				ClientSecretFile: in.ClientSecretFile,
				ClientSecretEnv:  in.ClientSecretEnv,
				CacheTTL:         in.CacheTTL.D(),
				NegativeCacheTTL: in.NegativeCacheTTL.D(),
				Timeout:          in.Timeout.D(),
				MaxConcurrent:    in.MaxConcurrent,
				RateLimit:        in.RateLimit,
			}
		}
	}
	return out
}

func addr(path, a string, errs *problem.List) {
	if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
		errs.Add(path, "%q is not host:port", a)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// LogLevel is the slog level of log.level ("" is info).
func LogLevel(cfg *config.Config) slog.Level {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	return level
}
