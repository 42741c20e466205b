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
	issNoSub    = "https://nosub.example.com"

	entraTenant = "9188040d-6c67-4c5b-b112-36a304b66dad"
	entraAppID  = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
)

var hmacSecret = []byte(strings.Repeat("0123456789abcdef", 4)) // 64 bytes: HS256..HS512

func entraIss(tenant string) string { return strings.Replace(issEntra, "{tenantid}", tenant, 1) }

// tableVerifier has one issuer per profile the token rows need; all use a
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
		{Issuer: issNoSub, JWKSFile: fileA, TokenType: "at+jwt", RequireSubject: new(false)},
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
		"modulus":             pub.N.Bytes(), // what rsa_sign2n recovers from two tokens
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

// tokenRows are hostile and malformed tokens, each named by the attack it
// is, and the valid tokens that bound them.
func tokenRows() []verifyCase {
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

	// Valid access tokens, one per signing algorithm family.
	add("control/valid-rs256", nil, func(t testing.TB) string { return validToken(t) }, func(t *testing.T, id *Identity) {
		if id.Issuer != testIss || id.Subject != "alice" || id.ClientID != "client-1" || id.JTI != "jti-1" ||
			!slices.Equal(id.Audience, []string{testAud}) || id.Expiry != now+300 ||
			!slices.Equal(id.Scopes, []string{"tools:call", "tools:read"}) {
			t.Fatalf("identity = %+v", id)
		}
		if string(id.Claims) != claimsJSON() {
			t.Fatalf("Claims = %s, want the verified payload", id.Claims)
		}
	})
	add("control/valid-es256", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, claimsJSON(), "ES256", k(t).ec)
	})
	add("control/valid-es384", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"ES384","kid":"e384","typ":"at+jwt"}`, claimsJSON(), "ES384", k(t).ec384)
	})
	add("control/valid-eddsa", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"EdDSA","kid":"ed1","typ":"at+jwt"}`, claimsJSON(), "EdDSA", k(t).ed)
	})

	// alg none in any spelling, with an empty, a made-up or the original
	// RS256 signature.
	add("alg-none/empty-signature", ErrMalformed, func(t testing.TB) string {
		return enc.EncodeToString([]byte(`{"alg":"none","kid":"k1"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + "."
	})
	add("alg-none/some-signature", ErrAlgorithm, func(t testing.TB) string {
		return enc.EncodeToString([]byte(`{"alg":"none","kid":"k1","typ":"at+jwt"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + ".AA"
	})
	for _, none := range []string{"None", "NONE", "nOnE"} {
		add("alg-none/spelled-"+none, ErrAlgorithm, func(t testing.TB) string {
			return enc.EncodeToString([]byte(`{"alg":"`+none+`","kid":"k1","typ":"at+jwt"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + ".AA"
		})
	}
	add("alg-none/rs256-signature-kept", ErrAlgorithm, func(t testing.TB) string {
		valid := validToken(t)
		return enc.EncodeToString([]byte(`{"alg":"none","kid":"k1","typ":"at+jwt"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + "." + enc.EncodeToString(sigOf(t, valid))
	})
	// A tampered payload with the original signature. (That no code path
	// uses an unverified parse is TestNoInsecureJWXAPIs.)
	add("tampered-payload-original-signature", ErrBadSignature, func(t testing.TB) string {
		valid := validToken(t)
		h := enc.EncodeToString([]byte(hdrRS256))
		return h + "." + enc.EncodeToString([]byte(claimsJSON("sub", "admin"))) + "." + enc.EncodeToString(sigOf(t, valid))
	})

	// Algorithm confusion: HS256 keyed with the issuer's public key in every
	// encoding, or with weak secrets; HS* is not allowed without a secret.
	for _, name := range []string{"pkix-pem", "pkix-pem-no-newline", "pkix-pem-crlf", "pkix-pem-spaces", "pkcs1-pem", "der", "jwk-json"} {
		add("hmac-confusion/hs256-keyed-with-"+name, ErrAlgorithm, func(t testing.TB) string {
			return mint(t, `{"alg":"HS256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "HS256", hmacKeyVariants(t)[name])
		})
	}
	add("hmac-confusion/hs256-against-alg-less-keys", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"HS256","kid":"k1"}`, claimsJSON("iss", issNoAlg), "HS256", hmacKeyVariants(t)["pkix-pem"])
	})
	add("hmac-confusion/hs256-keyed-with-recovered-modulus", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"HS256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "HS256", hmacKeyVariants(t)["modulus"])
	})
	for name, secret := range map[string]string{"blank": "", "secret": "secret", "changeme": "changeme"} {
		add("weak-hmac-secret/"+name+"-not-allowed", ErrAlgorithm, func(t testing.TB) string {
			return mint(t, `{"alg":"HS256","typ":"at+jwt"}`, claimsJSON(), "HS256", []byte(secret))
		})
		add("weak-hmac-secret/"+name+"-on-hmac-issuer", ErrBadSignature, func(t testing.TB) string {
			return mint(t, `{"alg":"HS256"}`, claimsJSON("iss", issHMAC), "HS256", []byte(secret))
		})
	}
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		add("weak-hmac-secret/control-"+alg+"-configured-secret", nil, func(t testing.TB) string {
			return mint(t, `{"alg":"`+alg+`","kid":"anything"}`, claimsJSON("iss", issHMAC), alg, hmacSecret)
		})
	}

	// Keys and key URLs carried by the token itself: never used, never fetched.
	add("token-supplied-key/jwk-header-with-kid", ErrMalformed, func(t testing.TB) string {
		j, _ := json.Marshal(jwkOf(k(t).attacker, "k1", "RS256"))
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","jwk":`+string(j)+`}`, claimsJSON(), "RS256", k(t).attacker)
	})
	add("token-supplied-key/jwk-header-without-kid", ErrMalformed, func(t testing.TB) string {
		j, _ := json.Marshal(jwkOf(k(t).attacker, "", "RS256"))
		return mint(t, `{"alg":"RS256","typ":"at+jwt","jwk":`+string(j)+`}`, claimsJSON(), "RS256", k(t).attacker)
	})
	add("token-supplied-key/jku-no-fetch", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","jku":"`+countingServer(t)+`"}`, claimsJSON(), "RS256", k(t).attacker)
	})
	add("token-supplied-key/x5u-no-fetch", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","x5u":"`+countingServer(t)+`"}`, claimsJSON(), "RS256", k(t).attacker)
	})
	add("token-supplied-key/x5c-self-signed-ignored", ErrBadSignature, func(t testing.TB) string {
		x5c := selfSignedX5C(t, k(t).attacker)
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","x5c":["`+x5c+`"]}`, claimsJSON(), "RS256", k(t).attacker)
	})
	add("token-supplied-key/x5c-self-signed-no-kid", ErrUnknownKey, func(t testing.TB) string {
		x5c := selfSignedX5C(t, k(t).attacker)
		return mint(t, `{"alg":"RS256","typ":"at+jwt","x5c":["`+x5c+`"]}`, claimsJSON(), "RS256", k(t).attacker)
	})

	// Hostile kids: path traversal, injection, oversize.
	add("hostile-kid/path-traversal-hs256", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"HS256","kid":"../../../../../../dev/null","typ":"at+jwt"}`, claimsJSON(), "HS256", []byte{})
	})
	add("hostile-kid/path-traversal-rs256", ErrUnknownKey, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"../../../../../../dev/null","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	for name, kid := range map[string]string{"sqli": `x' UNION SELECT 'x'--`, "cmd": "`id`", "crlf": "a\r\nX-Injected: 1"} {
		add("hostile-kid/"+name, ErrUnknownKey, func(t testing.TB) string {
			kj, _ := json.Marshal(kid)
			return mint(t, `{"alg":"RS256","kid":`+string(kj)+`,"typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
		})
	}
	add("hostile-kid/60KB", ErrTooLarge, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"`+strings.Repeat("k", 60<<10)+`","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})

	// A kid that selects a key of another type than the header alg.
	add("key-type-mismatch/es256-with-rsa-kid", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"ES256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "ES256", k(t).ec)
	})
	add("key-type-mismatch/eddsa-with-ec-kid", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"EdDSA","kid":"e1","typ":"at+jwt"}`, claimsJSON(), "EdDSA", k(t).ed)
	})
	add("key-type-mismatch/es384-with-p256-key-without-alg", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"ES384","kid":"e1"}`, claimsJSON("iss", issNoAlg), "ES384", k(t).ec384)
	})

	// crit headers (unknown or malformed), validly signed by the issuer's key.
	add("crit/unknown-extension", ErrCritical, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","crit":["x-evil"],"x-evil":"1"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	for name, crit := range map[string]string{"empty": `[]`, "exp": `["exp"]`, "alg": `["alg"]`, "duplicates": `["x","x"]`, "not-array": `"x"`, "null": `null`} {
		add("crit/"+name, ErrCritical, func(t testing.TB) string {
			return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","crit":`+crit+`}`, claimsJSON(), "RS256", k(t).rsa)
		})
	}

	// RFC 7797 b64:false without crit.
	add("b64-false/encoded-payload", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","b64":false}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("b64-false/unencoded-payload", ErrMalformed, func(t testing.TB) string {
		// RFC 7797 signing input: header + "." + raw payload.
		h := enc.EncodeToString([]byte(`{"alg":"RS256","kid":"k1","typ":"at+jwt","b64":false}`))
		p := "tools"
		return h + "." + p + "." + enc.EncodeToString(signRaw(t, "RS256", k(t).rsa, h+"."+p))
	})

	// Time claims (leeway 60s). A zero leeway cannot be configured (0 means
	// the default); the clock-boundary rows test the boundary.
	add("time-claim/exp-10s-ago-within-leeway", nil, func(t testing.TB) string { return validToken(t, "exp", now-10) })
	add("time-claim/exp-59s-ago-within-leeway", nil, func(t testing.TB) string { return validToken(t, "exp", now-59) })
	add("time-claim/exp-60s-ago", ErrExpired, func(t testing.TB) string { return validToken(t, "exp", now-60) })
	add("time-claim/nbf-in-10s", nil, func(t testing.TB) string { return validToken(t, "nbf", now+10) })
	add("time-claim/nbf-in-1h", ErrNotYetValid, func(t testing.TB) string { return validToken(t, "nbf", now+3600) })
	add("time-claim/iat-in-1h", ErrIssuedInFuture, func(t testing.TB) string { return validToken(t, "iat", now+3600) })
	add("time-claim/iat-2100", ErrIssuedInFuture, func(t testing.TB) string { return validToken(t, "iat", 4102444800) })
	add("time-claim/exp-missing", ErrMissingClaim, func(t testing.TB) string { return validToken(t, "exp", del) })
	// Excessive lifetime: accepted without max_lifetime (the default,
	// unlimited); rejected by an issuer with max_lifetime 24h (leeway 60s).
	add("lifetime/exp-year-2286-accepted-without-max-lifetime", nil, func(t testing.TB) string { return validToken(t, "exp", int64(1e10)) })
	add("lifetime/exp-year-2286", ErrLifetime, func(t testing.TB) string { return validToken(t, "iss", issShort, "exp", int64(1e10)) })
	add("lifetime/exp-minus-iat-24h-1s", ErrLifetime, func(t testing.TB) string {
		return validToken(t, "iss", issShort, "iat", now-3600, "exp", now-3600+86401)
	})
	add("lifetime/exp-minus-iat-24h", nil, func(t testing.TB) string {
		return validToken(t, "iss", issShort, "iat", now-3600, "exp", now-3600+86400)
	})
	add("lifetime/no-iat-exp-in-25h", ErrLifetime, func(t testing.TB) string {
		return validToken(t, "iss", issShort, "iat", del, "exp", now+25*3600)
	})
	add("lifetime/no-iat-exp-in-24h-plus-leeway", nil, func(t testing.TB) string {
		return validToken(t, "iss", issShort, "iat", del, "exp", now+86400+60)
	})
	// NumericDates that are not plain JSON numbers, or out of range.
	add("numeric-date/exp-string", ErrMalformed, func(t testing.TB) string { return validToken(t, "exp", "4102444800") })
	for _, v := range []string{"1e400", "99999999999999999999", "9223372036854775807", "-1", "true", "null", `{}`, `[4102444800]`} {
		add("numeric-date/exp-"+v, ErrMalformed, func(t testing.TB) string { return validToken(t, "exp", raw(v)) })
	}
	add("numeric-date/nbf-string", ErrMalformed, func(t testing.TB) string { return validToken(t, "nbf", "0") })
	add("numeric-date/iat-null", ErrMalformed, func(t testing.TB) string { return validToken(t, "iat", raw("null")) })
	add("numeric-date/exp-1.5e9-past", ErrExpired, func(t testing.TB) string { return validToken(t, "exp", raw("1.5e9")) })
	add("numeric-date/exp-fraction-accepted", nil, func(t testing.TB) string { return validToken(t, "exp", raw("4102444800.999")) }, func(t *testing.T, id *Identity) {
		if id.Expiry != 4102444800 {
			t.Fatalf("Expiry = %d, want 4102444800", id.Expiry)
		}
	})

	// Issuer and audience: exact match, and no token meant for another
	// resource server (confused deputy).
	add("issuer/other", ErrUnknownIssuer, func(t testing.TB) string { return validToken(t, "iss", "https://evil.example.com") })
	add("issuer/trailing-slash", ErrUnknownIssuer, func(t testing.TB) string { return validToken(t, "iss", testIss+"/") })
	add("issuer/upper-case", ErrUnknownIssuer, func(t testing.TB) string { return validToken(t, "iss", strings.ToUpper(testIss)) })
	add("issuer/missing", ErrMissingClaim, func(t testing.TB) string { return validToken(t, "iss", del) })
	add("issuer/number", ErrMalformed, func(t testing.TB) string { return validToken(t, "iss", 1) })
	add("issuer/array", ErrMalformed, func(t testing.TB) string { return validToken(t, "iss", []string{testIss}) })
	add("audience/array-contains", nil, func(t testing.TB) string {
		return validToken(t, "aud", []string{"https://other.example.com", testAud})
	})
	add("audience/array-without", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", []string{"https://other.example.com"}) })
	add("audience/trailing-slash", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", testAud+"/") })
	add("audience/missing", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", del) })
	add("audience/empty-array", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", []string{}) })
	add("audience/number", ErrMalformed, func(t testing.TB) string { return validToken(t, "aud", 42) })
	add("audience/array-of-number", ErrMalformed, func(t testing.TB) string { return validToken(t, "aud", []any{testAud, 42}) })
	add("audience/null", ErrMalformed, func(t testing.TB) string { return validToken(t, "aud", raw("null")) })
	add("audience/token-for-other-mcp-server", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", "https://other-mcp.example.com/mcp") })
	add("audience/token-for-idp-userinfo", ErrAudience, func(t testing.TB) string { return validToken(t, "aud", testIss+"/userinfo") })

	// typ: only access tokens (at+jwt) where required; ID tokens replayed as
	// access tokens fail on typ or audience.
	for name, hdr := range map[string]string{"JWT": `{"alg":"RS256","kid":"k1","typ":"JWT"}`, "missing": `{"alg":"RS256","kid":"k1"}`, "JOSE": `{"alg":"RS256","kid":"k1","typ":"JOSE"}`, "at+jwt-suffix": `{"alg":"RS256","kid":"k1","typ":"at+jwtx"}`} {
		add("typ/"+name+"-rejected", ErrType, func(t testing.TB) string { return mint(t, hdr, claimsJSON(), "RS256", k(t).rsa) })
	}
	for _, typ := range []string{"at+jwt", "application/at+jwt", "AT+JWT", "Application/At+Jwt"} {
		add("typ/"+typ+"-accepted", nil, func(t testing.TB) string {
			return mint(t, `{"alg":"RS256","kid":"k1","typ":"`+typ+`"}`, claimsJSON(), "RS256", k(t).rsa)
		})
	}
	add("typ/number", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":1}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("typ/JWT-on-any-issuer", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"JWT"}`, claimsJSON("iss", issAny), "RS256", k(t).rsa)
	})
	add("typ/missing-on-any-issuer", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1"}`, claimsJSON("iss", issAny), "RS256", k(t).rsa)
	})
	add("id-token-replay/at-jwt-issuer", ErrType, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"JWT"}`, claimsJSON("aud", "client-1", "nonce", "n-0S6"), "RS256", k(t).rsa)
	})
	add("id-token-replay/any-issuer", ErrAudience, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"JWT"}`, claimsJSON("iss", issAny, "aud", "client-1", "nonce", "n-0S6"), "RS256", k(t).rsa)
	})

	// Signature shape: stripped or swapped signatures, wrong segment counts,
	// degenerate ECDSA signatures.
	add("signature/stripped-h.p.", ErrMalformed, func(t testing.TB) string { v := validToken(t); return v[:strings.LastIndexByte(v, '.')+1] })
	add("signature/stripped-h.p", ErrMalformed, func(t testing.TB) string { v := validToken(t); return v[:strings.LastIndexByte(v, '.')] })
	add("signature/of-another-token", ErrBadSignature, func(t testing.TB) string {
		return withSig(validToken(t, "sub", "admin"), sigOf(t, validToken(t)))
	})
	add("signature/all-zero", ErrBadSignature, func(t testing.TB) string { return withSig(validToken(t), make([]byte, 256)) })
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
		add("segments/"+name, ErrMalformed, func(t testing.TB) string { return f(validToken(t)) })
	}
	es := func(t testing.TB) string {
		return mint(t, `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, claimsJSON(), "ES256", k(t).ec)
	}
	add("degenerate-ecdsa/r-s-zero", ErrBadSignature, func(t testing.TB) string { return withSig(es(t), make([]byte, 64)) })
	add("degenerate-ecdsa/r-equals-n", ErrBadSignature, func(t testing.TB) string {
		sig := sigOf(t, es(t))
		n := elliptic.P256().Params().N.FillBytes(make([]byte, 32))
		return withSig(es(t), append(n, sig[32:]...))
	})
	add("degenerate-ecdsa/der-signature", ErrBadSignature, func(t testing.TB) string {
		sig := sigOf(t, es(t))
		der, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])})
		return withSig(es(t), der)
	})

	// alg: the header must name exactly the key's algorithm; kid: absent,
	// unknown or of the wrong type.
	add("alg-mismatch/header-rs384-key-rs256", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"RS384","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "RS384", k(t).rsa)
	})
	add("alg-mismatch/header-ps256-key-rs256", ErrAlgorithm, func(t testing.TB) string {
		return mint(t, `{"alg":"PS256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "PS256", k(t).rsa)
	})
	add("alg-mismatch/header-without-alg", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"kid":"k1","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("alg-mismatch/alg-not-a-string", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":["RS256"],"kid":"k1","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	for _, alg := range []string{"rs256", "RS256 ", " RS256", "RS256\u0000", "ES512", "ES256K", "RSA-OAEP"} {
		add("alg-not-allowed/"+alg, ErrAlgorithm, func(t testing.TB) string {
			a, _ := json.Marshal(alg)
			return mint(t, `{"alg":`+string(a)+`,"kid":"k1","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
		})
	}
	add("kid/absent-several-keys", ErrUnknownKey, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("kid/absent-single-key-accepted", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256"}`, claimsJSON("iss", issSingle), "RS256", k(t).rsa)
	})
	add("kid/unknown", ErrUnknownKey, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"nope","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("kid/number", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":1,"typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("kid/empty", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"","typ":"at+jwt"}`, claimsJSON(), "RS256", k(t).rsa)
	})

	// Duplicate members in the header or the claims (parsers disagree on
	// which one wins); case variants are other claims.
	for name, hdr := range map[string]string{
		"kid-zzz-then-k1": `{"alg":"RS256","kid":"zzz","kid":"k1","typ":"at+jwt"}`,
		"kid-k1-then-zzz": `{"alg":"RS256","kid":"k1","kid":"zzz","typ":"at+jwt"}`,
		"alg-then-none":   `{"alg":"RS256","kid":"k1","typ":"at+jwt","alg":"none"}`,
	} {
		add("duplicate-member/header-"+name, ErrMalformed, func(t testing.TB) string { return mint(t, hdr, claimsJSON(), "RS256", k(t).rsa) })
	}
	add("duplicate-member/claims", ErrMalformed, func(t testing.TB) string {
		c := strings.TrimSuffix(claimsJSON("scope", del, "sub", del), "}") + `,"scope":"tools:read","scope":"tools:admin","sub":"alice","sub":"admin"}`
		return mint(t, hdrRS256, c, "RS256", k(t).rsa)
	})
	add("duplicate-member/nested-claims", ErrMalformed, func(t testing.TB) string {
		return mint(t, hdrRS256, claimsJSON("realm_access", raw(`{"roles":["a"],"roles":["admin"]}`)), "RS256", k(t).rsa)
	})
	add("case-variant-member/claims-ignored", nil, func(t testing.TB) string {
		return mint(t, hdrRS256, claimsJSON("ISS", "https://evil.example.com", "Exp", 1, "AUD", "x"), "RS256", k(t).rsa)
	}, func(t *testing.T, id *Identity) {
		if id.Issuer != testIss || id.Expiry != now+300 || !slices.Equal(id.Audience, []string{testAud}) {
			t.Fatalf("identity = %+v", id)
		}
	})

	// Scope claim parsing (what the policy receives).
	add("scope/double-space", nil, func(t testing.TB) string { return validToken(t, "scope", "tools:read  tools:admin") }, wantScopes("tools:admin", "tools:read"))
	add("scope/tabs-newlines", nil, func(t testing.TB) string { return validToken(t, "scope", "tools:read\ttools:admin\n") }, wantScopes("tools:admin", "tools:read"))
	add("scope/scp-array", nil, func(t testing.TB) string {
		return validToken(t, "scope", del, "scp", []string{"tools:read", "tools:call"})
	}, wantScopes("tools:call", "tools:read"))
	add("scope/array", nil, func(t testing.TB) string { return validToken(t, "scope", []string{"tools:read", "tools:read"}) }, wantScopes("tools:read"))
	add("scope/and-scp-merged", nil, func(t testing.TB) string { return validToken(t, "scope", "a b", "scp", "b c") }, wantScopes("a", "b", "c"))
	add("scope/prefix-is-not-a-match", nil, func(t testing.TB) string { return validToken(t, "scope", "tools:readx") }, wantScopes("tools:readx"))
	add("scope/case-kept", nil, func(t testing.TB) string { return validToken(t, "scope", "Tools:Read") }, wantScopes("Tools:Read"))
	add("scope/invalid-chars-dropped", nil, func(t testing.TB) string { return validToken(t, "scope", "ok \"quoted\" back\\slash é") }, wantScopes("ok"))
	add("scope/empty", nil, func(t testing.TB) string { return validToken(t, "scope", "") }, wantScopes())
	add("scope/number", ErrMalformed, func(t testing.TB) string { return validToken(t, "scope", 1) })
	add("scope/scp-object", ErrMalformed, func(t testing.TB) string { return validToken(t, "scp", map[string]any{"a": 1}) })

	// Missing RFC 9068 claims: tolerated by default (sub excepted: see
	// below), rejected with required_claims (issuer "strict").
	for _, c := range []string{"client_id", "jti", "iat"} {
		add("rfc9068-claims/"+c+"-missing-tolerated", nil, func(t testing.TB) string { return validToken(t, c, del) })
	}
	for _, c := range []string{"sub", "client_id", "jti", "iat"} {
		add("rfc9068-claims/"+c+"-missing-required", ErrMissingClaim, func(t testing.TB) string { return validToken(t, "iss", issStrict, c, del) })
	}
	add("rfc9068-claims/required-claim-null", ErrMissingClaim, func(t testing.TB) string { return validToken(t, "iss", issStrict, "jti", raw("null")) })
	add("rfc9068-claims/strict-control", nil, func(t testing.TB) string { return validToken(t, "iss", issStrict) })

	// Anonymous tokens: without a subject, identity headers, subject
	// revocation and session binding silently have nothing to key on, so
	// sub is required unless the issuer opts out (issuer "nosub"). A sub
	// of another type is malformed whatever the issuer says: the policy
	// would read claims.sub differently from the identity's subject.
	noSub := func(t *testing.T, id *Identity) {
		if id.Subject != "" || id.ClientID != "client-1" {
			t.Fatalf("identity = %+v, want no subject", id)
		}
	}
	add("anonymous-token/sub-absent", ErrMissingSubject, func(t testing.TB) string { return validToken(t, "sub", del) })
	add("anonymous-token/sub-empty", ErrMissingSubject, func(t testing.TB) string { return validToken(t, "sub", "") })
	add("anonymous-token/sub-absent-hs256", ErrMissingSubject, func(t testing.TB) string {
		return mint(t, `{"alg":"HS256"}`, claimsJSON("iss", issHMAC, "sub", del), "HS256", hmacSecret)
	})
	add("anonymous-token/sub-null", ErrMalformed, func(t testing.TB) string { return validToken(t, "sub", raw("null")) })
	add("anonymous-token/sub-number", ErrMalformed, func(t testing.TB) string { return validToken(t, "sub", 7) })
	add("anonymous-token/sub-array", ErrMalformed, func(t testing.TB) string { return validToken(t, "sub", []string{"alice"}) })
	add("anonymous-token/sub-object", ErrMalformed, func(t testing.TB) string { return validToken(t, "sub", map[string]any{"id": "alice"}) })
	add("anonymous-token/sub-bool", ErrMalformed, func(t testing.TB) string { return validToken(t, "sub", false) })
	add("anonymous-token/opt-out-sub-absent", nil, func(t testing.TB) string { return validToken(t, "iss", issNoSub, "sub", del) }, noSub)
	add("anonymous-token/opt-out-sub-empty", nil, func(t testing.TB) string { return validToken(t, "iss", issNoSub, "sub", "") }, noSub)
	add("anonymous-token/opt-out-sub-kept", nil, func(t testing.TB) string { return validToken(t, "iss", issNoSub) }, func(t *testing.T, id *Identity) {
		if id.Subject != "alice" {
			t.Fatalf("Subject = %q, want alice", id.Subject)
		}
	})
	add("anonymous-token/opt-out-sub-null", ErrMalformed, func(t testing.TB) string { return validToken(t, "iss", issNoSub, "sub", raw("null")) })
	add("anonymous-token/opt-out-sub-number", ErrMalformed, func(t testing.TB) string { return validToken(t, "iss", issNoSub, "sub", 7) })
	// The claim checks before it still decide first.
	add("anonymous-token/sub-absent-and-expired", ErrExpired, func(t testing.TB) string {
		return validToken(t, "sub", del, "exp", now-3600, "iat", now-7200, "nbf", now-7200)
	})
	add("rfc9068-claims/client_id-not-string", ErrMalformed, func(t testing.TB) string { return validToken(t, "client_id", []string{"x"}) })

	// Non-canonical base64url: one token, one spelling (except ECDSA high s).
	add("non-canonical/header-padding", ErrMalformed, func(t testing.TB) string {
		v := validToken(t)
		// The header {"alg":...} is 42 bytes: its encoding needs padding.
		i := strings.IndexByte(v, '.')
		return v[:i] + "==" + v[i:]
	})
	add("non-canonical/signature-padding", ErrMalformed, func(t testing.TB) string { return validToken(t) + "==" })
	add("non-canonical/signature-std-alphabet", ErrMalformed, func(t testing.TB) string {
		for {
			v := validToken(t)
			i := strings.LastIndexByte(v, '.')
			if s := v[i+1:]; strings.ContainsAny(s, "-_") {
				return v[:i+1] + strings.NewReplacer("-", "+", "_", "/").Replace(s)
			}
		}
	})
	add("non-canonical/signature-trailing-bits", ErrMalformed, func(t testing.TB) string {
		v := validToken(t) // 256-byte signature: the last character carries 4 unused bits
		last := strings.IndexByte(b64Alphabet, v[len(v)-1])
		return v[:len(v)-1] + string(b64Alphabet[last|1])
	})
	add("non-canonical/ecdsa-high-s-accepted", nil, func(t testing.TB) string {
		// Documented: both s and n-s verify (ECDSA malleability); IdPs do
		// not normalise s, so rejecting high-s would reject real tokens.
		tok := es(t)
		sig := sigOf(t, tok)
		n := elliptic.P256().Params().N
		s := new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:]))
		return withSig(tok, append(sig[:32:32], s.FillBytes(make([]byte, 32))...))
	})

	// White space in or around the token, or a scheme left in it.
	for name, f := range map[string]func(string) string{
		"leading-space":  func(v string) string { return " " + v },
		"trailing-space": func(v string) string { return v + " " },
		"trailing-lf":    func(v string) string { return v + "\n" },
		"inner-space":    func(v string) string { return v[:10] + " " + v[10:] },
		"inner-crlf":     func(v string) string { return v[:10] + "\r\n" + v[10:] },
		"bearer-prefix":  func(v string) string { return "Bearer " + v },
	} {
		add("whitespace/"+name, ErrMalformed, func(t testing.TB) string { return f(validToken(t)) })
	}

	// Header or payload not exactly one JSON object; BOM, lone surrogates and
	// invalid UTF-8.
	for name, p := range map[string]string{"array": `[]`, "null": `null`, "string": `"x"`, "trailing-garbage": claimsJSON() + "xyz", "two-objects": claimsJSON() + "{}"} {
		add("not-one-object/payload-"+name, ErrMalformed, func(t testing.TB) string { return mint(t, hdrRS256, p, "RS256", k(t).rsa) })
	}
	add("not-one-object/header-trailing-garbage", ErrMalformed, func(t testing.TB) string { return mint(t, hdrRS256+"x", claimsJSON(), "RS256", k(t).rsa) })
	add("not-one-object/header-array", ErrMalformed, func(t testing.TB) string { return mint(t, `["RS256"]`, claimsJSON(), "RS256", k(t).rsa) })
	add("utf8/header-bom", ErrMalformed, func(t testing.TB) string { return mint(t, "\ufeff"+hdrRS256, claimsJSON(), "RS256", k(t).rsa) })
	add("utf8/payload-bom", ErrMalformed, func(t testing.TB) string { return mint(t, hdrRS256, "\ufeff"+claimsJSON(), "RS256", k(t).rsa) })
	add("utf8/lone-surrogate", ErrMalformed, func(t testing.TB) string {
		return mint(t, hdrRS256, strings.Replace(claimsJSON(), `"alice"`, `"al\ud800ice"`, 1), "RS256", k(t).rsa)
	})
	add("utf8/invalid-byte", ErrMalformed, func(t testing.TB) string {
		return mint(t, hdrRS256, strings.Replace(claimsJSON(), `"alice"`, "\"al\xffice\"", 1), "RS256", k(t).rsa)
	})

	// Size and depth: oversized tokens, dot floods, deep nesting.
	add("oversized/1MiB-garbage", ErrTooLarge, func(t testing.TB) string { return strings.Repeat("A", 1<<20) })
	add("oversized/4MiB-signed", ErrTooLarge, func(t testing.TB) string { return validToken(t, "pad", strings.Repeat("x", 3<<20)) })
	add("oversized/just-over-16KiB", ErrTooLarge, func(t testing.TB) string { return strings.Repeat("A", 16385) })
	add("oversized/15KiB-token-accepted", nil, func(t testing.TB) string { return validToken(t, "pad", strings.Repeat("x", 10<<10)) })
	add("dot-flood/1MiB", ErrTooLarge, func(t testing.TB) string { return strings.Repeat(".", 1<<20) })
	add("dot-flood/within-cap", ErrMalformed, func(t testing.TB) string { return strings.Repeat(".", 16000) })
	add("deep-nesting/header-100k", ErrTooLarge, func(t testing.TB) string {
		return enc.EncodeToString([]byte(strings.Repeat("[", 100000))) + ".e30.AA"
	})
	add("deep-nesting/header-within-size-cap", ErrMalformed, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","x":`+nested(4000)+`}`, claimsJSON(), "RS256", k(t).rsa)
	})
	add("deep-nesting/payload-depth-33", ErrMalformed, func(t testing.TB) string { return validToken(t, "x", raw(nested(32))) })
	add("deep-nesting/payload-depth-32-accepted", nil, func(t testing.TB) string { return validToken(t, "x", raw(nested(31))) })

	// Other JOSE forms: JWE (including CPU and memory bombs), JSON
	// serialization, nested JWTs.
	add("jwe/five-segments", ErrMalformed, func(t testing.TB) string { return validToken(t) + ".AA.AA" })
	add("jwe/real-jwe-wrapping-alg-none", ErrMalformed, func(t testing.TB) string {
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
	add("json-serialization/general", ErrMalformed, func(t testing.TB) string {
		parts := strings.Split(validToken(t), ".")
		b, _ := json.Marshal(map[string]any{"payload": parts[1], "signatures": []any{map[string]string{"protected": parts[0], "signature": parts[2]}}})
		return string(b)
	})
	add("json-serialization/flattened", ErrMalformed, func(t testing.TB) string {
		parts := strings.Split(validToken(t), ".")
		b, _ := json.Marshal(map[string]string{"payload": parts[1], "protected": parts[0], "signature": parts[2]})
		return string(b)
	})
	add("nested-jwt-unsigned-inner", ErrMalformed, func(t testing.TB) string {
		inner := enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + "."
		return mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","cty":"JWT"}`, inner, "RS256", k(t).rsa)
	})
	add("jwe/p2c-bomb", ErrMalformed, func(t testing.TB) string {
		h := enc.EncodeToString([]byte(`{"alg":"PBES2-HS256+A128KW","enc":"A128GCM","p2c":2000000000,"p2s":"AAAAAAAAAAA"}`))
		return h + ".AAAA.AAAA.AAAA.AAAA"
	})
	add("jwe/zip-bomb", ErrMalformed, func(t testing.TB) string {
		h := enc.EncodeToString([]byte(`{"alg":"RSA-OAEP","enc":"A128GCM","zip":"DEF"}`))
		return h + ".AAAA.AAAA.AAAA.AAAA"
	})

	// Cross-issuer key use: keys belong to their issuer.
	add("cross-issuer-key/iss-B-signed-with-A-key-and-kid", ErrUnknownKey, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"k1"}`, claimsJSON("iss", issB), "RS256", k(t).rsa)
	})
	add("cross-issuer-key/iss-B-kid-b1-signed-with-A-key", ErrBadSignature, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"b1"}`, claimsJSON("iss", issB), "RS256", k(t).rsa)
	})
	add("cross-issuer-key/iss-B-control", nil, func(t testing.TB) string {
		return mint(t, `{"alg":"RS256","kid":"b1"}`, claimsJSON("iss", issB), "RS256", k(t).rsaB)
	})

	// Expired and badly signed is a bad signature, never "expired".
	add("expired-and-bad-signature", ErrBadSignature, func(t testing.TB) string {
		return withSig(validToken(t, "exp", now-3600), sigOf(t, validToken(t)))
	})

	// Other credentials presented as bearer tokens.
	add("wrong-credential/opaque-access-token", ErrMalformed, func(t testing.TB) string { return "2YotnFZFEjr1zCsicMWpAA" })
	add("wrong-credential/refresh-token", ErrMalformed, func(t testing.TB) string { return "tGzv3JOkF0XG5Qx2TlKWIA" })
	add("wrong-credential/api-key", ErrMalformed, func(t testing.TB) string { return "sk_live_51H8xXXXXXXXXXXXXXXXXXXXX" })
	add("wrong-credential/dpop-bound-token", ErrType, func(t testing.TB) string {
		return validToken(t, "cnf", map[string]string{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
	})
	add("wrong-credential/mtls-bound-token", ErrType, func(t testing.TB) string {
		return validToken(t, "cnf", map[string]string{"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"})
	})

	// Clock boundaries (leeway 60s).
	add("clock-boundary/exp-equals-now-minus-leeway", ErrExpired, func(t testing.TB) string { return validToken(t, "exp", now-60) })
	add("clock-boundary/exp-one-second-later", nil, func(t testing.TB) string { return validToken(t, "exp", now-59) })
	add("clock-boundary/exp-fraction-before-boundary", ErrExpired, func(t testing.TB) string { return validToken(t, "exp", raw(big.NewInt(now-61).String()+".999")) })
	add("clock-boundary/nbf-equals-now", nil, func(t testing.TB) string { return validToken(t, "nbf", now) })
	add("clock-boundary/nbf-equals-now-plus-leeway", nil, func(t testing.TB) string { return validToken(t, "nbf", now+60) })
	add("clock-boundary/nbf-leeway-plus-one", ErrNotYetValid, func(t testing.TB) string { return validToken(t, "nbf", now+61) })
	add("clock-boundary/iat-equals-now-plus-leeway", nil, func(t testing.TB) string { return validToken(t, "iat", now+60) })
	add("clock-boundary/iat-leeway-plus-one", ErrIssuedInFuture, func(t testing.TB) string { return validToken(t, "iat", now+61) })
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
	rows := append(tokenRows(), idpRows()...)
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
}

// TestNoInsecureJWXAPIs: no code path verifies through an unverified parse
// (which accepts alg none and tampered payloads) or follows key URLs the
// token supplies (jku, x5u).
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
	// The error contract: a rejection wraps exactly one precise sentinel
	// besides ErrInvalidToken, so a token that is both expired and badly
	// signed cannot be mistaken for a merely expired one.
	v := tableVerifier(t)
	for _, tc := range tokenRows() {
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
