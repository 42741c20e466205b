package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustStatic(t testing.TB, cfg StaticConfig, opts Options) *Static {
	t.Helper()
	s, err := NewStatic(cfg, opts)
	if err != nil {
		t.Fatalf("NewStatic: %v", err)
	}
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s
}

func staticValue(t *testing.T, s *Static) (Credential, error) {
	t.Helper()
	return s.Credential(t.Context(), SubjectToken{Token: testSubjectToken})
}

// TestStaticValues: header, scheme and trimming.
func TestStaticValues(t *testing.T) {
	tests := []struct {
		name, content, header, scheme string
		want                          Credential
	}{
		{"bearer default", "ghp_abc123\n", "", "", Credential{"authorization", "Bearer ghp_abc123"}},
		{"CRLF trimmed", "ghp_abc123\r\n", "", "", Credential{"authorization", "Bearer ghp_abc123"}},
		{"no newline", "ghp_abc123", "", "", Credential{"authorization", "Bearer ghp_abc123"}},
		{"api key raw", "key with inner space\n", "x-api-key", "", Credential{"x-api-key", "key with inner space"}},
		{"authorization raw", "Token abc\n", "authorization", "none", Credential{"authorization", "Token abc"}},
		{"basic scheme", "dXNlcjpwYXNz\n", "authorization", "Basic", Credential{"authorization", "Basic dXNlcjpwYXNz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "secret")
			writeFile(t, p, tt.content)
			s := mustStatic(t, StaticConfig{Name: "gh", File: p, Header: tt.header, Scheme: tt.scheme}, Options{clock: newFakeClock()})
			got, err := staticValue(t, s)
			if err != nil || got != tt.want {
				t.Errorf("Credential = %#v (%q), %v; want %#v (%q)", got, got.Value, err, tt.want, tt.want.Value)
			}
		})
	}
}

// TestStaticReload follows changes, removal, emptying and invalid content
// (each fails closed at once) and recovery.
func TestStaticReload(t *testing.T) {
	clk := newFakeClock()
	rec := newRecorder()
	logs := &logBuffer{}
	p := filepath.Join(t.TempDir(), "secret")
	writeFile(t, p, "first-secret\n")
	s := mustStatic(t, StaticConfig{Name: "gh", File: p, PollInterval: time.Second}, Options{clock: clk, Observer: rec, Logger: newLogger(logs)})
	steps := []struct {
		name       string
		change     func()
		wantValue  string
		wantReason Reason
	}{
		{"changed", func() { writeFile(t, p, "second-secret\n") }, "Bearer second-secret", ""},
		{"removed", func() { os.Remove(p) }, "", ReasonFileUnreadable},
		{"back", func() { writeFile(t, p, "third-secret\n") }, "Bearer third-secret", ""},
		{"emptied", func() { writeFile(t, p, "\n") }, "", ReasonFileEmpty},
		{"invalid", func() { writeFile(t, p, "bad\x00secret\n") }, "", ReasonFileInvalid},
		{"not token68 for Bearer", func() { writeFile(t, p, "two words\n") }, "", ReasonFileInvalid},
		{"too large", func() { writeFile(t, p, strings.Repeat("a", maxStaticSecret+1)) }, "", ReasonFileInvalid},
		{"valid again", func() { writeFile(t, p, "fourth-secret") }, "Bearer fourth-secret", ""},
	}
	for _, st := range steps {
		clk.waitTimers(t, 1)
		st.change()
		clk.Advance(time.Second)
		want := ResultOK
		if st.wantReason != "" {
			want = string(st.wantReason)
		}
		if res := rec.nextFetch(t); res != want {
			t.Fatalf("%s: fetch result %q, want %q", st.name, res, want)
		}
		got, err := staticValue(t, s)
		if got.Value != st.wantValue || ReasonOf(err) != st.wantReason {
			t.Errorf("%s: Credential = %q, %v; want %q, reason %q", st.name, got.Value, err, st.wantValue, st.wantReason)
		}
	}
	for _, secret := range []string{"first-secret", "second-secret", "third-secret", "fourth-secret"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log contains the secret %q", secret)
		}
	}
}

// TestStaticKubernetesSwap follows the update of a Secret volume: the file
// is a symlink through ..data, which Kubernetes replaces atomically with a
// link to a new timestamped directory.
func TestStaticKubernetesSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "token"), content)
	}
	version("..2026_12_01_10_00_00.1", "old-token\n")
	if err := os.Symlink("..2026_12_01_10_00_00.1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/token", filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	rec := newRecorder()
	s := mustStatic(t, StaticConfig{Name: "gh", File: filepath.Join(dir, "token"), Header: "x-api-key"}, Options{clock: clk, Observer: rec})
	if got, _ := staticValue(t, s); got.Value != "old-token" {
		t.Fatalf("initial value %q", got.Value)
	}

	// The kubelet's AtomicWriter: new directory, new link, rename over
	// ..data, old directory removed.
	version("..2026_12_01_10_05_00.2", "new-token\n")
	if err := os.Symlink("..2026_12_01_10_05_00.2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..2026_12_01_10_00_00.1")); err != nil {
		t.Fatal(err)
	}
	clk.waitTimers(t, 1)
	clk.Advance(DefaultPollInterval)
	if res := rec.nextFetch(t); res != ResultOK {
		t.Fatalf("fetch after the swap: %q", res)
	}
	if got, err := staticValue(t, s); got != (Credential{"x-api-key", "new-token"}) || err != nil {
		t.Errorf("Credential after the swap = %q, %v; want new-token", got.Value, err)
	}
}

// TestStaticUnchangedIsQuiet: polls that find the same content report
// nothing.
func TestStaticUnchangedIsQuiet(t *testing.T) {
	clk := newFakeClock()
	rec := newRecorder()
	p := filepath.Join(t.TempDir(), "secret")
	writeFile(t, p, "same\n")
	mustStatic(t, StaticConfig{Name: "gh", File: p, PollInterval: time.Second}, Options{clock: clk, Observer: rec})
	for range 3 {
		clk.waitTimers(t, 1)
		clk.Advance(time.Second)
	}
	clk.waitTimers(t, 1)
	if n := len(rec.fetchCh); n != 0 {
		t.Errorf("%d fetch events for an unchanged file, want 0", n)
	}
}

func TestNewStaticErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, "\r\n")
	bad := filepath.Join(dir, "bad")
	writeFile(t, bad, " padded\n")
	good := filepath.Join(dir, "good")
	writeFile(t, good, "s\n")
	tests := []struct {
		name string
		cfg  StaticConfig
		want string
	}{
		{"no file", StaticConfig{Name: "s"}, "file is required"},
		{"missing file", StaticConfig{Name: "s", File: filepath.Join(dir, "missing")}, "no such file"},
		{"empty file", StaticConfig{Name: "s", File: empty}, "is empty"},
		{"surrounding whitespace", StaticConfig{Name: "s", File: bad, Header: "x-api-key"}, "does not hold a header value"},
		{"bad scheme", StaticConfig{Name: "s", File: good, Scheme: "Bear er"}, "not an HTTP authentication scheme"},
		{"bad header", StaticConfig{Name: "s", File: good, Header: "content-length"}, "may not carry"},
		{"no name", StaticConfig{File: good}, "name is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewStatic(tt.cfg, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("NewStatic succeeded, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewStatic error %q, want %q", err, tt.want)
			}
		})
	}
}

func TestStaticScopes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secret")
	writeFile(t, p, "s\n")
	s := mustStatic(t, StaticConfig{Name: "gh", File: p}, Options{})
	if _, err := s.Credential(t.Context(), SubjectToken{Scopes: []string{"a"}}); ReasonOf(err) != ReasonScopeNotAllowed {
		t.Errorf("Credential with scopes: %v, want scope_not_allowed", err)
	}
}
