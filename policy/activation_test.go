package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"go.uber.org/goleak"
)

// The policies of the activation tests.
const (
	// allowTools allows tools/call and denies the rest.
	allowTools = `package mcp.authz

default decision := {"allow": false, "reason": "default"}

decision := {"allow": true, "reason": "tool"} if input.mcp.method == "tools/call"
`
	// conflictOnTools compiles, but gives decision two values for every
	// tools/call of a tool: each such request would be a 503.
	conflictOnTools = allowTools + `
decision := {"allow": false, "reason": "conflict"} if input.mcp.tool != ""
`
	// divideByScopes divides by the number of granted scopes: a builtin
	// error for a token without scopes, which non-strict evaluation would
	// silently turn into "rule undefined".
	divideByScopes = `package mcp.authz

default decision := {"allow": false, "reason": "default"}

decision := {"allow": 1 / count(input.token.scopes) > 0, "reason": "ratio"} if input.mcp.kind == "request"
`
	// toolsTest tests allowTools; it fails against anything that denies
	// tools/call.
	toolsTest = `package mcp.authz_test

import data.mcp.authz

test_tools_allowed if {
	authz.decision.allow with input as {"mcp": {"kind": "request", "method": "tools/call", "tool": "t"}}
}

test_ping_denied if {
	not authz.decision.allow with input as {"mcp": {"kind": "request", "method": "ping"}}
}
`
)

var cancelMessage = regexp.MustCompile(`eval_cancel_error: .*? \(`)

// TestActivationRefuses: policies that compile but fail their activation
// check are refused by Load (there is no last good one here, as at
// startup) and by Compile, with every problem at its file:line.
func TestActivationRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		files map[string]string
		want  []ActivationProblem // Location relative to the policy dir
	}{
		{
			name:  "conflicting rules",
			files: map[string]string{"p.rego": conflictOnTools},
			want: []ActivationProblem{{Reason: RefusedEvalError, Location: "p.rego:7",
				Check:   `input "tools/call mcpauthz_check_tool, scoped token" and 6 more`,
				Message: "eval_conflict_error: rule data.mcp.authz.decision produced conflicting values:\n  {\"allow\": true, \"reason\": \"tool\"} at @/p.rego:5\n  {\"allow\": false, \"reason\": \"conflict\"} at @/p.rego:7"}},
		},
		{
			name:  "builtin error",
			files: map[string]string{"p.rego": divideByScopes},
			want: []ActivationProblem{{Reason: RefusedEvalError, Location: "p.rego:5",
				Check: `input "initialize, token without scopes" and 29 more`, Message: "eval_builtin_error: div: divide by zero"}},
		},
		{
			name:  "failing and erroring tests",
			files: map[string]string{"p.rego": strings.Replace(allowTools, `"allow": true`, `"allow": false`, 1), "p_test.rego": toolsTest + "\n_f(x) := 1 if x\n\n_f(x) := 2 if x\n\ntest_errors if _f(true) == 1\n"},
			want: []ActivationProblem{
				{Reason: RefusedTestFailed, Location: "p_test.rego:5", Check: "test data.mcp.authz_test.test_tools_allowed", Message: "failed"},
			},
		},
		{
			name:  "a decision that is not a decision document",
			files: map[string]string{"p.rego": "package mcp.authz\n\ndefault decision := {\"allow\": false}\n\ndecision := \"yes\" if input.mcp.kind == \"stream\"\n"},
			want:  []ActivationProblem{{Reason: RefusedInvalidDecision, Check: `input "stream, scoped token" and 3 more`, Message: "decision is string, want an object"}},
		},
		{
			name:  "undefined for requests without MCP",
			files: map[string]string{"p.rego": "package mcp.authz\n\ndecision := {\"allow\": false} if input.mcp\n"},
			want:  []ActivationProblem{{Reason: RefusedInvalidDecision, Check: `input "a request to a non-MCP path"`, Message: "data.mcp.authz.decision is undefined"}},
		},
		{
			name:  "visibility that is not a set of strings",
			files: map[string]string{"p.rego": allowTools + "\nvisible := [1] if input.list.kind == \"prompts\"\n"},
			want: []ActivationProblem{{Reason: RefusedInvalidVisibility, Check: `list "prompts, scoped token" and 1 more`,
				Message: "policy: invalid visibility: number is not a string"}},
		},
		{
			name:  "too slow for any request",
			files: map[string]string{"p.rego": strings.Replace(slowPolicy, faultyCaller, "true", 1)},
			want: []ActivationProblem{{Reason: RefusedEvalError, Check: `input "initialize, scoped token"`,
				Message: "timed out after 1s (context deadline exceeded): eval_cancel_error: * (81 more inputs not evaluated)"}},
		},
		{
			name:  "tests that do not compile with the policy",
			files: map[string]string{"p.rego": allowTools, "p_test.rego": "package mcp.authz_test\n\ntest_x if data.mcp.authz.nothing(1)\n"},
			want: []ActivationProblem{{Reason: RefusedTestError, Location: "p_test.rego:3", Check: "tests do not compile with the policy",
				Message: "rego_type_error: undefined function data.mcp.authz.nothing"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := writePolicy(t, tt.files)
			ae := refused(t, Source{Paths: []string{dir}})
			for i := range tt.want {
				if tt.want[i].Location != "" {
					tt.want[i].Location = filepath.Join(dir, tt.want[i].Location)
				}
				tt.want[i].Message = strings.ReplaceAll(tt.want[i].Message, "@", dir)
			}
			got := ae.Problems
			for i := range got {
				// Where OPA notices the deadline varies.
				got[i].Message = cancelMessage.ReplaceAllString(got[i].Message, "eval_cancel_error: * (")
			}
			if tt.name == "failing and erroring tests" {
				// The erroring tests' messages come from OPA; pin what
				// matters: each is reported as an error at its line.
				if len(got) != 2 || got[1].Reason != RefusedTestError || got[1].Check != "test data.mcp.authz_test.test_errors" ||
					got[1].Location != filepath.Join(dir, "p_test.rego:17") || !strings.HasPrefix(got[1].Message, "eval_conflict_error: function data.mcp.authz_test._f produced conflicting values for the same inputs") {
					t.Errorf("problems = %+v, want test_tools_allowed failed (line 5), then test_errors an error (line 17)", got)
				}
				got = got[:1]
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(ActivationProblem{})); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if ae.Reason() != tt.want[0].Reason || !strings.HasPrefix(ae.Error(), "policy: revision "+ae.Revision+" refused: it compiles but fails its activation check (") {
				t.Errorf("Reason() = %q, Error() = %q", ae.Reason(), ae.Error())
			}
			if err := Compile(t.Context(), Source{Paths: []string{dir}}); err == nil ||
				cancelMessage.ReplaceAllString(err.Error(), "eval_cancel_error: * (") != ae.Error() {
				t.Errorf("Compile() = %v, want the Load error", err)
			}
		})
	}
}

// TestShippedPoliciesPassActivation: the default policy (embedded and on
// disk) and every example with it pass the activation check, and their
// tests do run in it: breaking one of them refuses the policy.
func TestShippedPoliciesPassActivation(t *testing.T) {
	t.Parallel()
	sources := map[string]Source{"embedded": DefaultSource(), "disk": diskDefault(t)}
	examples, err := filepath.Glob("../rego/examples/*")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, dir := range examples {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			sources["example "+filepath.Base(dir)] = Source{Paths: []string{"../rego/mcp/authz.rego", dir}}
		}
	}
	for name, src := range sources {
		if err := New(Options{}).Load(t.Context(), src); err != nil {
			t.Errorf("%s: Load(%v) = %v", name, src.Paths, err)
		}
	}

	dir := copyDefault(t)
	path := filepath.Join(dir, "mcp", "authz_test.rego")
	shipped := readTestFile(t, path)
	broken := strings.Replace(shipped, "test_scope_prefixes if {\n", "test_scope_prefixes if {\n\tfalse\n", 1)
	if broken == shipped {
		t.Fatal("test_scope_prefixes not found in the shipped tests")
	}
	writeFile(t, path, broken)
	ae := refused(t, Source{Paths: []string{dir}})
	if len(ae.Problems) != 1 || ae.Problems[0].Check != "test data.mcp.authz_test.test_scope_prefixes" || ae.Reason() != RefusedTestFailed {
		t.Errorf("refused with %+v, want test_scope_prefixes failed", ae.Problems)
	}
}

// TestTestModulesStayOutOfTheDecision: a _test.rego file is compiled for
// the check only: a rule it defines in the policy's own package is not part
// of the generation that decides.
func TestTestModulesStayOutOfTheDecision(t *testing.T) {
	t.Parallel()
	dir := writePolicy(t, map[string]string{
		"p.rego":      allowTools,
		"p_test.rego": "package mcp.authz\n\nscopes_supported := [\"from:test\"]\n\ntest_sees_it if scopes_supported == [\"from:test\"]\n",
	})
	e := newEngine(t, Source{Paths: []string{dir}}, Options{})
	if got := e.ScopesSupported(); got != nil {
		t.Errorf("ScopesSupported() = %v, want none: the test file's rule must not be compiled into the decision", got)
	}
	// The test file counts in the revision: editing it is a new revision,
	// checked again.
	rev := e.Revision()
	writeFile(t, filepath.Join(dir, "p_test.rego"), "package mcp.authz_test\n\ntest_fails if false\n")
	err := e.Load(t.Context(), Source{Paths: []string{dir}})
	if ReloadResult(err) != ReloadRefused || e.Revision() != rev {
		t.Errorf("Load(failing test) = %v, Revision() = %q; want refused, %q", err, e.Revision(), rev)
	}
}

// TestWatchRefusesAndRecovers: the file watch refuses an edit that fails
// at evaluation and one whose tests fail, logs each at Error once, keeps
// the last good policy deciding, reports the outcome to OnReload and
// LastReload; going back to the serving content reports success again.
func TestWatchRefusesAndRecovers(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := writePolicy(t, map[string]string{"p.rego": allowTools, "p_test.rego": toolsTest})
	src := Source{Paths: []string{dir}}
	log := &recorder{}
	var (
		mu    sync.Mutex
		calls []string
	)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := newEngine(t, src, Options{Logger: slog.New(log), Now: func() time.Time { return now }, OnReload: func(rev string, err error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, rev+" "+ReloadResult(err))
	}})
	good, gen := e.Revision(), e.Current()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Watch(ctx, src, 5*time.Millisecond)
	}()
	defer func() {
		cancel()
		<-done
	}()
	waitResult := func(what, rev, result string) {
		t.Helper()
		waitFor(t, what, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(calls) > 0 && calls[len(calls)-1] == rev+" "+result
		})
	}
	decide := func() Decision {
		t.Helper()
		ds, err := e.Decide(t.Context(), testRequest, testToken(), []MCP{call("get_weather")})
		if err != nil {
			t.Fatalf("Decide() = %v, want the last good policy's decision", err)
		}
		return ds[0]
	}

	for _, step := range []struct {
		name, file, content, reason string
	}{
		// The policy's own test errors on the conflict first.
		{"conflicting rules", "p.rego", conflictOnTools, RefusedTestError},
		{"failing test", "p.rego", strings.Replace(allowTools, `"allow": true`, `"allow": false`, 1), RefusedTestFailed},
	} {
		writeFile(t, filepath.Join(dir, step.file), step.content)
		snap, err := readSource(src, true)
		if err != nil {
			t.Fatal(err)
		}
		waitResult(step.name, snap.revision(), ReloadRefused)
		if d := decide(); !d.Allow || d.Revision != good || e.Current() != gen {
			t.Errorf("%s: Decide() = %+v, want the last good policy's allow by %s", step.name, d, good)
		}
		last, ok := e.LastReload()
		if !ok || last.Result() != ReloadRefused || last.Revision != snap.revision() || !last.Time.Equal(now) {
			t.Errorf("%s: LastReload() = %+v, want refused %s at %v", step.name, last, snap.revision(), now)
		}
		errs := log.find(slog.LevelError, "policy refused by the activation check")
		if len(errs) == 0 || !strings.Contains(errs[len(errs)-1], "reason="+step.reason) || !strings.Contains(errs[len(errs)-1], "revision="+good) ||
			!strings.Contains(errs[len(errs)-1], "rejected="+snap.revision()) {
			t.Errorf("%s: Error logs = %q, want the refusal with reason %s and both revisions", step.name, errs, step.reason)
		}
	}
	time.Sleep(30 * time.Millisecond) // several more polls
	if n := len(log.find(slog.LevelError, "policy refused by the activation check")); n != 2 {
		t.Errorf("refusals logged %d times, want once each (2)", n)
	}
	if n := len(log.find(slog.LevelWarn, "")); n != 0 {
		t.Errorf("Warn logs = %q, want none (refusals are errors)", log.find(slog.LevelWarn, ""))
	}

	// Back to the serving content: success, the same generation.
	writeFile(t, filepath.Join(dir, "p.rego"), allowTools)
	waitResult("the revert", good, ReloadSuccess)
	if e.Current() != gen {
		t.Error("the revert replaced the serving generation")
	}
	if last, _ := e.LastReload(); last.Result() != ReloadSuccess || last.Revision != good || last.Err != nil {
		t.Errorf("LastReload() after the revert = %+v, want success %s", last, good)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{good + " success"}
	for _, c := range calls[1:] {
		if c != want[len(want)-1] {
			want = append(want, c)
		}
	}
	if len(want) != 4 || !strings.HasSuffix(want[1], " refused") || !strings.HasSuffix(want[2], " refused") || want[3] != good+" success" {
		t.Errorf("OnReload calls = %q, want success, refused, refused, success", calls)
	}
}

// TestBundleRefusedKeepsLastGood: a bundle that compiles but fails its
// activation check (an evaluation error, a failing test of the bundle) is
// refused like one that does not compile, logged at Error, not downloaded
// again; the bundle's tests are run, not compiled into the decision.
func TestBundleRefusedKeepsLastGood(t *testing.T) {
	t.Parallel()
	s := newBundleServer(t)
	s.serveBundle(tarGz(t, map[string]string{"/p.rego": allowTools, "/p_test.rego": toolsTest, "/.manifest": `{"revision": "good"}`}), `"good"`)
	rec := &reloads{}
	log := &recorder{}
	e := New(Options{Logger: slog.New(log), EvalTimeout: 10 * time.Second, OnReload: rec.record})
	runBundle(t, e, s.source())
	rec.waitCall(t, 0, "the good bundle", succeeded)

	for i, tt := range []struct {
		name, rego, reason string
	}{
		{"conflicting rules", conflictOnTools, RefusedTestError},
		{"failing bundle test", strings.Replace(allowTools, `"allow": true`, `"allow": false`, 1), RefusedTestFailed},
	} {
		n := len(rec.get())
		rev := fmt.Sprintf("bad-%d", i)
		s.serveBundle(tarGz(t, map[string]string{"/p.rego": tt.rego, "/p_test.rego": toolsTest, "/.manifest": `{"revision": "` + rev + `"}`}), `"`+rev+`"`)
		c := rec.waitCall(t, n, tt.name, failed)
		if c.rev != rev || ReloadResult(c.err) != ReloadRefused || !strings.Contains(c.err.Error(), "/p") {
			t.Errorf("%s: OnReload(%q, %v), want %s refused with a bundle file:line", tt.name, c.rev, c.err, rev)
		}
		_, before := s.stats()
		waitFor(t, tt.name+": a 304 for the refused bundle", func() bool {
			_, notModified := s.stats()
			return notModified > before
		})
		if ds, err := e.Decide(t.Context(), testRequest, testToken(), []MCP{call("t")}); err != nil || !ds[0].Allow || ds[0].Revision != "good" {
			t.Errorf("%s: Decide() = %+v, %v; want the good bundle's allow", tt.name, ds, err)
		}
		errs := log.find(slog.LevelError, "policy refused by the activation check")
		if len(errs) != i+1 || !strings.Contains(errs[i], "reason="+tt.reason) || !strings.Contains(errs[i], "rejected="+rev) {
			t.Errorf("%s: Error logs = %q", tt.name, errs)
		}
	}
	// 304s of the refused bundle do not make it a success.
	_, before := s.stats()
	waitFor(t, "more 304s of the refused bundle", func() bool {
		_, notModified := s.stats()
		return notModified > before+2
	})
	if last, _ := e.LastReload(); last.Result() != ReloadRefused || last.Revision != "bad-1" {
		t.Errorf("LastReload() after 304s of the refused bundle = %+v, want refused bad-1", last)
	}
}

// TestBundleRecoveryIsReported: after failed polls, a 304 for the bundle
// that is active means the policy is current again, and is reported as a
// success (so the last-reload gauge does not stay 0 after a network blip);
// polls that keep succeeding are not reported.
func TestBundleRecoveryIsReported(t *testing.T) {
	t.Parallel()
	s := newBundleServer(t)
	body := tarGz(t, map[string]string{"/p.rego": allowTools, "/.manifest": `{"revision": "good"}`})
	s.serveBundle(body, `"good"`)
	e, rec := newBundleEngine(nil)
	runBundle(t, e, s.source())
	rec.waitCall(t, 0, "the good bundle", succeeded)
	_, before := s.stats()
	waitFor(t, "304s of the good bundle", func() bool {
		_, notModified := s.stats()
		return notModified > before+2
	})
	if n := len(rec.get()); n != 1 {
		t.Errorf("OnReload calls after 304s = %v, want only the activation", rec.get())
	}

	n := len(rec.get())
	s.fail(http.StatusServiceUnavailable)
	rec.waitCall(t, n, "the failed poll", failed)
	if last, _ := e.LastReload(); last.Result() != ReloadError {
		t.Errorf("LastReload() = %+v, want error", last)
	}
	n = len(rec.get())
	s.serveBundle(body, `"good"`)
	c := rec.waitCall(t, n, "the recovery", succeeded)
	if c.rev != "good" || e.Revision() != "good" {
		t.Errorf("recovery reported as OnReload(%q), Revision() = %q; want good", c.rev, e.Revision())
	}
	if last, _ := e.LastReload(); last.Result() != ReloadSuccess || last.Revision != "good" {
		t.Errorf("LastReload() after the recovery = %+v, want success good", last)
	}
}

// BenchmarkActivationCheck measures what the check adds to a reload of the
// default policy (embedded: 43 Rego tests, 86 smoke evaluations): the Rego
// tests, the smoke inputs, and a whole Compile with both, for comparison.
//
// On the shared 2-core development machine (go test -run XXX -bench
// ActivationCheck -benchtime 20x -count 2; the spread is the machine's):
//
//	BenchmarkActivationCheck/tests      107-173 ms/op (one test, test_visible_agrees_with_decision, is 60 ms)
//	BenchmarkActivationCheck/smoke        9-18 ms/op
//	BenchmarkActivationCheck/compile    125-195 ms/op (a whole load, check included)
//
// The same Compile without the check (the commit before it) took 14 ms/op.
func BenchmarkActivationCheck(b *testing.B) {
	ctx := context.Background()
	src := DefaultSource()
	snap, err := readSource(src, true)
	if err != nil {
		b.Fatal(err)
	}
	g, err := build(ctx, src, snap, slog.New(slog.DiscardHandler), DefaultEvalTimeout)
	if err != nil {
		b.Fatal(err)
	}
	res, store := loadWithTests(b, src)
	b.Run("tests", func(b *testing.B) {
		for b.Loop() {
			if p := testProblems(ctx, res, store); len(p) > 0 {
				b.Fatal(p)
			}
		}
	})
	b.Run("smoke", func(b *testing.B) {
		for b.Loop() {
			if p := smoke(ctx, g, time.Second); len(p) > 0 {
				b.Fatal(p)
			}
		}
	})
	b.Run("compile", func(b *testing.B) {
		for b.Loop() {
			if err := Compile(ctx, src); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// loadWithTests loads the modules of src, tests included, and its data as
// build does.
func loadWithTests(tb testing.TB, src Source) (map[string]*ast.Module, storage.Store) {
	tb.Helper()
	snap, err := readSource(src, true)
	if err != nil {
		tb.Fatal(err)
	}
	res, err := loader.NewFileLoader().
		WithFS(&snapshotFS{base: src.FS, files: snap.files, read: map[string]bool{}}).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		Filtered(src.Paths, newFilter(true))
	if err != nil {
		tb.Fatal(err)
	}
	return res.ParsedModules(), inmem.NewFromObjectWithOpts(res.Documents, inmem.OptReturnASTValuesOnRead(true))
}
