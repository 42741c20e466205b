package standin

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.uber.org/goleak"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// The tests' own keep-alive connections are not the proxy's goroutines.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// fakeAuthz is an Authorization server on a real gRPC listener that
// answers with answer and keeps what it was asked.
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
	answer func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)

	mu  sync.Mutex
	got []*authv3.CheckRequest
}

func (f *fakeAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	f.mu.Lock()
	f.got = append(f.got, req)
	f.mu.Unlock()
	return f.answer(ctx, req)
}

func (f *fakeAuthz) requests() []*authv3.CheckRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*authv3.CheckRequest(nil), f.got...)
}

// startAuthz serves f on 127.0.0.1:0 and returns a client connection.
func startAuthz(t *testing.T, f *fakeAuthz) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return dial(t, lis.Addr().String())
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// upstreamRecorder is an upstream that records each request it gets.
type upstreamRecorder struct {
	handler http.HandlerFunc

	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, uri, host string
	header            http.Header
	body              string
}

func (u *upstreamRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.reqs = append(u.reqs, recorded{r.Method, r.RequestURI, r.Host, r.Header.Clone(), string(b)})
	u.mu.Unlock()
	if u.handler != nil {
		u.handler(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true}`)
}

func (u *upstreamRecorder) requests() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.reqs...)
}

// startProxy serves the stand-in for cfg in front of upstream and returns
// its base URL.
func startProxy(t *testing.T, cfg Config, conn grpc.ClientConnInterface, upstream http.Handler) (string, *Proxy) {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	u, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := New(cfg, conn, u, nil)
	front := httptest.NewServer(p)
	t.Cleanup(func() {
		front.CloseClientConnections()
		front.Close()
		p.Close()
	})
	return front.URL, p
}

// shipped is the configuration of envoy/envoy.yaml (TestLoadShippedConfig
// checks that it is).
var shipped = Config{
	Timeout:                 1e9,
	StatusOnError:           503,
	WithRequestBody:         true,
	MaxRequestBytes:         1048576,
	PackAsBytes:             true,
	EncodeRawHeaders:        true,
	ValidateMutations:       true,
	RemoveHeaders:           []string{"x-mcp-subject", "x-mcp-client-id", "x-mcp-scopes", "x-mcp-issuer", "x-mcp-actor"},
	RejectUnderscoreHeaders: true,
	NormalizePath:           true,
	MergeSlashes:            true,
	RejectEscapedSlashes:    true,
	UseRemoteAddress:        true,
	ExtProc: &ExtProcConfig{
		Name:                 "mcpauthz.list_filter",
		MatchNamespace:       "envoy.filters.http.ext_authz",
		MatchKey:             "list_filter",
		MatchValue:           true,
		Cluster:              "mcpauthz",
		ForwardingNamespaces: []string{"envoy.filters.http.ext_authz"},
		MessageTimeout:       time.Second,
		StatusOnError:        503,
	},
}

func allow(opts ...func(*authv3.OkHttpResponse)) func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		ok := &authv3.OkHttpResponse{}
		for _, o := range opts {
			o(ok)
		}
		return &authv3.CheckResponse{
			Status:       &statuspb.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		}, nil
	}
}

func deny(status typev3.StatusCode, body string, headers ...*corev3.HeaderValueOption) func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status: &statuspb.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: status}, Headers: headers, Body: body,
			}},
		}, nil
	}
}

func hv(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
}

func do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func newRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
