package jwtauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// FuzzVerify runs Verify on arbitrary tokens against the static-key table
// verifier at the fixed clock testNow (no network, deterministic), seeded
// with every token of TestVerifyTable (the attack rows and the IdP shapes).
// Invariant: an accepted token has no crit header, an alg allowed for its
// issuer, the typ its issuer requires, a configured iss, an accepted aud,
// and an unexpired exp.
func FuzzVerify(f *testing.F) {
	v := tableVerifier(f)
	for _, tc := range append(tokenRows(), idpRows()...) {
		if s := tc.token(f); len(s) <= 20000 {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(context.Background(), token)
		if err != nil {
			if id != nil {
				t.Fatal("identity returned with an error")
			}
			if Reason(err) == "invalid_token" {
				t.Fatalf("error without a precise reason: %v", err)
			}
			return
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted a token with %d segments", len(parts))
		}
		hb, err := enc.DecodeString(parts[0])
		if err != nil {
			t.Fatalf("accepted a non-base64url header: %v", err)
		}
		var hdr map[string]any
		if err := json.Unmarshal(hb, &hdr); err != nil {
			t.Fatalf("accepted a non-JSON header: %v", err)
		}
		if _, ok := hdr["crit"]; ok {
			t.Fatal("accepted a token with crit")
		}
		is, tenant := v.selectIssuer(id.Issuer)
		if is == nil {
			t.Fatalf("accepted iss %q, which is not configured", id.Issuer)
		}
		alg, _ := hdr["alg"].(string)
		if !is.algs[alg] || alg == "none" {
			t.Fatalf("accepted alg %q for issuer %s", alg, is.name)
		}
		typ, _ := hdr["typ"].(string)
		if is.requireATJWT && !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
			t.Fatalf("accepted typ %q for an at+jwt issuer", typ)
		}
		if !slices.ContainsFunc(id.Audience, func(a string) bool { return slices.Contains(is.audiences, a) }) {
			t.Fatalf("accepted aud %q for issuer %s", id.Audience, is.name)
		}
		if id.Expiry+int64(is.leeway.Seconds()) <= testNow.Unix() {
			t.Fatalf("accepted exp %d at %d", id.Expiry, testNow.Unix())
		}
		if is.pattern && tenant == "" {
			t.Fatal("accepted a pattern issuer without a tenant")
		}
		var claims map[string]any
		if err := json.Unmarshal(id.Claims, &claims); err != nil {
			t.Fatalf("Claims are not a JSON object: %v", err)
		}
		if claims["iss"] != id.Issuer {
			t.Fatalf("Claims iss %v differs from Identity.Issuer %q", claims["iss"], id.Issuer)
		}
		if _, ok := claims["cnf"]; ok {
			t.Fatal("accepted a sender-constrained token")
		}
	})
}

// BenchmarkVerify measures full verifications (the cache is disabled; see
// BenchmarkVerifyCache for hits).
func BenchmarkVerify(b *testing.B) {
	k := keys(b)
	jwks := writeFile(b, "jwks.json", mainJWKS(b))
	v := newTestVerifier(b, []Issuer{{Issuer: testIss, JWKSFile: jwks, TokenType: "at+jwt"}}, Options{TokenCacheSize: -1})
	for _, bc := range []struct {
		name, hdr, alg string
		key            any
	}{
		{"RS256", hdrRS256, "RS256", k.rsa},
		{"ES256", `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, "ES256", k.ec},
		{"EdDSA", `{"alg":"EdDSA","kid":"ed1","typ":"at+jwt"}`, "EdDSA", k.ed},
	} {
		tok := mint(b, bc.hdr, claimsJSON(), bc.alg, bc.key)
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("reject-garbage", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			v.Verify(ctx, "eyJhbGciOiJSUzI1NiJ9.e30.AAAA")
		}
	})
}

// FuzzIntrospectionResponse checks introspection answers against an issuer
// with audiences [testAud], max_lifetime 24h and claim_scopes, at the fixed
// clock testNow, seeded with the answers of introRows.
// Invariants: no panic; a rejection has a precise reason and no identity;
// an accepted answer is a strict JSON object in which a lenient,
// last-wins parser (encoding/json v1) also sees exactly one active: true,
// the expected iss and aud (when present), an access token_type (when
// present), an unexpired exp within max_lifetime (when present), no cnf.
func FuzzIntrospectionResponse(f *testing.F) {
	for _, tc := range introRows() {
		if len(tc.answer.body) < 4096 {
			f.Add([]byte(tc.answer.body))
		}
	}
	f.Add([]byte(`{"active":true,"exp":1e308}`))
	f.Add([]byte(`{"active":true,"exp":-1}`))
	f.Add([]byte(`{"active":true,"exp":9223372036854775807}`))
	f.Add([]byte(`{"active":true,"ACTIVE":false,"Active":false}`))
	f.Add([]byte(`{"active":true,"aud":["` + testAud + `"],"aud":"x"}`))
	f.Add([]byte(`{"active":true,"permissions":["a b","c"],"scope":"d\te"}`))
	is, err := newIssuer(Issuer{
		Issuer: testIss, MaxLifetime: time.Duration(24 * time.Hour),
		ClaimScopes: map[string]string{"permissions": "perm:"},
		Introspection: &Introspection{
			Endpoint: "https://as.example.com/introspect", ClientID: "c", ClientSecretFile: writeFile(f, "s", []byte("secret")),
		},
	}, testAud)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		id, times, err := is.introspectionIdentity(body, testNow)
		if err != nil {
			if id != nil {
				t.Fatal("identity returned with an error")
			}
			if Reason(err) == "invalid_token" || errors.Is(err, ErrInvalidToken) == errors.Is(err, ErrKeysUnavailable) {
				t.Fatalf("error without a precise reason or of both kinds: %v (%s)", err, Reason(err))
			}
			return
		}
		// Numbers stay text (UseNumber): claims mcpauthz does not read
		// may hold numbers beyond float64, as in JWT payloads.
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatalf("accepted an answer encoding/json rejects: %v", err)
		}
		if m["active"] != true {
			t.Fatalf("accepted while a last-wins parser sees active = %v", m["active"])
		}
		if n := bytes.Count(body, []byte(`"active"`)); n < 1 {
			t.Fatal("accepted without an active member")
		}
		if iss, ok := m["iss"]; ok && iss != testIss {
			t.Fatalf("accepted iss %v", iss)
		}
		if aud, ok := m["aud"]; ok {
			switch a := aud.(type) {
			case string:
				if a != testAud {
					t.Fatalf("accepted aud %q", a)
				}
			case []any:
				if !slices.Contains(a, any(testAud)) {
					t.Fatalf("accepted aud %v", a)
				}
			default:
				t.Fatalf("accepted aud of type %T", aud)
			}
		}
		if tt, ok := m["token_type"]; ok {
			s, _ := tt.(string)
			if !strings.EqualFold(s, "bearer") && !strings.EqualFold(s, "access_token") {
				t.Fatalf("accepted token_type %v", tt)
			}
		}
		if _, ok := m["cnf"]; ok {
			t.Fatal("accepted a sender-constrained token")
		}
		if times.hasExp {
			if !testNow.Before(times.exp.Add(is.leeway)) {
				t.Fatalf("accepted exp %v at %v", times.exp, testNow)
			}
			if id.Expiry != times.exp.Unix() {
				t.Fatalf("Expiry %d, exp %v", id.Expiry, times.exp)
			}
			life := times.exp.Sub(testNow) - is.leeway
			if times.hasIat {
				life = times.exp.Sub(times.iat)
			}
			if life > is.maxLifetime {
				t.Fatalf("accepted a lifetime of %v", life)
			}
		} else if id.Expiry != 0 {
			t.Fatalf("Expiry %d without exp", id.Expiry)
		}
		if id.Issuer != testIss {
			t.Fatalf("Issuer = %q", id.Issuer)
		}
		for _, s := range id.Scopes {
			if !oauth.ValidScope(s) {
				t.Fatalf("scope %q is not a scope token", s)
			}
		}
		if _, err := decodeObject(id.Claims); err != nil {
			t.Fatalf("Claims are not a strict JSON object: %v", err)
		}
	})
}
