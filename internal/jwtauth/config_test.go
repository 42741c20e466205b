package jwtauth

import (
	"strings"
	"testing"
	"time"
)

func TestNewVerifierRejectsBadConfig(t *testing.T) {
	jwks := writeFile(t, "jwks.json", mainJWKS(t))
	octOnly := writeFile(t, "oct.json", jwksJSON(map[string]any{"kty": "oct", "k": "c2VjcmV0"}))
	secret := writeFile(t, "secret", hmacSecret)
	short := writeFile(t, "short", []byte("too-short-secret\n"))
	secret40 := writeFile(t, "secret40", []byte(strings.Repeat("x", 40)))
	ok := Issuer{Issuer: testIss, JWKSFile: jwks}
	with := func(f func(*Issuer)) []Issuer {
		c := ok
		f(&c)
		return []Issuer{c}
	}
	tests := []struct {
		name     string
		issuers  []Issuer
		audience string
		want     string
	}{
		{"no-issuers", nil, testAud, "issuers: at least one trusted issuer is required"},
		{"empty-issuer", with(func(c *Issuer) { c.Issuer = "" }), testAud, "issuers[0].issuer: required"},
		{"two-tenant-placeholders", with(func(c *Issuer) { c.Issuer = "https://x/{tenantid}/{tenantid}" }), testAud, "issuers[0].issuer: {tenantid} may appear at most once"},
		{"introspection-without-client", with(func(c *Issuer) { c.Introspection = &Introspection{Endpoint: "https://x"} }), testAud, "issuers[0].introspection.client_id: required"},
		{"negative-leeway", with(func(c *Issuer) { c.Leeway = time.Duration(-time.Second) }), testAud, "issuers[0].leeway: must not be negative"},
		{"max-refresh-below-min", with(func(c *Issuer) {
			c.JWKS.MinRefresh = time.Duration(time.Hour)
			c.JWKS.MaxRefresh = time.Duration(time.Minute)
		}), testAud, "issuers[0].jwks.max_refresh: must not be less than min_refresh (1h0m0s)"},
		{"token-type", with(func(c *Issuer) { c.TokenType = "jwt" }), testAud, `issuers[0].token_type: "jwt" is not one of`},
		{"unknown-alg", with(func(c *Issuer) { c.Algorithms = []string{"RS256", "XS256"} }), testAud, `issuers[0].algorithms[1]: "XS256" is not one of`},
		{"alg-none", with(func(c *Issuer) { c.Algorithms = []string{"none"} }), testAud, `issuers[0].algorithms[0]: "none" is never accepted`},
		{"alg-lower-case", with(func(c *Issuer) { c.Algorithms = []string{"rs256"} }), testAud, `issuers[0].algorithms[0]: "rs256" is not one of`},
		{"hs256-without-secret", with(func(c *Issuer) { c.Algorithms = []string{"HS256"} }), testAud, "issuers[0].algorithms[0]: HS256 requires hmac_secret_file"},
		{"short-secret", with(func(c *Issuer) { c.HMACSecretFile = short }), testAud, "issuers[0].hmac_secret_file: the secret is shorter than 32 bytes"},
		{"hs512-with-40-byte-secret", with(func(c *Issuer) {
			c.HMACSecretFile = secret40
			c.Algorithms = []string{"HS512"}
		}), testAud, "issuers[0].algorithms[0]: HS512 requires a secret of at least 64 bytes"},
		{"missing-secret-file", with(func(c *Issuer) { c.HMACSecretFile = "/nonexistent/secret" }), testAud, `issuers[0].hmac_secret_file: cannot read "/nonexistent/secret"`},
		{"jwks-uri-http", with(func(c *Issuer) { c.JWKSFile = ""; c.JWKSURI = "http://idp.example.com/keys" }), testAud, "issuers[0].jwks_uri: \"http://idp.example.com/keys\" must use https"},
		{"jwks-uri-and-file", with(func(c *Issuer) { c.JWKSURI = "https://idp.example.com/keys" }), testAud, "issuers[0].jwks_file: set either jwks_uri or jwks_file, not both"},
		{"pattern-without-keys", with(func(c *Issuer) { c.JWKSFile = ""; c.Issuer = issEntra }), testAud, "issuers[0].jwks_uri: required for an issuer with {tenantid}"},
		{"discovery-http-issuer", with(func(c *Issuer) { c.JWKSFile = ""; c.Issuer = "http://idp.example.com" }), testAud, "issuers[0].issuer: \"http://idp.example.com\" must use https"},
		{"no-audience", with(func(c *Issuer) {}), "", "issuers[0].audiences: at least one audience is required"},
		{"empty-audience", with(func(c *Issuer) { c.Audiences = []string{""} }), testAud, "issuers[0].audiences[0]: must not be empty"},
		{"negative-max-size", with(func(c *Issuer) { c.MaxTokenSize = -1 }), testAud, "issuers[0].max_token_size: must be between 256 and 1048576 bytes"},
		{"missing-jwks-file", with(func(c *Issuer) { c.JWKSFile = "/nonexistent/jwks.json" }), testAud, `issuers[0].jwks_file: cannot read "/nonexistent/jwks.json"`},
		{"jwks-file-without-usable-keys", with(func(c *Issuer) { c.JWKSFile = octOnly }), testAud, "issuers[0].jwks_file: " + octOnly + ": key set has no usable keys"},
		{"duplicate-issuer", []Issuer{ok, ok}, testAud, "issuers[1].issuer: duplicate of issuers[0]"},
		{"unknown-kid-wait-negative", with(func(c *Issuer) { c.JWKS.UnknownKIDWait = -time.Millisecond }), testAud, "issuers[0].jwks.unknown_kid_wait: must not be negative"},
		{"unknown-kid-wait-too-long", with(func(c *Issuer) { c.JWKS.UnknownKIDWait = time.Minute }), testAud, "issuers[0].jwks.unknown_kid_wait: must be at most 10s"},
		{"subject-opt-out-contradicts-required-claims", with(func(c *Issuer) {
			c.RequireSubject = new(false)
			c.RequiredClaims = []string{"jti", "sub"}
		}), testAud, "issuers[0].require_subject: is false, but required_claims lists sub"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(Options{Issuers: tt.issuers, DefaultAudience: tt.audience})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewVerifier = %v, %v; want an error containing %q", v, err, tt.want)
			}
		})
	}
	t.Run("all-problems-at-once", func(t *testing.T) {
		_, err := NewVerifier(Options{Issuers: with(func(c *Issuer) {
			c.TokenType = "x"
			c.Leeway = -1
			c.Algorithms = []string{"none"}
		}), DefaultAudience: testAud, TokenCacheSize: -2})
		for _, want := range []string{"issuers[0].token_type", "issuers[0].leeway", "issuers[0].algorithms[0]", "token_cache_size"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("NewVerifier = %v, want it to mention %q", err, want)
			}
		}
	})
	t.Run("hmac-only-issuer-is-ready", func(t *testing.T) {
		v := newTestVerifier(t, []Issuer{{Issuer: issHMAC, HMACSecretFile: secret}}, Options{})
		if !v.Ready() {
			t.Fatal("Ready() = false for an HMAC-only issuer")
		}
	})
}

func TestIssuerDefaults(t *testing.T) {
	jwks := writeFile(t, "jwks.json", mainJWKS(t))
	v := newTestVerifier(t, []Issuer{{Issuer: testIss, JWKSFile: jwks}}, Options{})
	is := v.issuers[0]
	if is.tenantClaim != "tid" || is.leeway != 60*time.Second || is.maxTokenSize != 16384 ||
		is.minRefresh != 5*time.Minute || is.maxRefresh != time.Hour || is.unknownKIDInterval != 10*time.Second ||
		is.fetchTimeout != 5*time.Second || is.requireATJWT || len(is.audiences) != 1 || is.audiences[0] != testAud ||
		len(is.scopeClaims) != 2 || is.unknownKIDWait != 100*time.Millisecond || !is.requireSubject {
		t.Fatalf("defaults not applied: %+v", is)
	}
	for _, a := range defaultAlgorithms {
		if !is.algs[a] {
			t.Errorf("default algorithm %s not allowed", a)
		}
	}
	for _, a := range []string{"HS256", "HS384", "HS512", "ES512", "none"} {
		if is.algs[a] {
			t.Errorf("algorithm %s allowed by default", a)
		}
	}
	if !v.Ready() {
		t.Fatal("Ready() = false with a static key set")
	}
	for _, tt := range []struct {
		set  *bool
		want bool
	}{{nil, true}, {new(true), true}, {new(false), false}} {
		v := newTestVerifier(t, []Issuer{{Issuer: testIss, JWKSFile: jwks, RequireSubject: tt.set}}, Options{})
		if got := v.issuers[0].requireSubject; got != tt.want {
			t.Errorf("RequireSubject %v: requireSubject = %v, want %v", tt.set, got, tt.want)
		}
	}
}

func TestPerIssuerTokenSize(t *testing.T) {
	jwks := writeFile(t, "jwks.json", mainJWKS(t))
	v := newTestVerifier(t, []Issuer{
		{Issuer: testIss, JWKSFile: jwks, MaxTokenSize: 1200},
		{Issuer: issAny, JWKSFile: jwks, MaxTokenSize: 20000},
	}, Options{})
	small := validToken(t)
	big := validToken(t, "pad", strings.Repeat("x", 1000))
	checkErr(t, "Verify(small token)", verifyTok(v, small), nil)
	checkErr(t, "Verify(token over its issuer's cap)", verifyTok(v, big), ErrTooLarge)
	bigAny := mint(t, hdrRS256, claimsJSON("iss", issAny, "pad", strings.Repeat("x", 12000)), "RS256", keys(t).rsa)
	checkErr(t, "Verify(large token of the issuer with the larger cap)", verifyTok(v, bigAny), nil)
	checkErr(t, "Verify(over every cap)", verifyTok(v, strings.Repeat("A", 20001)), ErrTooLarge)
}

func TestCustomLeewayAndAlgorithms(t *testing.T) {
	jwks := writeFile(t, "jwks.json", mainJWKS(t))
	v := newTestVerifier(t, []Issuer{{
		Issuer: testIss, JWKSFile: jwks, Leeway: time.Duration(time.Second), Algorithms: []string{"ES256"},
	}}, Options{})
	now := testNow.Unix()
	es := func(kv ...any) string {
		return mint(t, `{"alg":"ES256","kid":"e1"}`, claimsJSON(kv...), "ES256", keys(t).ec)
	}
	checkErr(t, "Verify(ES256)", verifyTok(v, es()), nil)
	checkErr(t, "Verify(RS256 not in the configured list)", verifyTok(v, validToken(t)), ErrAlgorithm)
	checkErr(t, "Verify(exp = now)", verifyTok(v, es("exp", now)), nil)
	checkErr(t, "Verify(exp = now - leeway)", verifyTok(v, es("exp", now-1)), ErrExpired)
	checkErr(t, "Verify(nbf = now + 2s)", verifyTok(v, es("nbf", now+2)), ErrNotYetValid)
}
