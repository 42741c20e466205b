package jwtauth

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/config"
)

func TestNewVerifierRejectsBadConfig(t *testing.T) {
	jwks := writeFile(t, "jwks.json", mainJWKS(t))
	octOnly := writeFile(t, "oct.json", jwksJSON(map[string]any{"kty": "oct", "k": "c2VjcmV0"}))
	secret := writeFile(t, "secret", hmacSecret)
	short := writeFile(t, "short", []byte("too-short-secret\n"))
	secret40 := writeFile(t, "secret40", []byte(strings.Repeat("x", 40)))
	ok := config.Issuer{Issuer: testIss, JWKSFile: jwks}
	with := func(f func(*config.Issuer)) []config.Issuer {
		c := ok
		f(&c)
		return []config.Issuer{c}
	}
	tests := []struct {
		name     string
		issuers  []config.Issuer
		audience string
		want     string
	}{
		{"no-issuers", nil, testAud, "no issuers"},
		{"empty-issuer", with(func(c *config.Issuer) { c.Issuer = "" }), testAud, "issuer is empty"},
		{"two-tenant-placeholders", with(func(c *config.Issuer) { c.Issuer = "https://x/{tenantid}/{tenantid}" }), testAud, "more than once"},
		{"introspection-without-client", with(func(c *config.Issuer) { c.Introspection = &config.Introspection{Endpoint: "https://x"} }), testAud, "client_id is empty"},
		{"negative-leeway", with(func(c *config.Issuer) { c.Leeway = config.Duration(-time.Second) }), testAud, "leeway must not be negative"},
		{"max-refresh-below-min", with(func(c *config.Issuer) {
			c.JWKS.MinRefresh = config.Duration(time.Hour)
			c.JWKS.MaxRefresh = config.Duration(time.Minute)
		}), testAud, "shorter than jwks.min_refresh"},
		{"token-type", with(func(c *config.Issuer) { c.TokenType = "jwt" }), testAud, "token_type"},
		{"unknown-alg", with(func(c *config.Issuer) { c.Algorithms = []string{"RS256", "XS256"} }), testAud, `"XS256" is not supported`},
		{"alg-none", with(func(c *config.Issuer) { c.Algorithms = []string{"none"} }), testAud, `"none" is not supported`},
		{"alg-lower-case", with(func(c *config.Issuer) { c.Algorithms = []string{"rs256"} }), testAud, `"rs256" is not supported`},
		{"hs256-without-secret", with(func(c *config.Issuer) { c.Algorithms = []string{"HS256"} }), testAud, "requires hmac_secret_file"},
		{"short-secret", with(func(c *config.Issuer) { c.HMACSecretFile = short }), testAud, "shorter than 32 bytes"},
		{"hs512-with-40-byte-secret", with(func(c *config.Issuer) {
			c.HMACSecretFile = secret40
			c.Algorithms = []string{"HS512"}
		}), testAud, "HS512 requires a secret of at least 64 bytes"},
		{"missing-secret-file", with(func(c *config.Issuer) { c.HMACSecretFile = "/nonexistent/secret" }), testAud, "hmac_secret_file"},
		{"jwks-uri-http", with(func(c *config.Issuer) { c.JWKSFile = ""; c.JWKSURI = "http://idp.example.com/keys" }), testAud, "http is only allowed for loopback"},
		{"jwks-uri-and-file", with(func(c *config.Issuer) { c.JWKSURI = "https://idp.example.com/keys" }), testAud, "mutually exclusive"},
		{"pattern-without-keys", with(func(c *config.Issuer) { c.JWKSFile = ""; c.Issuer = issEntra }), testAud, "needs jwks_uri or jwks_file"},
		{"discovery-http-issuer", with(func(c *config.Issuer) { c.JWKSFile = ""; c.Issuer = "http://idp.example.com" }), testAud, "used for metadata discovery"},
		{"no-audience", with(func(c *config.Issuer) {}), "", "no audience"},
		{"empty-audience", with(func(c *config.Issuer) { c.Audiences = []string{""} }), testAud, "empty string"},
		{"negative-max-size", with(func(c *config.Issuer) { c.MaxTokenSize = -1 }), testAud, "max_token_size"},
		{"missing-jwks-file", with(func(c *config.Issuer) { c.JWKSFile = "/nonexistent/jwks.json" }), testAud, "jwks_file"},
		{"jwks-file-without-usable-keys", with(func(c *config.Issuer) { c.JWKSFile = octOnly }), testAud, "no usable keys"},
		{"duplicate-issuer", []config.Issuer{ok, ok}, testAud, "configured twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(context.Background(), tt.issuers, tt.audience, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewVerifier = %v, %v; want an error containing %q", v, err, tt.want)
			}
		})
	}
	t.Run("all-problems-at-once", func(t *testing.T) {
		_, err := NewVerifier(context.Background(), with(func(c *config.Issuer) {
			c.TokenType = "x"
			c.Leeway = -1
			c.Algorithms = []string{"none"}
		}), testAud, Options{})
		for _, want := range []string{"token_type", "leeway", "none"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("NewVerifier = %v, want it to mention %q", err, want)
			}
		}
	})
	t.Run("hmac-only-issuer-is-ready", func(t *testing.T) {
		v := newTestVerifier(t, []config.Issuer{{Issuer: issHMAC, HMACSecretFile: secret}}, Options{})
		if !v.Ready() {
			t.Fatal("Ready() = false for an HMAC-only issuer")
		}
	})
}

func TestIssuerDefaults(t *testing.T) {
	jwks := writeFile(t, "jwks.json", mainJWKS(t))
	v := newTestVerifier(t, []config.Issuer{{Issuer: testIss, JWKSFile: jwks}}, Options{})
	is := v.issuers[0]
	if is.tenantClaim != "tid" || is.leeway != 60*time.Second || is.maxTokenSize != 16384 ||
		is.minRefresh != 5*time.Minute || is.maxRefresh != time.Hour || is.unknownKIDInterval != 10*time.Second ||
		is.fetchTimeout != 5*time.Second || is.requireATJWT || len(is.audiences) != 1 || is.audiences[0] != testAud ||
		len(is.scopeClaims) != 2 {
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
}

func TestPerIssuerTokenSize(t *testing.T) {
	jwks := writeFile(t, "jwks.json", mainJWKS(t))
	v := newTestVerifier(t, []config.Issuer{
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
	v := newTestVerifier(t, []config.Issuer{{
		Issuer: testIss, JWKSFile: jwks, Leeway: config.Duration(time.Second), Algorithms: []string{"ES256"},
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
