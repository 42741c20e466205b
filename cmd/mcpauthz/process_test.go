package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mcpauthz/mcpauthz/internal/config"
)

// runMainEnv makes the test binary run main() instead of the tests, so that
// tests can start the real command, signal handling included.
const runMainEnv = "MCPAUTHZ_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main() // exits
	}
	os.Exit(m.Run())
}

// process is `mcpauthz serve` running as its own process.
type process struct {
	cmd      *exec.Cmd
	stderr   *lockedBuffer
	grpcAddr string
	httpBase string
	exited   chan struct{}
	err      error // of Wait, once exited is closed
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProcess runs `mcpauthz serve --config cfgFile` on loopback ports
// until it is listening; the test's end kills it if it still runs.
func startProcess(t testing.TB, cfgFile string) *process {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addrs.json")
	p := &process{stderr: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "serve", "--config", cfgFile, "--addr-file", addrFile)
	p.cmd.Env = append(os.Environ(), runMainEnv+"=1")
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("mcpauthz stderr:\n%s", p.stderr.String())
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var addrs struct {
			GRPC string `json:"grpc_addr"`
			HTTP string `json:"http_addr"`
		}
		if b, err := os.ReadFile(addrFile); err == nil && json.Unmarshal(b, &addrs) == nil {
			p.grpcAddr, p.httpBase = addrs.GRPC, "http://"+addrs.HTTP
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("mcpauthz exited before listening: %v\n%s", p.err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("mcpauthz did not start listening")
		}
	}
}

// drainConfigFile writes the configuration of cfg (from drainSetup) as
// YAML, with the shutdown settings given.
func drainConfigFile(t *testing.T, cfg *config.Config, drainDelay, timeout time.Duration) string {
	t.Helper()
	is := cfg.Issuers[0]
	in := is.Introspection
	yaml := "resource: " + cfg.Resource + "\n" +
		"authorization_servers: [\"" + cfg.AuthorizationServers[0] + "\"]\n" +
		"grpc_addr: 127.0.0.1:0\nhttp_addr: 127.0.0.1:0\n" +
		"issuers:\n" +
		"  - issuer: \"" + is.Issuer + "\"\n" +
		"    token_type: at+jwt\n" +
		"    jwks_uri: \"" + is.JWKSURI + "\"\n" +
		"    jwks: {unknown_kid_interval: 1s}\n" +
		"    introspection: {endpoint: \"" + in.Endpoint + "\", client_id: " + in.ClientID + ", client_secret_file: \"" + in.ClientSecretFile + "\", timeout: 20s}\n" +
		"shutdown: {drain_delay: " + drainDelay.String() + ", timeout: " + timeout.String() + "}\n" +
		"log: {format: text}\n"
	path := filepath.Join(t.TempDir(), "mcpauthz.yaml")
	write(t, path, yaml)
	return path
}

// TestSignalDrainsAndExits sends SIGTERM to a real mcpauthz while a check
// waits on introspection: /readyz fails at once, a new check is still
// decided (introspected) during the drain, the waiting check gets its real
// allow, and the process exits 0 within shutdown.timeout of the signal.
func TestSignalDrainsAndExits(t *testing.T) {
	_, cfg, idp := drainSetup(t)
	defer idp.srv.Close()
	defer close(idp.release)
	const drainDelay, timeout = 3 * time.Second, 8 * time.Second
	p := startProcess(t, drainConfigFile(t, cfg, drainDelay, timeout))
	waitReadyz(t, p.httpBase)
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func(token string) (*authv3.CheckResponse, error) {
		req, err := buildCheckRequest(cfg, "POST", "", token, nil, []byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return client.Check(ctx, req)
	}
	type result struct {
		resp *authv3.CheckResponse
		err  error
	}
	held := make(chan result, 1)
	go func() {
		resp, err := check(idp.slow)
		held <- result{resp, err}
	}()
	select {
	case <-idp.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the check never reached the introspection endpoint")
	}

	signalled := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var code int
	var body string
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if code, body = getStatus(t, p.httpBase+"/readyz"); code == 503 {
			break
		}
	}
	if code != 503 || !drainingBody(body) {
		t.Fatalf("/readyz after SIGTERM = %d %q, want 503 draining", code, body)
	}
	if resp, err := check("opaque-token-during-drain"); err != nil || resp.GetOkResponse() == nil {
		t.Errorf("a new opaque-token check during the drain = %v, %v; want an allow", resp, err)
	}
	idp.release <- struct{}{}
	if r := <-held; r.err != nil || r.resp.GetOkResponse() == nil {
		t.Errorf("the check in flight at SIGTERM = %v, %v; want its real allow", r.resp, r.err)
	}
	select {
	case <-p.exited:
	case <-time.After(timeout + 5*time.Second):
		t.Fatal("mcpauthz did not exit after SIGTERM")
	}
	if d := time.Since(signalled); p.err != nil || d > timeout {
		t.Errorf("mcpauthz exited with %v, %v after SIGTERM; want 0 within shutdown.timeout (%v)", p.err, d, timeout)
	}
	for _, want := range []string{"draining: not ready, still deciding checks", "no new checks: waiting for the checks in flight", "mcpauthz stopped"} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("log has no %q", want)
		}
	}
}

// TestSecondSignalStopsAtOnce: a second signal during the drain ends the
// process at once (the default action of SIGTERM), without waiting for
// the drain delay.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	_, cfg, idp := drainSetup(t)
	defer idp.srv.Close()
	const drainDelay, timeout = 20 * time.Second, 30 * time.Second
	p := startProcess(t, drainConfigFile(t, cfg, drainDelay, timeout))
	waitReadyz(t, p.httpBase)
	p.cmd.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if code, _ := getStatus(t, p.httpBase+"/readyz"); code == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz never failed after SIGTERM")
		}
	}
	// The first signal is being handled; the next one (repeated, in case it
	// arrives before the handler has given signals their default action)
	// ends the process.
	second := time.Now()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for stopped := false; !stopped; {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			stopped = true
		case <-tick.C:
			if time.Since(second) > drainDelay/2 {
				t.Fatal("mcpauthz still runs after a second SIGTERM")
			}
		}
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
		t.Errorf("after a second SIGTERM: %v (after %v), want the process killed by the signal", p.err, time.Since(second))
	}
}
