package app

import (
	"context"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/mcpauthz/mcpauthz/extproc"
	"github.com/mcpauthz/mcpauthz/internal/traceparent"
)

// ListFilterSpan is the span of one ext_proc stream of the list filter
// (one filtered response), a child of Envoy's span of the stream.
const ListFilterSpan = "mcpauthz.list_filter"

// listFilterSpans starts a span per ext_proc stream; the list filter's
// outcome is recorded on it (listSpan) and its context reaches the list
// log, which then carries the trace_id.
func listFilterSpans(tr trace.Tracer) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != extprocv3.ExternalProcessor_Process_FullMethodName {
			return handler(srv, ss)
		}
		ctx, span := tr.Start(traceparent.FromIncoming(ss.Context()), ListFilterSpan, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		return handler(srv, tracedStream{ss, ctx})
	}
}

type tracedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s tracedStream) Context() context.Context { return s.ctx }

// listSpan puts each list-filter outcome on the stream's span: counts and
// the failure reason, never item names.
type listSpan struct{}

func (listSpan) Record(ctx context.Context, o extproc.Outcome) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.String("mcp.method.name", o.Method), attribute.Int("mcpauthz.list.items", o.Items), attribute.Int("mcpauthz.list.removed", o.Removed))
	if o.Reason != "" {
		span.SetAttributes(attribute.String("mcpauthz.reason", string(o.Reason)))
		span.SetStatus(otelcodes.Error, string(o.Reason))
	}
}
