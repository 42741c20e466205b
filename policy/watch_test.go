package policy

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a slog.Handler that keeps records for inspection.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// find returns the text of the records at level whose message contains msg.
func (r *recorder) find(level slog.Level, msg string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		if rec.Level == level && strings.Contains(rec.Message, msg) {
			var b strings.Builder
			b.WriteString(rec.Message)
			rec.Attrs(func(a slog.Attr) bool {
				b.WriteString(" " + a.String())
				return true
			})
			out = append(out, b.String())
		}
	}
	return out
}

// waitFor polls cond until it holds or the bounded wait ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	// A load runs the policy's own Rego tests first: seconds under -race
	// on a busy machine.
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	dir := copyDefault(t)
	src := Source{Paths: []string{dir}}
	rec := &recorder{}
	var (
		mu      sync.Mutex
		reloads []string
	)
	e := newEngine(t, src, Options{
		Logger: slog.New(rec),
		OnReload: func(rev string, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rev += " error"
			}
			reloads = append(reloads, rev)
		},
	})
	first := e.Revision()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Watch(ctx, src, 5*time.Millisecond)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Watch did not return after cancel")
		}
	}()

	decide := func(tool string, scopes ...string) Decision {
		t.Helper()
		ds, err := e.Decide(t.Context(), testRequest, testToken(scopes...), []MCP{call(tool)})
		if err != nil {
			t.Fatal(err)
		}
		return ds[0]
	}
	if d := decide("deploy", "ops:deploy"); d.Allow {
		t.Fatalf("before the edit: %+v, want deny", d)
	}

	// A good edit of the data file is picked up.
	dataPath := filepath.Join(dir, "data.json")
	data, err := os.ReadFile(dataPath)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(data), `"tools": {}`, `"tools": {"ops:deploy": ["deploy"]}`, 1)
	writeFile(t, dataPath, edited)
	waitFor(t, "the good edit to load", func() bool { return e.Revision() != first })
	second := e.Revision()
	if d := decide("deploy", "ops:deploy"); !d.Allow || d.Revision != second {
		t.Errorf("after the edit: %+v, want allow by %s", d, second)
	}

	// A broken edit is logged and ignored; the last good policy serves.
	regoPath := filepath.Join(dir, "mcp", "authz.rego")
	good, err := os.ReadFile(regoPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, regoPath, string(good)+"\nbroken := := 1\n")
	waitFor(t, "the broken edit to be reported", func() bool {
		return len(rec.find(slog.LevelWarn, "policy reload failed")) > 0
	})
	warn := rec.find(slog.LevelWarn, "policy reload failed")[0]
	if !strings.Contains(warn, "authz.rego:") || !strings.Contains(warn, "rego_parse_error") {
		t.Errorf("warning = %q, want the parse error with file:line", warn)
	}
	time.Sleep(50 * time.Millisecond) // several more polls
	if got := len(rec.find(slog.LevelWarn, "policy reload failed")); got != 1 {
		t.Errorf("broken content reported %d times, want once", got)
	}
	if e.Revision() != second {
		t.Errorf("Revision() = %q after a broken edit, want %q", e.Revision(), second)
	}
	if d := decide("deploy", "ops:deploy"); !d.Allow {
		t.Errorf("after the broken edit: %+v, want the last good policy's allow", d)
	}

	// Reverting the data edit while the Rego is fixed loads again.
	writeFile(t, regoPath, string(good))
	writeFile(t, dataPath, string(data))
	waitFor(t, "the revert to load", func() bool { return e.Revision() == first })
	if d := decide("deploy", "ops:deploy"); d.Allow {
		t.Errorf("after the revert: %+v, want deny", d)
	}

	mu.Lock()
	defer mu.Unlock()
	var errs int
	for _, r := range reloads {
		if strings.HasSuffix(r, " error") {
			errs++
		}
	}
	if reloads[0] != first || errs != 1 || reloads[len(reloads)-1] != first {
		t.Errorf("OnReload calls = %q, want %s first and last, one error", reloads, first)
	}
}

func TestWatchReturnsForFSSourceOrNoInterval(t *testing.T) {
	t.Parallel()
	e := New(Options{})
	for _, tt := range []struct {
		src      Source
		interval time.Duration
	}{
		{DefaultSource(), time.Millisecond},
		{diskDefault(t), 0},
		{diskDefault(t), -time.Second},
	} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.Watch(t.Context(), tt.src, tt.interval)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("Watch(%v, %v) did not return", tt.src.Paths, tt.interval)
		}
	}
}
