// Package metrics defines the Prometheus metrics of mcpauthz. Collectors are
// registered into an injected registry, never the global one, and every
// label takes its values from a closed set so that no client can create
// series.
package metrics

import (
	"context"
	"strconv"
	"sync/atomic"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	"github.com/mcpauthz/mcpauthz/extauthz"
)

// Metrics records decisions and serves as an extauthz.Recorder.
type Metrics struct {
	decisions *prometheus.CounterVec
	duration  prometheus.Histogram
	grpc      *grpcprom.ServerMetrics
	// tools are the tool names that may appear as label values (from policy
	// data); anything else is "other".
	tools atomic.Pointer[map[string]bool]
}

var _ extauthz.Recorder = (*Metrics)(nil)

// latencyBuckets start at 25µs: a warm check takes tens of microseconds.
var latencyBuckets = []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1}

// New creates the collectors and registers them with reg, together with the
// Go and process collectors.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpauthz_decisions_total",
			Help: "Authorization decisions by outcome, HTTP status, reason, MCP method and tool.",
		}, []string{"decision", "status", "reason", "mcp_method", "tool"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mcpauthz_check_duration_seconds",
			Help:    "Time to decide one ext_authz Check.",
			Buckets: latencyBuckets,
		}),
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(latencyBuckets))),
	}
	reg.MustRegister(m.decisions, m.duration, m.grpc,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// GRPCUnaryInterceptor records gRPC server metrics.
func (m *Metrics) GRPCUnaryInterceptor() grpc.UnaryServerInterceptor {
	return m.grpc.UnaryServerInterceptor()
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

// knownMethods are the MCP methods (all protocol versions) and message kinds
// that may appear as label values.
var knownMethods = map[string]bool{
	"initialize": true, "ping": true, "server/discover": true,
	"tools/list": true, "tools/call": true,
	"prompts/list": true, "prompts/get": true,
	"resources/list": true, "resources/templates/list": true, "resources/read": true,
	"resources/subscribe": true, "resources/unsubscribe": true, "subscriptions/listen": true,
	"completion/complete": true, "logging/setLevel": true,
	"tasks/get": true, "tasks/result": true, "tasks/cancel": true, "tasks/list": true, "tasks/update": true,
	"notifications/initialized": true, "notifications/cancelled": true, "notifications/progress": true,
	"notifications/roots/list_changed": true, "notifications/tasks/status": true,
	"response": true, "stream": true, "session_end": true,
}

// MethodLabel folds an MCP method into the closed label set.
func MethodLabel(method string) string {
	if method == "" || knownMethods[method] {
		return method
	}
	return "other"
}
