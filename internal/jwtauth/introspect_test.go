package jwtauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	introClientID = "mcpauthz"
	introSecret   = "s3cret-value"
	opaqueToken   = "2YotnFZFEjr1zCsicMWpAA"
)

// introAnswer is what the fake introspection endpoint answers.
type introAnswer struct {
	status int
	body   string
	// block, when set, makes the handler wait until the request is
	// cancelled (timeouts) or release is closed.
	block bool
	// slowBody writes body then waits like block (slow-loris).
	slowBody bool
}

// introServer is an httptest RFC 7662 endpoint. It checks every request
// (method, path, content type, client authentication, form) and fails the
// test on a wrong one.
type introServer struct {
	*httptest.Server
	t        testing.TB
	wantAuth string // expected Authorization header
	mu       sync.Mutex
	answer   func(token string) introAnswer
	hits     atomic.Int64
	release  chan struct{}
	tokens   []string // tokens received, in order
}

func newIntroServer(t testing.TB, answer func(token string) introAnswer) *introServer {
	s := &introServer{t: t, answer: answer, release: make(chan struct{})}
	s.wantAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte(introClientID+":"+introSecret))
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(func() {
		s.unblock()
		s.Close()
	})
	return s
}

func (s *introServer) unblock() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.release:
	default:
		close(s.release)
	}
}

func (s *introServer) set(answer func(token string) introAnswer) {
	s.mu.Lock()
	s.answer = answer
	s.mu.Unlock()
}

func (s *introServer) handle(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	if r.Method != http.MethodPost || r.URL.Path != "/introspect" || r.URL.RawQuery != "" {
		s.t.Errorf("introspection request %s %s, want POST /introspect without query", r.Method, r.URL)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		s.t.Errorf("Content-Type = %q", ct)
	}
	if a := r.Header.Get("Accept"); a != "application/json" {
		s.t.Errorf("Accept = %q", a)
	}
	if got := r.Header.Get("Authorization"); got != s.wantAuth {
		s.t.Errorf("Authorization = %q, want %q", got, s.wantAuth)
	}
	if err := r.ParseForm(); err != nil {
		s.t.Errorf("ParseForm: %v", err)
	}
	if len(r.PostForm) != 2 || len(r.PostForm["token"]) != 1 || r.PostForm.Get("token_type_hint") != "access_token" {
		s.t.Errorf("form = %v, want exactly token and token_type_hint=access_token", r.PostForm)
	}
	tok := r.PostForm.Get("token")
	s.mu.Lock()
	s.tokens = append(s.tokens, tok)
	a := s.answer(tok)
	release := s.release
	s.mu.Unlock()
	if a.block {
		select {
		case <-r.Context().Done():
		case <-release:
		}
		if r.Context().Err() != nil {
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if a.status == 0 {
		a.status = http.StatusOK
	}
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
	if a.slowBody {
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}
}

// activeJSON is an active RFC 7662 answer for testIss with overrides
// (name, value pairs; del removes).
func activeJSON(kv ...any) string {
	now := testNow.Unix()
	m := map[string]any{
		"active": true, "scope": "tools:read tools:call", "client_id": "client-1", "sub": "alice",
		"aud": testAud, "iss": testIss, "exp": now + 300, "iat": now, "token_type": "Bearer", "jti": "jti-o1",
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == del {
			delete(m, kv[i].(string))
		} else {
			m[kv[i].(string)] = kv[i+1]
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func always(a introAnswer) func(string) introAnswer { return func(string) introAnswer { return a } }

func ok200(body string) func(string) introAnswer { return always(introAnswer{body: body}) }

// introVerifier is a verifier whose issuer testIss has the main key set
// and introspection at srv, on clock.
func introVerifier(t testing.TB, srv *introServer, clock *fakeClock, mod ...func(*Issuer)) *Verifier {
	t.Helper()
	c := Issuer{
		Issuer: testIss, JWKSFile: writeFile(t, "jwks.json", mainJWKS(t)), TokenType: "at+jwt",
		Introspection: &Introspection{
			Endpoint: srv.URL + "/introspect", ClientID: introClientID,
			ClientSecretFile: writeFile(t, "secret", []byte(introSecret+"\n")),
			Timeout:          time.Duration(200 * time.Millisecond),
		},
	}
	for _, m := range mod {
		m(&c)
	}
	return newTestVerifier(t, []Issuer{c}, Options{Clock: clock.Now})
}

// noSubject opts the issuer out of requiring sub.
func noSubject(c *Issuer) { c.RequireSubject = new(false) }

func randomOpaque() string {
	b := make([]byte, 24)
	rand.Read(b)
	return enc.EncodeToString(b)
}

type introCase struct {
	name   string
	answer introAnswer
	want   error
	check  func(t *testing.T, id *Identity)
	// issuer changes the issuer's options (nil: introVerifier's).
	issuer func(*Issuer)
}

// introRows are hostile, malformed and failed introspection answers, each
// named by what is wrong with it, plus the accepted shapes.
func introRows() []introCase {
	now := testNow.Unix()
	big := `{"active":true,"pad":"` + strings.Repeat("x", 2<<20) + `"}`
	return []introCase{
		{name: "control/active", answer: introAnswer{body: activeJSON()}, check: func(t *testing.T, id *Identity) {
			if id.Issuer != testIss || id.Subject != "alice" || id.ClientID != "client-1" || id.JTI != "jti-o1" ||
				!slices.Equal(id.Audience, []string{testAud}) || id.Expiry != now+300 ||
				!slices.Equal(id.Scopes, []string{"tools:call", "tools:read"}) || string(id.Claims) != activeJSON() {
				t.Fatalf("identity = %+v", id)
			}
		}},
		{name: "control/minimal-active", answer: introAnswer{body: `{"active":true,"sub":"alice"}`}, check: func(t *testing.T, id *Identity) {
			if id.Issuer != testIss || id.Subject != "alice" || id.Expiry != 0 || id.Audience != nil || len(id.Scopes) != 0 {
				t.Fatalf("identity = %+v", id)
			}
		}},
		{name: "control/aud-array", answer: introAnswer{body: activeJSON("aud", []string{"https://other.example", testAud})}},
		{name: "control/token-type-access_token", answer: introAnswer{body: activeJSON("token_type", "access_token")}},
		{name: "control/token-type-bearer-lower", answer: introAnswer{body: activeJSON("token_type", "bearer")}},
		{name: "control/token-use-hydra", answer: introAnswer{body: activeJSON("token_use", "access_token")}},
		{name: "control/exp-within-leeway", answer: introAnswer{body: activeJSON("exp", now-30)}},
		{name: "control/whitespace-around", answer: introAnswer{body: " \n" + activeJSON() + "\n"}},

		{name: "inactive/plain", answer: introAnswer{body: `{"active":false}`}, want: ErrInactive},
		{name: "inactive/with-claims", answer: introAnswer{body: activeJSON("active", false)}, want: ErrInactive},
		{name: "active-not-boolean/missing", answer: introAnswer{body: activeJSON("active", del)}, want: ErrIntrospectionResponse},
		{name: "active-not-boolean/string", answer: introAnswer{body: activeJSON("active", "true")}, want: ErrIntrospectionResponse},
		{name: "active-not-boolean/number", answer: introAnswer{body: activeJSON("active", 1)}, want: ErrIntrospectionResponse},
		{name: "active-not-boolean/null", answer: introAnswer{body: `{"active":null}`}, want: ErrIntrospectionResponse},
		{name: "active-not-boolean/array", answer: introAnswer{body: `{"active":[true]}`}, want: ErrIntrospectionResponse},
		{name: "duplicate-member/active-false-then-true", answer: introAnswer{body: `{"active":false,"active":true}`}, want: ErrIntrospectionResponse},
		{name: "duplicate-member/active-true-then-false", answer: introAnswer{body: `{"active":true,"active":false}`}, want: ErrIntrospectionResponse},
		{name: "duplicate-member/scope", answer: introAnswer{body: `{"active":true,"scope":"tools:read","scope":"tools:admin"}`}, want: ErrIntrospectionResponse},
		{name: "strict-json/invalid-utf8", answer: introAnswer{body: "{\"active\":true,\"sub\":\"\xff\"}"}, want: ErrIntrospectionResponse},
		{name: "strict-json/deep-nesting", answer: introAnswer{body: `{"active":true,"x":` + nested(40) + `}`}, want: ErrIntrospectionResponse},
		{name: "audience/other-resource", answer: introAnswer{body: activeJSON("aud", "https://other-mcp.example.com/mcp")}, want: ErrAudience},
		{name: "audience/trailing-slash", answer: introAnswer{body: activeJSON("aud", testAud+"/")}, want: ErrAudience},
		{name: "audience/empty-array", answer: introAnswer{body: activeJSON("aud", []string{})}, want: ErrAudience},
		{name: "audience/number", answer: introAnswer{body: activeJSON("aud", 5)}, want: ErrIntrospectionResponse},
		{name: "token-type/refresh-token", answer: introAnswer{body: activeJSON("token_type", "refresh_token")}, want: ErrType},
		{name: "token-type/dpop", answer: introAnswer{body: activeJSON("token_type", "DPoP")}, want: ErrType},
		{name: "token-type/token-use-refresh", answer: introAnswer{body: activeJSON("token_use", "refresh_token")}, want: ErrType},
		{name: "token-type/not-string", answer: introAnswer{body: activeJSON("token_type", 1)}, want: ErrIntrospectionResponse},
		{name: "time-claim/exp-past", answer: introAnswer{body: activeJSON("exp", now-3600)}, want: ErrExpired},
		{name: "time-claim/exp-string", answer: introAnswer{body: activeJSON("exp", fmt.Sprint(now+300))}, want: ErrIntrospectionResponse},
		{name: "time-claim/exp-huge", answer: introAnswer{body: `{"active":true,"exp":1e400}`}, want: ErrIntrospectionResponse},
		{name: "time-claim/nbf-future", answer: introAnswer{body: activeJSON("nbf", now+3600)}, want: ErrNotYetValid},
		{name: "time-claim/iat-future", answer: introAnswer{body: activeJSON("iat", now+3600)}, want: ErrIssuedInFuture},
		{name: "issuer/unexpected", answer: introAnswer{body: activeJSON("iss", "https://evil.example.com")}, want: ErrIssuer},
		{name: "issuer/trailing-slash", answer: introAnswer{body: activeJSON("iss", testIss+"/")}, want: ErrIssuer},
		{name: "token-type/sender-constrained", answer: introAnswer{body: activeJSON("cnf", map[string]string{"jkt": "x"})}, want: ErrType},
		{name: "claim-type/sub-not-string", answer: introAnswer{body: activeJSON("sub", 7)}, want: ErrIntrospectionResponse},
		// RFC 7662 makes sub optional; mcpauthz requires it by default, as
		// for JWTs (identity headers, subject revocation key on it).
		{name: "anonymous-token/sub-absent", answer: introAnswer{body: activeJSON("sub", del)}, want: ErrMissingSubject},
		{name: "anonymous-token/sub-empty", answer: introAnswer{body: activeJSON("sub", "")}, want: ErrMissingSubject},
		{name: "anonymous-token/sub-null", answer: introAnswer{body: activeJSON("sub", nil)}, want: ErrIntrospectionResponse},
		{name: "anonymous-token/client-credentials-shape", answer: introAnswer{body: `{"active":true,"client_id":"svc-1","scope":"tools:read"}`}, want: ErrMissingSubject},
		{name: "anonymous-token/opt-out-sub-absent", answer: introAnswer{body: activeJSON("sub", del)}, issuer: noSubject, check: func(t *testing.T, id *Identity) {
			if id.Subject != "" || id.ClientID != "client-1" {
				t.Fatalf("identity = %+v, want no subject", id)
			}
		}},
		{name: "anonymous-token/opt-out-sub-not-string", answer: introAnswer{body: activeJSON("sub", 7)}, issuer: noSubject, want: ErrIntrospectionResponse},
		{name: "claim-type/scope-not-string", answer: introAnswer{body: activeJSON("scope", map[string]int{})}, want: ErrIntrospectionResponse},
		{name: "endpoint-failure/500", answer: introAnswer{status: 500, body: `{"active":true}`}, want: ErrUnavailable},
		{name: "endpoint-failure/503", answer: introAnswer{status: 503}, want: ErrUnavailable},
		{name: "endpoint-failure/400", answer: introAnswer{status: 400, body: `{"error":"invalid_request"}`}, want: ErrUnavailable},
		{name: "endpoint-failure/401-bad-client-credentials", answer: introAnswer{status: 401, body: `{"error":"invalid_client"}`}, want: ErrUnavailable},
		{name: "endpoint-failure/redirect", answer: introAnswer{status: 302}, want: ErrUnavailable},
		{name: "endpoint-failure/timeout", answer: introAnswer{block: true, body: activeJSON()}, want: ErrUnavailable},
		{name: "unreadable-answer/html", answer: introAnswer{body: "<html><body>maintenance</body></html>"}, want: ErrUnavailable},
		{name: "unreadable-answer/empty-body", answer: introAnswer{body: ""}, want: ErrUnavailable},
		{name: "unreadable-answer/truncated", answer: introAnswer{body: activeJSON()[:20]}, want: ErrUnavailable},
		{name: "unreadable-answer/array", answer: introAnswer{body: `[{"active":true}]`}, want: ErrUnavailable},
		{name: "unreadable-answer/string", answer: introAnswer{body: `"active"`}, want: ErrUnavailable},
		{name: "unreadable-answer/trailing-data", answer: introAnswer{body: `{"active":true}{"active":true}`}, want: ErrUnavailable},
		{name: "unreadable-answer/over-1MiB", answer: introAnswer{body: big}, want: ErrUnavailable},
		{name: "unreadable-answer/slow-loris", answer: introAnswer{body: `{"active":`, slowBody: true}, want: ErrUnavailable},
	}
}

func TestIntrospectionRows(t *testing.T) {
	for _, tc := range introRows() {
		t.Run(tc.name, func(t *testing.T) {
			srv := newIntroServer(t, always(tc.answer))
			var mod []func(*Issuer)
			if tc.issuer != nil {
				mod = append(mod, tc.issuer)
			}
			v := introVerifier(t, srv, newFakeClock(testNow), mod...)
			id, err := v.Verify(context.Background(), opaqueToken)
			checkErr(t, "Verify(opaque)", err, tc.want)
			if n := srv.hits.Load(); n != 1 {
				t.Fatalf("%d introspection calls, want 1", n)
			}
			if err != nil {
				if id != nil {
					t.Fatal("identity returned with an error")
				}
				if strings.Contains(err.Error(), opaqueToken) || strings.Contains(err.Error(), introSecret) {
					t.Fatalf("error %q contains the token or the secret", err)
				}
				return
			}
			if tc.check != nil {
				tc.check(t, id)
			}
		})
	}
}

// TestIntrospectionRowsCoverEveryAttackClass keeps at least one row of each
// class of bad answer in introRows, so that no class is lost by editing
// the table. Caching, floods of random tokens and the absence of a JWT
// fallback have their own tests below.
func TestIntrospectionRowsCoverEveryAttackClass(t *testing.T) {
	names := []string{}
	for _, tc := range introRows() {
		names = append(names, tc.name)
	}
	for _, p := range []string{
		"control/",            // accepted shapes
		"inactive/",           // active: false
		"active-not-boolean/", // active missing or not a JSON boolean
		"duplicate-member/",   // a lenient last-wins parser would see another answer
		"strict-json/",        // invalid UTF-8, excessive nesting
		"audience/",           // a token for another resource server
		"token-type/",         // refresh tokens, sender-constrained tokens
		"time-claim/",         // expired, not yet valid, issued in the future
		"issuer/",             // an unexpected issuer
		"claim-type/",         // claims of the wrong JSON type
		"anonymous-token/",    // no subject to key identity and revocation on
		"endpoint-failure/",   // error statuses, redirects, timeouts: cannot decide
		"unreadable-answer/",  // not one JSON object, oversized, slow
	} {
		if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, p) }) {
			t.Errorf("no row for %s", p)
		}
	}
}

func TestIntrospectionTLSFailure(t *testing.T) {
	// The endpoint's certificate is not trusted: cannot decide.
	var hits atomic.Int64
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, activeJSON())
	}))
	t.Cleanup(tlsSrv.Close)
	srv := newIntroServer(t, ok200(activeJSON()))
	v := introVerifier(t, srv, newFakeClock(testNow), func(c *Issuer) { c.Introspection.Endpoint = tlsSrv.URL + "/introspect" })
	checkErr(t, "Verify(untrusted TLS)", verifyTok(v, opaqueToken), ErrUnavailable)
	if hits.Load() != 0 {
		t.Fatal("the handler ran despite the TLS failure")
	}
}

func TestIntrospectionNoRedirect(t *testing.T) {
	// The token is never sent anywhere but the configured endpoint.
	target := newIntroServer(t, ok200(activeJSON()))
	var hits atomic.Int64
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, target.URL+"/introspect", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	v := introVerifier(t, target, newFakeClock(testNow), func(c *Issuer) { c.Introspection.Endpoint = redirector.URL + "/introspect" })
	checkErr(t, "Verify(307 to elsewhere)", verifyTok(v, opaqueToken), ErrUnavailable)
	if hits.Load() != 1 || target.hits.Load() != 0 {
		t.Fatalf("redirect followed: endpoint %d, target %d calls", hits.Load(), target.hits.Load())
	}
}

func TestIntrospectionClientAuthentication(t *testing.T) {
	// RFC 7662 §2.1 with client_secret_basic: both parts form-urlencoded
	// (RFC 6749 §2.3.1, Appendix B) before base64; the token in the form
	// body, escaped.
	const id, secret = "mcp gw:1/é", "p@ss wörd+/=%&:"
	const wantCred = "mcp+gw%3A1%2F%C3%A9:p%40ss+w%C3%B6rd%2B%2F%3D%25%26%3A"
	const token = "abc+/~-._=="
	var gotAuth, gotBody string
	var mu sync.Mutex
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		gotAuth, gotBody = r.Header.Get("Authorization"), string(b)
		mu.Unlock()
		io.WriteString(w, `{"active":true,"sub":"alice"}`)
	}))
	t.Cleanup(s.Close)
	t.Setenv("TEST_INTROSPECTION_SECRET", secret)
	v := newTestVerifier(t, []Issuer{{
		Issuer: testIss,
		Introspection: &Introspection{
			Endpoint: s.URL + "/introspect", ClientID: id, ClientSecretEnv: "TEST_INTROSPECTION_SECRET",
		},
	}}, Options{})
	checkErr(t, "Verify", verifyTok(v, token), nil)
	mu.Lock()
	defer mu.Unlock()
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte(wantCred)); gotAuth != want {
		t.Errorf("Authorization = %q, want %q", gotAuth, want)
	}
	if want := "token=abc%2B%2F~-._%3D%3D&token_type_hint=access_token"; gotBody != want {
		t.Errorf("body = %q, want %q", gotBody, want)
	}
}

func TestIntrospectionCaching(t *testing.T) {
	// An active answer is reused until min(exp, now + cache_ttl),
	// then asked again (a revocation is seen after at most cache_ttl);
	// an inactive one for negative_cache_ttl; failures are not cached.
	now := testNow.Unix()
	t.Run("positive-bounded-by-cache_ttl", func(t *testing.T) {
		srv := newIntroServer(t, ok200(activeJSON("exp", now+3600)))
		clock := newFakeClock(testNow)
		v := introVerifier(t, srv, clock, func(c *Issuer) { c.Introspection.CacheTTL = time.Duration(time.Minute) })
		for range 3 {
			checkErr(t, "Verify", verifyTok(v, opaqueToken), nil)
		}
		if n := srv.hits.Load(); n != 1 {
			t.Fatalf("%d calls for 3 verifications, want 1", n)
		}
		clock.Advance(59 * time.Second)
		checkErr(t, "Verify(59s later)", verifyTok(v, opaqueToken), nil)
		srv.set(ok200(`{"active":false}`)) // revoked
		clock.Advance(time.Second)
		checkErr(t, "Verify(revoked, cache_ttl later)", verifyTok(v, opaqueToken), ErrInactive)
		if n := srv.hits.Load(); n != 2 {
			t.Fatalf("%d calls, want 2", n)
		}
	})
	t.Run("positive-bounded-by-exp", func(t *testing.T) {
		srv := newIntroServer(t, ok200(activeJSON("exp", now+30)))
		clock := newFakeClock(testNow)
		v := introVerifier(t, srv, clock)
		checkErr(t, "Verify", verifyTok(v, opaqueToken), nil)
		clock.Advance(29 * time.Second)
		checkErr(t, "Verify(before exp)", verifyTok(v, opaqueToken), nil)
		if n := srv.hits.Load(); n != 1 {
			t.Fatalf("%d calls, want 1", n)
		}
		clock.Advance(time.Second)
		srv.set(ok200(`{"active":false}`))
		checkErr(t, "Verify(at exp)", verifyTok(v, opaqueToken), ErrInactive)
		if n := srv.hits.Load(); n != 2 {
			t.Fatalf("%d calls, want 2 (never cached past exp)", n)
		}
	})
	t.Run("negative", func(t *testing.T) {
		srv := newIntroServer(t, ok200(`{"active":false}`))
		clock := newFakeClock(testNow)
		v := introVerifier(t, srv, clock)
		for range 3 {
			checkErr(t, "Verify", verifyTok(v, opaqueToken), ErrInactive)
		}
		srv.set(ok200(activeJSON("aud", "https://other.example")))
		clock.Advance(9 * time.Second)
		checkErr(t, "Verify(9s)", verifyTok(v, opaqueToken), ErrInactive)
		if n := srv.hits.Load(); n != 1 {
			t.Fatalf("%d calls, want 1", n)
		}
		clock.Advance(time.Second)
		// Other definitive rejections are cached negatively too, with
		// their own reason.
		for range 3 {
			checkErr(t, "Verify(wrong audience)", verifyTok(v, opaqueToken), ErrAudience)
		}
		if n := srv.hits.Load(); n != 2 {
			t.Fatalf("%d calls, want 2", n)
		}
		if v.cache.len() != 0 {
			t.Fatal("a rejection entered the verified-token cache")
		}
	})
	t.Run("failures-not-cached", func(t *testing.T) {
		for _, fail := range []introAnswer{{status: 500}, {body: "<html>"}, {body: `{"active":"true"}`}, {block: true}} {
			srv := newIntroServer(t, always(fail))
			clock := newFakeClock(testNow)
			v := introVerifier(t, srv, clock)
			if err := verifyTok(v, opaqueToken); err == nil {
				t.Fatalf("answer %+v accepted", fail)
			}
			srv.set(ok200(activeJSON()))
			checkErr(t, "Verify(after the failure)", verifyTok(v, opaqueToken), nil)
			if n := srv.hits.Load(); n != 2 {
				t.Fatalf("answer %+v: %d calls, want 2 (failure not cached)", fail, n)
			}
		}
	})
	t.Run("cache-disabled", func(t *testing.T) {
		srv := newIntroServer(t, ok200(activeJSON()))
		c := Issuer{Issuer: testIss, Introspection: &Introspection{
			Endpoint: srv.URL + "/introspect", ClientID: introClientID, ClientSecretFile: writeFile(t, "s", []byte(introSecret)),
		}}
		v := newTestVerifier(t, []Issuer{c}, Options{TokenCacheSize: -1})
		for range 3 {
			checkErr(t, "Verify", verifyTok(v, opaqueToken), nil)
		}
		if n := srv.hits.Load(); n != 3 {
			t.Fatalf("%d calls, want 3 with caching disabled", n)
		}
	})
}

func TestIntrospectionSingleFlight(t *testing.T) {
	// N concurrent requests with the same token make one call; a request
	// whose context ends stops waiting without cancelling the call.
	srv := newIntroServer(t, always(introAnswer{block: true, body: activeJSON()}))
	v := introVerifier(t, srv, newFakeClock(testNow), func(c *Issuer) { c.Introspection.Timeout = time.Duration(10 * time.Second) })
	const n = 50
	errs := make(chan error, n)
	for range n {
		go func() { errs <- verifyTok(v, opaqueToken) }()
	}
	waitFor(t, "the callers to join", func() bool { return srv.hits.Load() == 1 && v.intro.joined.Load() == n-1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := v.Verify(ctx, opaqueToken)
	checkErr(t, "Verify(cancelled request)", err, ErrUnavailable)
	srv.unblock()
	for range n {
		checkErr(t, "Verify(joined)", <-errs, nil)
	}
	if h := srv.hits.Load(); h != 1 {
		t.Fatalf("%d calls for %d concurrent requests, want 1", h, n)
	}
}

func TestIntrospectionConcurrencyBound(t *testing.T) {
	srv := newIntroServer(t, always(introAnswer{block: true, body: activeJSON()}))
	v := introVerifier(t, srv, newFakeClock(testNow), func(c *Issuer) {
		c.Introspection.MaxConcurrent = 2
		c.Introspection.Timeout = time.Duration(10 * time.Second)
	})
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- verifyTok(v, randomOpaque()) }()
	}
	waitFor(t, "two calls in flight", func() bool { return srv.hits.Load() == 2 })
	checkErr(t, "Verify(third concurrent token)", verifyTok(v, randomOpaque()), ErrRateLimited)
	srv.unblock()
	for range 2 {
		checkErr(t, "Verify(in flight)", <-errs, nil)
	}
	checkErr(t, "Verify(after the calls ended)", verifyTok(v, randomOpaque()), nil)
}

func TestIntrospectionFlood(t *testing.T) {
	// A flood of 1000 random opaque tokens at once: the endpoint sees at
	// most rate_limit calls (the clock does not move), the others are
	// answered 503 at once; the negative cache holds only what was asked;
	// the verified-token cache keeps its warm entries.
	srv := newIntroServer(t, func(tok string) introAnswer {
		if tok == opaqueToken {
			return introAnswer{body: activeJSON()}
		}
		return introAnswer{body: `{"active":false}`}
	})
	clock := newFakeClock(testNow)
	v := introVerifier(t, srv, clock, func(c *Issuer) { c.Introspection.RateLimit = 20 })
	jwt := validToken(t)
	checkErr(t, "Verify(JWT, warm)", verifyTok(v, jwt), nil)
	checkErr(t, "Verify(opaque, warm)", verifyTok(v, opaqueToken), nil)
	if n := v.cache.len(); n != 2 {
		t.Fatalf("cache len = %d, want 2", n)
	}
	var wg sync.WaitGroup
	var inactive, limited atomic.Int64
	for range 1000 {
		wg.Go(func() {
			err := verifyTok(v, randomOpaque())
			switch {
			case errors.Is(err, ErrInactive):
				inactive.Add(1)
			case errors.Is(err, ErrRateLimited):
				limited.Add(1)
				if Reason(err) != "introspection_rate_limited" || !errors.Is(err, ErrKeysUnavailable) {
					t.Errorf("rate-limited error %v: reason %q", err, Reason(err))
				}
			default:
				t.Errorf("Verify(random opaque) = %v", err)
			}
		})
	}
	wg.Wait()
	calls := srv.hits.Load() - 1
	if calls > 19 || inactive.Load() != calls || limited.Load() != 1000-calls {
		t.Fatalf("1000 random tokens: %d calls (rate limit 20, 1 used), %d inactive, %d rate-limited", calls, inactive.Load(), limited.Load())
	}
	if n := v.intro.neg.len(); n != int(calls) {
		t.Fatalf("negative cache len = %d, want %d", n, calls)
	}
	if n := v.cache.len(); n != 2 {
		t.Fatalf("cache len = %d after the flood, want 2", n)
	}
	dropKeys(t, v)
	checkErr(t, "Verify(JWT, still cached)", verifyTok(v, jwt), nil)
	before := srv.hits.Load()
	checkErr(t, "Verify(opaque, still cached)", verifyTok(v, opaqueToken), nil)
	if srv.hits.Load() != before {
		t.Fatal("the warm opaque token was introspected again")
	}
	// The bucket refills with the clock.
	clock.Advance(time.Second)
	checkErr(t, "Verify(random, a second later)", verifyTok(v, randomOpaque()), ErrInactive)
}

func TestIntrospectionNoFallback(t *testing.T) {
	// No fallback between JWT validation and introspection: a token takes
	// one path only.
	srv := newIntroServer(t, ok200(activeJSON()))
	v := introVerifier(t, srv, newFakeClock(testNow))
	k := keys(t)
	jwtRows := []struct {
		name string
		tok  string
		want error
	}{
		{"valid-jwt", validToken(t), nil},
		{"bad-signature", mint(t, hdrRS256, claimsJSON(), "RS256", k.attacker), ErrBadSignature},
		{"unknown-issuer", validToken(t, "iss", "https://evil.example.com"), ErrUnknownIssuer},
		{"expired", validToken(t, "exp", testNow.Unix()-3600), ErrExpired},
		{"alg-none", enc.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + ".AA", ErrAlgorithm},
		{"padded-header", func() string {
			tok := validToken(t)
			i := strings.IndexByte(tok, '.')
			return tok[:i] + "==" + tok[i:]
		}(), ErrMalformed},
		{"duplicate-header-names", enc.EncodeToString([]byte(`{"alg":"RS256","alg":"RS256"}`)) + ".e30.AA", ErrMalformed},
	}
	for _, r := range jwtRows {
		checkErr(t, "Verify("+r.name+")", verifyTok(v, r.tok), r.want)
	}
	if n := srv.hits.Load(); n != 0 {
		t.Fatalf("JWT-shaped tokens caused %d introspection calls, want 0", n)
	}
	// Opaque tokens are introspected, never parsed as JWTs: an inactive
	// one is ErrInactive, not ErrMalformed.
	srv.set(ok200(`{"active":false}`))
	for _, tok := range []string{"opaque-1", "a.b", "a.b.c", "eyJhbGciOiJSUzI1NiJ9", "h.p.s.x.y", "e30.e30.AA"} {
		checkErr(t, "Verify("+tok+")", verifyTok(v, tok), ErrInactive)
	}
	if n := srv.hits.Load(); n != 6 {
		t.Fatalf("%d introspection calls for 6 opaque tokens", n)
	}
	// Without introspection, an opaque token is a malformed JWT.
	plain := cacheVerifier(t, newFakeClock(testNow), 0)
	checkErr(t, "Verify(opaque, no introspection)", verifyTok(plain, opaqueToken), ErrMalformed)
}

func TestIntrospectionOnlyIssuer(t *testing.T) {
	// An issuer with introspection and no keys discovers nothing, is
	// ready at once, and takes no JWTs.
	srv := newIntroServer(t, ok200(activeJSON()))
	v := newTestVerifier(t, []Issuer{{Issuer: testIss, Introspection: &Introspection{
		Endpoint: srv.URL + "/introspect", ClientID: introClientID, ClientSecretFile: writeFile(t, "s", []byte(introSecret)),
	}}}, Options{})
	if !v.Ready() {
		t.Fatal("introspection-only verifier not ready")
	}
	checkErr(t, "Verify(JWT of the introspection-only issuer)", verifyTok(v, validToken(t)), ErrType)
	checkErr(t, "Verify(opaque)", verifyTok(v, opaqueToken), nil)
	if n := srv.hits.Load(); n != 1 {
		t.Fatalf("%d calls, want 1", n)
	}
}

func TestIntrospectionScopesAndClaims(t *testing.T) {
	// The issuer's scope_claims and claim_scopes apply to the answer too;
	// required_claims are checked; the answer is Identity.Claims.
	srv := newIntroServer(t, ok200(activeJSON("permissions", []string{"tools:admin"}, "scope", "a b  c")))
	v := introVerifier(t, srv, newFakeClock(testNow), func(c *Issuer) {
		c.ClaimScopes = map[string]string{"permissions": "perm:"}
		c.RequiredClaims = []string{"sub", "username"}
	})
	checkErr(t, "Verify(username missing)", verifyTok(v, opaqueToken), ErrMissingClaim)
	srv.set(ok200(activeJSON("permissions", []string{"tools:admin"}, "scope", "a b  c", "username", "alice")))
	id, err := v.Verify(context.Background(), "other-token")
	checkErr(t, "Verify", err, nil)
	if !slices.Equal(id.Scopes, []string{"a", "b", "c", "perm:tools:admin"}) {
		t.Fatalf("Scopes = %q", id.Scopes)
	}
	var m map[string]any
	if err := json.Unmarshal(id.Claims, &m); err != nil || m["username"] != "alice" || m["active"] != true {
		t.Fatalf("Claims = %s (%v)", id.Claims, err)
	}
}

func TestIntrospectionMaxLifetime(t *testing.T) {
	// max_lifetime applies to introspection answers that carry exp; an answer
	// without exp has no lifetime to check.
	now := testNow.Unix()
	srv := newIntroServer(t, ok200(activeJSON("iat", now, "exp", now+25*3600)))
	v := introVerifier(t, srv, newFakeClock(testNow), func(c *Issuer) { c.MaxLifetime = time.Duration(24 * time.Hour) })
	checkErr(t, "Verify(exp - iat = 25h)", verifyTok(v, "t1"), ErrLifetime)
	srv.set(ok200(activeJSON("iat", del, "exp", now+25*3600)))
	checkErr(t, "Verify(no iat, exp in 25h)", verifyTok(v, "t2"), ErrLifetime)
	srv.set(ok200(activeJSON("iat", del, "exp", del)))
	checkErr(t, "Verify(no exp)", verifyTok(v, "t3"), nil)
	srv.set(ok200(activeJSON("exp", now+3600)))
	checkErr(t, "Verify(1h)", verifyTok(v, "t4"), nil)
}

func TestIntrospectionMaxTokenSize(t *testing.T) {
	srv := newIntroServer(t, ok200(activeJSON()))
	v := introVerifier(t, srv, newFakeClock(testNow), func(c *Issuer) { c.MaxTokenSize = 300 })
	checkErr(t, "Verify(opaque over max_token_size)", verifyTok(v, strings.Repeat("a", 301)), ErrTooLarge)
	if srv.hits.Load() != 0 {
		t.Fatal("an oversized token was sent to the endpoint")
	}
}

func TestIntrospectionConfigErrors(t *testing.T) {
	secret := writeFile(t, "secret", []byte(introSecret))
	empty := writeFile(t, "empty", []byte("\n"))
	in := func(f func(*Introspection)) Issuer {
		c := Introspection{Endpoint: "https://as.example.com/introspect", ClientID: "c", ClientSecretFile: secret}
		f(&c)
		return Issuer{Issuer: testIss, Introspection: &c}
	}
	tests := []struct {
		name    string
		issuers []Issuer
		want    string
	}{
		{"two-introspecting-issuers", []Issuer{in(func(*Introspection) {}), func() Issuer {
			c := in(func(*Introspection) {})
			c.Issuer = issB
			return c
		}()}, `issuers[1].introspection: only one issuer may use introspection`},
		{"http-endpoint", []Issuer{in(func(c *Introspection) { c.Endpoint = "http://as.example.com/i" })}, "issuers[0].introspection.endpoint: \"http://as.example.com/i\" must use https"},
		{"no-endpoint", []Issuer{in(func(c *Introspection) { c.Endpoint = "" })}, "issuers[0].introspection.endpoint: required"},
		{"two-secrets", []Issuer{in(func(c *Introspection) { c.ClientSecretEnv = "X" })}, "issuers[0].introspection: set exactly one of client_secret_file or client_secret_env"},
		{"no-secret", []Issuer{in(func(c *Introspection) { c.ClientSecretFile = "" })}, "exactly one of"},
		{"empty-secret-file", []Issuer{in(func(c *Introspection) { c.ClientSecretFile = empty })}, "issuers[0].introspection.client_secret_file: \"" + empty + "\" is empty"},
		{"missing-secret-file", []Issuer{in(func(c *Introspection) { c.ClientSecretFile = "/nonexistent/secret" })}, `issuers[0].introspection.client_secret_file: cannot read "/nonexistent/secret"`},
		{"unset-env", []Issuer{in(func(c *Introspection) {
			c.ClientSecretFile = ""
			c.ClientSecretEnv = "MCPAUTHZ_TEST_UNSET_VARIABLE"
		})}, "issuers[0].introspection.client_secret_env: environment variable MCPAUTHZ_TEST_UNSET_VARIABLE is not set"},
		{"negative-ttl", []Issuer{in(func(c *Introspection) { c.CacheTTL = -1 })}, "issuers[0].introspection.cache_ttl: must not be negative"},
		{"negative-concurrency", []Issuer{in(func(c *Introspection) { c.MaxConcurrent = -1 })}, "issuers[0].introspection.max_concurrent: must be between 1 and 1024"},
		{"negative-rate", []Issuer{in(func(c *Introspection) { c.RateLimit = -1 })}, "issuers[0].introspection.rate_limit: must be between"},
		{"pattern-issuer", []Issuer{func() Issuer {
			c := in(func(*Introspection) {})
			c.Issuer = issEntra
			c.JWKSURI = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
			return c
		}()}, "issuers[0].introspection: not supported for an issuer with {tenantid}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewVerifier(Options{Issuers: tt.issuers, DefaultAudience: testAud})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewVerifier = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), introSecret) {
				t.Fatalf("error %q contains the secret", err)
			}
		})
	}
}

func TestLooksLikeJWS(t *testing.T) {
	h := func(s string) string { return enc.EncodeToString([]byte(s)) }
	std := base64.StdEncoding.EncodeToString([]byte(`{"alg":"RS256","x":"??>>"}`))
	tests := map[string]bool{
		h(`{"alg":"RS256"}`) + ".e30.AA":           true,
		h(`{"alg":"RS256"}`) + "..":                true,
		h(`{"kid":"a","alg":"x"}`) + ".p.s":        true,
		h(`{"x":{"alg":1},"alg":null}`) + ".p.s":   true,
		h(`{"alg":"RS256","alg":"none"}`) + ".p.s": true,
		h("{\"alg\":\"\xff\"}") + ".p.s":           true,
		std + ".p.s":                               true, // std alphabet and padding
		h(`{"alg":"RS256"`) + ".p.s":               true, // alg seen before the syntax error
		h(`{"typ":"JWT"}`) + ".p.s":                false,
		h(`{"x":{"alg":"RS256"}}`) + ".p.s":        false,
		h(`["alg"]`) + ".p.s":                      false,
		h(`"alg"`) + ".p.s":                        false,
		h(`{"alg":"RS256"}`) + ".p":                false,
		h(`{"alg":"RS256"}`) + ".p.s.x":            false,
		h(`{"alg":"RS256"}`) + ".p.s.x.y":          false, // JWE shape
		"opaque":                                   false,
		"":                                         false,
		"..":                                       false,
		"!!!.p.s":                                  false,
		strings.Repeat("[", 100) + ".p.s":          false,
		h(strings.Repeat(`{"a":`, 100)+`1`+strings.Repeat(`}`, 100)) + ".p.s": false,
	}
	for tok, want := range tests {
		if got := looksLikeJWS(tok); got != want {
			t.Errorf("looksLikeJWS(%q) = %v, want %v", tok, got, want)
		}
	}
	if !strings.ContainsAny(std, "+/=") {
		t.Fatal("the std-alphabet case has no std-only characters")
	}
}

func BenchmarkIntrospection(b *testing.B) {
	srv := newIntroServer(b, ok200(activeJSON()))
	v := introVerifier(b, srv, newFakeClock(testNow))
	ctx := context.Background()
	if _, err := v.Verify(ctx, opaqueToken); err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, opaqueToken); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("negative-cached", func(b *testing.B) {
		srv.set(ok200(`{"active":false}`))
		v.Verify(ctx, "inactive-token")
		b.ReportAllocs()
		for b.Loop() {
			v.Verify(ctx, "inactive-token")
		}
	})
}
