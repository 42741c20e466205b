package upstream

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func ccConfig(t testing.TB, as *fakeAS) ClientCredentialsConfig {
	return ClientCredentialsConfig{
		Name:          "internal-api",
		TokenEndpoint: as.tokenURL(),
		Scopes:        []string{"inventory.read", "inventory.write"},
		Audiences:     []string{"https://inventory.example.com"},
		Resources:     []string{"https://inventory.example.com/api"},
		Client:        ClientAuth{ID: testClientID, Method: AuthClientSecretBasic, SecretFile: secretFile(t)},
	}
}

func mustCC(t testing.TB, cfg ClientCredentialsConfig, opts Options) *ClientCredentials {
	t.Helper()
	s, err := NewClientCredentials(cfg, opts)
	if err != nil {
		t.Fatalf("NewClientCredentials: %v", err)
	}
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s
}

// ccReply answers with a token numbered by the request and a lifetime.
func ccReply(expiresIn int) func(n int64, _ url.Values) (int, string, string) {
	return func(n int64, _ url.Values) (int, string, string) {
		return 200, "application/json", fmt.Sprintf(`{"access_token":"cc-token-%d","token_type":"bearer","expires_in":%d}`, n, expiresIn)
	}
}

func ccValue(t *testing.T, s *ClientCredentials) (string, error) {
	t.Helper()
	c, err := s.Credential(t.Context(), SubjectToken{Token: testSubjectToken})
	return c.Value, err
}

// TestClientCredentialsRequest checks the exact request and the first
// token.
func TestClientCredentialsRequest(t *testing.T) {
	clk := newFakeClock()
	as := newFakeAS(t, false, func(as *fakeAS) { as.reply = ccReply(3600) })
	as.expect = asExpect{
		form: url.Values{
			"grant_type": {"client_credentials"},
			"scope":      {"inventory.read inventory.write"},
			"audience":   {"https://inventory.example.com"},
			"resource":   {"https://inventory.example.com/api"},
		},
		clientAuth: AuthClientSecretBasic, clientID: testClientID, secret: testClientSecret, now: clk.Now,
	}
	s := mustCC(t, ccConfig(t, as), Options{clock: clk})
	got, err := ccValue(t, s)
	if err != nil || got != "Bearer cc-token-1" {
		t.Fatalf("Credential = %q, %v; want Bearer cc-token-1", got, err)
	}
	// The subject token is not sent: the token is mcpauthz's own.
	if n := as.calls.Load(); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}

// TestClientCredentialsRefresh: the token is refreshed in the background
// at three quarters of its lifetime; requests get the current token at
// once, also while a refresh is in flight.
func TestClientCredentialsRefresh(t *testing.T) {
	clk := newFakeClock()
	var hold atomic.Pointer[chan struct{}]
	as := newFakeAS(t, false, func(as *fakeAS) {
		as.reply = func(n int64, f url.Values) (int, string, string) {
			if g := hold.Load(); g != nil {
				<-*g
			}
			return ccReply(100)(n, f)
		}
	})
	rec := newRecorder()
	s := mustCC(t, ccConfig(t, as), Options{clock: clk, Observer: rec})
	if got, err := ccValue(t, s); err != nil || got != "Bearer cc-token-1" {
		t.Fatalf("first Credential = %q, %v", got, err)
	}
	rec.nextFetch(t)
	clk.waitTimers(t, 1)

	// Hold the refresh in the token endpoint: requests must not wait.
	g := make(chan struct{})
	hold.Store(&g)
	clk.Advance(75 * time.Second)
	for as.calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if got, err := ccValue(t, s); err != nil || got != "Bearer cc-token-1" {
		t.Fatalf("Credential during the refresh = %q, %v; want the current token", got, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Credential waited %v for the refresh", d)
	}
	close(g)
	hold.Store(nil)
	if res := rec.nextFetch(t); res != ResultOK {
		t.Fatalf("refresh result %q", res)
	}
	if got, err := ccValue(t, s); err != nil || got != "Bearer cc-token-2" {
		t.Errorf("Credential after the refresh = %q, %v; want Bearer cc-token-2", got, err)
	}
}

// TestClientCredentialsRefreshFailure: a failing refresh keeps the token
// until it expires, then requests get the refresh's error; a later
// successful retry restores the credential.
func TestClientCredentialsRefreshFailure(t *testing.T) {
	clk := newFakeClock()
	var failing atomic.Bool
	as := newFakeAS(t, false, func(as *fakeAS) {
		as.reply = func(n int64, f url.Values) (int, string, string) {
			if failing.Load() {
				return 503, "text/plain", "maintenance"
			}
			return ccReply(100)(n, f)
		}
	})
	rec := newRecorder()
	logs := &logBuffer{}
	s := mustCC(t, ccConfig(t, as), Options{clock: clk, Observer: rec, Logger: newLogger(logs)})
	if _, err := ccValue(t, s); err != nil {
		t.Fatal(err)
	}
	rec.nextFetch(t)
	clk.waitTimers(t, 1)

	failing.Store(true)
	clk.Advance(75 * time.Second) // refresh at 75s fails
	if res := rec.nextFetch(t); res != string(ReasonBadStatus) {
		t.Fatalf("refresh result %q, want bad_status", res)
	}
	clk.waitTimers(t, 1)
	// Served until 100s - 10s = 90s.
	if got, err := ccValue(t, s); err != nil || got != "Bearer cc-token-1" {
		t.Fatalf("Credential before expiry with a failed refresh = %q, %v; want the old token", got, err)
	}
	clk.Advance(time.Second) // retry at 76s fails too
	rec.nextFetch(t)
	clk.waitTimers(t, 1)
	clk.Advance(14 * time.Second) // 90s: the retry due at 78s fails; the token is served until 90s only
	rec.nextFetch(t)
	clk.waitTimers(t, 1)
	_, err := ccValue(t, s)
	if ReasonOf(err) != ReasonBadStatus || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Credential after expiry: %v, want the refresh's bad_status error", err)
	}
	failing.Store(false)
	clk.Advance(time.Minute)
	if res := rec.nextFetch(t); res != ResultOK {
		t.Fatalf("retry result %q, want ok", res)
	}
	got, err := ccValue(t, s)
	if err != nil || !strings.HasPrefix(got, "Bearer cc-token-") || got == "Bearer cc-token-1" {
		t.Errorf("Credential after recovery = %q, %v; want a new token", got, err)
	}
	if !strings.Contains(logs.String(), "client_credentials token refresh failed") {
		t.Errorf("the refresh failure was not logged: %s", logs)
	}
}

// TestClientCredentialsFirstFetch: a request before the first token waits
// for the first attempt (within its context) and gets its error when it
// fails.
func TestClientCredentialsFirstFetch(t *testing.T) {
	t.Run("first attempt fails", func(t *testing.T) {
		as := newFakeAS(t, false, func(as *fakeAS) {
			as.reply = func(int64, url.Values) (int, string, string) {
				return 401, "application/json", `{"error":"invalid_client","error_description":"bad secret"}`
			}
		})
		s := mustCC(t, ccConfig(t, as), Options{clock: newFakeClock()})
		_, err := ccValue(t, s)
		if ReasonOf(err) != ReasonRejected || !strings.Contains(err.Error(), "invalid_client: bad secret") {
			t.Fatalf("Credential: %v, want rejected with the server's code and description", err)
		}
	})
	t.Run("request context ends first", func(t *testing.T) {
		gate := make(chan struct{})
		defer close(gate)
		as := newFakeAS(t, false, func(as *fakeAS) { as.gate = gate })
		s := mustCC(t, ccConfig(t, as), Options{clock: newFakeClock()})
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		if _, err := s.Credential(ctx, SubjectToken{}); ReasonOf(err) != ReasonTimeout {
			t.Errorf("Credential: %v, want timeout", err)
		}
		s.Close()
	})
}

// TestClientCredentialsScopes: one token serves all requests, so a policy
// cannot choose other scopes.
func TestClientCredentialsScopes(t *testing.T) {
	as := newFakeAS(t, false, func(as *fakeAS) { as.reply = ccReply(3600) })
	s := mustCC(t, ccConfig(t, as), Options{clock: newFakeClock()})
	tests := []struct {
		scopes []string
		want   Reason
	}{
		{nil, ""},
		{[]string{"inventory.write", "inventory.read"}, ""},
		{[]string{"inventory.read"}, ReasonScopeNotAllowed},
		{[]string{}, ReasonScopeNotAllowed},
	}
	for _, tt := range tests {
		if _, err := s.Credential(t.Context(), SubjectToken{Scopes: tt.scopes}); ReasonOf(err) != tt.want {
			t.Errorf("Credential(scopes %q): %v, want reason %q", tt.scopes, err, tt.want)
		}
	}
}

// TestClientCredentialsPrivateKeyJWT uses a fresh assertion per request.
func TestClientCredentialsPrivateKeyJWT(t *testing.T) {
	clk := newFakeClock()
	k := keys()
	as := newFakeAS(t, false, func(as *fakeAS) { as.reply = ccReply(40) })
	as.expect = asExpect{clientAuth: AuthPrivateKeyJWT, clientID: testClientID, assertKey: &k.ec.PublicKey, assertAlg: "ES256", now: clk.Now}
	cfg := ccConfig(t, as)
	cfg.Client = ClientAuth{ID: testClientID, Method: AuthPrivateKeyJWT, PrivateKeyFile: pemFile(t, k.ec, "EC PRIVATE KEY")}
	rec := newRecorder()
	mustCC(t, cfg, Options{clock: clk, Observer: rec})
	rec.nextFetch(t)
	clk.waitTimers(t, 1)
	clk.Advance(30 * time.Second)
	if res := rec.nextFetch(t); res != ResultOK {
		t.Fatalf("refresh: %s", res)
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if len(as.assertions) != 2 || as.assertions[0] == as.assertions[1] {
		t.Errorf("%d assertions, want 2 different ones", len(as.assertions))
	}
}

// TestClientCredentialsDiscovery discovers the token endpoint through
// OpenID Connect Discovery when RFC 8414 metadata is absent.
func TestClientCredentialsDiscovery(t *testing.T) {
	as := newFakeAS(t, false, func(as *fakeAS) { as.reply = ccReply(3600) })
	as.metadata = fmt.Sprintf(`{"issuer":%q,"token_endpoint":%q,"jwks_uri":"https://x/jwks"}`, as.issuer, as.tokenURL())
	cfg := ccConfig(t, as)
	cfg.TokenEndpoint, cfg.Issuer = "", as.issuer
	s := mustCC(t, cfg, Options{clock: newFakeClock()})
	if got, err := ccValue(t, s); err != nil || got != "Bearer cc-token-1" {
		t.Fatalf("Credential = %q, %v", got, err)
	}
}

// TestNothingContactedBeforeStart: building the sources (as validating a
// configuration does) contacts no server; Start does.
func TestNothingContactedBeforeStart(t *testing.T) {
	as := newFakeAS(t, false, func(as *fakeAS) { as.reply = ccReply(3600) })
	cc, err := NewClientCredentials(ccConfig(t, as), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	te, err := NewTokenExchange(baseExchangeConfig(t, as), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer te.Close()
	time.Sleep(50 * time.Millisecond)
	if n := as.calls.Load(); n != 0 {
		t.Fatalf("%d token endpoint requests before Start, want 0", n)
	}
	cc.Start()
	deadline := time.Now().Add(5 * time.Second)
	for as.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Start fetched no token")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
