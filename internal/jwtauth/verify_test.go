package jwtauth

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwe"
)

// Issuers of the table verifier.
const (
	issB        = "https://other-idp.example.com"
	issAny      = "https://any.example.com"
	issSingle   = "https://single.example.com"
	issNoAlg    = "https://noalg.example.com"
	issHMAC     = "https://hmac.example.com"
	issStrict   = "https://strict.example.com"
	issOkta     = "https://dev-123456.okta.com/oauth2/default"
	issEntra    = "https://login.microsoftonline.com/{tenantid}/v2.0"
	issAuth0    = "https://tenant.eu.auth0.com/"
	issKeycloak = "https://kc.example.com/realms/mcp"
	issShort    = "https://short-lived.example.com"

	entraTenant = "9188040d-6c67-4c5b-b112-36a304b66dad"
	entraAppID  = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
)

var hmacSecret = []byte(strings.Repeat("0123456789abcdef", 4)) // 64 bytes: HS256..HS512

func entraIss(tenant string) string { return strings.Replace(issEntra, "{tenantid}", tenant, 1) }

// tableVerifier has one issuer per profile the J rows need; all use a
// static key set and the fixed clock testNow.
func tableVerifier(tb testing.TB) *Verifier {
	tb.Helper()
	k := keys(tb)
	fileA := writeFile(tb, "a.json", mainJWKS(tb))
	fileB := writeFile(tb, "b.json", jwksJSON(jwkOf(k.rsaB, "b1", "RS256")))
	fileSingle := writeFile(tb, "single.json", jwksJSON(jwkOf(k.rsa, "k1", "RS256")))
	fileNoAlg := writeFile(tb, "noalg.json", jwksJSON(jwkOf(k.rsa, "k1", ""), jwkOf(k.ec, "e1", "")))
	secret := writeFile(tb, "secret", append(slices.Clone(hmacSecret), '\n'))
	return newTestVerifier(tb, []Issuer{
		{Issuer: testIss, JWKSFile: fileA, TokenType: "at+jwt"},
		{Issuer: issB, JWKSFile: fileB},
		{Issuer: issAny, JWKSFile: fileA, TokenType: "any"},
		{Issuer: issSingle, JWKSFile: fileSingle},
		{Issuer: issNoAlg, JWKSFile: fileNoAlg},
		{Issuer: issHMAC, HMACSecretFile: secret},
		{Issuer: issStrict, JWKSFile: fileA, TokenType: "at+jwt", RequiredClaims: []string{"sub", "client_id", "jti", "iat"}},
		{Issuer: issOkta, JWKSFile: fileA, Audiences: []string{"api://default"}},
		{Issuer: issEntra, JWKSFile: fileA, Audiences: []string{entraAppID}, ClaimScopes: map[string]string{"roles": "role:"}},
		{Issuer: issAuth0, JWKSFile: fileA, ClaimScopes: map[string]string{"permissions": ""}},
		{Issuer: issKeycloak, JWKSFile: fileA},
		{Issuer: issShort, JWKSFile: fileA, MaxLifetime: time.Duration(24 * time.Hour)},
	}, Options{})
}

type verifyCase struct {
	name  string
	token func(t testing.TB) string
	want  error // nil: accepted
	check func(t *testing.T, id *Identity)
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// resign replaces the signature segment of tok.
func withSig(tok string, sig []byte) string {
	return tok[:strings.LastIndexByte(tok, '.')+1] + enc.EncodeToString(sig)
}

func sigOf(t testing.TB, tok string) []byte {
	b, err := enc.DecodeString(tok[strings.LastIndexByte(tok, '.')+1:])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantScopes(want ...string) func(t *testing.T, id *Identity) {
	return func(t *testing.T, id *Identity) {
		t.Helper()
		if !slices.Equal(id.Scopes, want) {
			t.Fatalf("Scopes = %q, want %q", id.Scopes, want)
		}
	}
}

// countingServer is an attacker endpoint; the test fails if it is hit.
func countingServer(t testing.TB) string {
	var hits atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(func() {
		s.Close()
		if n := hits.Load(); n != 0 {
			t.Errorf("attacker URL fetched %d times, want 0", n)
		}
	})
	return s.URL + "/jwks.json"
}

func hmacKeyVariants(t testing.TB) map[string][]byte {
	pub := &keys(t).rsa.PublicKey
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemPKIX := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})
	jwkJSON, _ := json.Marshal(jwkOf(keys(t).rsa, "k1", "RS256"))
	return map[string][]byte{
		"pkix-pem":            pemPKIX,
		"pkix-pem-no-newline": []byte(strings.TrimSuffix(string(pemPKIX), "\n")),
		"pkix-pem-crlf":       []byte(strings.ReplaceAll(string(pemPKIX), "\n", "\r\n")),
		"pkix-pem-spaces":     []byte("  " + string(pemPKIX) + "  \n"),
		"pkcs1-pem":           pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)}),
		"der":                 pkix,
		"jwk-json":            jwkJSON,
		"modulus":             pub.N.Bytes(), // J-08: what rsa_sign2n recovers
	}
}

func selfSignedX5C(t testing.TB, priv *rsa.PrivateKey) string {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idp.example.com"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

func nested(depth int) string {
	return strings.Repeat("[", depth) + strings.Repeat("]", depth)
}

// jRows are the rows of table J of security-cases.md.
func jRows() []verifyCase {
	now := testNow.Unix()
	var rows []verifyCase
	add := func(name string, want error, token func(t testing.TB) string, check ...func(*testing.T, *Identity)) {
		c := verifyCase{name: name, token: token, want: want}
		if len(check) > 0 {
			c.check = check[0]
		}
		rows = append(rows, c)
	}
	k := func(t testing.TB) *testKeys { return keys(t) }

	// J-01
	add("J-01/valid-rs256", nil, func(t testing.TB) string { return validToken(t) }, func(t *testing.T, id *Identity) {
		if id.Issuer != testIss || id.Subject != "alice" || id.ClientID != "client-1" || id.JTI != "jti-1" ||
			!slices.Equal(id.Audience, []string{testAud}) || id.Expiry != now+300 ||
			!slices.Equal(id.Scopes, []string{"tools:call", "tools:read"}) {
			t.Fatalf("identity = %+v", id)
		}
		if string(id.Claims) != claimsJSON() {
			t.Fatalf("Claims = %s, want the verified payload", id.Claims)
		}
	})
	add("J-01/valid-es256", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, claimsJSON(), "ES256", k(t).ec)
	})
	add("J-01/valid-es384", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"ES384","kid":"e384","typ":"at+jwt"}`, claimsJSON(), "ES384", k(t).ec384)
	})
	add("J-01/valid-eddsa", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"EdDSA","kid":"ed1","typ":"at+jwt"}`, claimsJSON(), "EdDSA", k(t).ed)
	})

	// J-02..J-04: none.
	add("J-02/alg-none-empty-sig", ErrMalformed, func(t testing.TB) string {
		return enc.EncodeToString([]byte(`{"alg":"none","kid":"k1"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + "."
	})
	add("J-02/alg-none-some-sig", ErrAlgorithm, func(t testing.TB) string {
		return enc.EncodeToString([]byte(`{"alg":"none","kid":"k1","typ":"at+jwt"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + ".AA"
	})
	for _, none := range []string{"None", "NONE", "nOnE"} {
		add("J-03/alg-"+none, ErrAlgorithm, func(t testing.TB) string {
			return enc.EncodeToString([]byte(`{"alg":"`+none+`","kid":"k1","typ":"at+jwt"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + ".AA"
		})
	}
	add("J-04/alg-none-rs256-sig-kept", ErrAlgorithm, func(t testing.TB) string {
		valid := validToken(t)
		return enc.EncodeToString([]byte(`{"alg":"none","kid":"k1","typ":"at+jwt"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + "." + enc.EncodeToString(sigOf(t, valid))
	})
	// J-05: tampered payload with the original signature. (That no code
	// path uses an unverified parse is TestNoInsecureJWXAPIs.)
	add("J-05/tampered-payload", ErrBadSignature, func(t testing.TB) string {
		valid := validToken(t)
		h := enc.EncodeToString([]byte(hdrRS256))
		return h + "." + enc.EncodeToString([]byte(claimsJSON("sub", "admin"))) + "." + enc.EncodeToString(sigOf(t, valid))
	})

	// J-06..J-09: HMAC confusion; HS* is not allowed without a secret.
	for _, name := range []string{"pkix-pem", "pkix-pem-no-newline", "pkix-pem-crlf", "pkix-pem-spaces", "pkcs1-pem", "der", "jwk-json"} {
		add("J-06/hs256-keyed-with-"+name, ErrAlgorithm, func(t testing.TB) string {
			return mint(t, `{"alg":"HS256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "HS256", hmacKeyVariants(t)[name])
		})
	}
	add("J-07/hs256-against-alg-less-keys", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"HS256","kid":"k1"}`, claimsJSON("iss", issNoAlg), "HS256", hmacKeyVariants(t)["pkix-pem"])
	})
	add("J-08/hs256-keyed-with-recovered-modulus", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"HS256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "HS256", hmacKeyVariants(t)["modulus"])
	})
	for name, secret := range map[string]string{"blank": "", "secret": "secret", "changeme": "changeme"} {
		add("J-09/hs256-weak-"+name+"-not-allowed", ErrAlgorithm, func(t testing.TB) string {
			return mint(t, `{"alg":"HS256","typ":"at+jwt"}`, claimsJSON(), "HS256", []byte(secret))
		})
		add("J-09/hs256-weak-"+name+"-on-hmac-issuer", ErrBadSignature, func(t testing.TB) string {
			return mint(t, `{"alg":"HS256"}`, claimsJSON("iss", issHMAC), "HS256", []byte(secret))
		})
	}
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		add("J-09/control-"+alg+"-configured-secret", nil, func(t testing.TB) string {
			return mint(t, `{"alg":"`+alg+`","kid":"anything"}`, claimsJSON("iss", issHMAC), alg, hmacSecret)
		})
	}

	// J-10..J-12: embedded keys and key URLs.
	add("J-10/jwk-header-with-kid", ErrMalformed, func(t testing.TB) string {
		j, _ := json.Marshal(jwkOf(k(t).attacker, "k1", "RS256"))
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","jwk":`+string(j)+`}`, claimsJSON(), "RS256", k(t).attacker)
	})
	add("J-10/jwk-header-without-kid", ErrMalformed, func(t testing.TB) string {
		j, _ := json.Marshal(jwkOf(k(t).attacker, "", "RS256"))
		return mint(t, `{"alg":"RS256","typ":"at+jwt","jwk":`+string(j)+`}`, claimsJSON(), "RS256", k(t).attacker)
	})
	add("J-11/jku-no-fetch", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","jku":"`+countingServer(t)+`"}`, claimsJSON(), "RS256", k(t).attacker)
	})
	add("J-12/x5u-no-fetch", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","x5u":"`+countingServer(t)+`"}`, claimsJSON(), "RS256", k(t).attacker)
	})
	add("J-12/x5c-self-signed-ignored", ErrBadSignature, func(t testing.TB) string {
		x5c := selfSignedX5C(t, k(t).attacker)
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","x5c":["`+x5c+`"]}`, claimsJSON(), "RS256", k(t).attacker)
	})
	add("J-12/x5c-self-signed-no-kid", ErrUnknownKey, func(t testing.TB) string {
		x5c := selfSignedX5C(t, k(t).attacker)
		return mint(t, `{"alg":"RS256","typ":"at+jwt","x5c":["`+x5c+`"]}`, claimsJSON(), "RS256", k(t).attacker)
	})

	// J-13, J-14: hostile kids.
	add("J-13/kid-path-traversal-hs256", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"HS256","kid":"../../../../../../dev/null","typ":"at+jwt"}`, claimsJSON(), "HS256", []byte{})
	})
	add("J-13/kid-path-traversal-rs256", ErrUnknownKey, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"../../../../../../dev/null","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	for name, kid := range map[string]string{"sqli": `x' UNION SELECT 'x'--`, "cmd": "`id`", "crlf": "a\r\nX-Injected: 1"} {
		add("J-14/kid-"+name, ErrUnknownKey, func(t testing.TB) string {
			kj, _ := json.Marshal(kid)
			return mint(t, `{"alg":"RS256","kid":`+string(kj)+`,"typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
		})
	}
	add("J-14/kid-60KB", ErrTooLarge, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"`+strings.Repeat("k", 60<<10)+`","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})

	// J-15: kid of an RSA key, alg ES256.
	add("J-15/es256-with-rsa-kid", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"ES256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "ES256", k(t).ec)
	})
	add("J-15/eddsa-with-ec-kid", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"EdDSA","kid":"e1","typ":"at+jwt"}`, claimsJSON(), "EdDSA", k(t).ed)
	})
	add("J-15/es384-with-p256-key-without-alg", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"ES384","kid":"e1"}`, claimsJSON("iss", issNoAlg), "ES384", k(t).ec384)
	})

	// J-16, J-17: crit, validly signed by the issuer's key.
	add("J-16/crit-unknown-extension", ErrCritical, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","crit":["x-evil"],"x-evil":"1"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	for name, crit := range map[string]string{"empty": `[]`, "exp": `["exp"]`, "alg": `["alg"]`, "duplicates": `["x","x"]`, "not-array": `"x"`, "null": `null`} {
		add("J-17/crit-"+name, ErrCritical, func(t testing.TB) string {
			return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","crit":`+crit+`}`, claimsJSON(), "RS256", k(t).rsa)
		})
	}

	// J-18: b64 without crit.
	add("J-18/b64-false", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","b64":false}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("J-18/b64-false-unencoded-payload", ErrMalformed, func(t testing.TB) string {
		// RFC 7797 signing input: header + "." + raw payload.
		h := enc.EncodeToString([]byte(`{"alg":"RS256","kid":"k1","typ":"at+jwt","b64":false}`))
		p := "tools"
		return h + "." + p + "." + enc.EncodeToString(signRaw(t, "RS256", k(t).rsa, h+"."+p))
	})

	// J-19..J-25: time claims (leeway 60s). A zero leeway cannot be
	// configured (0 means the default); J-55 tests the boundary.
	add("J-19/exp-10s-ago-within-leeway", nil, func(t testing.TB) string { return validToken(t, "exp", now-10) })
	add("J-19/exp-59s-ago-within-leeway", nil, func(t testing.TB) string { return validToken(t, "exp", now-59) })
	add("J-19/exp-60s-ago", ErrExpired, func(t testing.TB) string { return validToken(t, "exp", now-60) })
	add("J-20/nbf-in-10s", nil, func(t testing.TB) string { return validToken(t, "nbf", now+10) })
	add("J-20/nbf-in-1h", ErrNotYetValid, func(t testing.TB) string { return validToken(t, "nbf", now+3600) })
	add("J-21/iat-in-1h", ErrIssuedInFuture, func(t testing.TB) string { return validToken(t, "iat", now+3600) })
	add("J-21/iat-2100", ErrIssuedInFuture, func(t testing.TB) string { return validToken(t, "iat", 4102444800) })
	add("J-22/exp-missing", ErrMissingClaim, func(t testing.TB) string { return validToken(t, "exp", del) })
	// J-23: accepted without max_lifetime (the default, unlimited);
	// rejected by an issuer with max_lifetime 24h (leeway 60s).
	add("J-23/exp-year-2286-accepted-without-max-lifetime", nil, func(t testing.TB) string { return validToken(t, "exp", int64(1e10)) })
	add("J-23/exp-year-2286", ErrLifetime, func(t testing.TB) string { return validToken(t, "iss", issShort, "exp", int64(1e10)) })
	add("J-23/exp-minus-iat-24h-1s", ErrLifetime, func(t testing.TB) string {
		return validToken(t, "iss", issShort, "iat", now-3600, "exp", now-3600+86401)
	})
	add("J-23/exp-minus-iat-24h", nil, func(t testing.TB) string {
		return validToken(t, "iss", issShort, "iat", now-3600, "exp", now-3600+86400)
	})
	add("J-23/no-iat-exp-in-25h", ErrLifetime, func(t testing.TB) string {
		return validToken(t, "iss", issShort, "iat", del, "exp", now+25*3600)
	})
	add("J-23/no-iat-exp-in-24h-plus-leeway", nil, func(t testing.TB) string {
		return validToken(t, "iss", issShort, "iat", del, "exp", now+86400+60)
	})
	add("J-24/exp-string", ErrMalformed, func(t testing.TB) string { return validToken(t, "exp", "4102444800") })
	for _, v := range []string{"1e400", "99999999999999999999", "9223372036854775807", "-1", "true", "null", `{}`, `[4102444800]`} {
		add("J-25/exp-"+v, ErrMalformed, func(t testing.TB) string { return validToken(t, "exp", raw(v)) })
	}
	add("J-25/nbf-string", ErrMalformed, func(t testing.TB) string { return validToken(t, "nbf", "0") })
	add("J-25/iat-null", ErrMalformed, func(t testing.TB) string { return validToken(t, "iat", raw("null")) })
	add("J-25/exp-1.5e9-past", ErrExpired, func(t testing.TB) string { return validToken(t, "exp", raw("1.5e9")) })
	add("J-25/exp-fraction-accepted", nil, func(t testing.TB) string { return validToken(t, "exp", raw("4102444800.999")) }, func(t *testing.T, id *Identity) {
		if id.Expiry != 4102444800 {
			t.Fatalf("Expiry = %d, want 4102444800", id.Expiry)
		}
	})

	// J-26..J-28: issuer and audience.
	add("J-26/iss-other", ErrUnknownIssuer, func(t testing.TB) string { return validToken(t, "iss", "https://evil.example.com") })
	add("J-26/iss-trailing-slash", ErrUnknownIssuer, func(t testing.TB) string { return validToken(t, "iss", testIss+"/") })
	add("J-26/iss-upper-case", ErrUnknownIssuer, func(t testing.TB) string { return validToken(t, "iss", strings.ToUpper(testIss)) })
	add("J-26/iss-missing", ErrMissingClaim, func(t testing.TB) string { return validToken(t, "iss", del) })
	add("J-26/iss-number", ErrMalformed, func(t testing.TB) string { return validToken(t, "iss", 1) })
	add("J-26/iss-array", ErrMalformed, func(t testing.TB) string { return validToken(t, "iss", []string{testIss}) })
	add("J-27/aud-array-contains", nil, func(t testing.TB) string {
		return validToken(t, "aud", []string{"https://other.example.com", testAud})
	})
	add("J-27/aud-array-without", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", []string{"https://other.example.com"}) })
	add("J-27/aud-trailing-slash", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", testAud+"/") })
	add("J-27/aud-missing", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", del) })
	add("J-27/aud-empty-array", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", []string{}) })
	add("J-27/aud-number", ErrMalformed, func(t testing.TB) string { return validToken(t, "aud", 42) })
	add("J-27/aud-array-of-number", ErrMalformed, func(t testing.TB) string { return validToken(t, "aud", []any{testAud, 42}) })
	add("J-27/aud-null", ErrMalformed, func(t testing.TB) string { return validToken(t, "aud", raw("null")) })
	add("J-28/aud-other-mcp-server", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", "https://other-mcp.example.com/mcp") })
	add("J-28/aud-idp-userinfo", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", testIss+"/userinfo") })

	// J-29, J-30: typ.
	for name, hdr := range map[string]string{"JWT": `{"alg":"RS256","kid":"k1","typ":"JWT"}`, "missing": `{"alg":"RS256","kid":"k1"}`, "JOSE": `{"alg":"RS256","kid":"k1","typ":"JOSE"}`, "at+jwt-suffix": `{"alg":"RS256","kid":"k1","typ":"at+jwtx"}`} {
		add("J-29/typ-"+name+"-rejected", ErrType, func(t testing.TB) string { return mint(t, hdr, claimsJSON(), "RS256", k(t).rsa) })
	}
	for _, typ := range []string{"at+jwt", "application/at+jwt", "AT+JWT", "Application/At+Jwt"} {
		add("J-29/typ-"+typ+"-accepted", nil, func(t testing.TB) string {
			return mint(t, `{"alg":"RS256","kid":"k1","typ":"`+typ+`"}`, claimsJSON(), "RS256", k(t).rsa)
		})
	}
	add("J-29/typ-number", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":1}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("J-29/typ-JWT-on-any-issuer", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"JWT"}`, claimsJSON("iss", issAny), "RS256", k(t).rsa)
	})
	add("J-29/typ-missing-on-any-issuer", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1"}`, claimsJSON("iss", issAny), "RS256", k(t).rsa)
	})
	add("J-30/id-token-at-jwt-issuer", ErrType, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"JWT"}`, claimsJSON("aud", "client-1", "nonce", "n-0S6"), "RS256", k(t).rsa)
	})
	add("J-30/id-token-any-issuer", ErrAudience, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"JWT"}`, claimsJSON("iss", issAny, "aud", "client-1", "nonce", "n-0S6"), "RS256", k(t).rsa)
	})

	// J-31..J-33: signature shape.
	add("J-31/signature-stripped-h.p.", ErrMalformed, func(t testing.TB) string { v := validToken(t); return v[:strings.LastIndexByte(v, '.')+1] })
	add("J-31/signature-stripped-h.p", ErrMalformed, func(t testing.TB) string { v := validToken(t); return v[:strings.LastIndexByte(v, '.')] })
	add("J-31/signature-of-another-token", ErrBadSignature, func(t testing.TB) string {
		return withSig(validToken(t, "sub", "admin"), sigOf(t, validToken(t)))
	})
	add("J-31/null-signature", ErrBadSignature, func(t testing.TB) string { return withSig(validToken(t), make([]byte, 256)) })
	for name, f := range map[string]func(string) string{
		"h.p.s.":    func(v string) string { return v + "." },
		"h.p.s.foo": func(v string) string { return v + ".foo" },
		".p.s":      func(v string) string { return v[strings.IndexByte(v, '.'):] },
		"h..s": func(v string) string {
			parts := strings.Split(v, ".")
			return parts[0] + ".." + parts[2]
		},
		"empty": func(string) string { return "" },
	} {
		add("J-32/segments-"+name, ErrMalformed, func(t testing.TB) string { return f(validToken(t)) })
	}
	es := func(t testing.TB) string {
		return mint(t, `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, claimsJSON(), "ES256", k(t).ec)
	}
	add("J-33/ecdsa-r-s-zero", ErrBadSignature, func(t testing.TB) string { return withSig(es(t), make([]byte, 64)) })
	add("J-33/ecdsa-r-equals-n", ErrBadSignature, func(t testing.TB) string {
		sig := sigOf(t, es(t))
		n := elliptic.P256().Params().N.FillBytes(make([]byte, 32))
		return withSig(es(t), append(n, sig[32:]...))
	})
	add("J-33/ecdsa-der-signature", ErrBadSignature, func(t testing.TB) string {
		sig := sigOf(t, es(t))
		der, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])})
		return withSig(es(t), der)
	})

	// J-34..J-36: alg and kid.
	add("J-34/header-rs384-key-rs256", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"RS384","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "RS384", k(t).rsa)
	})
	add("J-34/header-ps256-key-rs256", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"PS256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "PS256", k(t).rsa)
	})
	add("J-34/header-without-alg", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"kid":"k1","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("J-34/alg-not-a-string", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":["RS256"],"kid":"k1","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	for _, alg := range []string{"rs256", "RS256 ", " RS256", "RS256\u0000", "ES512", "ES256K", "RSA-OAEP"} {
		add("J-35/alg-"+alg, ErrAlgorithm, func(t testing.TB) string {
			a, _ := json.Marshal(alg)
			return mint(t, `{"alg":`+string(a)+`,"kid":"k1","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
		})
	}
	add("J-36/kid-absent-several-keys", ErrUnknownKey, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("J-36/kid-absent-single-key-accepted", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256"}`, claimsJSON("iss", issSingle), "RS256", k(t).rsa)
	})
	add("J-36/kid-unknown", ErrUnknownKey, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"nope","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("J-36/kid-number", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":1,"typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("J-36/kid-empty", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})

	// J-37, J-38: duplicate members.
	for name, hdr := range map[string]string{
		"kid-zzz-then-k1": `{"alg":"RS256","kid":"zzz","kid":"k1","typ":"at+jwt"}`,
		"kid-k1-then-zzz": `{"alg":"RS256","kid":"k1","kid":"zzz","typ":"at+jwt"}`,
		"alg-then-none":   `{"alg":"RS256","kid":"k1","typ":"at+jwt","alg":"none"}`,
	} {
		add("J-37/duplicate-header-"+name, ErrMalformed, func(t testing.TB) string { return mint(t, hdr, claimsJSON(), "RS256", k(t).rsa) })
	}
	add("J-38/duplicate-claims", ErrMalformed, func(t testing.TB) string {
		c := strings.TrimSuffix(claimsJSON("scope", del, "sub", del), "}") + `,"scope":"tools:read","scope":"tools:admin","sub":"alice","sub":"admin"}`
		return mint(t, hdrRS256, c, "RS256", k(t).rsa)
	})
	add("J-38/duplicate-nested-claims", ErrMalformed, func(t testing.TB) string {
		return mint(t, hdrRS256, claimsJSON("realm_access", raw(`{"roles":["a"],"roles":["admin"]}`)), "RS256", k(t).rsa)
	})
	add("J-38/case-variant-claims-ignored", nil, func(t testing.TB) string {
		return mint(t, hdrRS256, claimsJSON("ISS", "https://evil.example.com", "Exp", 1, "AUD", "x"), "RS256", k(t).rsa)
	}, func(t *testing.T, id *Identity) {
		if id.Issuer != testIss || id.Expiry != now+300 || !slices.Equal(id.Audience, []string{testAud}) {
			t.Fatalf("identity = %+v", id)
		}
	})

	// J-39: scope parsing (what the policy receives).
	add("J-39/scope-double-space", nil, func(t testing.TB) string { return validToken(t, "scope", "tools:read  tools:admin") }, wantScopes("tools:admin", "tools:read"))
	add("J-39/scope-tabs-newlines", nil, func(t testing.TB) string { return validToken(t, "scope", "tools:read\ttools:admin\n") }, wantScopes("tools:admin", "tools:read"))
	add("J-39/scp-array", nil, func(t testing.TB) string {
		return validToken(t, "scope", del, "scp", []string{"tools:read", "tools:call"})
	}, wantScopes("tools:call", "tools:read"))
	add("J-39/scope-array", nil, func(t testing.TB) string { return validToken(t, "scope", []string{"tools:read", "tools:read"}) }, wantScopes("tools:read"))
	add("J-39/scope-and-scp-merged", nil, func(t testing.TB) string { return validToken(t, "scope", "a b", "scp", "b c") }, wantScopes("a", "b", "c"))
	add("J-39/scope-prefix-is-not-a-match", nil, func(t testing.TB) string { return validToken(t, "scope", "tools:readx") }, wantScopes("tools:readx"))
	add("J-39/scope-case-kept", nil, func(t testing.TB) string { return validToken(t, "scope", "Tools:Read") }, wantScopes("Tools:Read"))
	add("J-39/scope-invalid-chars-dropped", nil, func(t testing.TB) string { return validToken(t, "scope", "ok \"quoted\" back\\slash é") }, wantScopes("ok"))
	add("J-39/scope-empty", nil, func(t testing.TB) string { return validToken(t, "scope", "") }, wantScopes())
	add("J-39/scope-number", ErrMalformed, func(t testing.TB) string { return validToken(t, "scope", 1) })
	add("J-39/scp-object", ErrMalformed, func(t testing.TB) string { return validToken(t, "scp", map[string]any{"a": 1}) })

	// J-40: missing RFC 9068 claims: tolerated by default, rejected with
	// required_claims (issuer "strict").
	for _, c := range []string{"sub", "client_id", "jti", "iat"} {
		add("J-40/"+c+"-missing-tolerated", nil, func(t testing.TB) string { return validToken(t, c, del) })
		add("J-40/"+c+"-missing-required", ErrMissingClaim, func(t testing.TB) string { return validToken(t, "iss", issStrict, c, del) })
	}
	add("J-40/required-claim-null", ErrMissingClaim, func(t testing.TB) string { return validToken(t, "iss", issStrict, "jti", raw("null")) })
	add("J-40/strict-control", nil, func(t testing.TB) string { return validToken(t, "iss", issStrict) })
	add("J-40/sub-not-string", ErrMalformed, func(t testing.TB) string { return validToken(t, "sub", 7) })
	add("J-40/client_id-not-string", ErrMalformed, func(t testing.TB) string { return validToken(t, "client_id", []string{"x"}) })

	// J-41: one token, one spelling.
	add("J-41/header-padding", ErrMalformed, func(t testing.TB) string {
		v := validToken(t)
		// The header {"alg":...} is 42 bytes: its encoding needs padding.
		i := strings.IndexByte(v, '.')
		return v[:i] + "==" + v[i:]
	})
	add("J-41/signature-padding", ErrMalformed, func(t testing.TB) string { return validToken(t) + "==" })
	add("J-41/signature-std-alphabet", ErrMalformed, func(t testing.TB) string {
		for {
			v := validToken(t)
			i := strings.LastIndexByte(v, '.')
			if s := v[i+1:]; strings.ContainsAny(s, "-_") {
				return v[:i+1] + strings.NewReplacer("-", "+", "_", "/").Replace(s)
			}
		}
	})
	add("J-41/signature-trailing-bits", ErrMalformed, func(t testing.TB) string {
		v := validToken(t) // 256-byte signature: the last character carries 4 unused bits
		last := strings.IndexByte(b64Alphabet, v[len(v)-1])
		return v[:len(v)-1] + string(b64Alphabet[last|1])
	})
	add("J-41/ecdsa-high-s-accepted", nil, func(t testing.TB) string {
		// Documented: both s and n-s verify (ECDSA malleability); IdPs do
		// not normalise s, so rejecting high-s would reject real tokens.
		tok := es(t)
		sig := sigOf(t, tok)
		n := elliptic.P256().Params().N
		s := new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:]))
		return withSig(tok, append(sig[:32:32], s.FillBytes(make([]byte, 32))...))
	})

	// J-42: white space in or around the token.
	for name, f := range map[string]func(string) string{
		"leading-space":  func(v string) string { return " " + v },
		"trailing-space": func(v string) string { return v + " " },
		"trailing-lf":    func(v string) string { return v + "\n" },
		"inner-space":    func(v string) string { return v[:10] + " " + v[10:] },
		"inner-crlf":     func(v string) string { return v[:10] + "\r\n" + v[10:] },
		"bearer-prefix":  func(v string) string { return "Bearer " + v },
	} {
		add("J-42/"+name, ErrMalformed, func(t testing.TB) string { return f(validToken(t)) })
	}

	// J-43, J-44: not objects, trailing data, BOM, bad UTF-8.
	for name, p := range map[string]string{"array": `[]`, "null": `null`, "string": `"x"`, "trailing-garbage": claimsJSON() + "xyz", "two-objects": claimsJSON() + "{}"} {
		add("J-43/payload-"+name, ErrMalformed, func(t testing.TB) string { return mint(t, hdrRS256, p, "RS256", k(t).rsa) })
	}
	add("J-43/header-trailing-garbage", ErrMalformed, func(t testing.TB) string { return mint(t, hdrRS256+"x", claimsJSON(), "RS256", k(t).rsa) })
	add("J-43/header-array", ErrMalformed, func(t testing.TB) string { return mint(t, `["RS256"]`, claimsJSON(), "RS256", k(t).rsa) })
	add("J-44/header-bom", ErrMalformed, func(t testing.TB) string { return mint(t, "\ufeff"+hdrRS256, claimsJSON(), "RS256", k(t).rsa) })
	add("J-44/payload-bom", ErrMalformed, func(t testing.TB) string { return mint(t, hdrRS256, "\ufeff"+claimsJSON(), "RS256", k(t).rsa) })
	add("J-44/lone-surrogate", ErrMalformed, func(t testing.TB) string {
		return mint(t, hdrRS256, strings.Replace(claimsJSON(), `"alice"`, `"al\ud800ice"`, 1), "RS256", k(t).rsa)
	})
	add("J-44/invalid-utf8-byte", ErrMalformed, func(t testing.TB) string {
		return mint(t, hdrRS256, strings.Replace(claimsJSON(), `"alice"`, "\"al\xffice\"", 1), "RS256", k(t).rsa)
	})

	// J-45..J-47: size and depth.
	add("J-45/1MiB-garbage", ErrTooLarge, func(t testing.TB) string { return strings.Repeat("A", 1<<20) })
	add("J-45/4MiB-signed", ErrTooLarge, func(t testing.TB) string { return validToken(t, "pad", strings.Repeat("x", 3<<20)) })
	add("J-45/just-over-16KiB", ErrTooLarge, func(t testing.TB) string { return strings.Repeat("A", 16385) })
	add("J-45/15KiB-token-accepted", nil, func(t testing.TB) string { return validToken(t, "pad", strings.Repeat("x", 10<<10)) })
	add("J-46/dot-flood-1MiB", ErrTooLarge, func(t testing.TB) string { return strings.Repeat(".", 1<<20) })
	add("J-46/dot-flood-within-cap", ErrMalformed, func(t testing.TB) string { return strings.Repeat(".", 16000) })
	add("J-47/header-100k-nesting", ErrTooLarge, func(t testing.TB) string {
		return enc.EncodeToString([]byte(strings.Repeat("[", 100000))) + ".e30.AA"
	})
	add("J-47/header-deep-within-cap", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","x":`+nested(4000)+`}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("J-47/payload-depth-33", ErrMalformed, func(t testing.TB) string { return validToken(t, "x", raw(nested(32))) })
	add("J-47/payload-depth-32-accepted", nil, func(t testing.TB) string { return validToken(t, "x", raw(nested(31))) })

	// J-48..J-51: other JOSE forms.
	add("J-48/five-segments", ErrMalformed, func(t testing.TB) string { return validToken(t) + ".AA.AA" })
	add("J-48/real-jwe-wrapping-alg-none", ErrMalformed, func(t testing.TB) string {
		inner := enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + "."
		out, err := jwe.Encrypt([]byte(inner), jwe.WithKey(jwa.RSA_OAEP_256, &k(t).rsa.PublicKey), jwe.WithContentEncryption(jwa.A128GCM))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(out), ".") != 4 {
			t.Fatalf("not a compact JWE: %d dots", strings.Count(string(out), "."))
		}
		return string(out)
	})
	add("J-49/json-serialization", ErrMalformed, func(t testing.TB) string {
		parts := strings.Split(validToken(t), ".")
		b, _ := json.Marshal(map[string]any{"payload": parts[1], "signatures": []any{map[string]string{"protected": parts[0], "signature": parts[2]}}})
		return string(b)
	})
	add("J-49/flattened-json-serialization", ErrMalformed, func(t testing.TB) string {
		parts := strings.Split(validToken(t), ".")
		b, _ := json.Marshal(map[string]string{"payload": parts[1], "protected": parts[0], "signature": parts[2]})
		return string(b)
	})
	add("J-50/nested-jwt-unsigned-inner", ErrMalformed, func(t testing.TB) string {
		inner := enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + "."
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","cty":"JWT"}`, inner, "RS256", k(t).rsa)
	})
	add("J-51/jwe-p2c-bomb", ErrMalformed, func(t testing.TB) string {
		h := enc.EncodeToString([]byte(`{"alg":"PBES2-HS256+A128KW","enc":"A128GCM","p2c":2000000000,"p2s":"AAAAAAAAAAA"}`))
		return h + ".AAAA.AAAA.AAAA.AAAA"
	})
	add("J-51/jwe-zip-bomb", ErrMalformed, func(t testing.TB) string {
		h := enc.EncodeToString([]byte(`{"alg":"RSA-OAEP","enc":"A128GCM","zip":"DEF"}`))
		return h + ".AAAA.AAAA.AAAA.AAAA"
	})

	// J-52: keys belong to their issuer.
	add("J-52/iss-B-signed-with-A-key-and-kid", ErrUnknownKey, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1"}`, claimsJSON("iss", issB), "RS256", k(t).rsa)
	})
	add("J-52/iss-B-kid-b1-signed-with-A-key", ErrBadSignature, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"b1"}`, claimsJSON("iss", issB), "RS256", k(t).rsa)
	})
	add("J-52/iss-B-control", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"b1"}`, claimsJSON("iss", issB), "RS256", k(t).rsaB)
	})

	// J-53: expired and badly signed is a bad signature, never "expired".
	add("J-53/expired-and-bad-signature", ErrBadSignature, func(t testing.TB) string {
		return withSig(validToken(t, "exp", now-3600), sigOf(t, validToken(t)))
	})

	// J-54: other credentials presented as bearer tokens.
	add("J-54/opaque-access-token", ErrMalformed, func(t testing.TB) string { return "2YotnFZFEjr1zCsicMWpAA" })
	add("J-54/refresh-token", ErrMalformed, func(t testing.TB) string { return "tGzv3JOkF0XG5Qx2TlKWIA" })
	add("J-54/api-key", ErrMalformed, func(t testing.TB) string { return "sk_live_51H8xXXXXXXXXXXXXXXXXXXXX" })
	add("J-54/dpop-bound-token", ErrType, func(t testing.TB) string {
		return validToken(t, "cnf", map[string]string{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
	})
	add("J-54/mtls-bound-token", ErrType, func(t testing.TB) string {
		return validToken(t, "cnf", map[string]string{"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"})
	})

	// J-55: clock boundaries (leeway 60s).
	add("J-55/exp-equals-now-minus-leeway", ErrExpired, func(t testing.TB) string { return validToken(t, "exp", now-60) })
	add("J-55/exp-one-second-later", nil, func(t testing.TB) string { return validToken(t, "exp", now-59) })
	add("J-55/exp-fraction-before-boundary", ErrExpired, func(t testing.TB) string { return validToken(t, "exp", raw(big.NewInt(now-61).String()+".999")) })
	add("J-55/nbf-equals-now", nil, func(t testing.TB) string { return validToken(t, "nbf", now) })
	add("J-55/nbf-equals-now-plus-leeway", nil, func(t testing.TB) string { return validToken(t, "nbf", now+60) })
	add("J-55/nbf-leeway-plus-one", ErrNotYetValid, func(t testing.TB) string { return validToken(t, "nbf", now+61) })
	add("J-55/iat-equals-now-plus-leeway", nil, func(t testing.TB) string { return validToken(t, "iat", now+60) })
	add("J-55/iat-leeway-plus-one", ErrIssuedInFuture, func(t testing.TB) string { return validToken(t, "iat", now+61) })
	return rows
}

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// idpRows are the token shapes of real identity providers.
func idpRows() []verifyCase {
	now := testNow.Unix()
	tok := func(t testing.TB, hdr string, claims map[string]any) string {
		b, _ := json.Marshal(claims)
		return mint(t, hdr, string(b), "RS256", keys(t).rsa)
	}
	okta := func() map[string]any {
		return map[string]any{
			"ver": 1, "jti": "AT.2ZQqzMgUJQ3k", "iss": issOkta, "aud": "api://default",
			"iat": now, "exp": now + 3600, "cid": "0oa1b2c3d4e5f6g7h8i9", "uid": "00u1a2b3c4d5e6f7g8h9",
			"scp": []string{"openid", "tools:read"}, "auth_time": now - 10, "sub": "alice@example.com",
		}
	}
	entra := func() map[string]any {
		return map[string]any{
			"aud": entraAppID, "iss": entraIss(entraTenant), "iat": now, "nbf": now, "exp": now + 3600,
			"azp": "c44b4083-3bb0-49c1-b47d-974e53cbdf3c", "azpacr": "0", "name": "Alice",
			"oid": "00000000-0000-0000-66f3-3332eca7ea81", "scp": "Tools.Read", "roles": []string{"Tools.Admin"},
			"sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ", "tid": entraTenant, "ver": "2.0",
			"uti": "AbCdEf", "rh": "0.AAAA",
		}
	}
	auth0 := func() map[string]any {
		return map[string]any{
			"iss": issAuth0, "sub": "auth0|abc123", "aud": []string{testAud, issAuth0 + "userinfo"},
			"iat": now, "exp": now + 86400, "azp": "AbCdEfGhIjKlMnOpQrStUvWxYz012345",
			"scope": "openid profile", "permissions": []string{"tools:read", "tools:call"},
		}
	}
	keycloak := func() map[string]any {
		return map[string]any{
			"exp": now + 300, "iat": now, "jti": "onrtac:1a2b", "iss": issKeycloak, "aud": testAud,
			"sub": "f:1234:alice", "typ": "Bearer", "azp": "mcp-client", "sid": "abc", "acr": "1",
			"realm_access": map[string]any{"roles": []string{"offline_access"}},
			"scope":        "openid profile tools:read", "preferred_username": "alice",
		}
	}
	withClaim := func(m map[string]any, kv ...any) map[string]any {
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == del {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		return m
	}
	const oktaHdr = `{"kid":"k1","alg":"RS256"}`
	const entraHdr = `{"typ":"JWT","alg":"RS256","kid":"k1"}`
	return []verifyCase{
		{name: "IdP/okta", token: func(t testing.TB) string { return tok(t, oktaHdr, okta()) }, check: func(t *testing.T, id *Identity) {
			if id.ClientID != "0oa1b2c3d4e5f6g7h8i9" || id.Subject != "alice@example.com" || !slices.Equal(id.Scopes, []string{"openid", "tools:read"}) {
				t.Fatalf("identity = %+v", id)
			}
		}},
		{name: "IdP/okta-wrong-audience", want: ErrAudience, token: func(t testing.TB) string {
			return tok(t, oktaHdr, withClaim(okta(), "aud", testAud))
		}},
		{name: "IdP/entra-v2", token: func(t testing.TB) string { return tok(t, entraHdr, entra()) }, check: func(t *testing.T, id *Identity) {
			if id.Issuer != entraIss(entraTenant) || id.ClientID != "c44b4083-3bb0-49c1-b47d-974e53cbdf3c" ||
				!slices.Equal(id.Scopes, []string{"Tools.Read", "role:Tools.Admin"}) {
				t.Fatalf("identity = %+v", id)
			}
		}},
		{name: "IdP/entra-app-only-roles", token: func(t testing.TB) string {
			return tok(t, entraHdr, withClaim(entra(), "scp", del, "roles", []string{"Tools.Admin", "Tools.Read"}))
		}, check: wantScopes("role:Tools.Admin", "role:Tools.Read")},
		{name: "IdP/entra-role-with-space-dropped", token: func(t testing.TB) string {
			return tok(t, entraHdr, withClaim(entra(), "scp", del, "roles", []string{"x tools:admin"}))
		}, check: wantScopes()},
		{name: "IdP/entra-tid-mismatch", want: ErrIssuer, token: func(t testing.TB) string {
			return tok(t, entraHdr, withClaim(entra(), "tid", "72f988bf-86f1-41af-91ab-2d7cd011db47"))
		}},
		{name: "IdP/entra-tid-missing", want: ErrMissingClaim, token: func(t testing.TB) string {
			return tok(t, entraHdr, withClaim(entra(), "tid", del))
		}},
		{name: "IdP/entra-tid-not-string", want: ErrMalformed, token: func(t testing.TB) string {
			return tok(t, entraHdr, withClaim(entra(), "tid", 1))
		}},
		{name: "IdP/entra-common-tenant", want: ErrIssuer, token: func(t testing.TB) string {
			return tok(t, entraHdr, withClaim(entra(), "iss", entraIss("common")))
		}},
		{name: "IdP/entra-tenant-with-slash", want: ErrUnknownIssuer, token: func(t testing.TB) string {
			return tok(t, entraHdr, withClaim(entra(), "iss", entraIss("a/b"), "tid", "a/b"))
		}},
		{name: "IdP/entra-tenant-empty", want: ErrUnknownIssuer, token: func(t testing.TB) string {
			return tok(t, entraHdr, withClaim(entra(), "iss", entraIss(""), "tid", ""))
		}},
		{name: "IdP/entra-tenant-dot", want: ErrUnknownIssuer, token: func(t testing.TB) string {
			return tok(t, entraHdr, withClaim(entra(), "iss", entraIss(".."), "tid", ".."))
		}},
		{name: "IdP/entra-resource-url-not-configured", want: ErrAudience, token: func(t testing.TB) string {
			return tok(t, entraHdr, withClaim(entra(), "aud", testAud))
		}},
		{name: "IdP/auth0", token: func(t testing.TB) string {
			return tok(t, `{"alg":"RS256","typ":"JWT","kid":"k1"}`, auth0())
		}, check: func(t *testing.T, id *Identity) {
			if id.ClientID != "AbCdEfGhIjKlMnOpQrStUvWxYz012345" || !slices.Equal(id.Scopes, []string{"openid", "profile", "tools:call", "tools:read"}) {
				t.Fatalf("identity = %+v", id)
			}
		}},
		{name: "IdP/auth0-permissions-not-array", want: ErrMalformed, token: func(t testing.TB) string {
			return tok(t, `{"alg":"RS256","typ":"JWT","kid":"k1"}`, withClaim(auth0(), "permissions", 5))
		}},
		{name: "IdP/keycloak", token: func(t testing.TB) string {
			return tok(t, `{"alg":"RS256","typ":"JWT","kid":"k1"}`, keycloak())
		}, check: func(t *testing.T, id *Identity) {
			if id.ClientID != "mcp-client" || id.Subject != "f:1234:alice" || !slices.Equal(id.Scopes, []string{"openid", "profile", "tools:read"}) {
				t.Fatalf("identity = %+v", id)
			}
		}},
		{name: "IdP/keycloak-without-audience-mapper", want: ErrAudience, token: func(t testing.TB) string {
			return tok(t, `{"alg":"RS256","typ":"JWT","kid":"k1"}`, withClaim(keycloak(), "aud", "account"))
		}},
		{name: "IdP/rfc9068", token: func(t testing.TB) string {
			return mint(t, `{"typ":"at+jwt","alg":"RS256","kid":"k1"}`, claimsJSON("iss", issStrict, "auth_time", now-60, "acr", "urn:mace:incommon:iap:silver"), "RS256", keys(t).rsa)
		}},
		{name: "IdP/rfc9068-client_id-preferred-over-azp", token: func(t testing.TB) string {
			return validToken(t, "azp", "other", "cid", "other2")
		}, check: func(t *testing.T, id *Identity) {
			if id.ClientID != "client-1" {
				t.Fatalf("ClientID = %q, want client-1", id.ClientID)
			}
		}},
	}
}

func TestVerifyTable(t *testing.T) {
	v := tableVerifier(t)
	rows := append(jRows(), idpRows()...)
	seen := map[string]bool{}
	for _, tc := range rows {
		if seen[tc.name] {
			t.Fatalf("duplicate row name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token(t)
			id, err := v.Verify(context.Background(), tok)
			checkErr(t, "Verify", err, tc.want)
			if err != nil {
				if id != nil {
					t.Fatal("Verify returned an identity with an error")
				}
				// Error messages never echo token material.
				if len(tok) > 8 && strings.Contains(err.Error(), tok[len(tok)-8:]) {
					t.Fatalf("error %q contains token material", err)
				}
				for _, s := range []string{"UNION", "`id`", "X-Injected", "evil", "nope"} {
					if strings.Contains(err.Error(), s) {
						t.Fatalf("error %q echoes token content %q", err, s)
					}
				}
				return
			}
			if tc.check != nil {
				tc.check(t, id)
			}
		})
	}
	// Every J row of security-cases.md is covered (or explained in
	// TestJRowsNotApplicable).
	for i := 1; i <= 55; i++ {
		prefix := "J-" + twoDigits(i) + "/"
		if !slices.ContainsFunc(rows, func(c verifyCase) bool { return strings.HasPrefix(c.name, prefix) }) && !notApplicableJ[prefix[:4]] {
			t.Errorf("no row for %s", prefix[:4])
		}
	}
}

func twoDigits(i int) string { return string([]byte{byte('0' + i/10), byte('0' + i%10)}) }

// notApplicableJ lists the J rows without a Verify row, with the reason.
var notApplicableJ = map[string]bool{
	// (none: every J row has at least one Verify row; J-08 is covered by
	// keying HS256 with the modulus an attacker would recover, J-51 by
	// refusing any JWE shape before parsing it.)
}

// TestNoInsecureJWXAPIs is J-05/J-11: no code path verifies through an
// unverified parse or follows token-supplied key URLs.
func TestNoInsecureJWXAPIs(t *testing.T) {
	for _, f := range []string{"verifier.go", "jose.go", "keys.go", "jwks.go", "issuer.go", "options.go", "introspect.go", "cache.go", "identity.go"} {
		b := readSource(t, f)
		for _, bad := range []string{"ParseInsecure", "WithVerifyAuto", "WithVerify(false)", "WithKeySet(", "WithInferAlgorithmFromKey"} {
			if strings.Contains(b, bad) {
				t.Errorf("%s uses %s", f, bad)
			}
		}
	}
}

func TestVerifyErrorsAreDistinct(t *testing.T) {
	// J-53 and the error contract: a rejection wraps exactly one precise
	// sentinel besides ErrInvalidToken.
	v := tableVerifier(t)
	for _, tc := range jRows() {
		if tc.want == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.token(t))
			n := 0
			for _, r := range reasons {
				if errors.Is(err, r.err) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("Verify = %v wraps %d precise sentinels, want 1", err, n)
			}
		})
	}
}

func TestReasonLabels(t *testing.T) {
	// The label set is closed, one label per sentinel, no duplicates.
	all := Reasons()
	if len(all) != len(reasons)+len(unavailableReasons)+1 || !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != len(all) {
		t.Fatalf("Reasons() = %q", all)
	}
	for _, r := range reasons {
		if got := Reason(fmt.Errorf("%w: %w: x", ErrInvalidToken, r.err)); got != r.reason {
			t.Errorf("Reason(%v) = %q, want %q", r.err, got, r.reason)
		}
	}
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: x", ErrRateLimited), "introspection_rate_limited"},
		{fmt.Errorf("%w: x", ErrUnavailable), "introspection_unavailable"},
		{fmt.Errorf("%w: x", ErrKeysUnavailable), "keys_unavailable"},
		{invalid(ErrLifetime, "x"), "lifetime_too_long"},
		{invalid(ErrIntrospectionResponse, "x"), "bad_introspection_response"},
		{errors.New("other"), "invalid_token"},
		{nil, "invalid_token"},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
		if !slices.Contains(all, tt.want) {
			t.Errorf("%q missing from Reasons()", tt.want)
		}
	}
	// Cannot-decide errors keep working with callers that test for
	// ErrKeysUnavailable (503) and never look like a rejection (401).
	for _, e := range []error{ErrUnavailable, ErrRateLimited} {
		if !errors.Is(e, ErrKeysUnavailable) || errors.Is(e, ErrInvalidToken) {
			t.Errorf("%v: Is(ErrKeysUnavailable) = %v, Is(ErrInvalidToken) = %v", e, errors.Is(e, ErrKeysUnavailable), errors.Is(e, ErrInvalidToken))
		}
	}
	if !errors.Is(ErrRateLimited, ErrUnavailable) {
		t.Error("ErrRateLimited does not wrap ErrUnavailable")
	}
}
