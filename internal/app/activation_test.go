package app

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// The policies of the activation tests. goodPolicy allows tools/call;
// conflictPolicy compiles, but two of its rules give decision different
// values for every tools/call of a tool: each such check would be a 503.
const (
	goodPolicy = `package mcp.authz

default decision := {"allow": false, "reason": "default"}

decision := {"allow": true, "reason": "tool"} if input.mcp.method == "tools/call"
`
	conflictPolicy = goodPolicy + `
decision := {"allow": false, "reason": "conflict"} if input.mcp.tool != ""
`
	failingTest = `package mcp.authz_test

import data.mcp.authz

test_tools_are_denied if {
	not authz.decision.allow with input as {"mcp": {"kind": "request", "method": "tools/call", "tool": "t"}}
}
`
)

// syncBuffer is an io.Writer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// activationEnv is a started runtime watching a policy directory, with its
// HTTP endpoint on a loopback port.
type activationEnv struct {
	rt   *Runtime
	dir  string
	http string
	iss  *devissuer.Issuer
	logs *syncBuffer
}

func activationConfig(t *testing.T, policyDir string) (*config.Config, *devissuer.Issuer) {
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
		"issuers: [{issuer: https://idp.example.com, jwks_file: "+jwks+"}]\n"+
		"policy: {reload_interval: 10ms, paths: ["+policyDir+"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, &devissuer.Issuer{URL: "https://idp.example.com", Key: key}
}

func newActivationEnv(t *testing.T, files map[string]string) *activationEnv {
	t.Helper()
	e := &activationEnv{dir: t.TempDir(), logs: &syncBuffer{}}
	for name, content := range files {
		e.write(t, name, content)
	}
	cfg, iss := activationConfig(t, e.dir)
	e.iss = iss
	rt, err := Compile(cfg, Options{Observe: true, Logger: slog.New(slog.NewJSONHandler(e.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e.rt = rt
	t.Cleanup(func() { rt.Close() })
	rt.Start()
	hs := httptest.NewServer(rt.HTTPHandler())
	t.Cleanup(hs.Close)
	e.http = hs.URL
	for deadline := time.Now().Add(10 * time.Second); !rt.Ready(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never ready: %s", rt.NotReadyReason())
		}
	}
	return e
}

// write replaces a policy file as editors do (write, then rename).
func (e *activationEnv) write(t *testing.T, name, content string) {
	t.Helper()
	tmp := filepath.Join(e.dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.dir, name)); err != nil {
		t.Fatal(err)
	}
}

// waitReload waits for a load attempt after since with the given result.
func (e *activationEnv) waitReload(t *testing.T, since time.Time, result string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if last, ok := e.rt.Engine.LastReload(); ok && !last.Time.Before(since) && last.Result() == result {
			return
		}
		if time.Now().After(deadline) {
			last, _ := e.rt.Engine.LastReload()
			t.Fatalf("no %s reload after %v; last: %+v", result, since, last)
		}
	}
}

// callTool decides a tools/call through the ext_authz server and returns
// the HTTP status and the policy revision that decided.
func (e *activationEnv) callTool(t *testing.T, token string) (int, string) {
	t.Helper()
	d, _ := e.rt.Server.Evaluate(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/mcp", Host: "mcp.example.com",
			RawBody: []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather"}}`),
			Headers: map[string]string{"authorization": "Bearer " + token, "content-type": "application/json"}},
	}}})
	return d.Status, d.PolicyRevision
}

func (e *activationEnv) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(e.http + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func (e *activationEnv) readyz(t *testing.T) (int, Readiness) {
	t.Helper()
	status, body := e.get(t, "/readyz")
	var r Readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return status, r
}

// metric returns the exposition line of series in /metrics, "" if absent.
func (e *activationEnv) metric(t *testing.T, series string) string {
	t.Helper()
	_, body := e.get(t, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, series+" ") {
			return line
		}
	}
	return ""
}

// TestReloadRefusedKeepsLastGood: a policy edit that compiles but fails at
// evaluation is refused by the file watch: the last good policy keeps
// deciding, /readyz stays 200 and says why the edit is not serving, the
// gauge holds 0 until a good edit, the refusal is counted and logged at
// ERROR. A good edit then serves and clears it all.
func TestReloadRefusedKeepsLastGood(t *testing.T) {
	e := newActivationEnv(t, map[string]string{"p.rego": goodPolicy})
	good := e.rt.Engine.Revision()
	tok, err := e.iss.Mint(devissuer.MintOptions{Subject: "alice", Audience: []string{"https://mcp.example.com/mcp"}, TTL: time.Hour, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if status, rev := e.callTool(t, tok); status != 200 || rev != good {
		t.Fatalf("before the edit: tools/call = %d by %q, want 200 by %s", status, rev, good)
	}

	since := time.Now()
	e.write(t, "p.rego", conflictPolicy)
	e.waitReload(t, since, "refused")
	last, _ := e.rt.Engine.LastReload()
	refused := last.Revision

	if status, rev := e.callTool(t, tok); status != 200 || rev != good {
		t.Errorf("after the refused edit: tools/call = %d by %q, want 200 by the last good %s", status, rev, good)
	}
	status, ready := e.readyz(t)
	// The first problem on one line, at most 300 bytes.
	p := filepath.Join(e.dir, "p.rego")
	problem := p + `:7: input "tools/call mcpauthz_check_tool, scoped token" and 6 more: eval_conflict_error: rule data.mcp.authz.decision produced conflicting values: ` +
		`{"allow": true, "reason": "tool"} at ` + p + `:5 {"allow": false, "reason": "conflict"} at ` + p + ":7"
	if len(problem) > 300 {
		problem = problem[:297] + "..."
	}
	want := Readiness{Status: "ready", Policy: PolicyStatus{Revision: good, LastReload: &ReloadStatus{
		Result: "refused", Revision: refused, Reason: "eval_error", Error: problem,
	}}}
	if diff := cmp.Diff(want, ready, cmpopts.IgnoreFields(ReloadStatus{}, "Time")); status != 200 || diff != "" {
		t.Errorf("/readyz after the refused edit = %d, diff (-want +got):\n%s", status, diff)
	}
	if ts, err := time.Parse(time.RFC3339, ready.Policy.LastReload.Time); err != nil || ts.Before(since.Truncate(time.Second)) {
		t.Errorf("/readyz last_reload.time = %q, want an RFC 3339 time after %v", ready.Policy.LastReload.Time, since)
	}
	for series, want := range map[string]string{
		"mcpauthz_policy_last_reload_successful":                          "0",
		`mcpauthz_policy_reloads_total{result="refused"}`:                 "1",
		`mcpauthz_policy_reloads_total{result="error"}`:                   "0",
		`mcpauthz_policy_activation_refusals_total{reason="eval_error"}`:  "1",
		`mcpauthz_policy_activation_refusals_total{reason="test_failed"}`: "0",
		`mcpauthz_policy_info{revision="` + good + `"}`:                   "1",
	} {
		if got := e.metric(t, series); got != series+" "+want {
			t.Errorf("/metrics: %q, want %s %s", got, series, want)
		}
	}
	logs := e.logs.String()
	var errorLines []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			errorLines = append(errorLines, line)
		}
	}
	if len(errorLines) != 1 || !strings.Contains(errorLines[0], `"msg":"policy refused by the activation check; keeping the last good policy"`) ||
		!strings.Contains(errorLines[0], `"reason":"eval_error"`) || !strings.Contains(errorLines[0], `"revision":"`+good+`"`) ||
		!strings.Contains(errorLines[0], `"rejected":"`+refused+`"`) || !strings.Contains(errorLines[0], "p.rego:7") {
		t.Errorf("ERROR log lines = %q, want one refusal naming the reason, both revisions and p.rego:7", errorLines)
	}
	if strings.Contains(logs, tok) {
		t.Error("the logs contain the bearer token")
	}

	// The gauge holds 0 however long ago the refusal was; a good edit
	// clears it.
	time.Sleep(50 * time.Millisecond) // several more polls
	if got := e.metric(t, "mcpauthz_policy_last_reload_successful"); got != "mcpauthz_policy_last_reload_successful 0" {
		t.Errorf("later: %q, want still 0", got)
	}
	since = time.Now()
	fixed := goodPolicy + "\n# fixed\n"
	e.write(t, "p.rego", fixed)
	e.waitReload(t, since, "success")
	next := e.rt.Engine.Revision()
	if next == good || next == refused {
		t.Fatalf("after the fix: revision %q, want a new one", next)
	}
	status, ready = e.readyz(t)
	want = Readiness{Status: "ready", Policy: PolicyStatus{Revision: next, LastReload: &ReloadStatus{Result: "success", Revision: next}}}
	if diff := cmp.Diff(want, ready, cmpopts.IgnoreFields(ReloadStatus{}, "Time")); status != 200 || diff != "" {
		t.Errorf("/readyz after the fix = %d, diff (-want +got):\n%s", status, diff)
	}
	if got := e.metric(t, "mcpauthz_policy_last_reload_successful"); got != "mcpauthz_policy_last_reload_successful 1" {
		t.Errorf("after the fix: %q, want 1", got)
	}
	if status, rev := e.callTool(t, tok); status != 200 || rev != next {
		t.Errorf("after the fix: tools/call = %d by %q, want 200 by %s", status, rev, next)
	}
}

// TestStartupRefusesPolicy: with no last good policy, a policy that fails
// its activation check fails Compile (so serve and validate), naming the
// failing test or input at its file:line.
func TestStartupRefusesPolicy(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{
			name:  "evaluation error",
			files: map[string]string{"p.rego": conflictPolicy},
			want:  []string{"refused: it compiles but fails its activation check (1 problem)", `p.rego:7: input "tools/call mcpauthz_check_tool, scoped token" and 6 more: eval_conflict_error`},
		},
		{
			name:  "failing test",
			files: map[string]string{"p.rego": goodPolicy, "p_test.rego": failingTest},
			want:  []string{"refused: it compiles but fails its activation check (1 problem)", "p_test.rego:5: test data.mcp.authz_test.test_tools_are_denied: failed"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, _ := activationConfig(t, dir)
			rt, err := Compile(cfg, Options{Observe: true})
			if err == nil {
				rt.Close()
				t.Fatal("Compile() = nil, want the refusal")
			}
			if !strings.HasPrefix(err.Error(), "c.yaml:4: policy: ") {
				t.Errorf("Compile() = %v, want it located at policy (c.yaml:4)", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Compile() = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// tarGz packs files (bundle path → content) as a bundle .tar.gz.
func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReadyzWithoutPolicy: an instance whose first bundle is refused has no
// policy: /readyz is 503 and says why; one whose bundle server fails says
// so without repeating the download error (it may name the URL).
func TestReadyzWithoutPolicy(t *testing.T) {
	var (
		mu     sync.Mutex
		body   []byte
		status int
	)
	bundles := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if status != 0 {
			http.Error(w, "unavailable", status)
			return
		}
		w.Header().Set("ETag", `"1"`)
		_, _ = w.Write(body)
	}))
	defer bundles.Close()
	body = tarGz(t, map[string]string{"/p.rego": conflictPolicy, "/.manifest": `{"revision": "bad-1"}`})

	cfg, _ := activationConfig(t, t.TempDir())
	cfg.Policy.Paths, cfg.Policy.ReloadInterval = nil, 0
	cfg.Policy.Bundle = &config.Bundle{URL: bundles.URL + "/b.tar.gz?secret=s3cr3t", PollMin: config.Duration(5 * time.Millisecond), PollMax: config.Duration(10 * time.Millisecond)}
	rt, err := Compile(cfg, Options{Observe: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	rt.Start()
	e := &activationEnv{rt: rt}
	hs := httptest.NewServer(rt.HTTPHandler())
	defer hs.Close()
	e.http = hs.URL
	e.waitReload(t, time.Time{}, "refused")

	status0, ready := e.readyz(t)
	want := Readiness{Status: "not ready", Reason: "policy not loaded", Policy: PolicyStatus{LastReload: &ReloadStatus{
		Result: "refused", Revision: "bad-1", Reason: "eval_error",
		Error: `/p.rego:7: input "tools/call mcpauthz_check_tool, scoped token" and 6 more: eval_conflict_error: rule data.mcp.authz.decision produced conflicting values: {"allow": true, "reason": "tool"} at /p.rego:5 {"allow": false, "reason": "conflict"} at /p.rego:7`,
	}}}
	if diff := cmp.Diff(want, ready, cmpopts.IgnoreFields(ReloadStatus{}, "Time")); status0 != 503 || diff != "" {
		t.Errorf("/readyz with a refused first bundle = %d, diff (-want +got):\n%s", status0, diff)
	}

	mu.Lock()
	status = http.StatusInternalServerError
	mu.Unlock()
	since := time.Now()
	e.waitReload(t, since, "error")
	status0, raw := e.get(t, "/readyz")
	want.Policy.LastReload = &ReloadStatus{Result: "error", Error: "the policy could not be read or downloaded; see the log"}
	ready = Readiness{}
	if err := json.Unmarshal([]byte(raw), &ready); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, ready, cmpopts.IgnoreFields(ReloadStatus{}, "Time")); status0 != 503 || diff != "" {
		t.Errorf("/readyz with a failing bundle server = %d, diff (-want +got):\n%s", status0, diff)
	}
	if strings.Contains(raw, "s3cr3t") {
		t.Errorf("/readyz shows the bundle URL's query: %s", raw)
	}
}
