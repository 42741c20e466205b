package devauth_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"go.uber.org/goleak"

	"github.com/mcpauthz/mcpauthz/internal/devauth"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

const (
	resource      = "http://localhost:10000/mcp"
	otherResource = "http://localhost:10001/mcp"
	rsID          = "mcpauthz-rs"
	rsSecret      = "rs-secret-0123456789abcdef0123456789abcdef"
	machineID     = "machine"
	machineSecret = "machine-secret-0123456789abcdef0123456789ab"
	otherPublicID = "other-public"
)

// testKey is one RSA key for the whole test binary (made by TestMain):
// generating one takes a noticeable fraction of a second.
var testKey jwk.Key

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "devauth-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testKey, err = devissuer.LoadOrCreateKey(filepath.Join(dir, "key"), true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	// The server starts no goroutine: once the test servers and clients are
	// closed, nothing of it may run. Keep-alive connections of the shared
	// default transport are closed first.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func key(testing.TB) jwk.Key { return testKey }

// env is a devauth server on 127.0.0.1:0 and the log it writes.
type env struct {
	t      testing.TB
	srv    *devauth.Server
	hs     *httptest.Server
	issuer string
	logs   *syncBuffer
	http   *http.Client // never follows redirects
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newEnv(t testing.TB, mod ...func(*devauth.Options)) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, issuer: "http://" + ln.Addr().String(), logs: &syncBuffer{}}
	opts := devauth.Options{
		Issuer:    e.issuer,
		Key:       key(t),
		Resources: []string{resource, otherResource},
		Scopes:    []string{"tools:get_weather", "tools:*"},
		Approve:   devauth.ApproveAuto,
		Clients: []devauth.Client{
			{ID: rsID, Secret: rsSecret, Introspect: true},
			{ID: machineID, Secret: machineSecret, Name: "CI machine"},
			{ID: otherPublicID, RedirectURIs: devauth.DevClientRedirectURIs},
		},
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mod {
		m(&opts)
	}
	e.srv, err = devauth.New(opts)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	e.hs = httptest.NewUnstartedServer(e.srv.Handler())
	e.hs.Listener.Close()
	e.hs.Listener = ln
	e.hs.Start()
	t.Cleanup(e.hs.Close)
	e.http = &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return e
}

// response is a read HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("status %d, body %q is not JSON: %v", r.status, r.body, err)
	}
	return m
}

func (e *env) do(req *http.Request) response {
	e.t.Helper()
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *env) get(path string, hdr ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url(path), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

func (e *env) url(path string) string {
	if strings.HasPrefix(path, "http") {
		return path
	}
	return e.issuer + path
}

// postForm posts form; basic, if not empty, is "id:secret".
func (e *env) postForm(path string, form url.Values, basic string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url(path), strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id, secret, ok := strings.Cut(basic, ":"); ok {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	return e.do(req)
}

func (e *env) postJSON(path, body string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url(path), strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return e.do(req)
}

// pkcePair is a code verifier and its S256 challenge.
type pkcePair struct{ verifier, challenge string }

func newPKCE(seed string) pkcePair {
	v := base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat(seed, 48)[:48]))
	sum := sha256.Sum256([]byte(v))
	return pkcePair{verifier: v, challenge: base64.RawURLEncoding.EncodeToString(sum[:])}
}

// authorizeQuery is a valid authorization request of client.
func authorizeQuery(clientID, redirect string, p pkcePair, scope string) url.Values {
	return url.Values{
		"response_type":         {"code"},
		"client_id":             {clientID},
		"redirect_uri":          {redirect},
		"code_challenge":        {p.challenge},
		"code_challenge_method": {"S256"},
		"state":                 {"state-1234567890"},
		"scope":                 {scope},
		"resource":              {resource},
	}
}

// redirectParams returns the query of a 303 redirect to the client.
func redirectParams(t testing.TB, r response, redirectPrefix string) url.Values {
	t.Helper()
	if r.status != http.StatusSeeOther {
		t.Fatalf("authorize: status %d, want 303; body %s", r.status, r.body)
	}
	loc := r.header.Get("Location")
	if !strings.HasPrefix(loc, redirectPrefix+"?") {
		t.Fatalf("Location %q does not go to %q", loc, redirectPrefix)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

var (
	hiddenRe   = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
	checkboxRe = regexp.MustCompile(`<input type="checkbox" name="scope" value="([^"]*)" checked>`)
)

// consentForm extracts the hidden fields and the scope boxes of a consent
// page.
func consentForm(t testing.TB, page []byte) (hidden url.Values, scopes []string) {
	t.Helper()
	hidden = url.Values{}
	for _, m := range hiddenRe.FindAllSubmatch(page, -1) {
		hidden.Set(string(m[1]), string(m[2]))
	}
	for _, m := range checkboxRe.FindAllSubmatch(page, -1) {
		scopes = append(scopes, string(m[1]))
	}
	if hidden.Get("authorization") == "" || hidden.Get("csrf_token") == "" {
		t.Fatalf("no consent form in %s", page)
	}
	return hidden, scopes
}
