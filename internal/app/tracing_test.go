package app

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// otlpReceiver is an OTLP/gRPC trace collector on a loopback port: what an
// OpenTelemetry Collector receives from mcpauthz.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	addr string

	mu        sync.Mutex
	spans     []*tracepb.Span
	resources []*commonpb.KeyValue
}

func newOTLPReceiver(t testing.TB) *otlpReceiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: lis.Addr().String()}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, r)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return r
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		r.resources = append(r.resources, rs.GetResource().GetAttributes()...)
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// trace returns the spans of the trace id (hex), by name.
func (r *otlpReceiver) trace(traceID string) map[string]*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*tracepb.Span{}
	for _, s := range r.spans {
		if hex.EncodeToString(s.GetTraceId()) == traceID {
			out[s.GetName()] = s
		}
	}
	return out
}

func attrs(s *tracepb.Span) map[string]string {
	out := map[string]string{}
	for _, kv := range s.GetAttributes() {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			out[kv.GetKey()] = v.GetStringValue()
		default:
			out[kv.GetKey()] = strings.TrimPrefix(v.String(), "int_value:")
		}
	}
	return out
}

func withTraceparent(ctx context.Context, tp string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "traceparent", tp)
}

// TestTracing: with tracing configured, every check is one span that is a
// child of Envoy's span (from the gRPC metadata, else the request's own
// traceparent), with the token, policy and upstream credential as its
// children and the token exchange's HTTP call below that; the attributes
// say what the decision log says without the token or secrets; the
// decision log carries the trace_id; an unsampled parent records nothing.
func TestTracing(t *testing.T) {
	recv := newOTLPReceiver(t)
	e := newUpstreamEnvWith(t, "tracing: {endpoint: http://"+recv.addr+", protocol: grpc}\n",
		Options{Trace: true, Version: "v9.9.9-test", Getenv: func(string) string { return "" }})
	tok := e.token(t, "tools:create_issue", "tools:get_weather")

	const (
		envoyTrace    = "4bf92f3577b34da6a3ce929d0e0e4736"
		envoySpan     = "00f067aa0ba902b7"
		headerTrace   = "0af7651916cd43dd8448eb211c80319c"
		headerSpan    = "b7ad6b7169203331"
		unsampled     = "11111111111111111111111111111111"
		unsampledSpan = "2222222222222222"
	)
	check := func(ctx context.Context, req *authv3.CheckRequest) *authv3.CheckResponse {
		t.Helper()
		resp, err := e.authz.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// Envoy's span of its ext_authz call in the gRPC metadata; the request
	// carries another traceparent, which loses.
	allowed := check(withTraceparent(t.Context(), "00-"+envoyTrace+"-"+envoySpan+"-01"),
		toolCallRequest(tok, "create_issue", map[string]string{"traceparent": "00-" + headerTrace + "-" + headerSpan + "-01", "x-request-id": "req-allowed"}))
	if got := allowed.GetStatus().GetCode(); got != 0 {
		t.Fatalf("create_issue: status %d, want OK", got)
	}
	// Only the request's traceparent (Envoy not tracing): a 403.
	denied := check(t.Context(), toolCallRequest(tok, "delete_repository", map[string]string{"traceparent": "00-" + headerTrace + "-" + headerSpan + "-01"}))
	if got := denied.GetDeniedResponse().GetStatus().GetCode(); got != 403 {
		t.Fatalf("delete_repository: HTTP %d, want 403", got)
	}
	// A parent that is not sampled: nothing recorded, the log still joins.
	check(withTraceparent(t.Context(), "00-"+unsampled+"-"+unsampledSpan+"-00"), toolCallRequest(tok, "get_weather", nil))
	e.rt.Close() // flushes the batch of spans

	t.Run("allowed check: child of Envoy's span, with its children", func(t *testing.T) {
		spans := recv.trace(envoyTrace)
		root := spans["mcpauthz.check"]
		if root == nil {
			t.Fatalf("no mcpauthz.check span in trace %s; spans: %v", envoyTrace, slices.Sorted(maps.Keys(spans)))
		}
		if got := hex.EncodeToString(root.GetParentSpanId()); got != envoySpan {
			t.Errorf("check span parent = %s, want Envoy's span %s", got, envoySpan)
		}
		if root.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("check span kind = %v, want SERVER", root.GetKind())
		}
		a := attrs(root)
		want := map[string]string{
			"mcpauthz.decision": "allow", "mcpauthz.reason": "policy_allow", "http.response.status_code": "200",
			"http.request.method": "POST", "url.path": "/mcp", "mcp.method.name": "tools/call", "gen_ai.tool.name": "create_issue",
			"mcpauthz.token.result": "valid", "mcpauthz.issuer": "https://idp.example.com", "mcpauthz.client_id": "agent-1",
			"mcpauthz.upstream_credential": "github", "mcpauthz.request_id": "req-allowed",
		}
		for k, v := range want {
			if a[k] != v {
				t.Errorf("check span %s = %q, want %q", k, a[k], v)
			}
		}
		if rev := a["mcpauthz.policy.revision"]; rev == "" || !strings.Contains(e.logs.String(), "policy_revision="+rev) {
			t.Errorf("check span policy revision %q is not the decision log's", rev)
		}
		if _, ok := a["subject"]; ok {
			t.Error("the subject is on the span")
		}
		for _, name := range []string{"mcpauthz.token", "mcpauthz.policy", "mcpauthz.upstream_credential"} {
			s := spans[name]
			if s == nil {
				t.Errorf("no %s span", name)
				continue
			}
			if string(s.GetParentSpanId()) != string(root.GetSpanId()) {
				t.Errorf("%s is not a child of the check span", name)
			}
		}
		exchange := spans["HTTP POST"]
		if exchange == nil || spans["mcpauthz.upstream_credential"] == nil {
			t.Fatalf("no span for the token exchange's HTTP call; spans: %v", slices.Sorted(maps.Keys(spans)))
		}
		if string(exchange.GetParentSpanId()) != string(spans["mcpauthz.upstream_credential"].GetSpanId()) {
			t.Error("the token exchange's HTTP span is not a child of the upstream credential span")
		}
	})

	t.Run("request traceparent when the metadata has none; a denial is no error", func(t *testing.T) {
		root := recv.trace(headerTrace)["mcpauthz.check"]
		if root == nil {
			t.Fatalf("no check span in the request's trace %s", headerTrace)
		}
		if got := hex.EncodeToString(root.GetParentSpanId()); got != headerSpan {
			t.Errorf("parent = %s, want %s", got, headerSpan)
		}
		a := attrs(root)
		if a["mcpauthz.decision"] != "deny" || a["http.response.status_code"] != "403" || a["gen_ai.tool.name"] != "delete_repository" {
			t.Errorf("denied check attributes: %v", a)
		}
		if root.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			t.Error("a denial is marked as an error")
		}
	})

	t.Run("unsampled parent: no span", func(t *testing.T) {
		if spans := recv.trace(unsampled); len(spans) != 0 {
			t.Errorf("%d spans recorded for a trace the caller did not sample", len(spans))
		}
	})

	t.Run("decision log lines carry the trace_id", func(t *testing.T) {
		logs := e.logs.String()
		for _, id := range []string{envoyTrace, headerTrace, unsampled} {
			if !strings.Contains(logs, "trace_id="+id) {
				t.Errorf("no decision log line with trace_id=%s", id)
			}
		}
	})

	t.Run("no token or secret in any span or resource", func(t *testing.T) {
		recv.mu.Lock()
		defer recv.mu.Unlock()
		all := strings.Builder{}
		for _, s := range recv.spans {
			for _, kv := range s.GetAttributes() {
				all.WriteString(kv.String())
			}
			all.WriteString(s.GetStatus().GetMessage())
		}
		for _, kv := range recv.resources {
			all.WriteString(kv.String())
		}
		sig := tok[strings.LastIndex(tok, ".")+1:]
		for _, secret := range []string{tok, sig, "gho_exchanged_for_alice", "gateway-secret-do-not-log", "db-static-secret-do-not-log", "Bearer"} {
			if strings.Contains(all.String(), secret) {
				t.Errorf("a span carries %q", secret[:min(len(secret), 12)])
			}
		}
		if !strings.Contains(all.String(), "v9.9.9-test") || !strings.Contains(all.String(), `string_value:"mcpauthz"`) {
			t.Errorf("resource lacks service.name mcpauthz or service.version: %s", all.String()[:min(all.Len(), 300)])
		}
	})
}

// TestTracingFromEnvironment: the standard OTEL_* variables alone turn
// tracing on and point it at the collector.
func TestTracingFromEnvironment(t *testing.T) {
	recv := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"+recv.addr)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
	t.Setenv("OTEL_SERVICE_NAME", "authz-edge")
	e := newUpstreamEnvWith(t, "", Options{Trace: true})
	tok := e.token(t, "tools:get_weather")
	const trace = "5bf92f3577b34da6a3ce929d0e0e4736"
	if _, err := e.authz.Check(withTraceparent(t.Context(), "00-"+trace+"-00f067aa0ba902b7-01"), toolCallRequest(tok, "get_weather", nil)); err != nil {
		t.Fatal(err)
	}
	e.rt.Close()
	if recv.trace(trace)["mcpauthz.check"] == nil {
		t.Fatal("no check span exported with tracing configured by the environment only")
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	var name string
	for _, kv := range recv.resources {
		if kv.GetKey() == "service.name" {
			name = kv.GetValue().GetStringValue()
		}
	}
	if name != "authz-edge" {
		t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's authz-edge", name)
	}
}

// TestTracingOff: without configuration no span is made, the decision log
// has no trace_id, and the server has no tracer.
func TestTracingOff(t *testing.T) {
	e := newUpstreamEnvWith(t, "", Options{Trace: true, Getenv: func(string) string { return "" }})
	if e.rt.tracing.Enabled() {
		t.Fatal("tracing enabled without configuration")
	}
	tok := e.token(t, "tools:get_weather")
	if _, err := e.authz.Check(withTraceparent(t.Context(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), toolCallRequest(tok, "get_weather", nil)); err != nil {
		t.Fatal(err)
	}
	if logs := e.logs.String(); strings.Contains(logs, "trace_id") {
		t.Errorf("decision log has a trace_id with tracing off:\n%s", logs)
	}
}

func TestTracingProblems(t *testing.T) {
	head := "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://as.example.com]\nissuers: [{issuer: https://as.example.com, jwks_uri: https://as.example.com/jwks}]\n"
	wantProblems(t, head+"tracing:\n  endpoint: collector:4317\n  protocol: thrift\n  sample_ratio: 2\n", []string{
		`c.yaml:5: tracing.endpoint: "collector:4317" is not an http or https URL with a host`,
		`c.yaml:6: tracing.protocol: "thrift" is not one of grpc, http/protobuf`,
		`c.yaml:7: tracing.sample_ratio: must be between 0 and 1`,
	})
}

// TestListFilterTracing: each filtered list response is a span in Envoy's
// trace, with the counts and never the names.
func TestListFilterTracing(t *testing.T) {
	recv := newOTLPReceiver(t)
	e := newListEnvWith(t, "", "", "tracing: {endpoint: http://"+recv.addr+", protocol: grpc}\n",
		Options{Trace: true, Getenv: func(string) string { return "" }})
	const trace = "6bf92f3577b34da6a3ce929d0e0e4736"
	e.traceparent = "00-" + trace + "-00f067aa0ba902b7-01"
	md := e.check(t, "tools:get_weather", `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`)
	e.filter(t, md, "application/json", toolsResult, len(toolsResult))
	// The span ends when the server sees the stream end, a moment after
	// the client got its answer.
	var span *tracepb.Span
	for deadline := time.Now().Add(5 * time.Second); span == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s span in Envoy's trace", ListFilterSpan)
		}
		if err := e.rt.tracing.ForceFlush(t.Context()); err != nil {
			t.Fatal(err)
		}
		span = recv.trace(trace)[ListFilterSpan]
	}
	if got := hex.EncodeToString(span.GetParentSpanId()); got != "00f067aa0ba902b7" {
		t.Errorf("list filter span parent = %s, want Envoy's span", got)
	}
	a := attrs(span)
	if a["mcp.method.name"] != "tools/list" || a["mcpauthz.list.items"] != "3" || a["mcpauthz.list.removed"] != "2" {
		t.Errorf("list filter span attributes = %v, want tools/list, 3 items, 2 removed", a)
	}
	for _, kv := range span.GetAttributes() {
		if strings.Contains(kv.String(), "get_weather") || strings.Contains(kv.String(), "delete_repo") {
			t.Errorf("the span names a tool: %v", kv)
		}
	}
}

// TestIntrospectionTracing: the introspection call of an opaque token is
// an HTTP span below the check's token span, and the token is in no span.
func TestIntrospectionTracing(t *testing.T) {
	recv := newOTLPReceiver(t)
	const opaque = "opaque-token-do-not-trace-7f3a"
	introspect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.PostForm.Get("token") != opaque {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"active":true,"scope":"tools:get_weather","client_id":"agent-1","sub":"alice","aud":"https://mcp.example.com/mcp","iss":"https://idp.example.com","exp":%d,"token_type":"Bearer"}`, time.Now().Add(time.Hour).Unix())
	}))
	t.Cleanup(introspect.Close)
	secret := writeFile(t, "introspection-secret", "introspection-secret-do-not-trace")
	cfg, err := config.Parse("c.yaml", []byte("resource: https://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\n"+
		"issuers: [{issuer: https://idp.example.com, introspection: {endpoint: "+introspect.URL+"/introspect, client_id: mcpauthz, client_secret_file: "+secret+"}}]\n"+
		"tracing: {endpoint: http://"+recv.addr+", protocol: grpc}\n"))
	if err != nil {
		t.Fatal(err)
	}
	rt, conn := startRuntime(t, cfg, Options{Trace: true, Getenv: func(string) string { return "" }})
	const trace = "7bf92f3577b34da6a3ce929d0e0e4736"
	resp, err := authv3.NewAuthorizationClient(conn).Check(withTraceparent(t.Context(), "00-"+trace+"-00f067aa0ba902b7-01"), toolCallRequest(opaque, "get_weather", nil))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("Check = %v, %v; want an allow", resp, err)
	}
	rt.Close()
	spans := recv.trace(trace)
	call, token := spans["HTTP POST"], spans["mcpauthz.token"]
	if call == nil || token == nil {
		t.Fatalf("spans of the check: %v, want mcpauthz.token and its HTTP POST", slices.Sorted(maps.Keys(spans)))
	}
	if string(call.GetParentSpanId()) != string(token.GetSpanId()) {
		t.Error("the introspection call is not a child of the token span")
	}
	for _, s := range spans {
		for _, kv := range s.GetAttributes() {
			if strings.Contains(kv.String(), opaque) || strings.Contains(kv.String(), "introspection-secret") {
				t.Errorf("span %s carries the token or the client secret: %v", s.GetName(), kv.GetKey())
			}
		}
	}
}

// TestJWKSFetchTracing: key set fetches, which run in the background, are
// traces of their own.
func TestJWKSFetchTracing(t *testing.T) {
	recv := newOTLPReceiver(t)
	dir := t.TempDir()
	key, err := devissuer.LoadOrCreateKey(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dir, "jwks.json")
	if err := devissuer.WriteJWKS(jwks, key); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		http.ServeFile(w, r, jwks)
	}))
	t.Cleanup(ts.Close)
	cfg, err := config.Parse("c.yaml", []byte("resource: https://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\n"+
		"issuers: [{issuer: https://idp.example.com, jwks_uri: "+ts.URL+"/jwks}]\n"+
		"tracing: {endpoint: http://"+recv.addr+", protocol: grpc}\n"))
	if err != nil {
		t.Fatal(err)
	}
	rt, _ := startRuntime(t, cfg, Options{Trace: true, Getenv: func(string) string { return "" }})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := rt.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	rt.Close()
	recv.mu.Lock()
	defer recv.mu.Unlock()
	for _, s := range recv.spans {
		if s.GetName() == "HTTP GET" && strings.HasSuffix(attrs(s)["url.full"], "/jwks") {
			if len(s.GetParentSpanId()) != 0 {
				t.Error("the key set fetch has a parent; it runs in the background")
			}
			return
		}
	}
	t.Errorf("no HTTP GET span for the key set fetch among %d spans", len(recv.spans))
}
