package app

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// newObservedRuntime compiles a minimal configuration with metrics; tests
// change rt.HTTP before building the HTTP server.
func newObservedRuntime(t *testing.T) *Runtime {
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
	cfg, err := config.Parse("c.yaml", []byte("resource: https://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\n"+
		"issuers: [{issuer: https://idp.example.com, jwks_file: \""+jwks+"\"}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Compile(cfg, Options{Observe: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// serveHTTP serves rt's HTTP server, as serve does, on 127.0.0.1:0 until
// the test ends, and returns its address.
func serveHTTP(t *testing.T, rt *Runtime) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rt.HTTPServer()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(rt.HTTPListener(ln))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// verifyNoLeaks checks, once the test and all its cleanups are done, that
// it left no goroutine running.
func verifyNoLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // the first cleanup runs last
}

// TestHTTPServerSettings: the server of http_addr has every timeout and
// bound set.
func TestHTTPServerSettings(t *testing.T) {
	rt := newObservedRuntime(t)
	srv := rt.HTTPServer()
	type settings struct {
		ReadHeader, Read, Write, Idle time.Duration
		MaxHeaderBytes                int
	}
	got := settings{srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes}
	want := settings{5 * time.Second, 10 * time.Second, 15 * time.Second, 10 * time.Second, 16 << 10}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("HTTP server settings (-want +got):\n%s", diff)
	}
	l := rt.HTTP
	if l.MaxConnections != 128 || l.WriteTimeout <= l.ScrapeWait+l.ScrapeTimeout {
		t.Errorf("limits %+v: want 128 connections and a write timeout above the longest scrape", l)
	}
}

// rawGet sends one keep-alive GET on c and returns the status line.
func rawGet(t *testing.T, c net.Conn, br *bufio.Reader, path string) string {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Status
}

// TestHTTPIdleConnectionsClosed: a keep-alive connection that sends
// nothing more is closed by the server after IdleTimeout.
func TestHTTPIdleConnectionsClosed(t *testing.T) {
	verifyNoLeaks(t)
	rt := newObservedRuntime(t)
	rt.HTTP.IdleTimeout = 200 * time.Millisecond
	addr := serveHTTP(t, rt)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if got := rawGet(t, c, br, "/healthz"); got != "200 OK" {
		t.Fatalf("GET /healthz = %s", got)
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: read %v, %v; want the server to close it (EOF)", n, err)
	}
	if d := time.Since(start); d < rt.HTTP.IdleTimeout/2 {
		t.Errorf("closed after %v, before the idle timeout %v", d, rt.HTTP.IdleTimeout)
	}
}

// TestHTTPConnectionLimit: beyond MaxConnections a new connection is not
// served until one closes.
func TestHTTPConnectionLimit(t *testing.T) {
	rt := newObservedRuntime(t)
	rt.HTTP.MaxConnections = 2
	addr := serveHTTP(t, rt)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := rawGet(t, c, bufio.NewReader(c), "/healthz"); got != "200 OK" {
			t.Fatalf("GET /healthz = %s", got)
		}
		held = append(held, c)
	}
	c, err := net.Dial("tcp", addr) // the kernel accepts; the server does not
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("a third connection was served with MaxConnections 2")
	}
	held[0].Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("third connection after one closed: %v, %v; want 200", resp, err)
	}
	resp.Body.Close()
}

// blockingCollector blocks every gather until release is closed.
type blockingCollector struct {
	entered chan struct{}
	release chan struct{}
}

func (blockingCollector) Describe(chan<- *prometheus.Desc) {}

func (b blockingCollector) Collect(ch chan<- prometheus.Metric) {
	b.entered <- struct{}{}
	<-b.release
}

type scrape struct {
	status     int
	body       string
	retryAfter string
	took       time.Duration
}

func get(t *testing.T, url string) scrape {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return scrape{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return scrape{resp.StatusCode, string(b), resp.Header.Get("Retry-After"), time.Since(start)}
}

// TestMetricsBounds: the scrapes gathered at once are bounded (the next
// one is refused at once, not queued behind a slow gather), one gather is
// bounded in time, and scrapes beyond the pace wait for their turn or,
// when it is too far, are held for ScrapeWait and refused.
func TestMetricsBounds(t *testing.T) {
	verifyNoLeaks(t)
	t.Run("in flight", func(t *testing.T) {
		rt := newObservedRuntime(t)
		rt.HTTP.MaxScrapesInFlight, rt.HTTP.ScrapeBurst = 2, 3 // the pace lets the third through
		block := blockingCollector{entered: make(chan struct{}, 3), release: make(chan struct{})}
		rt.Registry.MustRegister(block)
		url := "http://" + serveHTTP(t, rt) + "/metrics"
		var wg sync.WaitGroup
		results := make([]scrape, 2)
		for i := range results {
			wg.Go(func() { results[i] = get(t, url) })
		}
		<-block.entered
		<-block.entered // both gathers are running and blocked
		third := get(t, url)
		close(block.release)
		wg.Wait()
		if third.status != 503 || !strings.Contains(third.body, "Limit of concurrent requests reached (2)") {
			t.Errorf("third concurrent scrape = %d %q, want 503 (limit reached) while the others gather", third.status, third.body)
		}
		for i, r := range results {
			if r.status != 200 || !strings.Contains(r.body, "mcpauthz_checks_in_flight 0") {
				t.Errorf("scrape %d = %d, want 200 with the metrics", i, r.status)
			}
		}
	})
	t.Run("timeout", func(t *testing.T) {
		rt := newObservedRuntime(t)
		rt.HTTP.ScrapeTimeout = 100 * time.Millisecond
		block := blockingCollector{entered: make(chan struct{}, 1), release: make(chan struct{})}
		rt.Registry.MustRegister(block)
		defer close(block.release)
		got := get(t, "http://"+serveHTTP(t, rt)+"/metrics")
		if got.status != 503 || got.body != "Exceeded configured timeout of 100ms.\n" {
			t.Errorf("scrape of a gather that blocks = %d %q, want 503 after the 100ms timeout", got.status, got.body)
		}
	})
	t.Run("paced turn within the wait", func(t *testing.T) {
		rt := newObservedRuntime(t)
		rt.HTTP.ScrapesPerSecond, rt.HTTP.ScrapeBurst, rt.HTTP.ScrapeWait = 5, 1, 5*time.Second
		url := "http://" + serveHTTP(t, rt) + "/metrics"
		if first := get(t, url); first.status != 200 {
			t.Fatalf("first scrape = %d", first.status)
		}
		second := get(t, url)
		if second.status != 200 || second.took < 100*time.Millisecond {
			t.Errorf("second scrape = %d after %v, want 200 after its turn (200ms at 5/s)", second.status, second.took)
		}
	})
	t.Run("paced turn too far", func(t *testing.T) {
		rt := newObservedRuntime(t)
		rt.HTTP.ScrapesPerSecond, rt.HTTP.ScrapeBurst, rt.HTTP.ScrapeWait = 0.1, 1, 200*time.Millisecond
		url := "http://" + serveHTTP(t, rt) + "/metrics"
		if first := get(t, url); first.status != 200 {
			t.Fatalf("first scrape = %d", first.status)
		}
		second := get(t, url)
		if second.status != 503 || second.retryAfter != "1" || second.body != "too many scrapes: /metrics is paced; scrape less often\n" || second.took < 200*time.Millisecond {
			t.Errorf("second scrape = %+v, want 503 with Retry-After after being held 200ms", second)
		}
		m := get(t, strings.Replace(url, "/metrics", "/healthz", 1))
		if m.status != 200 {
			t.Errorf("/healthz while /metrics is paced = %d", m.status)
		}
		mfs, err := rt.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		counted := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() == "promhttp_metric_handler_requests_total" {
				for _, m := range mf.GetMetric() {
					counted[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
		if counted["200"] != 1 || counted["503"] != 1 {
			t.Errorf("promhttp_metric_handler_requests_total = %v, want one 200 and one 503", counted)
		}
	})
}
