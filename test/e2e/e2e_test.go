//go:build e2e

// Package e2e runs mcpauthz behind a real Envoy: `make e2e` on a machine
// with an envoy binary on PATH (the version in envoy/ENVOY_VERSION). It
// starts an MCP stand-in upstream, `mcpauthz serve --dev` and Envoy with the
// ext_authz settings of envoy/envoy.yaml on free loopback ports, and checks
// what an MCP client sees over HTTP.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// upstream records what the MCP server receives.
type upstream struct {
	mu   sync.Mutex
	last http.Header
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.last = r.Header.Clone()
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
}

func (u *upstream) headers() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

const envoyConfig = `
static_resources:
  listeners:
  - name: mcp
    address: { socket_address: { address: 127.0.0.1, port_value: %[1]d } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mcp
          normalize_path: true
          merge_slashes: true
          route_config:
            virtual_hosts:
            - name: mcp
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: upstream, timeout: 0s }
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service: { envoy_grpc: { cluster_name: ext_authz }, timeout: 2s }
              failure_mode_allow: false
              status_on_error: { code: ServiceUnavailable }
              with_request_body: { max_request_bytes: 1048576, allow_partial_message: false, pack_as_bytes: true }
              validate_mutations: true
              encode_raw_headers: true
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %[2]d } } } }] }]
  - name: ext_authz
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: ext_authz
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %[3]d } } } }] }]
`

func TestThroughEnvoy(t *testing.T) {
	envoy, err := exec.LookPath("envoy")
	if err != nil {
		t.Skip("no envoy binary on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "mcpauthz")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../../cmd/mcpauthz").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	up := &upstream{}
	upSrv := httptest.NewServer(up)
	defer upSrv.Close()
	upPort := upSrv.Listener.Addr().(*net.TCPAddr).Port

	listen, grpcPort, httpPort, issPort := freePort(t), freePort(t), freePort(t), freePort(t)
	devDir := filepath.Join(dir, "dev")
	authz := exec.CommandContext(ctx, bin, "serve", "--dev", "--dev-dir", devDir,
		"--grpc-addr", fmt.Sprintf("127.0.0.1:%d", grpcPort), "--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--dev-issuer-addr", fmt.Sprintf("127.0.0.1:%d", issPort))
	authz.Stdout, authz.Stderr = io.Discard, os.Stderr
	if err := authz.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { authz.Process.Signal(os.Interrupt); authz.Wait() }()

	cfgFile := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(envoyConfig, listen, upPort, grpcPort)), 0o644); err != nil {
		t.Fatal(err)
	}
	ev := exec.CommandContext(ctx, envoy, "-c", cfgFile, "--base-id", fmt.Sprint(listen), "-l", "warning")
	ev.Stdout, ev.Stderr = os.Stderr, os.Stderr
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { ev.Process.Kill(); ev.Wait() }()

	base := fmt.Sprintf("http://127.0.0.1:%d", listen)
	waitFor(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort))
	waitFor(t, base+"/.well-known/oauth-protected-resource/mcp")

	token := func(scope string) string {
		out, err := exec.CommandContext(ctx, bin, "token", "--dev-dir", devDir, "--scope", scope).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	call := func(tool string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{}}}`
	}
	post := func(tok, body string, hdr map[string]string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/mcp", bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	// Metadata through Envoy, answered by mcpauthz.
	resp, err := http.Get(base + "/.well-known/oauth-protected-resource/mcp")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"resource":"http://localhost:10000/mcp"`) {
		t.Errorf("metadata: %d %s", resp.StatusCode, body)
	}

	// No token: 401 with the challenge.
	resp = post("", call("get_weather"), nil)
	if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || !strings.HasPrefix(got, `Bearer resource_metadata="http://localhost:10000/.well-known/oauth-protected-resource/mcp"`) {
		t.Errorf("no token: %d %q", resp.StatusCode, got)
	}
	resp.Body.Close()

	// Allowed: upstream gets identity headers, not the token, and not the
	// client's spoofed subject.
	weather := token("tools:get_weather")
	resp = post(weather, call("get_weather"), map[string]string{"X-Mcp-Subject": "admin"})
	resp.Body.Close()
	h := up.headers()
	if resp.StatusCode != 200 || h.Get("X-Mcp-Subject") != "dev-user" || h.Get("Authorization") != "" {
		t.Errorf("allowed: %d, upstream headers %v", resp.StatusCode, h)
	}

	// Step-up.
	resp = post(weather, call("delete_file"), nil)
	if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 403 || !strings.Contains(got, `error="insufficient_scope", scope="tools:delete_file tools:get_weather"`) {
		t.Errorf("step-up: %d %q", resp.StatusCode, got)
	}
	resp.Body.Close()

	// Strict parsing: a duplicate key never reaches the upstream.
	resp = post(weather, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","name":"delete_file"}}`, nil)
	if resp.StatusCode != 400 {
		t.Errorf("duplicate key: %d, want 400", resp.StatusCode)
	}
	resp.Body.Close()
}

func waitFor(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered 200: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
