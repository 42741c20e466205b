// Package tracing sets up the OpenTelemetry tracing of mcpauthz: a tracer
// provider that exports spans over OTLP, or nothing at all.
//
// Tracing is configured the way every OpenTelemetry SDK is, by the standard
// OTEL_* environment variables alone (OTEL_EXPORTER_OTLP_ENDPOINT and
// _TRACES_ENDPOINT, _PROTOCOL, _HEADERS, _INSECURE, _CERTIFICATE,
// OTEL_TRACES_SAMPLER and _ARG, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_BSP_*, OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER=none), or by the
// configuration's `tracing` block, whose keys override the variables they
// correspond to. It is on when either names an OTLP endpoint (or says
// enabled), and off otherwise: then New returns a disabled Provider whose
// Tracer is nil, and the request path does no tracing work at all.
//
// Spans are exported in batches off the request path (the SDK's batch
// processor: a bounded queue that drops spans when the exporter cannot keep
// up, never blocking a check). The sampler is parent-based: a check whose
// caller (Envoy) sampled its trace is recorded, one whose caller did not
// is not, and a check without a caller's trace is a root sampled at
// tracing.sample_ratio (or by OTEL_TRACES_SAMPLER; default always).
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpauthz/mcpauthz/internal/problem"
)

// Config is the `tracing` block of the configuration. Zero fields leave the
// corresponding OTEL_* variable (or the SDK's default) in charge.
type Config struct {
	// Enabled turns tracing on or off whatever the environment says; nil
	// means on exactly when an OTLP endpoint is named (Endpoint,
	// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or
	// OTEL_TRACES_EXPORTER is otlp, and OTEL_SDK_DISABLED is not true.
	Enabled *bool
	// Endpoint is the OTLP traces endpoint, an http or https URL (http
	// means without TLS). For http/protobuf a URL without a path gets
	// /v1/traces. Overrides OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
	Endpoint string
	// Protocol is grpc or http/protobuf (the default, as in every SDK).
	// Overrides OTEL_EXPORTER_OTLP_TRACES_PROTOCOL.
	Protocol string
	// SampleRatio is the fraction of traces started here (checks whose
	// caller sent no trace context) that are recorded, between 0 and 1;
	// checks that belong to a caller's trace follow the caller's decision.
	// Overrides OTEL_TRACES_SAMPLER.
	SampleRatio *float64
	// ServiceName is the service.name resource attribute (default
	// mcpauthz). Overrides OTEL_SERVICE_NAME.
	ServiceName string
}

// Protocols an endpoint can be spoken to with.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// DefaultServiceName is service.name when neither the configuration nor
// OTEL_SERVICE_NAME sets it.
const DefaultServiceName = "mcpauthz"

// TracerName is the instrumentation scope of mcpauthz's own spans.
const TracerName = "github.com/mcpauthz/mcpauthz"

// Provider owns the tracer provider of a runtime: its exporter, batch
// processor and their goroutines, released by Shutdown.
type Provider struct {
	tp *sdktrace.TracerProvider // nil when disabled
}

// Enabled reports whether spans are recorded and exported.
func (p *Provider) Enabled() bool { return p != nil && p.tp != nil }

// TracerProvider returns the SDK provider, or nil when disabled.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if !p.Enabled() {
		return nil
	}
	return p.tp
}

// Tracer returns the tracer of mcpauthz's spans, or nil when disabled: the
// request path tests for nil and skips all tracing work.
func (p *Provider) Tracer() trace.Tracer {
	if !p.Enabled() {
		return nil
	}
	return p.tp.Tracer(TracerName)
}

// Shutdown exports the spans still queued and stops the exporter, within
// ctx. It is safe on a disabled Provider and more than once.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	return p.tp.Shutdown(ctx)
}

// ForceFlush exports the spans ended so far, within ctx.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	return p.tp.ForceFlush(ctx)
}

// Options are what New needs besides the configuration.
type Options struct {
	// Getenv reads the environment; nil means os.Getenv. Tests inject it.
	Getenv func(string) string
	// ServiceVersion is the service.version resource attribute.
	ServiceVersion string
	// Logger receives export failures (at most one line per
	// ErrorLogInterval, with the count since the last one).
	Logger *slog.Logger
}

// ErrorLogInterval spaces the log lines about export failures: a collector
// that is down must not flood the log.
const ErrorLogInterval = 30 * time.Second

// New builds the tracer provider of cfg and the environment. It starts no
// network connection (the exporter connects when it first exports) and
// reports every problem at once with its key ("endpoint", "protocol",
// "sample_ratio") or the variable it comes from.
func New(ctx context.Context, cfg Config, opts Options) (*Provider, error) {
	s, err := resolve(cfg, opts)
	if err != nil || !s.enabled {
		return &Provider{}, err
	}
	return start(ctx, cfg, opts, s)
}

// Validate reports the problems New would report, and builds nothing.
func Validate(cfg Config, opts Options) error {
	_, err := resolve(cfg, opts)
	return err
}

// settings are what the configuration and environment resolve to.
type settings struct {
	enabled  bool
	protocol string
	endpoint string // "" leaves the exporter to the variables
}

func resolve(cfg Config, opts Options) (settings, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = osGetenv
	}
	var errs problem.List
	if r := cfg.SampleRatio; r != nil && (*r < 0 || *r > 1) {
		errs.Add("sample_ratio", "must be between 0 and 1")
	}
	// A problem of a variable is reported under the block's own path,
	// with the variable's name in front of the message.
	protocol, protoKey, protoVar := cfg.Protocol, "protocol", ""
	if protocol == "" {
		protocol, protoVar = firstEnv(getenv, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
		protoKey = ""
	}
	switch protocol {
	case "":
		protocol = ProtocolHTTP
	case ProtocolGRPC, ProtocolHTTP:
	case "http/json":
		errs.Add(protoKey, "%s%q is not supported by mcpauthz (grpc or http/protobuf)", varPrefix(protoVar), protocol)
	default:
		errs.Add(protoKey, "%s%q is not one of grpc, http/protobuf", varPrefix(protoVar), protocol)
	}
	var endpoint string
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
			errs.Add("endpoint", "%q is not an http or https URL with a host", cfg.Endpoint)
		case u.User != nil || u.RawQuery != "" || u.Fragment != "":
			errs.Add("endpoint", "must not have user information, a query or a fragment")
		default:
			if protocol == ProtocolHTTP && (u.Path == "" || u.Path == "/") {
				u.Path = "/v1/traces"
			}
			endpoint = u.String()
		}
	}
	enabled, err := enabledFrom(cfg, getenv)
	if err != nil {
		errs.Merge("", err)
	}
	return settings{enabled: enabled, protocol: protocol, endpoint: endpoint}, errs.Err()
}

// start builds the exporter, resource and provider of s.
func start(ctx context.Context, cfg Config, opts Options, s settings) (*Provider, error) {
	var exp sdktrace.SpanExporter
	var err error
	endpoint := s.endpoint
	switch s.protocol {
	case ProtocolGRPC:
		var o []otlptracegrpc.Option
		if endpoint != "" {
			o = append(o, otlptracegrpc.WithEndpointURL(endpoint))
		}
		exp, err = otlptracegrpc.New(ctx, o...)
	default:
		var o []otlptracehttp.Option
		if endpoint != "" {
			o = append(o, otlptracehttp.WithEndpointURL(endpoint))
		}
		exp, err = otlptracehttp.New(ctx, o...)
	}
	if err != nil {
		return &Provider{}, &problem.Error{Msg: "OTLP exporter: " + err.Error(), Err: err}
	}
	res, err := newResource(ctx, cfg, opts.ServiceVersion)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return &Provider{}, &problem.Error{Msg: "OTEL_RESOURCE_ATTRIBUTES: " + err.Error(), Err: err}
	}
	tpo := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if r := cfg.SampleRatio; r != nil {
		tpo = append(tpo, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*r))))
	}
	// Without a ratio the SDK reads OTEL_TRACES_SAMPLER (default
	// parentbased_always_on).
	setErrorHandler(opts.Logger)
	return &Provider{tp: sdktrace.NewTracerProvider(tpo...)}, nil
}

// enabledFrom applies the rule of Config.Enabled.
func enabledFrom(cfg Config, getenv func(string) string) (bool, error) {
	if cfg.Enabled != nil {
		return *cfg.Enabled, nil
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	switch exporter := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exporter {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER: %q is not supported (otlp or none)", exporter)
	}
	v, _ := firstEnv(getenv, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
	return cfg.Endpoint != "" || v != "", nil
}

// newResource describes this process: service.name mcpauthz unless
// OTEL_SERVICE_NAME or the configuration says otherwise (later detectors
// win), service.version, OTEL_RESOURCE_ATTRIBUTES, and the SDK.
func newResource(ctx context.Context, cfg Config, version string) (*resource.Resource, error) {
	base := []attribute.KeyValue{attribute.String("service.name", DefaultServiceName)}
	if version != "" {
		base = append(base, attribute.String("service.version", version))
	}
	o := []resource.Option{resource.WithAttributes(base...), resource.WithTelemetrySDK(), resource.WithFromEnv()}
	if cfg.ServiceName != "" {
		o = append(o, resource.WithAttributes(attribute.String("service.name", cfg.ServiceName)))
	}
	return resource.New(ctx, o...)
}

func varPrefix(name string) string {
	if name == "" {
		return ""
	}
	return name + ": "
}

// firstEnv returns the first of names that is set, and its name.
func firstEnv(getenv func(string) string, names ...string) (string, string) {
	for _, n := range names {
		if v := strings.TrimSpace(getenv(n)); v != "" {
			return v, n
		}
	}
	return "", ""
}

// errorLog rate-limits the SDK's error reports (a failing export every few
// seconds while a collector is down) into the process log.
type errorLog struct {
	log *slog.Logger

	mu      sync.Mutex
	last    time.Time
	dropped int
}

func (e *errorLog) Handle(err error) {
	e.mu.Lock()
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < ErrorLogInterval {
		e.dropped++
		e.mu.Unlock()
		return
	}
	suppressed := e.dropped
	e.last, e.dropped = now, 0
	e.mu.Unlock()
	e.log.Warn("tracing: span export failed", "error", err.Error(), "suppressed_since_last", suppressed)
}
