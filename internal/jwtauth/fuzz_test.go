package jwtauth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
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
// an unexpired exp, and a sub that is the identity's subject (non-empty
// unless its issuer opts out).
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
		sub, isString := claims["sub"].(string)
		if _, present := claims["sub"]; present && !isString {
			t.Fatalf("accepted a sub that is not a string: %v", claims["sub"])
		}
		if sub != id.Subject {
			t.Fatalf("Identity.Subject %q differs from the claim %q", id.Subject, sub)
		}
		if is.requireSubject && id.Subject == "" {
			t.Fatalf("accepted a token without sub for issuer %s, which requires one", is.name)
		}
	})
}

// BenchmarkVerify measures each class of token a Verifier sees, one
// token per iteration:
//
//   - cached_valid: a token verified before (the verified-token cache);
//   - new_valid/ALG: a full verification (cache disabled);
//   - malformed: structurally invalid tokens, refused before any crypto;
//   - forged_known_kid: a real header and payload with a wrong signature
//     (the costly kind: a signature verification each), and _repeated:
//     the same forged token again (the negative cache);
//   - unknown_kid: a kid the remote set lacks, the refetch rate-limited.
//
// make bench runs it with -count 6; compare with benchstat.
func BenchmarkVerify(b *testing.B) {
	k := keys(b)
	ctx := context.Background()
	jwks := writeFile(b, "jwks.json", mainJWKS(b))
	issuer := []Issuer{{Issuer: testIss, JWKSFile: jwks, TokenType: "at+jwt"}}
	cold := newTestVerifier(b, issuer, Options{TokenCacheSize: -1})
	warm := newTestVerifier(b, issuer, Options{})
	run := func(name string, v *Verifier, toks []string, want error) {
		b.Run(name, func(b *testing.B) {
			for _, tok := range toks {
				_, err := v.Verify(ctx, tok)
				checkErr(b, "Verify", err, want)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				v.Verify(ctx, toks[i%len(toks)])
				i++
			}
		})
	}

	run("cached_valid", warm, []string{validToken(b)}, nil)
	for _, bc := range []struct {
		alg, hdr string
		key      any
	}{
		{"RS256", hdrRS256, k.rsa},
		{"ES256", `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, k.ec},
		{"EdDSA", `{"alg":"EdDSA","kid":"ed1","typ":"at+jwt"}`, k.ed},
	} {
		run("new_valid/"+bc.alg, cold, []string{mint(b, bc.hdr, claimsJSON(), bc.alg, bc.key)}, nil)
	}
	run("malformed", warm, []string{
		"eyJhbGciOiJSUzI1NiJ9.e30",             // two segments
		"eyJhbGciOiJSUzI1NiJ9.e30.AA+A",        // not base64url
		"bm90IGpzb24.eyJpc3MiOiJ4In0.AAAA",     // header not JSON
		"e30.eyJpc3MiOiJ4In0.AAAA",             // no alg
		strings.Repeat("A", 600) + ".e30.AAAA", // a long garbage header
		enc.EncodeToString([]byte(`{"alg":"RS256","kid":"k1","jku":"https://x"}`)) + ".e30.AAAA",
	}, ErrMalformed)
	forged := withSig(validToken(b), bytes.Repeat([]byte{0x5a}, 256))
	run("forged_known_kid", cold, []string{forged}, ErrBadSignature)
	run("forged_known_kid_repeated", warm, []string{forged}, ErrBadSignature)

	srv := newJWKSServer(b, mainJWKS(b))
	remote := newTestVerifier(b, []Issuer{{Issuer: testIss, JWKSURI: srv.URL, TokenType: "at+jwt"}}, Options{})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := remote.WaitReady(wctx); err != nil {
		b.Fatal(err)
	}
	unknown := make([]string, 64)
	for i := range unknown {
		unknown[i] = mint(b, fmt.Sprintf(`{"alg":"RS256","kid":"rand-%d","typ":"at+jwt"}`, i), claimsJSON(), "RS256", k.attacker)
	}
	run("unknown_kid", remote, unknown, ErrUnknownKey)
}

// FuzzIntrospectionResponse checks introspection answers against an issuer
// with audiences [testAud], max_lifetime 24h and claim_scopes, at the fixed
// clock testNow, seeded with the answers of introRows.
// Invariants: no panic; a rejection has a precise reason and no identity;
// an accepted answer is a strict JSON object in which a lenient,
// last-wins parser (encoding/json v1) also sees exactly one active: true,
// the expected iss and aud (when present), an access token_type (when
// present), an unexpired exp within max_lifetime (when present), no cnf,
// and a non-empty string sub that is the identity's subject.
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
		if sub, _ := m["sub"].(string); sub == "" || sub != id.Subject {
			t.Fatalf("accepted sub %v as subject %q (the issuer requires one)", m["sub"], id.Subject)
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

// BenchmarkVerifyKeySetSize verifies a new RS256 token (cache disabled)
// against a key set of 1 and of 50 keys (the others ES256, kids k2…k50):
// keys are looked up by kid in a map, so the cost must not grow with the
// set.
func BenchmarkVerifyKeySetSize(b *testing.B) {
	k := keys(b)
	tok := mint(b, hdrRS256, claimsJSON(), "RS256", k.rsa)
	for _, n := range []int{1, 50} {
		set := []map[string]any{jwkOf(k.rsa, "k1", "RS256")}
		for i := 2; i <= n; i++ {
			ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			set = append(set, jwkOf(ec, fmt.Sprintf("k%d", i), "ES256"))
		}
		jwks := writeFile(b, "jwks.json", jwksJSON(set...))
		v := newTestVerifier(b, []Issuer{{Issuer: testIss, JWKSFile: jwks, TokenType: "at+jwt"}}, Options{TokenCacheSize: -1})
		b.Run(fmt.Sprintf("keys%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(context.Background(), tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
