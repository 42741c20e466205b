package extauthz

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpauthz/mcpauthz/internal/traceparent"
)

// Span names of a check: one CheckSpan per CheckRequest, with the token
// verification, the policy evaluation and the upstream credential as its
// children (HTTP calls they make, such as introspection or a token
// exchange, are children of those when the HTTP client is instrumented).
const (
	CheckSpan      = "mcpauthz.check"
	TokenSpan      = "mcpauthz.token"
	PolicySpan     = "mcpauthz.policy"
	CredentialSpan = "mcpauthz.upstream_credential"
)

// traceContext is the W3C Trace Context propagator: what Envoy's
// OpenTelemetry tracer and MCP clients send (traceparent, tracestate).
var traceContext = propagation.TraceContext{}

// noSpan is what the span helpers return when tracing is off: its methods
// do nothing and allocate nothing.
var noSpan = trace.SpanFromContext(context.Background())

// startCheck starts the check's span, a child of the caller's trace: the
// trace context in the gRPC metadata (Envoy's span of its ext_authz call,
// when Envoy traces) or else the request's own traceparent header. Without
// a tracer it returns ctx and a span that does nothing.
func (s *Server) startCheck(ctx context.Context, r *httpRequest) (context.Context, trace.Span) {
	if s.tracer == nil {
		return ctx, noSpan
	}
	parent := traceparent.FromIncoming(ctx)
	if !trace.SpanContextFromContext(parent).IsValid() {
		parent = traceContext.Extract(ctx, headerCarrier{r})
	}
	return s.tracer.Start(parent, CheckSpan, trace.WithSpanKind(trace.SpanKindServer))
}

// endCheck records the outcome on the check's span and ends it. The
// attributes are the decision log's closed-set fields; never the token,
// arguments, resource URIs or the subject (traces often reach more people
// than the decision log: join them by trace_id).
func endCheck(span trace.Span, d *Decision) {
	if !span.IsRecording() {
		span.End()
		return
	}
	attrs := make([]attribute.KeyValue, 0, 14)
	attrs = append(attrs,
		attribute.String("mcpauthz.decision", d.Outcome()),
		attribute.String("mcpauthz.reason", d.Reason),
		attribute.Int("http.response.status_code", d.Status),
		attribute.String("http.request.method", d.HTTPMethod),
		attribute.String("url.path", d.Path),
	)
	if d.RequestID != "" {
		attrs = append(attrs, attribute.String("mcpauthz.request_id", d.RequestID))
	}
	if m := d.MCPMethod(); m != "" {
		attrs = append(attrs, attribute.String("mcp.method.name", m))
	}
	if t := d.Tool(); t != "" {
		attrs = append(attrs, attribute.String("gen_ai.tool.name", t))
	}
	if len(d.messages) == 1 && d.messages[0].Prompt != "" {
		attrs = append(attrs, attribute.String("gen_ai.prompt.name", d.messages[0].Prompt))
	}
	if d.Batch() {
		attrs = append(attrs, attribute.Int("mcpauthz.batch.size", len(d.messages)))
	}
	if d.PolicyRevision != "" {
		attrs = append(attrs, attribute.String("mcpauthz.policy.revision", d.PolicyRevision))
	}
	if d.TokenResult != "" {
		attrs = append(attrs, attribute.String("mcpauthz.token.result", d.TokenResult))
	}
	if id := d.Identity; id != nil {
		attrs = append(attrs, attribute.String("mcpauthz.issuer", id.Issuer), attribute.String("mcpauthz.client_id", id.ClientID))
	}
	if d.UpstreamCredential != "" {
		attrs = append(attrs, attribute.String("mcpauthz.upstream_credential", d.UpstreamCredential))
	}
	span.SetAttributes(attrs...)
	if d.Status >= 500 {
		// Cannot decide: an error of mcpauthz or what it depends on. A
		// denial is a correct answer, not an error.
		span.SetStatus(otelcodes.Error, d.Reason)
	}
	span.End()
}

// child starts a child span of ctx's span, or returns a span that does
// nothing when tracing is off.
func (s *Server) child(ctx context.Context, name string) (context.Context, trace.Span) {
	if s.tracer == nil {
		return ctx, noSpan
	}
	return s.tracer.Start(ctx, name)
}

// headerCarrier reads the trace context from the request headers Envoy
// sent.
type headerCarrier struct{ r *httpRequest }

func (c headerCarrier) Get(key string) string { return c.r.header(key) }
func (c headerCarrier) Set(string, string)    {}
func (c headerCarrier) Keys() []string        { return []string{"traceparent", "tracestate"} }

// endToken ends the token span with the verification's result reason.
func endToken(span trace.Span, err error) {
	if span.IsRecording() {
		result := "valid"
		if err != nil {
			result = "invalid_token"
			if te, ok := err.(*TokenError); ok {
				result = te.Reason
				if te.Unavailable {
					span.SetStatus(otelcodes.Error, te.Reason)
				}
			}
		}
		span.SetAttributes(attribute.String("mcpauthz.token.result", result))
	}
	span.End()
}

// endPolicy ends the policy span; an evaluation error (a 503) is the
// span's error, with the closed reason only: error texts can quote input.
func endPolicy(span trace.Span, messages int, err error) {
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("mcpauthz.policy.messages", messages))
		if err != nil {
			span.SetStatus(otelcodes.Error, "policy evaluation failed")
		}
	}
	span.End()
}

// endCredential ends the upstream credential span with the source's name
// and, on failure, its closed reason.
func endCredential(span trace.Span, source, failure string) {
	if span.IsRecording() {
		span.SetAttributes(attribute.String("mcpauthz.upstream_credential", source))
		if failure != "" {
			span.SetStatus(otelcodes.Error, failure)
		}
	}
	span.End()
}
