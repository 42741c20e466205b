package interop

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mcpauthz/mcpauthz/test/interop/standin"
)

// Front is the proxy in front of the MCP server: Envoy or its stand-in.
type Front interface {
	// BaseURL is the front's http://host:port, known before Start so that
	// mcpauthz and the authorization server can be configured with it.
	BaseURL() string
	// Start begins serving: checks go to mcpauthz's gRPC address, requests
	// to the upstream's address.
	Start(t *testing.T, grpcAddr, upstreamAddr string)
	// Checks returns the ext_authz checks seen so far, or nil when the front
	// cannot tell (a real Envoy).
	Checks() []standin.Check
}

// Standin is the Go stand-in for Envoy, configured from envoy/envoy.yaml.
type Standin struct {
	lis   net.Listener
	proxy *standin.Proxy
}

// NewStandin listens on 127.0.0.1:0 for the stand-in.
func NewStandin(t *testing.T) *Standin {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Standin{lis: lis}
	t.Cleanup(func() { _ = lis.Close() })
	return s
}

func (s *Standin) BaseURL() string { return "http://" + s.lis.Addr().String() }

func (s *Standin) Start(t *testing.T, grpcAddr, upstreamAddr string) {
	t.Helper()
	cfg, err := standin.LoadConfig(filepath.Join(Root(), "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	up := &url.URL{Scheme: "http", Host: upstreamAddr}
	log := &logBuffer{}
	s.proxy = standin.New(cfg, conn, up, slog.New(slog.NewTextHandler(log, nil)))
	srv := &http.Server{Handler: s.proxy, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(s.lis)
	}()
	t.Cleanup(func() {
		_ = srv.Close() // ends the long-lived streams too
		<-done
		s.proxy.Close()
		_ = conn.Close()
		if t.Failed() {
			t.Logf("stand-in log:\n%s", log)
		}
	})
}

func (s *Standin) Checks() []standin.Check {
	if s.proxy == nil {
		return nil
	}
	return s.proxy.Checks()
}

// logBuffer keeps log output for the failure report; unlike t.Log it may
// be written after the test ended.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
