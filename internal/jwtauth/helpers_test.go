package jwtauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	testIss = "https://idp.example.com"
	testAud = "https://mcp.example.com/mcp"
)

// testNow is the fixed clock of the table tests.
var testNow = time.Unix(1_800_000_000, 0)

var enc = base64.RawURLEncoding

// testKeys are generated once per test binary.
type testKeys struct {
	rsa      *rsa.PrivateKey // kid k1, RS256
	rsa2     *rsa.PrivateKey // kid k2, RS256 (rotation)
	rsaB     *rsa.PrivateKey // kid b1, issuer B
	attacker *rsa.PrivateKey
	rsa1024  *rsa.PrivateKey
	ec       *ecdsa.PrivateKey // kid e1, ES256
	ec384    *ecdsa.PrivateKey // kid e384, ES384
	ed       ed25519.PrivateKey
}

var (
	keysOnce sync.Once
	tk       *testKeys
)

func keys(tb testing.TB) *testKeys {
	tb.Helper()
	keysOnce.Do(func() {
		genRSA := func(bits int) *rsa.PrivateKey {
			k, err := rsa.GenerateKey(rand.Reader, bits)
			if err != nil {
				panic(err)
			}
			return k
		}
		genEC := func(c elliptic.Curve) *ecdsa.PrivateKey {
			k, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				panic(err)
			}
			return k
		}
		_, ed, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		tk = &testKeys{
			rsa: genRSA(2048), rsa2: genRSA(2048), rsaB: genRSA(2048), attacker: genRSA(2048),
			ec: genEC(elliptic.P256()), ec384: genEC(elliptic.P384()), ed: ed,
		}
		// Go refuses to generate keys under 1024 bits; 1024 is enough to test
		// that weak RSA keys are refused.
		tk.rsa1024 = genRSA(1024)
	})
	return tk
}

// jwkOf returns the public JWK of a private key as a map, with kid and
// alg when non-empty.
func jwkOf(priv crypto.Signer, kid, alg string) map[string]any {
	m := map[string]any{}
	switch pub := priv.Public().(type) {
	case *rsa.PublicKey:
		m["kty"] = "RSA"
		m["n"] = enc.EncodeToString(pub.N.Bytes())
		m["e"] = enc.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		m["kty"] = "EC"
		size := (pub.Curve.Params().BitSize + 7) / 8
		m["crv"] = pub.Curve.Params().Name
		m["x"] = enc.EncodeToString(pub.X.FillBytes(make([]byte, size)))
		m["y"] = enc.EncodeToString(pub.Y.FillBytes(make([]byte, size)))
	case ed25519.PublicKey:
		m["kty"] = "OKP"
		m["crv"] = "Ed25519"
		m["x"] = enc.EncodeToString(pub)
	default:
		panic("unsupported key")
	}
	if kid != "" {
		m["kid"] = kid
	}
	if alg != "" {
		m["alg"] = alg
	}
	return m
}

func jwksJSON(keys ...map[string]any) []byte {
	if keys == nil {
		keys = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err)
	}
	return b
}

// mainJWKS is the key set of issuer A: k1 RS256, e1 ES256, e384 ES384,
// ed1 EdDSA.
func mainJWKS(tb testing.TB) []byte {
	k := keys(tb)
	return jwksJSON(
		jwkOf(k.rsa, "k1", "RS256"),
		jwkOf(k.ec, "e1", "ES256"),
		jwkOf(k.ec384, "e384", "ES384"),
		jwkOf(k.ed, "ed1", "EdDSA"),
	)
}

func writeFile(tb testing.TB, name string, data []byte) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// signRaw signs input the way JWS alg does. key is a private key or an
// HMAC secret ([]byte).
func signRaw(tb testing.TB, alg string, key any, input string) []byte {
	tb.Helper()
	hashOf := map[byte]crypto.Hash{'2': crypto.SHA256, '3': crypto.SHA384, '5': crypto.SHA512}
	var h crypto.Hash
	if len(alg) == 5 {
		h = hashOf[alg[2]]
	}
	digest := func() []byte {
		d := h.New()
		d.Write([]byte(input))
		return d.Sum(nil)
	}
	switch {
	case alg[:2] == "RS":
		sig, err := rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), h, digest())
		if err != nil {
			tb.Fatal(err)
		}
		return sig
	case alg[:2] == "PS":
		sig, err := rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), h, digest(), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		if err != nil {
			tb.Fatal(err)
		}
		return sig
	case alg[:2] == "ES":
		priv := key.(*ecdsa.PrivateKey)
		r, s, err := ecdsa.Sign(rand.Reader, priv, digest())
		if err != nil {
			tb.Fatal(err)
		}
		size := (priv.Curve.Params().BitSize + 7) / 8
		return append(r.FillBytes(make([]byte, size)), s.FillBytes(make([]byte, size))...)
	case alg == "EdDSA":
		return ed25519.Sign(key.(ed25519.PrivateKey), []byte(input))
	case alg[:2] == "HS":
		var nh func() hash.Hash
		switch h {
		case crypto.SHA256:
			nh = sha256.New
		case crypto.SHA384:
			nh = sha512.New384
		default:
			nh = sha512.New
		}
		m := hmac.New(nh, key.([]byte))
		m.Write([]byte(input))
		return m.Sum(nil)
	}
	tb.Fatalf("signRaw: unsupported alg %q", alg)
	return nil
}

// mint builds b64url(header).b64url(payload).b64url(sig) by hand, signing
// with alg and key; header and payload are raw JSON text.
func mint(tb testing.TB, header, payload, alg string, key any) string {
	tb.Helper()
	in := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	return in + "." + enc.EncodeToString(signRaw(tb, alg, key, in))
}

// del marks a claim to remove in claimsJSON.
type delClaim struct{}

var del = delClaim{}

// baseClaims are the claims of a valid RFC 9068 token of issuer A.
func baseClaims() map[string]any {
	now := testNow.Unix()
	return map[string]any{
		"iss":       testIss,
		"sub":       "alice",
		"aud":       testAud,
		"exp":       now + 300,
		"iat":       now,
		"nbf":       now,
		"scope":     "tools:read tools:call",
		"client_id": "client-1",
		"jti":       "jti-1",
	}
}

// claimsJSON returns baseClaims with the overrides kv (name, value pairs;
// value del removes the claim) as JSON.
func claimsJSON(kv ...any) string {
	m := baseClaims()
	for i := 0; i < len(kv); i += 2 {
		name := kv[i].(string)
		if kv[i+1] == del {
			delete(m, name)
			continue
		}
		m[name] = kv[i+1]
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

const hdrRS256 = `{"alg":"RS256","kid":"k1","typ":"at+jwt"}`

// validToken is a valid RS256 token of issuer A with claim overrides.
func validToken(tb testing.TB, kv ...any) string {
	return mint(tb, hdrRS256, claimsJSON(kv...), "RS256", keys(tb).rsa)
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// jwksServer is an httptest JWKS endpoint whose answer can be changed.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	status  int
	body    []byte
	headers map[string]string
	hits    atomic.Int64
}

func newJWKSServer(tb testing.TB, body []byte) *jwksServer {
	s := &jwksServer{status: http.StatusOK, body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		status, body, headers := s.status, s.body, s.headers
		s.mu.Unlock()
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	tb.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(status int, body []byte) {
	s.mu.Lock()
	s.status, s.body = status, body
	s.mu.Unlock()
}

// waitFor polls cond until it is true or the (bounded) deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newTestVerifier builds a Verifier on a fixed clock and fails the test on
// error, and starts it. Close runs at the end of the test.
func newTestVerifier(tb testing.TB, issuers []Issuer, opts Options) *Verifier {
	tb.Helper()
	if opts.Clock == nil {
		opts.Clock = func() time.Time { return testNow }
	}
	opts.Issuers, opts.DefaultAudience = issuers, testAud
	v, err := NewVerifier(opts)
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	v.Start()
	tb.Cleanup(func() { v.Close() })
	return v
}

// reasonOf is the Reason label expected for a sentinel.
func reasonOf(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if r.err == err {
			return r.reason
		}
	}
	for _, r := range unavailableReasons {
		if r.err == err {
			return r.reason
		}
	}
	return "invalid_token"
}

// checkErr asserts that err is the rejection want (nil: accepted).
func checkErr(tb testing.TB, what string, err, want error) {
	tb.Helper()
	if want == nil {
		if err != nil {
			tb.Fatalf("%s = %v, want accepted", what, err)
		}
		return
	}
	if err == nil {
		tb.Fatalf("%s accepted, want %v", what, want)
	}
	if !errors.Is(err, want) {
		tb.Fatalf("%s = %v, want errors.Is %v", what, err, want)
	}
	if errors.Is(want, ErrKeysUnavailable) {
		if errors.Is(err, ErrInvalidToken) {
			tb.Fatalf("%s = %v: a cannot-decide error wraps ErrInvalidToken", what, err)
		}
	} else if !errors.Is(err, ErrInvalidToken) {
		tb.Fatalf("%s = %v, does not wrap ErrInvalidToken", what, err)
	}
	if got := Reason(err); got != reasonOf(want) {
		tb.Fatalf("Reason(%s) = %q, want %q (err %v)", what, got, reasonOf(want), err)
	}
}

func readSource(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
