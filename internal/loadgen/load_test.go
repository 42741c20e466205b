package loadgen

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// recorder allows requests whose body and headers look as Run promises,
// denies the others with 401, and remembers the JSON-RPC bodies.
type recorder struct {
	authv3.UnimplementedAuthorizationServer
	mu     sync.Mutex
	bodies map[string]bool
	bad    []string
}

func (r *recorder) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	body := string(h.GetRawBody())
	r.mu.Lock()
	dup := r.bodies[body]
	r.bodies[body] = true
	if h.GetHeaders()["authorization"] != "Bearer ok" || dup {
		r.bad = append(r.bad, body)
	}
	r.mu.Unlock()
	if h.GetHeaders()["authorization"] == "Bearer deny" {
		return &authv3.CheckResponse{
			Status:       &statuspb.Status{Code: int32(codes.Unauthenticated)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized}}},
		}, nil
	}
	return &authv3.CheckResponse{Status: &statuspb.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil
}

func serve(t *testing.T, srv authv3.AuthorizationServer) []authv3.AuthorizationClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conns, err := Dial(ctx, lis.Addr().String(), 2)
	if err != nil {
		t.Fatal(err)
	}
	var cs []authv3.AuthorizationClient
	for _, c := range conns {
		t.Cleanup(func() { c.Close() })
		cs = append(cs, authv3.NewAuthorizationClient(c))
	}
	return cs
}

func template() *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/mcp", Headers: map[string]string{":method": "POST", ":path": "/mcp"}},
	}}}
}

func TestRunMeasuresAndChecksAnswers(t *testing.T) {
	rec := &recorder{bodies: map[string]bool{}}
	clients := serve(t, rec)
	pid := 0
	if runtime.GOOS == "linux" {
		pid = os.Getpid() // the server is in this process
	}
	res, err := Run(context.Background(), Round{
		Clients: clients, Concurrency: 3, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond,
		Template: template(), BodyPrefix: `{"id":`, BodySuffix: `}`,
		Authorization: func(int, uint64) (string, bool) { return "Bearer ok", true },
		Expect:        OutcomeAllow, ServerPID: pid,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Checks == 0 || res.Latency.Count() != res.Checks || res.Window < 200*time.Millisecond || res.Rate() <= 0 {
		t.Fatalf("checks %d, window %v, rate %v", res.Checks, res.Window, res.Rate())
	}
	if res.Unexpected != 0 || res.Answers[OutcomeAllow] < res.Checks || len(res.Answers) != 1 {
		t.Errorf("answers %v, unexpected %d", res.Answers, res.Unexpected)
	}
	if len(rec.bad) > 0 {
		t.Errorf("bad or duplicate requests (ids must be unique): %q", rec.bad[:min(3, len(rec.bad))])
	}
	if res.Exhausted {
		t.Error("exhausted without running out")
	}
}

func TestRunReportsUnexpectedAndExhaustion(t *testing.T) {
	clients := serve(t, &recorder{bodies: map[string]bool{}})
	// Deny everything but expect allow: every answer is unexpected.
	res, err := Run(context.Background(), Round{
		Clients: clients, Concurrency: 2, Warmup: 10 * time.Millisecond, Duration: 50 * time.Millisecond,
		Template: template(), Authorization: func(int, uint64) (string, bool) { return "Bearer deny", true },
		Expect: OutcomeAllow,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Unexpected == 0 || res.Unexpected != res.Answers["401"] || len(res.Examples) == 0 || res.Examples[0] != "401" {
		t.Errorf("unexpected %d, answers %v, examples %q", res.Unexpected, res.Answers, res.Examples)
	}

	// 300 credentials for a 10s round: the round ends when they run out.
	var mu sync.Mutex
	left := 300
	auth := func(int, uint64) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		left--
		return "Bearer ok", left >= 0
	}
	t0 := time.Now()
	res, err = Run(context.Background(), Round{
		Clients: clients, Concurrency: 2, Warmup: 0, Duration: 10 * time.Second,
		Template: template(), Authorization: auth, Expect: OutcomeAllow,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Exhausted || res.ExhaustedAfter <= 0 || time.Since(t0) > 5*time.Second || res.Answers[OutcomeAllow] != 300 {
		t.Errorf("exhausted %v after %v, took %v, answers %v", res.Exhausted, res.ExhaustedAfter, time.Since(t0), res.Answers)
	}

	// Running out during the warm-up is an error.
	if _, err := Run(context.Background(), Round{
		Clients: clients, Concurrency: 1, Warmup: 5 * time.Second, Duration: time.Second,
		Template: template(), Authorization: func(int, uint64) (string, bool) { return "", false }, Expect: OutcomeAllow,
	}); err == nil {
		t.Error("running out during the warm-up must fail")
	}
}

func TestClassify(t *testing.T) {
	denied := func(code typev3.StatusCode) *authv3.CheckResponse {
		return &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: code}}}}
	}
	cases := []struct {
		resp *authv3.CheckResponse
		err  error
		want string
	}{
		{&authv3.CheckResponse{Status: &statuspb.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil, OutcomeAllow},
		{&authv3.CheckResponse{}, nil, OutcomeAllow},
		{denied(typev3.StatusCode_Unauthorized), nil, "401"},
		{denied(typev3.StatusCode_ServiceUnavailable), nil, "503"},
		{denied(0), nil, "403"},
		{&authv3.CheckResponse{Status: &statuspb.Status{Code: int32(codes.PermissionDenied)}}, nil, "status:PermissionDenied"},
		{nil, status.Error(codes.Unavailable, "down"), "grpc:Unavailable"},
		{nil, errors.New("plain"), "grpc:Unknown"},
	}
	for _, c := range cases {
		if got := Classify(c.resp, c.err); got != c.want {
			t.Errorf("Classify(%v, %v) = %q, want %q", c.resp, c.err, got, c.want)
		}
	}
}
