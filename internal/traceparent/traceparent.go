// Package traceparent reads the caller's W3C trace context (traceparent,
// tracestate) from where Envoy puts it: the metadata of its gRPC calls.
// It depends on the OpenTelemetry API only, not on the SDK or exporters,
// so the request-path packages can use it without linking them.
package traceparent

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// MetadataCarrier reads a trace context from gRPC metadata, whose keys
// are lowercase like the W3C propagator's.
type MetadataCarrier metadata.MD

// Get implements propagation.TextMapCarrier.
func (c MetadataCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set implements propagation.TextMapCarrier; incoming metadata is read only.
func (c MetadataCarrier) Set(string, string) {}

// Keys implements propagation.TextMapCarrier.
func (c MetadataCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// FromIncoming returns ctx with the remote span context of the incoming
// gRPC call's metadata (W3C traceparent and tracestate), if it has one.
func FromIncoming(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, MetadataCarrier(md))
}

// AppendLogAttrs appends the trace_id and span_id of ctx's span to attrs,
// so that a log line joins its trace; nothing when ctx has no span.
func AppendLogAttrs(ctx context.Context, attrs []slog.Attr) []slog.Attr {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return attrs
}
