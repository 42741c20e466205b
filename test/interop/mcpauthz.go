package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Root is the repository's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BuildMcpauthz builds the mcpauthz binary into a temporary directory, with
// the race detector when the test itself has it (the packages are then
// already compiled that way by `go test -race ./...`).
func BuildMcpauthz(t testing.TB) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "mcpauthz")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/mcpauthz")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = Root()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

// Mcpauthz is a running `mcpauthz serve`.
type Mcpauthz struct {
	GRPCAddr, HTTPAddr string
	// DevIssuer is the URL of the development authorization server (serve
	// --dev), else "".
	DevIssuer string
	proc      *process
}

// StartMcpauthz runs `mcpauthz serve` with args (which must make it listen
// on ephemeral loopback ports) and waits until it serves. The bound
// addresses are read from the file of --addr-file (in dir), which serve
// writes once it listens.
func StartMcpauthz(t testing.TB, bin, dir string, args ...string) *Mcpauthz {
	t.Helper()
	addrFile := filepath.Join(dir, "mcpauthz-addr.json")
	// No drain: the tests stop mcpauthz when they are done with it.
	cmd := exec.Command(bin, append([]string{"serve", "--addr-file", addrFile, "--drain-delay=0"}, args...)...)
	p := start(t, "mcpauthz", cmd, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var addrs struct {
		GRPCAddr  string `json:"grpc_addr"`
		HTTPAddr  string `json:"http_addr"`
		DevIssuer string `json:"dev_issuer"`
	}
	raw, err := p.waitFile(ctx, addrFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &addrs); err != nil || addrs.GRPCAddr == "" || addrs.HTTPAddr == "" {
		t.Fatalf("mcpauthz --addr-file %s: %q: %v", addrFile, raw, err)
	}
	return &Mcpauthz{GRPCAddr: addrs.GRPCAddr, HTTPAddr: addrs.HTTPAddr, DevIssuer: addrs.DevIssuer, proc: p}
}

// WaitReady waits until /readyz answers 200: the issuers' keys are loaded
// and a policy is compiled.
func (m *Mcpauthz) WaitReady(t testing.TB) {
	t.Helper()
	waitHTTP(t, "http://"+m.HTTPAddr+"/readyz", 30*time.Second)
}

// Log returns mcpauthz's log lines so far.
func (m *Mcpauthz) Log() []string { return m.proc.snapshot() }

// waitHTTP polls url until it answers 200.
func waitHTTP(t testing.TB, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer 200 within %s (last: %s)", url, within, last)
}

// writeFile writes a test file and returns its path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// quoteList renders a YAML flow list of strings.
func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
