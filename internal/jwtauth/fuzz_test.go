package jwtauth

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/config"
)

// FuzzVerify runs Verify on arbitrary tokens against the static-key table
// verifier at the fixed clock testNow (no network, deterministic), seeded
// with every row of tables J and the IdP shapes. Invariant: an accepted
// token has no crit header, an alg allowed for its issuer, the typ its
// issuer requires, a configured iss, an accepted aud, and an unexpired exp.
func FuzzVerify(f *testing.F) {
	v := tableVerifier(f)
	for _, tc := range append(jRows(), idpRows()...) {
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

func BenchmarkVerify(b *testing.B) {
	k := keys(b)
	jwks := writeFile(b, "jwks.json", mainJWKS(b))
	v := newTestVerifier(b, []config.Issuer{{Issuer: testIss, JWKSFile: jwks, TokenType: "at+jwt"}}, Options{})
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
