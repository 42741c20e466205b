package standin

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const overwrite = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD

func TestLoadShippedConfig(t *testing.T) {
	got, err := LoadConfig("../../../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(shipped, got); diff != "" {
		t.Errorf("envoy/envoy.yaml (-want +got):\n%s", diff)
	}
}

// minimal is a bootstrap with one listener and ext_authz; %s is spliced
// into the filter's typed_config and %r into the route.
const minimal = `
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 1 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: up }
ROUTE
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
SERVICE
EXTRA
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
`

func bootstrap(service, extra, route string) string {
	return strings.NewReplacer("SERVICE", service, "EXTRA", extra, "ROUTE", route).Replace(minimal)
}

const grpcService = `              grpc_service: { envoy_grpc: { cluster_name: mcpauthz } }`

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    Config
		wantErr string
	}{
		{
			name: "Envoy defaults",
			yaml: bootstrap(grpcService, "", ""),
			want: Config{Timeout: 200 * time.Millisecond, StatusOnError: 403},
		},
		{
			name: "partial messages",
			yaml: bootstrap(grpcService, `              with_request_body: { max_request_bytes: 10, allow_partial_message: true }
              failure_mode_allow: true
              failure_mode_allow_header_add: true`, ""),
			want: Config{Timeout: 200 * time.Millisecond, StatusOnError: 403, WithRequestBody: true, MaxRequestBytes: 10,
				AllowPartialMessage: true, FailureModeAllow: true, FailureModeAllowHeaderAdd: true},
		},
		{
			name:    "http_service",
			yaml:    bootstrap(`              http_service: { server_uri: { uri: "http://a", cluster: c, timeout: 1s } }`, "", ""),
			wantErr: "ext_authz settings not supported by the stand-in: http_service (only grpc_service is supported)",
		},
		{
			name:    "allowed headers",
			yaml:    bootstrap(grpcService, `              allowed_headers: { patterns: [{ exact: authorization }] }`, ""),
			wantErr: "ext_authz settings not supported by the stand-in: allowed_headers",
		},
		{
			name: "per-route disabled",
			yaml: bootstrap(grpcService, "", `                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true`),
			wantErr: `route "/": per-route envoy.filters.http.ext_authz settings are not supported by the stand-in`,
		},
		{
			name: "disabled on a route that answers itself",
			yaml: bootstrap(grpcService, "", `              - match: { prefix: /other }
                direct_response: { status: 404 }
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true`),
			want: Config{Timeout: 200 * time.Millisecond, StatusOnError: 403},
		},
		{
			name: "list filter with request processing",
			yaml: bootstrap(grpcService, `          - name: lf
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher
              extension_config:
                name: envoy.filters.http.composite
                typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite }
              xds_matcher:
                matcher_list:
                  matchers:
                  - predicate:
                      single_predicate:
                        input:
                          name: m
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DynamicMetadataInput
                            filter: envoy.filters.http.ext_authz
                            path: [{ key: list_filter }]
                        custom_match:
                          name: b
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.matching.input_matchers.metadata.v3.Metadata
                            value: { bool_match: true }
                    on_match:
                      action:
                        name: a
                        typed_config:
                          "@type": type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction
                          typed_config:
                            name: envoy.filters.http.ext_proc
                            typed_config:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
                              grpc_service: { envoy_grpc: { cluster_name: mcpauthz } }
                              processing_mode: { response_header_mode: SEND, response_body_mode: FULL_DUPLEX_STREAMED, response_trailer_mode: SEND }`, ""),
			wantErr: "ext_proc settings not supported by the stand-in: request processing",
		},
		{
			name:    "no ext_authz",
			yaml:    strings.Replace(bootstrap(grpcService, "", ""), "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz\n              transport_api_version: V3\n"+grpcService, "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", 1),
			wantErr: "no HTTP connection manager with an ext_authz filter",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "envoy.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadConfig(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// A denial reaches the client exactly as the CheckResponse has it, and the
// upstream never sees the request.
func TestDenialPassesThrough(t *testing.T) {
	tests := []struct {
		name       string
		answer     func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
		wantStatus int
		wantHeader http.Header
		wantBody   string
	}{
		{
			name: "401 challenge",
			answer: deny(typev3.StatusCode_Unauthorized, `{"error":"invalid_token"}`,
				hv("www-authenticate", `Bearer resource_metadata="http://x/.well-known/oauth-protected-resource/mcp", error="invalid_token"`, overwrite),
				hv("content-type", "application/json", overwrite),
				hv("cache-control", "no-store", overwrite)),
			wantStatus: 401,
			wantHeader: http.Header{
				"Www-Authenticate": {`Bearer resource_metadata="http://x/.well-known/oauth-protected-resource/mcp", error="invalid_token"`},
				"Content-Type":     {"application/json"},
				"Cache-Control":    {"no-store"},
				"Content-Length":   {"25"},
			},
			wantBody: `{"error":"invalid_token"}`,
		},
		{
			name:       "direct 200 answer (protected resource metadata)",
			answer:     deny(typev3.StatusCode_OK, `{"resource":"http://x/mcp"}`, hv("content-type", "application/json", overwrite)),
			wantStatus: 200,
			wantHeader: http.Header{"Content-Type": {"application/json"}, "Content-Length": {"27"}},
			wantBody:   `{"resource":"http://x/mcp"}`,
		},
		{
			name:       "no status: 403, text body gets text/plain",
			answer:     deny(0, "nope"),
			wantStatus: 403,
			wantHeader: http.Header{"Content-Type": {"text/plain"}, "Content-Length": {"4"}},
			wantBody:   "nope",
		},
		{
			name: "several values of one header",
			answer: deny(typev3.StatusCode_Forbidden, "",
				hv("set-cookie", "a=1", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
				hv("set-cookie", "b=2", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)),
			wantStatus: 403,
			wantHeader: http.Header{"Set-Cookie": {"a=1", "b=2"}, "Content-Length": {"0"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &upstreamRecorder{}
			base, p := startProxy(t, shipped, startAuthz(t, &fakeAuthz{answer: tt.answer}), up)
			resp, body := do(t, newRequest(t, "POST", base+"/mcp", `{"jsonrpc":"2.0","id":1,"method":"ping"}`))
			resp.Header.Del("Date")
			if resp.StatusCode != tt.wantStatus || body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if diff := cmp.Diff(tt.wantHeader, resp.Header); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
			if n := len(up.requests()); n != 0 {
				t.Errorf("upstream got %d requests, want 0", n)
			}
			checks := p.Checks()
			if len(checks) != 1 || checks[0].Outcome != OutcomeDenied || checks[0].Status != tt.wantStatus {
				t.Errorf("checks = %+v", checks)
			}
		})
	}
}

func TestHeaderMutations(t *testing.T) {
	tests := []struct {
		name       string
		client     http.Header
		ok         *authv3.OkHttpResponse
		wantUp     http.Header // the upstream's view of the named headers
		wantClient http.Header // the client's view of the named headers
		wantURI    string
	}{
		{
			name:   "identity headers overwrite, token removed",
			client: http.Header{"Authorization": {"Bearer t"}, "X-Mcp-Client-Id": {"spoofed"}},
			ok: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{
					hv("x-mcp-subject", "alice", overwrite),
					hv("x-mcp-client-id", "c1", overwrite),
				},
				HeadersToRemove: []string{"authorization"},
			},
			wantUp: http.Header{"Authorization": nil, "X-Mcp-Subject": {"alice"}, "X-Mcp-Client-Id": {"c1"}},
		},
		{
			name:   "each append_action",
			client: http.Header{"X-Add": {"a"}, "X-Absent-Exists": {"keep"}, "X-Overwrite-Exists": {"old"}},
			ok: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
				hv("x-add", "b", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
				hv("x-absent-exists", "new", corev3.HeaderValueOption_ADD_IF_ABSENT),
				hv("x-absent-new", "new", corev3.HeaderValueOption_ADD_IF_ABSENT),
				hv("x-overwrite-exists", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
				hv("x-overwrite-missing", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
			}},
			wantUp: http.Header{
				"X-Add":               {"a", "b"},
				"X-Absent-Exists":     {"keep"},
				"X-Absent-New":        {"new"},
				"X-Overwrite-Exists":  {"new"},
				"X-Overwrite-Missing": nil,
			},
		},
		{
			name:   "deprecated append",
			client: http.Header{"X-Join": {"a"}, "X-Set": {"a"}},
			ok: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-join", Value: "b"}, Append: wrapperspb.Bool(true)},
				{Header: &corev3.HeaderValue{Key: "x-set", Value: "b"}, Append: wrapperspb.Bool(false)},
				{Header: &corev3.HeaderValue{Key: "x-new", Value: "b"}, Append: wrapperspb.Bool(true)},
			}},
			wantUp: http.Header{"X-Join": {"a,b"}, "X-Set": {"b"}, "X-New": {"b"}},
		},
		{
			name:   "headers_to_remove never removes host",
			client: http.Header{"X-Gone": {"1"}},
			ok:     &authv3.OkHttpResponse{HeadersToRemove: []string{"x-gone", "host", ":authority"}},
			wantUp: http.Header{"X-Gone": nil},
		},
		{
			name: "response headers",
			ok: &authv3.OkHttpResponse{ResponseHeadersToAdd: []*corev3.HeaderValueOption{
				hv("x-authz", "yes", overwrite),
				hv("content-type", "text/x-replaced", overwrite),
			}},
			wantClient: http.Header{"X-Authz": {"yes"}, "Content-Type": {"text/x-replaced"}},
		},
		{
			name: "query parameters",
			ok: &authv3.OkHttpResponse{
				QueryParametersToSet:    []*corev3.QueryParameter{{Key: "b", Value: "2"}},
				QueryParametersToRemove: []string{"a"},
			},
			wantURI: "/mcp?b=2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &upstreamRecorder{}
			ok := tt.ok
			answer := func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				return &authv3.CheckResponse{
					Status:       &statuspb.Status{Code: int32(codes.OK)},
					HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
				}, nil
			}
			base, _ := startProxy(t, shipped, startAuthz(t, &fakeAuthz{answer: answer}), up)
			req := newRequest(t, "GET", base+"/mcp?a=1", "")
			for k, v := range tt.client {
				req.Header[k] = v
			}
			resp, _ := do(t, req)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			reqs := up.requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests", len(reqs))
			}
			for k, want := range tt.wantUp {
				if got := reqs[0].header[k]; !cmp.Equal(want, got) {
					t.Errorf("upstream %s = %q, want %q", k, got, want)
				}
			}
			for k, want := range tt.wantClient {
				if got := resp.Header[k]; !cmp.Equal(want, got) {
					t.Errorf("client %s = %q, want %q", k, got, want)
				}
			}
			if tt.wantURI != "" && reqs[0].uri != tt.wantURI {
				t.Errorf("upstream URI %q, want %q", reqs[0].uri, tt.wantURI)
			}
			if reqs[0].host != strings.TrimPrefix(base, "http://") {
				t.Errorf("upstream Host %q, want the front's %q", reqs[0].host, strings.TrimPrefix(base, "http://"))
			}
		})
	}
}

func TestInvalidMutationIs500(t *testing.T) {
	for name, ok := range map[string]*authv3.OkHttpResponse{
		"header value with a newline": {Headers: []*corev3.HeaderValueOption{hv("x-a", "1\r\nx-b: 2", overwrite)}},
		"unknown append action":       {Headers: []*corev3.HeaderValueOption{hv("x-a", "1", 42)}},
		"pseudo-header":               {Headers: []*corev3.HeaderValueOption{hv(":path", "/admin", overwrite)}},
	} {
		t.Run(name, func(t *testing.T) {
			up := &upstreamRecorder{}
			answer := func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				return &authv3.CheckResponse{Status: &statuspb.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}}, nil
			}
			base, _ := startProxy(t, shipped, startAuthz(t, &fakeAuthz{answer: answer}), up)
			resp, _ := do(t, newRequest(t, "GET", base+"/mcp", ""))
			if resp.StatusCode != 500 || len(up.requests()) != 0 {
				t.Errorf("status %d, upstream requests %d; want 500 and none", resp.StatusCode, len(up.requests()))
			}
		})
	}
}

func TestRequestBody(t *testing.T) {
	small := shipped
	small.MaxRequestBytes = 16
	partial := small
	partial.AllowPartialMessage = true
	tests := []struct {
		name        string
		cfg         Config
		body        string
		wantStatus  int
		wantChecked bool
		wantRaw     string
		wantPartial string
	}{
		{name: "at the limit", cfg: small, body: strings.Repeat("a", 16), wantStatus: 200, wantChecked: true, wantRaw: strings.Repeat("a", 16), wantPartial: "false"},
		{name: "over the limit: 413 without a check", cfg: small, body: strings.Repeat("a", 17), wantStatus: 413},
		{name: "over the limit, partial allowed", cfg: partial, body: strings.Repeat("a", 16) + "tail", wantStatus: 200, wantChecked: true, wantRaw: strings.Repeat("a", 16), wantPartial: "true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &upstreamRecorder{}
			fa := &fakeAuthz{answer: allow()}
			base, _ := startProxy(t, tt.cfg, startAuthz(t, fa), up)
			resp, body := do(t, newRequest(t, "POST", base+"/mcp", tt.body))
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if tt.wantStatus == 413 && (body != "Payload Too Large" || resp.Header.Get("Content-Type") != "text/plain") {
				t.Errorf("413 answer %q (%s)", body, resp.Header.Get("Content-Type"))
			}
			reqs := fa.requests()
			if !tt.wantChecked {
				if len(reqs) != 0 || len(up.requests()) != 0 {
					t.Errorf("checks %d, upstream requests %d, want none", len(reqs), len(up.requests()))
				}
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("%d checks", len(reqs))
			}
			h := reqs[0].GetAttributes().GetRequest().GetHttp()
			c := Check{Request: reqs[0]}
			// size is what was received when the check started: the whole
			// body, or for a partial one at least the bytes sent.
			if string(h.GetRawBody()) != tt.wantRaw || c.Header("x-envoy-auth-partial-body") != tt.wantPartial || h.GetSize() < int64(len(tt.wantRaw)) ||
				(tt.wantPartial == "false" && h.GetSize() != int64(len(tt.body))) {
				t.Errorf("raw_body %q partial %q size %d", h.GetRawBody(), c.Header("x-envoy-auth-partial-body"), h.GetSize())
			}
			if got := up.requests()[0].body; got != tt.body {
				t.Errorf("upstream body %q, want the whole %q", got, tt.body)
			}
		})
	}
}

func TestCheckFailure(t *testing.T) {
	slow := func(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	errorResponse := func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status: &statuspb.Status{Code: int32(codes.Unavailable)},
			HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{
				Headers: []*corev3.HeaderValueOption{hv("retry-after", "1", overwrite)}, Body: "later",
			}},
		}, nil
	}
	grpcError := func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return nil, status.Error(codes.Unauthenticated, "a gRPC error is not a denial")
	}
	failOpen := shipped
	failOpen.FailureModeAllow, failOpen.FailureModeAllowHeaderAdd = true, true
	fast := shipped
	fast.Timeout = 100 * time.Millisecond
	tests := []struct {
		name       string
		cfg        Config
		answer     func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
		dead       bool
		wantStatus int
		wantBody   string
		wantUp     bool
	}{
		{name: "mcpauthz down", cfg: shipped, dead: true, wantStatus: 503},
		{name: "timeout", cfg: fast, answer: slow, wantStatus: 503},
		{name: "gRPC error", cfg: shipped, answer: grpcError, wantStatus: 503},
		{name: "error_response", cfg: shipped, answer: errorResponse, wantStatus: 503, wantBody: "later"},
		{name: "failure mode allow", cfg: failOpen, dead: true, wantStatus: 200, wantBody: `{"ok":true}`, wantUp: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &upstreamRecorder{}
			var base string
			var p *Proxy
			if tt.dead {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := l.Addr().String()
				l.Close() // nothing listens there any more
				base, p = startProxy(t, tt.cfg, dial(t, addr), up)
			} else {
				base, p = startProxy(t, tt.cfg, startAuthz(t, &fakeAuthz{answer: tt.answer}), up)
			}
			resp, body := do(t, newRequest(t, "POST", base+"/mcp", `{}`))
			if resp.StatusCode != tt.wantStatus || body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if got := len(up.requests()) > 0; got != tt.wantUp {
				t.Errorf("upstream reached: %v, want %v", got, tt.wantUp)
			}
			if tt.wantUp && up.requests()[0].header.Get("X-Envoy-Auth-Failure-Mode-Allowed") != "true" {
				t.Error("failure mode allowed request not marked")
			}
			c := p.Checks()
			if len(c) != 1 || c[0].Outcome != OutcomeError {
				t.Errorf("checks %+v, want one error", c)
			}
		})
	}
}

// An upstream that sends one event and then waits: the event must reach the
// client before the upstream finishes, and a later event after it.
func TestEventStreamIsNotBuffered(t *testing.T) {
	release := make(chan struct{})
	up := &upstreamRecorder{handler: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: message\ndata: {\"n\":1}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: {\"n\":2}\n\n")
	}}
	base, _ := startProxy(t, shipped, startAuthz(t, &fakeAuthz{answer: allow()}), up)
	resp, err := http.DefaultClient.Do(newRequest(t, "GET", base+"/mcp", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content-type %q", ct)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	want := []string{"event: message", `data: {"n":1}`, ""}
	for _, w := range want {
		select {
		case got := <-lines:
			if got != w {
				t.Fatalf("line %q, want %q", got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the first event did not arrive while the upstream waited: the response is buffered")
		}
	}
	close(release)
	if got := <-lines; got != `data: {"n":2}` {
		t.Fatalf("second event %q", got)
	}
	for range lines {
	}
}

func TestConnectionManager(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		header     http.Header
		wantStatus int
		wantPath   string // as the check and the upstream see it
	}{
		{name: "underscore header", path: "/mcp", header: http.Header{"X_mcp_subject": {"admin"}}, wantStatus: 400},
		{name: "escaped slash", path: "/a%2Fmcp", wantStatus: 400},
		{name: "dot segments and slashes", path: "/a/..//mcp?x=1", wantStatus: 200, wantPath: "/mcp?x=1"},
		{name: "identity headers from the client removed", path: "/mcp", header: http.Header{"X-Mcp-Subject": {"admin"}}, wantStatus: 200, wantPath: "/mcp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &upstreamRecorder{}
			fa := &fakeAuthz{answer: allow()}
			base, _ := startProxy(t, shipped, startAuthz(t, fa), up)
			req := newRequest(t, "GET", base+tt.path, "")
			for k, v := range tt.header {
				req.Header[k] = v
			}
			resp, _ := do(t, req)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				if len(fa.requests()) != 0 {
					t.Error("a rejected request was checked")
				}
				return
			}
			c := Check{Request: fa.requests()[0]}
			if c.Header(":path") != tt.wantPath || up.requests()[0].uri != tt.wantPath {
				t.Errorf("check path %q, upstream %q, want %q", c.Header(":path"), up.requests()[0].uri, tt.wantPath)
			}
			if c.Header("x-mcp-subject") != "" || up.requests()[0].header.Get("X-Mcp-Subject") != "" {
				t.Error("a client's identity header got through")
			}
		})
	}
}

func TestDynamicMetadataIsRecorded(t *testing.T) {
	md, err := structpb.NewStruct(map[string]any{"decision": "allow", "reason": "tool_scope"})
	if err != nil {
		t.Fatal(err)
	}
	answer := func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status:          &statuspb.Status{},
			HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
			DynamicMetadata: md,
		}, nil
	}
	base, p := startProxy(t, shipped, startAuthz(t, &fakeAuthz{answer: answer}), &upstreamRecorder{})
	req := newRequest(t, "POST", base+"/mcp", `{}`)
	req.Header.Set("X-Interop-Step", "one")
	do(t, req)
	c := p.Checks()
	if len(c) != 1 || c[0].Metadata("reason") != "tool_scope" || c[0].Metadata("decision") != "allow" || c[0].Header("x-interop-step") != "one" {
		t.Fatalf("checks %+v", c)
	}
}

func TestUpstreamDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there any more
	u, _ := url.Parse("http://" + addr)
	p := New(shipped, startAuthz(t, &fakeAuthz{answer: allow()}), u, nil)
	front := httptest.NewServer(p)
	t.Cleanup(func() {
		front.Close()
		p.Close()
	})
	resp, body := do(t, newRequest(t, "GET", front.URL+"/mcp", ""))
	if resp.StatusCode != 503 || !strings.HasPrefix(body, "upstream connect error") {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
}
