package app

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// listEnv is a compiled runtime serving ext_authz and ext_proc on one
// loopback gRPC port, with a development issuer's key.
type listEnv struct {
	rt    *Runtime
	authz authv3.AuthorizationClient
	proc  extprocv3.ExternalProcessorClient
	iss   *devissuer.Issuer
	// traceparent, when set, goes with every ext_proc stream (Envoy
	// tracing).
	traceparent string
}

func newListEnv(t *testing.T, policyDir string) *listEnv {
	t.Helper()
	return newListEnvYAML(t, policyDir, "")
}

// newListEnvYAML is newListEnv with more configuration (policy keys go in
// extraPolicy, e.g. "eval_timeout: 1ms").
func newListEnvYAML(t *testing.T, policyDir, extraPolicy string) *listEnv {
	t.Helper()
	return newListEnvWith(t, policyDir, extraPolicy, "", Options{})
}

// newListEnvWith is newListEnvYAML with top-level configuration lines and
// options (Observe is always set).
func newListEnvWith(t *testing.T, policyDir, extraPolicy, extraYAML string, opts Options) *listEnv {
	t.Helper()
	dev := t.TempDir()
	key, err := devissuer.LoadOrCreateKey(dev, true)
	if err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dev, "jwks.json")
	if err := devissuer.WriteJWKS(jwks, key); err != nil {
		t.Fatal(err)
	}
	yaml := "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\n" +
		"issuers: [{issuer: https://idp.example.com, jwks_file: " + jwks + "}]\n"
	switch {
	case policyDir != "" && extraPolicy != "":
		yaml += "policy: {paths: [" + policyDir + "], " + extraPolicy + "}\n"
	case policyDir != "":
		yaml += "policy: {paths: [" + policyDir + "]}\n"
	}
	cfg, err := config.Parse("c.yaml", []byte(yaml+extraYAML))
	if err != nil {
		t.Fatal(err)
	}
	opts.Observe = true
	rt, conn := startRuntime(t, cfg, opts)
	return &listEnv{rt: rt, authz: authv3.NewAuthorizationClient(conn), proc: extprocv3.NewExternalProcessorClient(conn),
		iss: &devissuer.Issuer{URL: "https://idp.example.com", Key: key}}
}

// startRuntime compiles cfg, starts the runtime and serves its gRPC
// services on a loopback port, and returns a connection to them; all of it
// ends with the test.
func startRuntime(t testing.TB, cfg *config.Config, opts Options) (*Runtime, *grpc.ClientConn) {
	t.Helper()
	rt, err := Compile(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	rt.Start()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := rt.GRPCServer()
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rt, conn
}

// check asks ext_authz about a POST of body with a token of scopes, and
// returns the dynamic metadata Envoy would store.
func (e *listEnv) check(t *testing.T, scopes, body string) *structpb.Struct {
	t.Helper()
	tok, err := e.iss.Mint(devissuer.MintOptions{Subject: "alice", Audience: []string{"https://mcp.example.com/mcp"}, Scopes: strings.Fields(scopes), TTL: time.Hour, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.authz.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/mcp", Host: "mcp.example.com", RawBody: []byte(body),
			Headers: map[string]string{"authorization": "Bearer " + tok, "content-type": "application/json"}},
	}}})
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("Check = %v, %v; want an allow", resp, err)
	}
	return resp.GetDynamicMetadata()
}

// filter plays Envoy's ext_proc filter for one response (as the shipped
// configuration drives it: response headers, then the body
// FULL_DUPLEX_STREAMED in chunks of size) and returns the body the client
// gets.
func (e *listEnv) filter(t *testing.T, md *structpb.Struct, contentType, body string, size int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if e.traceparent != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", e.traceparent)
	}
	stream, err := e.proc.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	meta := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.ext_authz": md}}
	send := func(r *extprocv3.ProcessingRequest) {
		r.MetadataContext = meta
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&extprocv3.ProcessingRequest{
		ProtocolConfig: &extprocv3.ProtocolConfiguration{ResponseBodyMode: filterv3.ProcessingMode_FULL_DUPLEX_STREAMED},
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":status", RawValue: []byte("200")}, {Key: "content-type", RawValue: []byte(contentType)},
		}}}},
	})
	for i := 0; i < len(body); i += size {
		chunk := body[i:min(i+size, len(body))]
		send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(chunk), EndOfStream: i+size >= len(body)}}})
	}
	var out strings.Builder
	for {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv after %q: %v", out.String(), err)
		}
		if ir := r.GetImmediateResponse(); ir != nil {
			return string(ir.GetBody())
		}
		br := r.GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		out.Write(br.GetBody())
		if br.GetEndOfStream() {
			return out.String()
		}
	}
}

const toolsResult = `{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"get_weather","inputSchema":{"type":"object"}},{"name":"delete_repo","inputSchema":{"type":"object"}},{"name":"get_forecast"}],"nextCursor":"c2"}}`

// TestListFilteringThroughBothServices: a tools/list allowed by ext_authz
// carries what the list filter needs, and the list filter, on the same
// gRPC port, removes what the same caller could not call, by the same
// default policy, for JSON and SSE bodies in any chunking; a caller with
// tools:* sees everything.
func TestListFilteringThroughBothServices(t *testing.T) {
	e := newListEnv(t, "")
	list := `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`
	for _, size := range []int{len(toolsResult), 7, 1} {
		md := e.check(t, "tools:get_weather tools:get_forecast", list)
		if got := md.GetFields()["list_filter"].GetBoolValue(); !got {
			t.Fatalf("dynamic metadata of an allowed tools/list has no list_filter: %v", md)
		}
		want := `{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"get_weather","inputSchema":{"type":"object"}},{"name":"get_forecast"}],"nextCursor":"c2"}}`
		if got := e.filter(t, md, "application/json", toolsResult, size); got != want {
			t.Errorf("filtered JSON (chunks of %d) =\n%s\nwant\n%s", size, got, want)
		}
		sse := "event: message\nid: 1\ndata: " + toolsResult + "\n\n"
		if got := e.filter(t, md, "text/event-stream", sse, size); got != "event: message\nid: 1\ndata: "+want+"\n\n" {
			t.Errorf("filtered SSE (chunks of %d) =\n%q", size, got)
		}
	}
	md := e.check(t, "tools:*", list)
	if got := e.filter(t, md, "application/json", toolsResult, 64); got != toolsResult {
		t.Errorf("tools:* filtered list =\n%s\nwant everything", got)
	}
	// Other requests carry nothing for the filter.
	md = e.check(t, "tools:get_weather", `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"get_weather"}}`)
	if _, ok := md.GetFields()["list_filter"]; ok {
		t.Errorf("a tools/call carries list_filter: %v", md)
	}
}

// TestListFilteringFailsClosed: a policy that cannot decide visibility
// answers the list with a JSON-RPC error for its id, never the list.
func TestListFilteringFailsClosed(t *testing.T) {
	dir := t.TempDir()
	// Calls are allowed, but visible is not a set for this caller: the
	// list cannot be decided. (For every caller, the activation check
	// would refuse the policy.)
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package mcp.authz\n\ndecision := {\"allow\": true}\n\nvisible := 1 if input.token.subject == \"alice\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newListEnv(t, dir)
	md := e.check(t, "tools:*", `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`)
	got := e.filter(t, md, "application/json", toolsResult, 64)
	if want := `{"jsonrpc":"2.0","id":7,"error":{"code":-32603,"message":"Internal error"}}`; got != want {
		t.Errorf("broken policy: client gets\n%s\nwant\n%s", got, want)
	}
}
