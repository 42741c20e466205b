package upstream

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNow is the start of the manual clock.
var testNow = time.Unix(1_800_000_000, 0)

// The secrets of the tests: distinctive, so that a leak is easy to find.
const (
	testSubjectToken = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.SUBJECTTOKENSIGNATURE0123456789"
	testClientSecret = "client-secret-Zq9x!&=+ /value"
	testClientID     = "mcpauthz client"
)

// fakeClock is a manual clock: Advance fires the timers that are due.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    chan time.Time
	when time.Time
	clk  *fakeClock
}

func newFakeClock() *fakeClock { return &fakeClock{now: testNow} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: make(chan time.Time, 1), when: c.now.Add(d), clk: c}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	i := slices.Index(t.clk.timers, t)
	if i < 0 {
		return false
	}
	t.clk.timers = slices.Delete(t.clk.timers, i, i+1)
	return true
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.when.After(c.now) {
			t.c <- c.now
			continue
		}
		kept = append(kept, t)
	}
	c.timers = kept
}

// waitTimers blocks until n timers are pending (a background goroutine has
// gone to sleep), or fails the test after 5 seconds.
func (c *fakeClock) waitTimers(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.timers)
		c.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waitTimers: %d timers pending after 5s, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// recorder is an Observer that counts events and forwards fetch results.
type recorder struct {
	mu      sync.Mutex
	fetches map[string]int // by result
	cache   map[CacheEvent]int
	fetchCh chan string
}

func newRecorder() *recorder {
	return &recorder{fetches: map[string]int{}, cache: map[CacheEvent]int{}, fetchCh: make(chan string, 1000)}
}

func (r *recorder) ObserveFetch(_ string, result string, _ time.Duration) {
	r.mu.Lock()
	r.fetches[result]++
	r.mu.Unlock()
	r.fetchCh <- result
}

func (r *recorder) ObserveCache(_ string, ev CacheEvent) {
	r.mu.Lock()
	r.cache[ev]++
	r.mu.Unlock()
}

func (r *recorder) cacheCount(ev CacheEvent) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cache[ev]
}

// nextFetch waits for the next fetch result.
func (r *recorder) nextFetch(t testing.TB) string {
	t.Helper()
	select {
	case res := <-r.fetchCh:
		return res
	case <-time.After(5 * time.Second):
		t.Fatal("no fetch observed within 5s")
		return ""
	}
}

// logBuffer is a concurrency-safe slog destination.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// asExpect is what every request to the fake authorization server must
// look like; the server checks it exactly and records every difference.
type asExpect struct {
	form       url.Values // the exact form, client authentication excluded
	clientAuth string     // the method the client must use
	clientID   string
	secret     string           // client_secret_*
	assertKey  crypto.PublicKey // private_key_jwt
	assertAlg  jwa.SignatureAlgorithm
	assertKID  string
	assertX5T  string            // expected x5t#S256, "" for none
	clientCert *x509.Certificate // tls_client_auth
	now        func() time.Time
}

// fakeAS is an RFC 6749 / RFC 8693 token endpoint (and metadata) on
// 127.0.0.1 that validates every request against its expectation and
// answers with reply.
type fakeAS struct {
	t      testing.TB
	srv    *httptest.Server
	issuer string
	expect asExpect
	// reply answers a valid request; n counts requests from 1.
	reply func(n int64, form url.Values) (status int, ctype, body string)
	// gate, when set, holds every token request until it is closed.
	gate chan struct{}
	// metadata, when set, is served at both well-known URLs.
	metadata string
	// echo, when set, answers every token request with an invalid_grant
	// error whose description quotes every secret of the request, whole
	// and in pieces, as a careless or hostile server might.
	echo bool

	calls      atomic.Int64
	mu         sync.Mutex
	problems   []string
	jtis       map[string]bool
	assertions []string
}

func newFakeAS(t testing.TB, tlsServer bool, configure func(*fakeAS)) *fakeAS {
	t.Helper()
	as := &fakeAS{t: t, jtis: map[string]bool{}}
	as.reply = func(n int64, _ url.Values) (int, string, string) {
		return 200, "application/json", fmt.Sprintf(`{"access_token":"upstream-token-%d","issued_token_type":%q,"token_type":"Bearer","expires_in":300}`, n, TokenTypeAccessToken)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", as.token)
	mux.HandleFunc("/.well-known/", func(w http.ResponseWriter, r *http.Request) {
		if as.metadata == "" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, as.metadata)
	})
	as.srv = httptest.NewUnstartedServer(mux)
	// Handshake failures are expected in some tests; keep them out of
	// the test output.
	as.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsServer {
		as.srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
		as.srv.StartTLS()
	} else {
		as.srv.Start()
	}
	as.issuer = as.srv.URL
	if configure != nil {
		configure(as)
	}
	t.Cleanup(func() {
		as.srv.Close()
		as.mu.Lock()
		defer as.mu.Unlock()
		for _, p := range as.problems {
			t.Errorf("fake authorization server: %s", p)
		}
	})
	return as
}

func (as *fakeAS) tokenURL() string { return as.srv.URL + "/token" }

func (as *fakeAS) problem(format string, args ...any) {
	as.mu.Lock()
	as.problems = append(as.problems, fmt.Sprintf(format, args...))
	as.mu.Unlock()
}

// caFile writes the TLS server's certificate as a PEM file.
func (as *fakeAS) caFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, p, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: as.srv.Certificate().Raw})))
	return p
}

func (as *fakeAS) token(w http.ResponseWriter, r *http.Request) {
	n := as.calls.Add(1)
	if as.gate != nil {
		<-as.gate
	}
	if r.Method != http.MethodPost {
		as.problem("method %s, want POST", r.Method)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		as.problem("Content-Type %q", ct)
	}
	if a := r.Header.Get("Accept"); a != "application/json" {
		as.problem("Accept %q", a)
	}
	body, _ := io.ReadAll(r.Body)
	form, err := url.ParseQuery(string(body))
	if err != nil {
		as.problem("body is not form-urlencoded: %v", err)
	}
	if r.URL.RawQuery != "" {
		as.problem("query string %q: parameters must be in the body", r.URL.RawQuery)
	}
	as.checkClientAuth(r, form)
	if as.echo {
		_, basicSecret, _ := r.BasicAuth()
		var quoted []string
		for _, v := range []string{form.Get("subject_token"), form.Get("assertion"), form.Get("client_secret"), form.Get("client_assertion"), basicSecret, r.Header.Get("Authorization")} {
			if v != "" {
				quoted = append(quoted, v, v[:min(10, len(v))], v[len(v)-min(12, len(v)):])
			}
		}
		desc, _ := json.Marshal("you sent " + strings.Join(quoted, " and "))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":%s}`, desc)
		return
	}
	for _, k := range []string{"client_id", "client_secret", "client_assertion", "client_assertion_type"} {
		form.Del(k)
	}
	if want := as.expect.form; want != nil {
		for k, v := range want {
			if !slices.Equal(form[k], v) {
				as.problem("parameter %s = %q, want %q", k, form[k], v)
			}
		}
		for k, v := range form {
			if _, ok := want[k]; !ok {
				as.problem("unexpected parameter %s = %q", k, v)
			}
		}
	}
	status, ctype, out := as.reply(n, form)
	if ctype != "" {
		w.Header().Set("Content-Type", ctype)
	}
	if status == http.StatusFound {
		w.Header().Set("Location", "https://elsewhere.example/token")
	}
	w.WriteHeader(status)
	io.WriteString(w, out)
}

func (as *fakeAS) checkClientAuth(r *http.Request, form url.Values) {
	e := as.expect
	if e.clientAuth == "" {
		return
	}
	has := func(k string) bool { _, ok := form[k]; return ok }
	switch e.clientAuth {
	case AuthClientSecretBasic:
		id, secret, ok := r.BasicAuth()
		if !ok {
			as.problem("client_secret_basic: no Basic Authorization")
			return
		}
		// RFC 6749 §2.3.1: both parts are form-urlencoded.
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		if id != e.clientID || secret != e.secret {
			as.problem("client_secret_basic: wrong client id or secret")
		}
		if has("client_secret") || has("client_assertion") {
			as.problem("client_secret_basic: credentials also in the body")
		}
	case AuthClientSecretPost:
		if r.Header.Get("Authorization") != "" {
			as.problem("client_secret_post: Authorization header present")
		}
		if form.Get("client_id") != e.clientID || form.Get("client_secret") != e.secret {
			as.problem("client_secret_post: wrong client_id or client_secret")
		}
	case AuthPrivateKeyJWT:
		if r.Header.Get("Authorization") != "" || has("client_secret") {
			as.problem("private_key_jwt: a secret was sent too")
		}
		if form.Get("client_id") != e.clientID {
			as.problem("private_key_jwt: client_id %q", form.Get("client_id"))
		}
		if got := form.Get("client_assertion_type"); got != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			as.problem("private_key_jwt: client_assertion_type %q", got)
		}
		as.checkAssertion(form.Get("client_assertion"))
	case AuthTLSClientAuth:
		if r.Header.Get("Authorization") != "" || has("client_secret") || has("client_assertion") {
			as.problem("tls_client_auth: another credential was sent too")
		}
		if form.Get("client_id") != e.clientID {
			as.problem("tls_client_auth: client_id %q", form.Get("client_id"))
		}
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			as.problem("tls_client_auth: no client certificate")
		} else if !r.TLS.PeerCertificates[0].Equal(e.clientCert) {
			as.problem("tls_client_auth: wrong client certificate")
		}
	}
}

// checkAssertion verifies an RFC 7523 client assertion: its signature with
// the client's public key and algorithm, its headers and its claims.
func (as *fakeAS) checkAssertion(a string) {
	e := as.expect
	as.mu.Lock()
	as.assertions = append(as.assertions, a)
	as.mu.Unlock()
	payload, err := jws.Verify([]byte(a), jws.WithKey(e.assertAlg, e.assertKey))
	if err != nil {
		as.problem("client_assertion signature: %v", err)
		return
	}
	msg, _ := jws.Parse([]byte(a))
	h := msg.Signatures()[0].ProtectedHeaders()
	if h.KeyID() != e.assertKID {
		as.problem("client_assertion kid %q, want %q", h.KeyID(), e.assertKID)
	}
	if h.X509CertThumbprintS256() != e.assertX5T {
		as.problem("client_assertion x5t#S256 %q, want %q", h.X509CertThumbprintS256(), e.assertX5T)
	}
	if e.assertX5T != "" && h.X509CertThumbprint() == "" {
		as.problem("client_assertion has x5t#S256 but no x5t")
	}
	var c struct {
		Iss, Sub, Aud, JTI string
		Iat, Exp           int64
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		as.problem("client_assertion claims: %v", err)
		return
	}
	if c.Iss != e.clientID || c.Sub != e.clientID {
		as.problem("client_assertion iss %q sub %q, want the client id", c.Iss, c.Sub)
	}
	if c.Aud != as.tokenURL() {
		as.problem("client_assertion aud %q, want the token endpoint %q", c.Aud, as.tokenURL())
	}
	now := e.now().Unix()
	if c.Iat > now+5 || c.Iat < now-5 || c.Exp <= now || c.Exp-c.Iat > 300 {
		as.problem("client_assertion iat %d exp %d at %d", c.Iat, c.Exp, now)
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if c.JTI == "" || as.jtis[c.JTI] {
		as.problem("client_assertion jti %q missing or reused", c.JTI)
	}
	as.jtis[c.JTI] = true
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// secretFile writes the client secret with the trailing newline of a
// kubectl-created Secret.
func secretFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "client-secret")
	writeFile(t, p, testClientSecret+"\n")
	return p
}

// keyMaterial is generated once per test binary.
type keyMaterial struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}

var (
	keysOnce sync.Once
	testKeys keyMaterial
)

func keys() keyMaterial {
	keysOnce.Do(func() {
		r, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		_, ed, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		testKeys = keyMaterial{rsa: r, ec: e, ed: ed}
	})
	return testKeys
}

// pemFile writes key as a PEM file of the given block type.
func pemFile(t testing.TB, key crypto.Signer, blockType string) string {
	t.Helper()
	var der []byte
	var err error
	switch blockType {
	case "PRIVATE KEY":
		der, err = x509.MarshalPKCS8PrivateKey(key)
	case "RSA PRIVATE KEY":
		der = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	case "EC PRIVATE KEY":
		der, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "key.pem")
	writeFile(t, p, string(pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})))
	return p
}

// selfSigned returns a certificate for key and writes it (and the key) as
// PEM files.
func selfSigned(t testing.TB, key crypto.Signer, cn string) (cert *x509.Certificate, certFile, keyFile string) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	dir := t.TempDir()
	certFile = filepath.Join(dir, "tls.crt")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = pemFile(t, key, "PRIVATE KEY")
	return cert, certFile, keyFile
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// exchangeForm is the RFC 8693 form the default test source sends.
func exchangeForm(token string) url.Values {
	return url.Values{
		"grant_type":           {grantTokenExchange},
		"subject_token":        {token},
		"subject_token_type":   {TokenTypeAccessToken},
		"requested_token_type": {TokenTypeAccessToken},
		"audience":             {"github-proxy", "second-audience"},
		"resource":             {"https://api.example.com/"},
		"scope":                {"repo:read repo:write"},
	}
}

// baseExchangeConfig is a token exchange source for as with client_secret_basic.
func baseExchangeConfig(t testing.TB, as *fakeAS) TokenExchangeConfig {
	return TokenExchangeConfig{
		Name:          "github",
		TokenEndpoint: as.tokenURL(),
		Audiences:     []string{"github-proxy", "second-audience"},
		Resources:     []string{"https://api.example.com/"},
		Scopes:        []string{"repo:read", "repo:write"},
		Client:        ClientAuth{ID: testClientID, Method: AuthClientSecretBasic, SecretFile: secretFile(t)},
	}
}

func testSubject(token string) SubjectToken {
	return SubjectToken{Token: token, Issuer: "https://idp.example.com", Subject: "alice", ClientID: "claude", Expiry: testNow.Add(time.Hour)}
}

// mustExchange builds a TokenExchange and closes it at cleanup.
func mustExchange(t testing.TB, cfg TokenExchangeConfig, opts Options) *TokenExchange {
	t.Helper()
	s, err := NewTokenExchange(cfg, opts)
	if err != nil {
		t.Fatalf("NewTokenExchange: %v", err)
	}
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s
}

// contains reports the first secret found in s.
func leaked(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			return sec
		}
	}
	return ""
}
