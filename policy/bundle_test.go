package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
)

// bundleServer serves one bundle with an ETag, answering 304 to a matching
// If-None-Match, and records what it was sent.
type bundleServer struct {
	*httptest.Server

	mu          sync.Mutex
	body        []byte
	etag        string
	status      int // non-zero: answer every request with this status
	requests    int
	notModified int
	headers     []http.Header // of every request
	uris        []string      // of every request
}

func newBundleServer(t *testing.T) *bundleServer {
	t.Helper()
	s := &bundleServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve)) // on 127.0.0.1
	t.Cleanup(s.Close)
	return s
}

func (s *bundleServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	s.headers = append(s.headers, r.Header.Clone())
	s.uris = append(s.uris, r.URL.RequestURI())
	switch {
	case r.URL.Path != "/bundles/authz.tar.gz":
		http.NotFound(w, r)
	case s.status != 0:
		http.Error(w, "unavailable", s.status)
	case s.body == nil:
		http.NotFound(w, r)
	case r.Header.Get("If-None-Match") == s.etag:
		s.notModified++
		w.WriteHeader(http.StatusNotModified)
	default:
		w.Header().Set("ETag", s.etag)
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(s.body)
	}
}

// serveBundle makes the server serve body with the ETag etag.
func (s *bundleServer) serveBundle(body []byte, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.etag, s.status = body, etag, 0
}

func (s *bundleServer) fail(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
}

func (s *bundleServer) stats() (requests, notModified int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.notModified
}

// header returns the values of header name of every request so far.
func (s *bundleServer) header(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.headers))
	for i, h := range s.headers {
		out[i] = h.Get(name)
	}
	return out
}

func (s *bundleServer) bundleURL() string { return s.URL + "/bundles/authz.tar.gz" }

// source returns a BundleSource for the server that polls every few
// milliseconds.
func (s *bundleServer) source() BundleSource {
	return BundleSource{URL: s.bundleURL(), PollMin: 2 * time.Millisecond, PollMax: 10 * time.Millisecond}
}

// reload is one OnReload call.
type reload struct {
	rev string
	err error
}

// reloads records OnReload calls.
type reloads struct {
	mu    sync.Mutex
	calls []reload
}

func (r *reloads) record(rev string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, reload{rev, err})
}

func (r *reloads) get() []reload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// waitCall waits for an OnReload call after the first n that satisfies ok,
// and returns it.
func (r *reloads) waitCall(t *testing.T, n int, what string, ok func(reload) bool) reload {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		calls := r.get()
		for _, c := range calls[min(n, len(calls)):] {
			if ok(c) {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; OnReload calls: %v", what, calls)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func failed(c reload) bool    { return c.err != nil }
func succeeded(c reload) bool { return c.err == nil }

// newBundleEngine returns an engine without a policy whose OnReload calls
// are recorded.
func newBundleEngine(logger *slog.Logger) (*Engine, *reloads) {
	rec := &reloads{}
	return New(Options{Logger: logger, EvalTimeout: 10 * time.Second, OnReload: rec.record}), rec
}

// runBundle runs e.RunBundle(src) until the test ends, and checks that it
// returns promptly and without error when cancelled.
func runBundle(t *testing.T, e *Engine, src BundleSource) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.RunBundle(ctx, src) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunBundle() = %v after cancel, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("RunBundle did not return after cancel")
		}
	})
}

// buildBundle reads dir with OPA's bundle reader, as "opa build -b dir"
// does, sets the manifest, signs the bundle if sc is set, applies edit (to
// tamper with a signed bundle) and writes it as a .tar.gz.
func buildBundle(t *testing.T, dir string, m bundle.Manifest, sc *bundle.SigningConfig, edit func(*bundle.Bundle)) []byte {
	t.Helper()
	b, err := bundle.NewCustomReader(bundle.NewDirectoryLoader(dir)).WithRegoVersion(ast.RegoV1).Read()
	if err != nil {
		t.Fatalf("reading %s as a bundle: %v", dir, err)
	}
	b.Manifest = m
	if sc != nil {
		if err := b.GenerateSignature(sc, "test-signer", true); err != nil {
			t.Fatal(err)
		}
	}
	if edit != nil {
		edit(&b)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).UseModulePath(true).DisableFormat(true).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tarGz packs files (bundle path → content) as a .tar.gz without checking
// them, for bundles OPA's writer would refuse to build.
func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
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

func readTestFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// defaultBundle builds a bundle from ../rego with the given revision.
func defaultBundle(t *testing.T, revision string) []byte {
	t.Helper()
	return buildBundle(t, copyDefault(t), bundle.Manifest{Revision: revision}, nil, nil)
}

// fixedPolicy is a policy that allows or denies everything.
func fixedPolicy(allow bool) string {
	return fmt.Sprintf("package mcp.authz\n\ndecision := {\"allow\": %v, \"reason\": \"fixed\"}\n", allow)
}

func TestBundleDefaultPolicy(t *testing.T) {
	t.Parallel()
	s := newBundleServer(t)
	s.fail(http.StatusServiceUnavailable)
	e, rec := newBundleEngine(nil)
	runBundle(t, e, s.source())

	// Not ready before the first activation: Decide fails closed.
	c := rec.waitCall(t, 0, "the first failed poll", failed)
	var he download.HTTPError
	if !errors.As(c.err, &he) || he.StatusCode != http.StatusServiceUnavailable || c.rev != "" {
		t.Errorf("OnReload(%q, %v), want \"\" and the HTTP 503", c.rev, c.err)
	}
	if e.Ready() || e.Revision() != "" {
		t.Errorf("Ready() = %v, Revision() = %q before the first activation", e.Ready(), e.Revision())
	}
	if _, err := e.Decide(t.Context(), testRequest, testToken(), []MCP{req("ping")}); !errors.Is(err, ErrNotReady) {
		t.Errorf("Decide() before the first activation = %v, want ErrNotReady", err)
	}

	// The default policy, built as a bundle from rego/ with OPA's bundle
	// writer and limited to the root "mcp", decides as the local one.
	roots := []string{"mcp"}
	s.serveBundle(buildBundle(t, copyDefault(t), bundle.Manifest{Revision: "rego-1", Roots: &roots}, nil, nil), `"rego-1"`)
	c = rec.waitCall(t, 0, "the first activation", succeeded)
	if c.rev != "rego-1" || !e.Ready() || e.Revision() != "rego-1" {
		t.Fatalf("OnReload(%q, nil), Ready() = %v, Revision() = %q; want rego-1", c.rev, e.Ready(), e.Revision())
	}
	local := newEngine(t, DefaultSource(), Options{})
	if !cmp.Equal(e.ScopesSupported(), local.ScopesSupported()) || !cmp.Equal(e.ScopePrefixes(), local.ScopePrefixes()) {
		t.Errorf("metadata = %v %v, want the local policy's %v %v",
			e.ScopesSupported(), e.ScopePrefixes(), local.ScopesSupported(), local.ScopePrefixes())
	}
	for _, tc := range []struct {
		scopes []string
		msg    MCP
	}{
		{nil, req("initialize")},
		{[]string{"tools:get_forecast"}, call("get_forecast")},
		{nil, call("get_weather")},
		{[]string{"files:write"}, call("write_file")},
		{[]string{"prompts:code"}, MCP{Kind: "request", Method: "prompts/get", Prompt: "explain_diff"}},
		{[]string{"files:read"}, MCP{Kind: "request", Method: "resources/read", ResourceURI: "file:///srv/database"}},
		{nil, req("sampling/createMessage")},
	} {
		got, err := e.Decide(t.Context(), testRequest, testToken(tc.scopes...), []MCP{tc.msg})
		if err != nil {
			t.Fatal(err)
		}
		want, err := local.Decide(t.Context(), testRequest, testToken(tc.scopes...), []MCP{tc.msg})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, decisionOpts); diff != "" {
			t.Errorf("Decide(%v, %+v) differs from the local policy (-local +bundle):\n%s", tc.scopes, tc.msg, diff)
		}
		if got[0].Revision != "rego-1" {
			t.Errorf("Decision.Revision = %q, want rego-1", got[0].Revision)
		}
	}
}

func TestBundleDataLayout(t *testing.T) {
	t.Parallel()
	// A data file at a path of the bundle is mounted at that path, as in
	// OPA: mcp/config/data.json holds data.mcp.config.
	var data map[string]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(readTestFile(t, "../rego/data.json")), &data); err != nil {
		t.Fatal(err)
	}
	s := newBundleServer(t)
	s.serveBundle(tarGz(t, map[string]string{
		"/mcp/authz.rego":       readTestFile(t, "../rego/mcp/authz.rego"),
		"/mcp/config/data.json": string(data["mcp"]["config"]),
		"/.manifest":            `{"revision": "nested", "roots": ["mcp"]}`,
	}), `"nested"`)
	e, rec := newBundleEngine(nil)
	runBundle(t, e, s.source())
	if c := rec.waitCall(t, 0, "the activation", func(reload) bool { return true }); c.err != nil {
		t.Fatal(c.err)
	}
	got, err := e.Decide(t.Context(), testRequest, testToken("tools:get_weather"), []MCP{call("get_weather"), call("write_file")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Decision{allow("tool_scope"), need("tools:write_file")}, got, decisionOpts); diff != "" {
		t.Errorf("Decide() mismatch (-want +got):\n%s", diff)
	}
}

func TestBundleETag(t *testing.T) {
	t.Parallel()
	s := newBundleServer(t)
	s.serveBundle(defaultBundle(t, "a"), `"a"`)
	e, rec := newBundleEngine(nil)
	runBundle(t, e, s.source())
	rec.waitCall(t, 0, "revision a", succeeded)
	g := e.gen.Load()

	// Later polls send the ETag; 304s keep the policy without a reload.
	waitFor(t, "three 304 answers", func() bool {
		_, notModified := s.stats()
		return notModified >= 3
	})
	inm := s.header("If-None-Match")
	if inm[0] != "" || !slices.Contains(inm, `"a"`) {
		t.Errorf("If-None-Match sent = %q, want none first, then \"a\"", inm)
	}
	if e.gen.Load() != g || len(rec.get()) != 1 {
		t.Errorf("304 answers replaced the policy or called OnReload: %v", rec.get())
	}

	// A new revision is picked up.
	dir := copyDefault(t)
	dataPath := filepath.Join(dir, "data.json")
	writeFile(t, dataPath, strings.Replace(readTestFile(t, dataPath), `"tools": {}`, `"tools": {"ops:deploy": ["deploy"]}`, 1))
	s.serveBundle(buildBundle(t, dir, bundle.Manifest{Revision: "b"}, nil, nil), `"b"`)
	c := rec.waitCall(t, 1, "revision b", func(reload) bool { return true })
	if c.err != nil || c.rev != "b" || e.Revision() != "b" {
		t.Fatalf("OnReload(%q, %v), Revision() = %q; want b", c.rev, c.err, e.Revision())
	}
	ds, err := e.Decide(t.Context(), testRequest, testToken("ops:deploy"), []MCP{call("deploy")})
	if err != nil || !ds[0].Allow || ds[0].Revision != "b" {
		t.Errorf("Decide() = %+v, %v; want allow by b", ds, err)
	}
}

func TestBundleRevisionFromContent(t *testing.T) {
	t.Parallel()
	s := newBundleServer(t)
	body := buildBundle(t, copyDefault(t), bundle.Manifest{}, nil, nil) // no .manifest
	s.serveBundle(body, `"1"`)
	e, rec := newBundleEngine(nil)
	runBundle(t, e, s.source())
	c := rec.waitCall(t, 0, "the activation", func(reload) bool { return true })
	rev := e.Revision()
	if c.err != nil || c.rev != rev || !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(rev) {
		t.Fatalf("OnReload(%q, %v), Revision() = %q; want a 12-digit content hash", c.rev, c.err, rev)
	}
	g := e.gen.Load()

	// The same content under a new ETag keeps the compiled policy.
	s.serveBundle(body, `"2"`)
	c = rec.waitCall(t, 1, "the second download", func(reload) bool { return true })
	if c.err != nil || c.rev != rev || e.gen.Load() != g {
		t.Errorf("OnReload(%q, %v) for identical content; generation kept: %v", c.rev, c.err, e.gen.Load() == g)
	}

	// The same files with a manifest revision are a new revision.
	s.serveBundle(defaultBundle(t, "named"), `"3"`)
	rec.waitCall(t, 2, "the named revision", func(c reload) bool { return c.rev == "named" && c.err == nil })
	if e.Revision() != "named" {
		t.Errorf("Revision() = %q, want named", e.Revision())
	}
}

func TestBundleRejectedKeepsLastGood(t *testing.T) {
	t.Parallel()
	s := newBundleServer(t)
	s.serveBundle(defaultBundle(t, "good"), `"good"`)
	rec := &reloads{}
	log := &recorder{}
	e := New(Options{Logger: slog.New(log), EvalTimeout: 10 * time.Second, OnReload: rec.record})
	runBundle(t, e, s.source())
	rec.waitCall(t, 0, "the good bundle", succeeded)

	authz := readTestFile(t, "../rego/mcp/authz.rego")
	data := readTestFile(t, "../rego/data.json")
	tests := []struct {
		name    string
		body    []byte
		status  int
		rev     string   // revision reported with the error
		want    []string // substrings of the error
		etagHit bool     // the rejected bundle is not downloaded again
	}{
		{
			name: "rego that does not parse",
			body: tarGz(t, map[string]string{"/mcp/authz.rego": authz + "\nbroken := := 1\n", "/data.json": data}),
			want: []string{"/mcp/authz.rego:", "rego_parse_error"},
		},
		{
			name:    "rego that does not compile",
			body:    tarGz(t, map[string]string{"/p.rego": "package mcp.authz\n\ndecision := {\"allow\": x}\n", "/.manifest": `{"revision": "unsafe"}`}),
			rev:     "unsafe",
			want:    []string{"/p.rego:3", "var x is unsafe"},
			etagHit: true,
		},
		{
			name:    "no decision rule",
			body:    tarGz(t, map[string]string{"/p.rego": "package mcp.authz\n\nallow := true\n", "/.manifest": `{"revision": "nodecision"}`}),
			rev:     "nodecision",
			want:    []string{"no rule defines data.mcp.authz.decision"},
			etagHit: true,
		},
		{
			name:    "rule conflicts with data",
			body:    tarGz(t, map[string]string{"/p.rego": fixedPolicy(true), "/data.json": `{"mcp": {"authz": {"decision": 1}}}`, "/.manifest": `{"revision": "conflict"}`}),
			rev:     "conflict",
			want:    []string{"conflict"},
			etagHit: true,
		},
		{
			name: "data outside the manifest roots",
			body: tarGz(t, map[string]string{"/p.rego": fixedPolicy(true), "/data.json": `{"other": 1}`, "/.manifest": `{"roots": ["mcp"]}`}),
			want: []string{"manifest roots", "/other"},
		},
		{
			name:    "delta bundle",
			body:    tarGz(t, map[string]string{"/patch.json": `{"data": [{"op": "upsert", "path": "/mcp/x", "value": 1}]}`, "/.manifest": `{"revision": "delta"}`}),
			rev:     "delta",
			want:    []string{"delta bundles are not supported"},
			etagHit: true,
		},
		{
			name: "corrupt tar.gz",
			body: []byte("this is not a tarball"),
			want: []string{"gzip"},
		},
		{
			name:   "server error",
			status: http.StatusInternalServerError,
			want:   []string{"Internal Server Error"},
		},
	}
	for i, tt := range tests {
		n := len(rec.get())
		if tt.status != 0 {
			s.fail(tt.status)
		} else {
			s.serveBundle(tt.body, fmt.Sprintf(`"bad-%d"`, i))
		}
		// A poll in flight when the server switched may still report the
		// previous case's error: wait for this one's.
		c := rec.waitCall(t, n, tt.name+" to be reported", func(c reload) bool {
			if c.err == nil {
				return false
			}
			for _, w := range tt.want {
				if !strings.Contains(c.err.Error(), w) {
					return false
				}
			}
			return true
		})
		if c.rev != tt.rev {
			t.Errorf("%s: OnReload revision = %q, want %q", tt.name, c.rev, tt.rev)
		}
		if tt.etagHit {
			_, before := s.stats()
			waitFor(t, tt.name+": a 304 for the rejected bundle", func() bool {
				_, notModified := s.stats()
				return notModified > before
			})
		}
		if e.Revision() != "good" {
			t.Errorf("%s: Revision() = %q, want good", tt.name, e.Revision())
		}
		ds, err := e.Decide(t.Context(), testRequest, testToken("tools:get_weather"), []MCP{call("get_weather")})
		if err != nil || !ds[0].Allow || ds[0].Revision != "good" {
			t.Errorf("%s: Decide() = %+v, %v; want the good bundle's allow", tt.name, ds, err)
		}
	}

	// Every failure was logged at Warn with its error, once.
	warns := log.find(slog.LevelWarn, "policy bundle update failed")
	if len(warns) != len(tests) {
		t.Errorf("got %d warnings, want %d (one per distinct error):\n%s", len(warns), len(tests), strings.Join(warns, "\n"))
	}
	if len(warns) > 0 && (!strings.Contains(warns[0], "authz.rego:") || !strings.Contains(warns[0], "revision=good")) {
		t.Errorf("warning = %q, want the error with file:line and the serving revision", warns[0])
	}

	// The server goes away: connection refused keeps the last good too.
	n := len(rec.get())
	s.Close()
	c := rec.waitCall(t, n, "connection refused to be reported", failed)
	if !strings.Contains(c.err.Error(), "connection refused") || e.Revision() != "good" {
		t.Errorf("OnReload error = %v, Revision() = %q; want connection refused and good", c.err, e.Revision())
	}
	if ds, err := e.Decide(t.Context(), testRequest, testToken(), []MCP{req("ping")}); err != nil || !ds[0].Allow {
		t.Errorf("Decide() with the server down = %+v, %v; want allow", ds, err)
	}
}

// testKey returns a PEM private and public key pair for RS256.
func testKey(t *testing.T) (private, public string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

func TestBundleSignature(t *testing.T) {
	t.Parallel()
	priv, pub := testKey(t)
	_, otherPub := testKey(t)
	claims := filepath.Join(t.TempDir(), "claims.json")
	writeFile(t, claims, `{"scope": "write"}`)

	manifest := bundle.Manifest{Revision: "signed"}
	rs256 := bundle.NewSigningConfig(priv, "RS256", "")
	signed := buildBundle(t, copyDefault(t), manifest, rs256, nil)
	hs256 := buildBundle(t, copyDefault(t), manifest, bundle.NewSigningConfig("s3cret", "HS256", ""), nil)
	scoped := buildBundle(t, copyDefault(t), manifest, bundle.NewSigningConfig(priv, "RS256", claims), nil)
	tampered := buildBundle(t, copyDefault(t), manifest, rs256, func(b *bundle.Bundle) {
		b.Data["mcp"].(map[string]any)["config"].(map[string]any)["open_methods"] = []any{"tools/call"}
	})
	unsigned := defaultBundle(t, "signed")

	tests := []struct {
		name string
		body []byte
		key  *BundleKey
		want string // "" for activation, else a substring of the error
	}{
		{"right public key", signed, &BundleKey{Key: pub}, ""},
		{"right public key, other key id", signed, &BundleKey{KeyID: "global_key", Key: pub, Algorithm: "RS256"}, ""},
		{"wrong public key", signed, &BundleKey{Key: otherPub}, "failed to verify"},
		{"unsigned", unsigned, &BundleKey{Key: pub}, "missing .signatures.json"},
		{"signed, no key configured", signed, nil, "verification key not provided"},
		{"files changed after signing", tampered, &BundleKey{Key: pub}, "digest mismatch"},
		{"right HMAC secret", hs256, &BundleKey{Key: "s3cret", Algorithm: "HS256"}, ""},
		{"wrong HMAC secret", hs256, &BundleKey{Key: "guess", Algorithm: "HS256"}, "failed to verify"},
		{"algorithm mismatch", signed, &BundleKey{Key: "s3cret", Algorithm: "HS256"}, "failed to verify"},
		{"right scope", scoped, &BundleKey{Key: pub, Scope: "write"}, ""},
		{"scope not configured", scoped, &BundleKey{Key: pub}, "scope mismatch"},
		{"scope expected, none signed", signed, &BundleKey{Key: pub, Scope: "write"}, "scope mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newBundleServer(t)
			s.serveBundle(tt.body, `"1"`)
			e, rec := newBundleEngine(nil)
			src := s.source()
			src.VerificationKey = tt.key
			runBundle(t, e, src)
			c := rec.waitCall(t, 0, "the first poll", func(reload) bool { return true })
			if tt.want == "" {
				if c.err != nil || !e.Ready() || e.Revision() != "signed" {
					t.Errorf("OnReload(%q, %v), Ready() = %v; want activation of revision signed", c.rev, c.err, e.Ready())
				}
				return
			}
			if c.err == nil || !strings.Contains(c.err.Error(), tt.want) {
				t.Errorf("OnReload(%q, %v), want an error containing %q", c.rev, c.err, tt.want)
			}
			if e.Ready() {
				t.Error("Ready() = true after a rejected bundle")
			}
		})
	}
}

func TestBundleConcurrentDecide(t *testing.T) {
	t.Parallel()
	bodies := [2][]byte{
		tarGz(t, map[string]string{"/p.rego": fixedPolicy(true), "/.manifest": `{"revision": "allow"}`}),
		tarGz(t, map[string]string{"/p.rego": fixedPolicy(false), "/.manifest": `{"revision": "deny"}`}),
	}
	// Every poll gets the other bundle under a new ETag.
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		i := n.Add(1)
		w.Header().Set("ETag", fmt.Sprintf(`"%d"`, i))
		_, _ = w.Write(bodies[i%2])
	}))
	defer srv.Close()
	e, rec := newBundleEngine(nil)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		wg        sync.WaitGroup
		decisions atomic.Int64
	)
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				// Yield, so that the poller is not starved with GOMAXPROCS=1.
				runtime.Gosched()
				ds, err := e.Decide(ctx, testRequest, testToken(), []MCP{req("ping"), req("ping")})
				if errors.Is(err, ErrNotReady) {
					continue
				}
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("Decide() error = %v", err)
					}
					return
				}
				if !cmp.Equal(ds[0], ds[1]) || ds[0].Allow != (ds[0].Revision == "allow") {
					t.Errorf("inconsistent decisions %+v", ds)
					return
				}
				decisions.Add(1)
			}
		})
	}
	runBundle(t, e, BundleSource{URL: srv.URL + "/b.tar.gz", PollMin: time.Millisecond, PollMax: 2 * time.Millisecond})
	waitFor(t, "10 bundle swaps", func() bool {
		var ok int
		for _, c := range rec.get() {
			if c.err != nil {
				t.Fatalf("OnReload(%q, %v)", c.rev, c.err)
			}
			ok++
		}
		return ok >= 10
	})
	cancel()
	wg.Wait()
	if decisions.Load() == 0 {
		t.Error("no decisions were made during the swaps")
	}
}

func TestBundleBearerTokenAndHeaders(t *testing.T) {
	t.Parallel()
	s := newBundleServer(t)
	s.serveBundle(defaultBundle(t, "1"), `"1"`)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, "tok-1\n")
	e, rec := newBundleEngine(nil)
	src := s.source()
	src.URL += "?tenant=t-7"
	src.BearerTokenFile = tokenFile
	src.Headers = map[string]string{"X-Tenant": "t-7"}
	runBundle(t, e, src)
	rec.waitCall(t, 0, "the activation", succeeded)
	s.mu.Lock()
	uri := s.uris[0]
	s.mu.Unlock()
	if uri != "/bundles/authz.tar.gz?tenant=t-7" {
		t.Errorf("request URI = %q, want the configured path and query", uri)
	}
	if auth := s.header("Authorization"); auth[0] != "Bearer tok-1" {
		t.Errorf("Authorization = %q, want Bearer tok-1", auth[0])
	}
	if h := s.header("X-Tenant"); h[0] != "t-7" {
		t.Errorf("X-Tenant = %q, want t-7", h[0])
	}

	// A rotated token is used from the next poll on.
	writeFile(t, tokenFile, "tok-2")
	waitFor(t, "the rotated token", func() bool {
		return slices.Contains(s.header("Authorization"), "Bearer tok-2")
	})

	// An unreadable token file fails the poll, before any request.
	n := len(rec.get())
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	c := rec.waitCall(t, n, "the missing token file", failed)
	if !strings.Contains(c.err.Error(), "bearer token") || e.Revision() != "1" {
		t.Errorf("OnReload error = %v, Revision() = %q; want a bearer token error and 1", c.err, e.Revision())
	}
}

func TestBundleRedirectPolicy(t *testing.T) {
	t.Parallel()
	good := newBundleServer(t)
	good.serveBundle(defaultBundle(t, "redirected"), `"1"`)
	redirector := func(target string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target, http.StatusFound)
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/b.tar.gz"
	}

	// A redirect to another loopback URL is followed.
	e, rec := newBundleEngine(nil)
	runBundle(t, e, BundleSource{URL: redirector(good.bundleURL()), PollMin: time.Millisecond, PollMax: time.Millisecond})
	if c := rec.waitCall(t, 0, "the activation", func(reload) bool { return true }); c.err != nil || c.rev != "redirected" {
		t.Fatalf("OnReload(%q, %v), want redirected", c.rev, c.err)
	}

	// A redirect to plain http on another host is refused.
	e, rec = newBundleEngine(nil)
	runBundle(t, e, BundleSource{URL: redirector("http://bundles.example/b.tar.gz"), PollMin: time.Millisecond, PollMax: time.Millisecond})
	c := rec.waitCall(t, 0, "the refused redirect", func(reload) bool { return true })
	if c.err == nil || !strings.Contains(c.err.Error(), "redirect") || !strings.Contains(c.err.Error(), "only for loopback") || e.Ready() {
		t.Errorf("OnReload(%q, %v), Ready() = %v; want the redirect refused", c.rev, c.err, e.Ready())
	}
}

func TestBundleSourceValidate(t *testing.T) {
	t.Parallel()
	_, pub := testKey(t)
	priv, _ := testKey(t)
	valid := []BundleSource{
		{URL: "https://bundles.example/b.tar.gz"},
		{URL: "https://bundles.example:8443/v1/bundles/authz?tenant=a"},
		{URL: "http://127.0.0.1:8181/b.tar.gz"},
		{URL: "http://localhost/b.tar.gz"},
		{URL: "http://[::1]:80/b.tar.gz"},
		{URL: "https://b.example/b", PollMin: time.Second, PollMax: time.Second},
		{URL: "https://b.example/b", PollMin: time.Minute}, // PollMax follows
		{URL: "https://b.example/b", VerificationKey: &BundleKey{Key: pub}},
		{URL: "https://b.example/b", VerificationKey: &BundleKey{Key: pub, Algorithm: "PS512", KeyID: "k", Scope: "s"}},
		{URL: "https://b.example/b", VerificationKey: &BundleKey{Key: "secret", Algorithm: "HS512"}},
	}
	for _, src := range valid {
		if err := src.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", src, err)
		}
	}
	invalid := []struct {
		src  BundleSource
		want string
	}{
		{BundleSource{}, "absolute"},
		{BundleSource{URL: "bundles/b.tar.gz"}, "absolute"},
		{BundleSource{URL: "ftp://bundles.example/b.tar.gz"}, "url: \"ftp://bundles.example/b.tar.gz\" must use https"},
		{BundleSource{URL: "http://bundles.example/b.tar.gz"}, "only for loopback"},
		{BundleSource{URL: "http://127.0.0.1.example/b.tar.gz"}, "only for loopback"},
		{BundleSource{URL: "https://user:pw@bundles.example/b.tar.gz"}, "url: must not contain user information"},
		{BundleSource{URL: "https://b.example/b", PollMin: -time.Second}, "negative"},
		{BundleSource{URL: "https://b.example/b", PollMin: 2 * time.Second, PollMax: time.Second}, "less than poll_min"},
		{BundleSource{URL: "https://b.example/b", VerificationKey: &BundleKey{Key: pub, Algorithm: "none"}}, "unsupported algorithm"},
		{BundleSource{URL: "https://b.example/b", VerificationKey: &BundleKey{Algorithm: "HS256"}}, "no key"},
		{BundleSource{URL: "https://b.example/b", VerificationKey: &BundleKey{Key: "not pem"}}, "PEM"},
		{BundleSource{URL: "https://b.example/b", VerificationKey: &BundleKey{Key: priv}}, "not a public key"},
	}
	for _, tt := range invalid {
		err := tt.src.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want an error containing %q", tt.src, err, tt.want)
		}
		if strings.Contains(tt.src.URL, "pw") && strings.Contains(fmt.Sprint(err), "pw") {
			t.Errorf("Validate() error %q reveals the URL's password", err)
		}
		// RunBundle refuses it at once.
		e := New(Options{})
		if rerr := e.RunBundle(t.Context(), tt.src); rerr == nil || rerr.Error() != err.Error() {
			t.Errorf("RunBundle(%+v) = %v, want %v", tt.src, rerr, err)
		}
	}
}
