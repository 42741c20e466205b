package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// TestTokenExchangeClientAuth exchanges a token with each client
// authentication method against a token endpoint that checks the whole
// request: grant and token types, subject token, audiences, resource,
// scope, and the client's credentials (the assertion's signature and
// claims; the TLS client certificate).
func TestTokenExchangeClientAuth(t *testing.T) {
	k := keys()
	tests := []struct {
		name  string
		tls   bool
		setup func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig)
	}{
		{"client_secret_basic", false, func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig) {
			as.expect.clientAuth, as.expect.secret = AuthClientSecretBasic, testClientSecret
		}},
		{"client_secret_post", false, func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig) {
			as.expect.clientAuth, as.expect.secret = AuthClientSecretPost, testClientSecret
			cfg.Client.Method = AuthClientSecretPost
		}},
		{"private_key_jwt RSA PKCS1 PEM", false, func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig) {
			as.expect.clientAuth, as.expect.assertKey, as.expect.assertAlg, as.expect.assertKID = AuthPrivateKeyJWT, &k.rsa.PublicKey, jwa.RS256, "rsa-1"
			cfg.Client = ClientAuth{ID: testClientID, Method: AuthPrivateKeyJWT, PrivateKeyFile: pemFile(t, k.rsa, "RSA PRIVATE KEY"), KeyID: "rsa-1"}
		}},
		{"private_key_jwt RSA PS256 PKCS8", false, func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig) {
			as.expect.clientAuth, as.expect.assertKey, as.expect.assertAlg = AuthPrivateKeyJWT, &k.rsa.PublicKey, jwa.PS256
			cfg.Client = ClientAuth{ID: testClientID, Method: AuthPrivateKeyJWT, PrivateKeyFile: pemFile(t, k.rsa, "PRIVATE KEY"), SigningAlgorithm: "PS256"}
		}},
		{"private_key_jwt EC JWK", false, func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig) {
			j, err := jwk.FromRaw(k.ec)
			if err != nil {
				t.Fatal(err)
			}
			j.Set(jwk.KeyIDKey, "ec-jwk")
			b, _ := json.Marshal(j)
			p := filepath.Join(t.TempDir(), "key.jwk")
			writeFile(t, p, string(b))
			as.expect.clientAuth, as.expect.assertKey, as.expect.assertAlg, as.expect.assertKID = AuthPrivateKeyJWT, &k.ec.PublicKey, jwa.ES256, "ec-jwk"
			cfg.Client = ClientAuth{ID: testClientID, Method: AuthPrivateKeyJWT, PrivateKeyFile: p}
		}},
		{"private_key_jwt Ed25519 SEC1-free PKCS8", false, func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig) {
			as.expect.clientAuth, as.expect.assertKey, as.expect.assertAlg = AuthPrivateKeyJWT, k.ed.Public(), jwa.EdDSA
			cfg.Client = ClientAuth{ID: testClientID, Method: AuthPrivateKeyJWT, PrivateKeyFile: pemFile(t, k.ed, "PRIVATE KEY")}
		}},
		{"tls_client_auth", true, func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig) {
			cert, certFile, keyFile := selfSigned(t, k.ec, "mcpauthz")
			as.expect.clientAuth, as.expect.clientCert = AuthTLSClientAuth, cert
			cfg.Client = ClientAuth{ID: testClientID, Method: AuthTLSClientAuth, TLSCertFile: certFile, TLSKeyFile: keyFile}
			cfg.CAFile = as.caFile(t)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			as := newFakeAS(t, tt.tls, nil)
			as.expect = asExpect{form: exchangeForm(testSubjectToken), clientID: testClientID, now: clk.Now}
			cfg := baseExchangeConfig(t, as)
			tt.setup(t, as, &cfg)
			if tt.tls {
				cfg.TokenEndpoint = as.tokenURL()
			}
			s := mustExchange(t, cfg, Options{clock: clk})
			got, err := s.Credential(t.Context(), testSubject(testSubjectToken))
			if err != nil {
				t.Fatalf("Credential: %v", err)
			}
			want := Credential{Header: "authorization", Value: "Bearer upstream-token-1"}
			if got != want {
				t.Errorf("Credential = %#v, want %#v (value %q)", got, want, got.Value)
			}
			if n := as.calls.Load(); n != 1 {
				t.Errorf("token endpoint called %d times, want 1", n)
			}
		})
	}
}

// TestTokenExchangeEntraOBO sends the Microsoft identity platform's
// on-behalf-of request (not RFC 8693 syntax) and accepts its answer, which
// has no issued_token_type.
func TestTokenExchangeEntraOBO(t *testing.T) {
	k := keys()
	oboForm := url.Values{
		"grant_type":          {grantJWTBearer},
		"assertion":           {testSubjectToken},
		"requested_token_use": {"on_behalf_of"},
		"scope":               {"api://github-proxy/.default"},
	}
	entraReply := func(n int64, _ url.Values) (int, string, string) {
		return 200, "application/json; charset=utf-8", `{"token_type":"Bearer","scope":"api://github-proxy/.default","expires_in":3599,"ext_expires_in":3599,"access_token":"entra-obo-token","refresh_token":"discarded-refresh-token"}`
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig)
	}{
		{"client_secret_post", func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig) {
			as.expect.clientAuth, as.expect.secret = AuthClientSecretPost, testClientSecret
			cfg.Client = ClientAuth{ID: testClientID, Method: AuthClientSecretPost, SecretFile: secretFile(t)}
		}},
		{"certificate credential (private_key_jwt with x5t)", func(t *testing.T, as *fakeAS, cfg *TokenExchangeConfig) {
			cert, certFile, keyFile := selfSigned(t, k.rsa, "mcpauthz-entra")
			s256 := sha256.Sum256(cert.Raw)
			as.expect.clientAuth, as.expect.assertKey, as.expect.assertAlg, as.expect.assertX5T = AuthPrivateKeyJWT, &k.rsa.PublicKey, jwa.RS256, b64(s256[:])
			cfg.Client = ClientAuth{ID: testClientID, Method: AuthPrivateKeyJWT, PrivateKeyFile: keyFile, CertificateFile: certFile}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			as := newFakeAS(t, false, func(as *fakeAS) { as.reply = entraReply })
			as.expect = asExpect{form: oboForm, clientID: testClientID, now: clk.Now}
			cfg := TokenExchangeConfig{Name: "graph", Profile: ProfileEntraOBO, TokenEndpoint: as.tokenURL(), Scopes: []string{"api://github-proxy/.default"}}
			tt.setup(t, as, &cfg)
			s := mustExchange(t, cfg, Options{clock: clk})
			got, err := s.Credential(t.Context(), testSubject(testSubjectToken))
			if err != nil {
				t.Fatalf("Credential: %v", err)
			}
			if got.Value != "Bearer entra-obo-token" {
				t.Errorf("Credential value %q, want %q", got.Value, "Bearer entra-obo-token")
			}
		})
	}
}

// TestTokenExchangeCache covers hits, misses, expiry (expires_in less the
// margin, and the subject token's exp), the key (other token, other
// scopes) and the bound.
func TestTokenExchangeCache(t *testing.T) {
	clk := newFakeClock()
	as := newFakeAS(t, false, nil)
	rec := newRecorder()
	cfg := baseExchangeConfig(t, as)
	cfg.CacheSize = 2
	s := mustExchange(t, cfg, Options{clock: clk, Observer: rec})
	ctx := t.Context()
	get := func(sub SubjectToken) string {
		t.Helper()
		c, err := s.Credential(ctx, sub)
		if err != nil {
			t.Fatalf("Credential: %v", err)
		}
		return c.Value
	}
	alice := testSubject("token-a")

	steps := []struct {
		name      string
		do        func() string
		want      string
		wantCalls int64
	}{
		{"first request exchanges", func() string { return get(alice) }, "Bearer upstream-token-1", 1},
		{"second request is a hit", func() string { return get(alice) }, "Bearer upstream-token-1", 1},
		// expires_in 300: margin min(30s, 1m) = 30s; served until 270s.
		{"still valid at 269s", func() string { clk.Advance(269 * time.Second); return get(alice) }, "Bearer upstream-token-1", 1},
		{"expired at 270s", func() string { clk.Advance(time.Second); return get(alice) }, "Bearer upstream-token-2", 2},
		{"other token of the same user exchanges", func() string { return get(testSubject("token-a2")) }, "Bearer upstream-token-3", 3},
		{"narrower scopes exchange", func() string {
			sub := alice
			sub.Scopes = []string{"repo:read"}
			return get(sub)
		}, "Bearer upstream-token-4", 4},
		// Size 2: the full-scope entry of token-a was used least recently
		// and was evicted by the narrower one.
		{"evicted entry exchanges again", func() string { return get(alice) }, "Bearer upstream-token-5", 5},
		// ... which in turn evicted token-a2's; the narrower entry survived.
		{"the entry used more recently survived", func() string {
			sub := alice
			sub.Scopes = []string{"repo:read"}
			return get(sub)
		}, "Bearer upstream-token-4", 5},
	}
	for _, st := range steps {
		if got := st.do(); got != st.want {
			t.Errorf("%s: value %q, want %q", st.name, got, st.want)
		}
		if got := as.calls.Load(); got != st.wantCalls {
			t.Errorf("%s: %d exchanges, want %d", st.name, got, st.wantCalls)
		}
	}
	if hits, misses, ev := rec.cacheCount(CacheHit), rec.cacheCount(CacheMiss), rec.cacheCount(CacheEviction); hits != 3 || misses != 5 || ev != 2 {
		t.Errorf("cache events hit=%d miss=%d eviction=%d, want 3, 5, 2", hits, misses, ev)
	}
	if got := rec.fetches[ResultOK]; got != 5 {
		t.Errorf("ok fetches %d, want 5", got)
	}
}

// TestTokenExchangeCacheBytes: the cache holds no more than cache_bytes of
// tokens, the least recently used going first, each counted as an
// eviction; what it counts is what it holds.
func TestTokenExchangeCacheBytes(t *testing.T) {
	as := newFakeAS(t, false, nil)
	rec := newRecorder()
	cfg := baseExchangeConfig(t, as)
	cfg.CacheBytes = 65536
	s := mustExchange(t, cfg, Options{clock: newFakeClock(), Observer: rec})
	const n = 400
	for i := range n {
		if _, err := s.Credential(t.Context(), testSubject(fmt.Sprintf("token-%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var held int64
	for _, k := range s.cache.Keys() {
		e, _ := s.cache.Peek(k)
		held += entryBytes(e)
	}
	kept := s.cache.Len()
	if got := s.cacheBytes.Load(); got != held || got > 65536 || kept == n || kept < n/2 {
		t.Errorf("counted %d bytes, holds %d in %d of %d entries: want equal, at most 65536, and some but not all kept", got, held, kept, n)
	}
	if ev := rec.cacheCount(CacheEviction); ev != n-kept {
		t.Errorf("%d evictions, want %d", ev, n-kept)
	}
	// The most recent token is still there; the first one went first.
	if _, ok := s.cache.Peek(keyOf(s, fmt.Sprintf("token-%03d", n-1))); !ok {
		t.Error("the most recent exchange was evicted")
	}
	if _, ok := s.cache.Peek(keyOf(s, "token-000")); ok {
		t.Error("the least recently used exchange was kept")
	}
	cfg.CacheBytes = 100
	if _, err := NewTokenExchange(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "cache_bytes must be 0 (default 4194304) or from 65536") {
		t.Errorf("cache_bytes 100: %v", err)
	}
}

// TestTokenExchangeCacheBounds checks what the cache lifetime is bounded
// by: the subject token's exp, and a missing or zero expires_in.
func TestTokenExchangeCacheBounds(t *testing.T) {
	tests := []struct {
		name    string
		reply   string
		expiry  time.Duration // of the subject token, from now
		advance time.Duration
		cached  bool
	}{
		{"subject exp before expires_in", `{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`, 10 * time.Second, 10 * time.Second, false},
		{"subject exp bound, before it", `{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`, 10 * time.Second, 9 * time.Second, true},
		{"long lifetime margin capped at a minute", `{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`, 2 * time.Hour, 3539 * time.Second, true},
		{"long lifetime margin capped at a minute, past it", `{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`, 2 * time.Hour, 3540 * time.Second, false},
		{"no expires_in is not cached", `{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer"}`, time.Hour, 0, false},
		{"expires_in 0 is not cached", `{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":0}`, time.Hour, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			as := newFakeAS(t, false, func(as *fakeAS) {
				as.reply = func(int64, url.Values) (int, string, string) { return 200, "application/json", tt.reply }
			})
			s := mustExchange(t, baseExchangeConfig(t, as), Options{clock: clk})
			sub := testSubject("tok")
			sub.Expiry = clk.Now().Add(tt.expiry)
			for range 2 {
				if _, err := s.Credential(t.Context(), sub); err != nil {
					t.Fatalf("Credential: %v", err)
				}
				clk.Advance(tt.advance)
			}
			want := int64(2)
			if tt.cached {
				want = 1
			}
			if got := as.calls.Load(); got != want {
				t.Errorf("%d exchanges, want %d", got, want)
			}
		})
	}
}

// TestTokenExchangeSingleFlight: concurrent misses for one key make one
// exchange; different subjects make one each.
func TestTokenExchangeSingleFlight(t *testing.T) {
	as := newFakeAS(t, false, func(as *fakeAS) { as.gate = make(chan struct{}) })
	as.reply = func(n int64, form url.Values) (int, string, string) {
		return 200, "application/json", fmt.Sprintf(`{"access_token":"for-%s","issued_token_type":%q,"token_type":"Bearer","expires_in":300}`, form.Get("subject_token"), TokenTypeAccessToken)
	}
	s := mustExchange(t, baseExchangeConfig(t, as), Options{clock: newFakeClock()})

	const subjects, perSubject = 5, 50
	var wg sync.WaitGroup
	errs := make(chan error, subjects*perSubject)
	for i := range subjects {
		for range perSubject {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok := fmt.Sprintf("token-%d", i)
				c, err := s.Credential(context.Background(), testSubject(tok))
				switch {
				case err != nil:
					errs <- err
				case c.Value != "Bearer for-"+tok:
					errs <- fmt.Errorf("subject %s got %q", tok, c.Value)
				}
			}()
		}
	}
	// Every flight has started (and blocks in the gate) before it opens.
	deadline := time.Now().Add(5 * time.Second)
	for as.calls.Load() < subjects && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(as.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := as.calls.Load(); got != subjects {
		t.Errorf("%d exchanges for %d subjects × %d callers, want %d", got, subjects, perSubject, subjects)
	}
}

// TestTokenExchangeWaiterContext: a request whose context ends stops
// waiting (timeout) without cancelling the exchange, whose result is
// cached for the next request.
func TestTokenExchangeWaiterContext(t *testing.T) {
	gate := make(chan struct{})
	as := newFakeAS(t, false, func(as *fakeAS) { as.gate = gate })
	s := mustExchange(t, baseExchangeConfig(t, as), Options{clock: newFakeClock()})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := s.Credential(ctx, testSubject("tok"))
	if r := ReasonOf(err); r != ReasonTimeout || !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Credential with an ended context: reason %q, err %v; want timeout wrapping ErrUnavailable and DeadlineExceeded", r, err)
	}
	canceled, cancel2 := context.WithCancel(t.Context())
	cancel2()
	if _, err := s.Credential(canceled, testSubject("tok")); ReasonOf(err) != ReasonCanceled {
		t.Fatalf("Credential with a cancelled context: %v, want canceled", err)
	}
	close(gate)
	got, err := s.Credential(t.Context(), testSubject("tok"))
	if err != nil || got.Value != "Bearer upstream-token-1" {
		t.Fatalf("Credential after the exchange = %q, %v; want the first exchange's token", got.Value, err)
	}
	if n := as.calls.Load(); n != 1 {
		t.Errorf("%d exchanges, want 1", n)
	}
}

// TestTokenExchangeFailures maps every failure of the token endpoint to its
// reason; none is cached.
func TestTokenExchangeFailures(t *testing.T) {
	okBody := func(extra string) string {
		return `{"access_token":"t","token_type":"Bearer","expires_in":300` + extra + `}`
	}
	itt := `,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"`
	tests := []struct {
		name       string
		status     int
		ctype      string
		body       string
		slow       bool
		wantReason Reason
		wantCode   string
		wantStatus int
		wantInMsg  string
	}{
		{name: "400 invalid_grant", status: 400, ctype: "application/json", body: `{"error":"invalid_grant","error_description":"subject token expired"}`, wantReason: ReasonRejected, wantCode: "invalid_grant", wantStatus: 400, wantInMsg: "invalid_grant: subject token expired"},
		{name: "401 invalid_client", status: 401, ctype: "application/json", body: `{"error":"invalid_client"}`, wantReason: ReasonRejected, wantCode: "invalid_client", wantStatus: 401},
		{name: "400 invalid_target", status: 400, ctype: "application/json", body: `{"error":"invalid_target"}`, wantReason: ReasonRejected, wantCode: "invalid_target", wantStatus: 400},
		{name: "400 unknown code", status: 400, ctype: "application/json", body: `{"error":"vendor_specific"}`, wantReason: ReasonRejected, wantCode: "other", wantStatus: 400, wantInMsg: "vendor_specific"},
		{name: "400 without error object", status: 400, ctype: "text/html", body: `<html>bad</html>`, wantReason: ReasonBadStatus, wantStatus: 400},
		{name: "400 error not a string", status: 400, ctype: "application/json", body: `{"error":42}`, wantReason: ReasonBadStatus, wantStatus: 400},
		{name: "500", status: 500, ctype: "application/json", body: `{"error":"server_error"}`, wantReason: ReasonBadStatus, wantStatus: 500},
		{name: "503", status: 503, body: ``, wantReason: ReasonBadStatus, wantStatus: 503},
		{name: "302 not followed", status: 302, body: ``, wantReason: ReasonBadStatus, wantStatus: 302, wantInMsg: "redirects are not followed"},
		{name: "malformed JSON", status: 200, ctype: "application/json", body: `{"access_token":`, wantReason: ReasonInvalidResponse},
		{name: "not an object", status: 200, ctype: "application/json", body: `["t"]`, wantReason: ReasonInvalidResponse},
		{name: "duplicate member", status: 200, ctype: "application/json", body: `{"access_token":"t","access_token":"u","token_type":"Bearer"` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "invalid UTF-8", status: 200, ctype: "application/json", body: "{\"access_token\":\"t\xff\",\"token_type\":\"Bearer\"" + itt + "}", wantReason: ReasonInvalidResponse},
		{name: "missing access_token", status: 200, ctype: "application/json", body: `{"token_type":"Bearer"` + itt + `}`, wantReason: ReasonInvalidResponse, wantInMsg: "access_token missing"},
		{name: "empty access_token", status: 200, ctype: "application/json", body: `{"access_token":"","token_type":"Bearer"` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "access_token not a string", status: 200, ctype: "application/json", body: `{"access_token":7,"token_type":"Bearer"` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "access_token with CRLF", status: 200, ctype: "application/json", body: `{"access_token":"t\r\nx-injected: 1","token_type":"Bearer"` + itt + `}`, wantReason: ReasonInvalidResponse, wantInMsg: "cannot go into the header"},
		{name: "wrong issued_token_type", status: 200, ctype: "application/json", body: okBody(`,"issued_token_type":"urn:ietf:params:oauth:token-type:id_token"`), wantReason: ReasonInvalidResponse, wantInMsg: "issued_token_type"},
		{name: "missing issued_token_type", status: 200, ctype: "application/json", body: okBody(""), wantReason: ReasonInvalidResponse, wantInMsg: "issued_token_type missing"},
		{name: "missing token_type", status: 200, ctype: "application/json", body: `{"access_token":"t"` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "token_type DPoP", status: 200, ctype: "application/json", body: `{"access_token":"t","token_type":"DPoP"` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "token_type N_A with Bearer header", status: 200, ctype: "application/json", body: `{"access_token":"t","token_type":"N_A"` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "expires_in string", status: 200, ctype: "application/json", body: `{"access_token":"t","token_type":"Bearer","expires_in":"300"` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "expires_in negative", status: 200, ctype: "application/json", body: `{"access_token":"t","token_type":"Bearer","expires_in":-1` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "expires_in fraction", status: 200, ctype: "application/json", body: `{"access_token":"t","token_type":"Bearer","expires_in":1.5` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "scope not a string", status: 200, ctype: "application/json", body: `{"access_token":"t","token_type":"Bearer","scope":["a"]` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "content type not JSON", status: 200, ctype: "text/plain", body: okBody(itt), wantReason: ReasonInvalidResponse, wantInMsg: "content type"},
		{name: "body over 1 MiB", status: 200, ctype: "application/json", body: `{"access_token":"` + strings.Repeat("a", maxResponseBody) + `"}`, wantReason: ReasonInvalidResponse},
		{name: "access_token over 32 KiB", status: 200, ctype: "application/json", body: `{"access_token":"` + strings.Repeat("a", maxAccessToken+1) + `","token_type":"Bearer"` + itt + `}`, wantReason: ReasonInvalidResponse},
		{name: "slow endpoint", status: 200, ctype: "application/json", body: okBody(itt), slow: true, wantReason: ReasonTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			as := newFakeAS(t, false, func(as *fakeAS) {
				as.reply = func(int64, url.Values) (int, string, string) {
					if tt.slow {
						<-release
					}
					return tt.status, tt.ctype, tt.body
				}
			})
			defer close(release)
			rec := newRecorder()
			cfg := baseExchangeConfig(t, as)
			cfg.Timeout = 5 * time.Second
			if tt.slow {
				cfg.Timeout = 50 * time.Millisecond
			}
			s := mustExchange(t, cfg, Options{clock: newFakeClock(), Observer: rec})
			for i := range 2 {
				_, err := s.Credential(t.Context(), testSubject(testSubjectToken))
				var e *Error
				if !errors.As(err, &e) || !errors.Is(err, ErrUnavailable) {
					t.Fatalf("Credential error %v, want an *Error wrapping ErrUnavailable", err)
				}
				if e.Reason != tt.wantReason || e.Code != tt.wantCode || e.Status != tt.wantStatus || e.Source != "github" {
					t.Errorf("Credential error = {%s %s %q %d}, want {github %s %q %d} (%v)", e.Source, e.Reason, e.Code, e.Status, tt.wantReason, tt.wantCode, tt.wantStatus, err)
				}
				if !strings.Contains(err.Error(), tt.wantInMsg) {
					t.Errorf("error %q does not say %q", err, tt.wantInMsg)
				}
				if l := leaked(err.Error(), testSubjectToken, testClientSecret); l != "" {
					t.Errorf("error %q leaks %q", err, l)
				}
				if got := as.calls.Load(); got != int64(i+1) {
					t.Errorf("after request %d: %d exchanges, want %d (failures are not cached)", i+1, got, i+1)
				}
			}
			if got := rec.fetches[string(tt.wantReason)]; got != 2 {
				t.Errorf("ObserveFetch(%s) called %d times, want 2", tt.wantReason, got)
			}
		})
	}
}

// TestTokenExchangeUnreachable: a token endpoint that refuses connections.
func TestTokenExchangeUnreachable(t *testing.T) {
	as := newFakeAS(t, false, nil)
	cfg := baseExchangeConfig(t, as)
	as.srv.Close()
	s := mustExchange(t, cfg, Options{clock: newFakeClock()})
	_, err := s.Credential(t.Context(), testSubject(testSubjectToken))
	if ReasonOf(err) != ReasonUnreachable {
		t.Fatalf("Credential: %v, want reason unreachable", err)
	}
	if !strings.Contains(err.Error(), as.tokenURL()) {
		t.Errorf("error %q does not name the endpoint", err)
	}
}

// TestTokenExchangeTLS: the token endpoint's certificate must be trusted
// (ca_file), and an unverified one is unreachable.
func TestTokenExchangeTLS(t *testing.T) {
	as := newFakeAS(t, true, nil)
	cfg := baseExchangeConfig(t, as)
	s := mustExchange(t, cfg, Options{clock: newFakeClock()})
	if _, err := s.Credential(t.Context(), testSubject("tok")); ReasonOf(err) != ReasonUnreachable || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Credential against an untrusted certificate: %v, want unreachable (certificate)", err)
	}
}

// TestTokenExchangeOverloaded: beyond max_concurrent flights, requests fail
// at once.
func TestTokenExchangeOverloaded(t *testing.T) {
	gate := make(chan struct{})
	as := newFakeAS(t, false, func(as *fakeAS) { as.gate = gate })
	cfg := baseExchangeConfig(t, as)
	cfg.MaxConcurrent = 1
	s := mustExchange(t, cfg, Options{clock: newFakeClock()})
	done := make(chan error, 1)
	go func() {
		_, err := s.Credential(context.Background(), testSubject("first"))
		done <- err
	}()
	for as.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Credential(t.Context(), testSubject("second")); ReasonOf(err) != ReasonOverloaded {
		t.Errorf("second subject while one flight is running: %v, want overloaded", err)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Errorf("first subject: %v", err)
	}
}

// TestTokenExchangeDiscovery finds the token endpoint in the issuer's
// metadata (RFC 8414 path insertion) and refuses metadata of another
// issuer.
func TestTokenExchangeDiscovery(t *testing.T) {
	tests := []struct {
		name       string
		metadata   func(as *fakeAS) string
		wantReason Reason
	}{
		{"RFC 8414 metadata", func(as *fakeAS) string {
			return fmt.Sprintf(`{"issuer":%q,"token_endpoint":%q}`, as.issuer+"/realms/mcp", as.tokenURL())
		}, ""},
		{"issuer mismatch", func(as *fakeAS) string {
			return fmt.Sprintf(`{"issuer":"https://evil.example","token_endpoint":%q}`, as.tokenURL())
		}, ReasonDiscoveryFailed},
		{"no token_endpoint", func(as *fakeAS) string {
			return fmt.Sprintf(`{"issuer":%q}`, as.issuer+"/realms/mcp")
		}, ReasonDiscoveryFailed},
		{"token_endpoint over http to a remote host", func(as *fakeAS) string {
			return fmt.Sprintf(`{"issuer":%q,"token_endpoint":"http://idp.example.com/token"}`, as.issuer+"/realms/mcp")
		}, ReasonDiscoveryFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as := newFakeAS(t, false, nil)
			as.metadata = tt.metadata(as)
			cfg := baseExchangeConfig(t, as)
			cfg.TokenEndpoint, cfg.Issuer = "", as.issuer+"/realms/mcp"
			s := mustExchange(t, cfg, Options{clock: newFakeClock()})
			_, err := s.Credential(t.Context(), testSubject("tok"))
			if got := ReasonOf(err); got != tt.wantReason {
				t.Fatalf("Credential: %v, want reason %q", err, tt.wantReason)
			}
		})
	}
}

// TestTokenExchangeScopeChoice: a policy may narrow the scopes; it may not
// widen them or ask for none.
func TestTokenExchangeScopeChoice(t *testing.T) {
	as := newFakeAS(t, false, nil)
	var mu sync.Mutex
	var scopes []string
	as.reply = func(n int64, form url.Values) (int, string, string) {
		mu.Lock()
		scopes = append(scopes, form.Get("scope"))
		mu.Unlock()
		return 200, "application/json", fmt.Sprintf(`{"access_token":"t%d","issued_token_type":%q,"token_type":"Bearer","expires_in":300}`, n, TokenTypeAccessToken)
	}
	s := mustExchange(t, baseExchangeConfig(t, as), Options{clock: newFakeClock()})
	tests := []struct {
		name       string
		scopes     []string
		wantScope  string
		wantReason Reason
	}{
		{"configured", nil, "repo:read repo:write", ""},
		{"narrowed", []string{"repo:write"}, "repo:write", ""},
		{"reordered is the configured order", []string{"repo:write", "repo:read"}, "repo:read repo:write", ""},
		{"unknown scope", []string{"admin"}, "", ReasonScopeNotAllowed},
		{"none", []string{}, "", ReasonScopeNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := testSubject("tok-" + tt.name)
			sub.Scopes = tt.scopes
			_, err := s.Credential(t.Context(), sub)
			if ReasonOf(err) != tt.wantReason {
				t.Fatalf("Credential(scopes %q): %v, want reason %q", tt.scopes, err, tt.wantReason)
			}
			if tt.wantReason != "" {
				return
			}
			mu.Lock()
			got := scopes[len(scopes)-1]
			mu.Unlock()
			if got != tt.wantScope {
				t.Errorf("scope sent %q, want %q", got, tt.wantScope)
			}
		})
	}
}

// TestTokenExchangeRawHeader puts the exchanged token into a custom header
// without scheme, and accepts token_type N_A for a non-access token there.
func TestTokenExchangeRawHeader(t *testing.T) {
	as := newFakeAS(t, false, func(as *fakeAS) {
		as.reply = func(int64, url.Values) (int, string, string) {
			return 200, "application/json", fmt.Sprintf(`{"access_token":"a.jwt.value","issued_token_type":%q,"token_type":"N_A","expires_in":60}`, TokenTypeJWT)
		}
	})
	cfg := baseExchangeConfig(t, as)
	cfg.Header, cfg.RequestedTokenType = "x-upstream-jwt", TokenTypeJWT
	s := mustExchange(t, cfg, Options{clock: newFakeClock()})
	got, err := s.Credential(t.Context(), testSubject("tok"))
	if err != nil || got != (Credential{Header: "x-upstream-jwt", Value: "a.jwt.value"}) {
		t.Fatalf("Credential = %#v (%q), %v", got, got.Value, err)
	}
}

// TestTokenExchangeClose: Close cancels flights in progress, and later
// requests fail with closed.
func TestTokenExchangeClose(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	as := newFakeAS(t, false, func(as *fakeAS) { as.gate = gate })
	s, err := NewTokenExchange(baseExchangeConfig(t, as), Options{clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	done := make(chan error, 1)
	go func() {
		_, err := s.Credential(context.Background(), testSubject("tok"))
		done <- err
	}()
	for as.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	s.Close()
	if err := <-done; ReasonOf(err) != ReasonClosed {
		t.Errorf("request in flight at Close: %v, want closed", err)
	}
	if _, err := s.Credential(t.Context(), testSubject("other")); ReasonOf(err) != ReasonClosed {
		t.Errorf("request after Close: %v, want closed", err)
	}
}

func TestTokenExchangeNoSubjectToken(t *testing.T) {
	as := newFakeAS(t, false, nil)
	s := mustExchange(t, baseExchangeConfig(t, as), Options{})
	if _, err := s.Credential(t.Context(), SubjectToken{Subject: "alice"}); ReasonOf(err) != ReasonNoSubjectToken {
		t.Errorf("Credential without a token: %v, want no_subject_token", err)
	}
	if as.calls.Load() != 0 {
		t.Error("the token endpoint was called without a subject token")
	}
}

// TestNewTokenExchangeErrors: configuration mistakes are refused with a
// specific message.
func TestNewTokenExchangeErrors(t *testing.T) {
	secret := secretFile(t)
	good := func() TokenExchangeConfig {
		return TokenExchangeConfig{Name: "x", TokenEndpoint: "https://idp.example.com/token", Client: ClientAuth{ID: "c", Method: AuthClientSecretBasic, SecretFile: secret}}
	}
	tests := []struct {
		name   string
		modify func(*TokenExchangeConfig)
		want   string
	}{
		{"no name", func(c *TokenExchangeConfig) { c.Name = "" }, "name is required"},
		{"no endpoint", func(c *TokenExchangeConfig) { c.TokenEndpoint = "" }, "token_endpoint or issuer"},
		{"http endpoint", func(c *TokenExchangeConfig) { c.TokenEndpoint = "http://idp.example.com/token" }, "http is allowed only for loopback hosts"},
		{"user info in endpoint", func(c *TokenExchangeConfig) { c.TokenEndpoint = "https://u:p@idp.example.com/token" }, "user information"},
		{"unknown profile", func(c *TokenExchangeConfig) { c.Profile = "magic" }, `unknown profile "magic"`},
		{"entra with audience", func(c *TokenExchangeConfig) {
			c.Profile, c.Audiences, c.Scopes = ProfileEntraOBO, []string{"a"}, []string{"api://x/.default"}
		}, "takes no audience"},
		{"entra without scope", func(c *TokenExchangeConfig) { c.Profile = ProfileEntraOBO }, "requires scope"},
		{"relative resource", func(c *TokenExchangeConfig) { c.Resources = []string{"/api"} }, "not an absolute URI"},
		{"bad scope", func(c *TokenExchangeConfig) { c.Scopes = []string{"a b"} }, "not an RFC 6749 scope token"},
		{"duplicate scope", func(c *TokenExchangeConfig) { c.Scopes = []string{"a", "a"} }, "listed twice"},
		{"bad header", func(c *TokenExchangeConfig) { c.Header = "Host" }, "not a lowercase HTTP header name"},
		{"forbidden header", func(c *TokenExchangeConfig) { c.Header = "host" }, "may not carry"},
		{"envoy header", func(c *TokenExchangeConfig) { c.Header = "x-envoy-original-path" }, "belong to Envoy"},
		{"relative token type", func(c *TokenExchangeConfig) { c.RequestedTokenType = "access_token" }, "not an absolute URI"},
		{"no client auth", func(c *TokenExchangeConfig) { c.Client.Method = "" }, "auth is required"},
		{"unknown client auth", func(c *TokenExchangeConfig) { c.Client.Method = "client_secret_jwt" }, `unknown auth "client_secret_jwt"`},
		{"no client id", func(c *TokenExchangeConfig) { c.Client.ID = "" }, "id is required"},
		{"missing secret file", func(c *TokenExchangeConfig) { c.Client.SecretFile = "/nonexistent/secret" }, "secret_file"},
		{"key for secret auth", func(c *TokenExchangeConfig) { c.Client.PrivateKeyFile = "/k" }, "private_key_file is not used"},
		{"private_key_jwt without key", func(c *TokenExchangeConfig) {
			c.Client = ClientAuth{ID: "c", Method: AuthPrivateKeyJWT}
		}, "private_key_file is required"},
		{"mtls without cert", func(c *TokenExchangeConfig) {
			c.Client = ClientAuth{ID: "c", Method: AuthTLSClientAuth}
		}, "tls_cert_file and tls_key_file are required"},
		{"negative timeout", func(c *TokenExchangeConfig) { c.Timeout = -time.Second }, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.modify(&cfg)
			s, err := NewTokenExchange(cfg, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("NewTokenExchange succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewTokenExchange error %q, want it to contain %q", err, tt.want)
			}
		})
	}
	if s, err := NewTokenExchange(good(), Options{HTTPClient: &http.Client{Transport: roundTripperFunc(nil)}}); err == nil {
		s.Close()
		t.Error("NewTokenExchange accepted an HTTP client whose transport is not an *http.Transport")
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// keyOf is the cache key of the subject token tok with all of s's scopes.
func keyOf(s *TokenExchange, tok string) cacheKey {
	sub := testSubject(tok)
	return s.key(&sub, s.allMask)
}
