package jwtauth

import (
	"go.uber.org/goleak"

	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// remoteVerifier builds a Verifier for one issuer (testIss) whose keys come
// from srv, on clock, and waits until it is ready when wantReady.
func remoteVerifier(t *testing.T, srv *jwksServer, clock *fakeClock, wantReady bool, mod ...func(*Issuer)) *Verifier {
	t.Helper()
	// On-demand refetches are answered by a local server, but a loaded
	// machine (and the race detector) can take longer than the default
	// wait; the wait bound has tests of its own.
	c := Issuer{Issuer: testIss, JWKSURI: srv.URL + "/jwks", JWKS: JWKS{UnknownKIDWait: 10 * time.Second}}
	for _, m := range mod {
		m(&c)
	}
	v := newTestVerifier(t, []Issuer{c}, Options{Clock: clock.Now})
	if wantReady {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := v.WaitReady(ctx); err != nil {
			t.Fatalf("WaitReady: %v", err)
		}
	}
	return v
}

func tokenFor(t *testing.T, kid string, priv *rsa.PrivateKey) string {
	return mint(t, `{"alg":"RS256","kid":"`+kid+`","typ":"at+jwt"}`, claimsJSON(), "RS256", priv)
}

func verifyTok(v *Verifier, tok string) error {
	_, err := v.Verify(context.Background(), tok)
	return err
}

// TestFetchedKeySetHygiene: a fetched key set is filtered before use. HMAC
// (oct) keys, weak RSA keys, off-curve EC keys, encryption keys and
// ambiguous duplicate kids never verify a token; alg-less keys verify only
// the algorithms of their key type; an oversized set is refused; the JWKS
// URL never comes from the token.
func TestFetchedKeySetHygiene(t *testing.T) {
	k := keys(t)
	oct := map[string]any{"kty": "oct", "kid": "k1", "alg": "HS256", "k": "c2VjcmV0"}
	t.Run("oct-key/dropped-from-fetched-jwks", func(t *testing.T) {
		srv := newJWKSServer(t, jwksJSON(oct, jwkOf(k.rsa, "r1", "RS256")))
		v := remoteVerifier(t, srv, newFakeClock(testNow), true)
		if n := len(v.issuers[0].keys.Load().keys); n != 1 {
			t.Fatalf("verification set has %d keys, want 1 (oct dropped)", n)
		}
		hs := mint(t, `{"alg":"HS256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "HS256", []byte("secret"))
		checkErr(t, "Verify(HS256 keyed with the JWKS oct key)", verifyTok(v, hs), ErrAlgorithm)
	})
	t.Run("oct-key/ignored-on-hmac-issuer", func(t *testing.T) {
		srv := newJWKSServer(t, jwksJSON(oct, jwkOf(k.rsa, "r1", "RS256")))
		secret := writeFile(t, "secret", hmacSecret)
		v := remoteVerifier(t, srv, newFakeClock(testNow), true, func(c *Issuer) { c.HMACSecretFile = secret })
		hs := mint(t, `{"alg":"HS256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "HS256", []byte("secret"))
		checkErr(t, "Verify(HS256 keyed with the JWKS oct key)", verifyTok(v, hs), ErrBadSignature)
		good := mint(t, `{"alg":"HS256","typ":"at+jwt"}`, claimsJSON(), "HS256", hmacSecret)
		checkErr(t, "Verify(HS256 keyed with the configured secret)", verifyTok(v, good), nil)
	})
	t.Run("weak-key/rsa-1024-and-e-1", func(t *testing.T) {
		e1 := jwkOf(k.rsa2, "e-one", "RS256")
		e1["e"] = "AQ"
		srv := newJWKSServer(t, jwksJSON(jwkOf(k.rsa1024, "weak", "RS256"), e1, jwkOf(k.rsa, "k1", "RS256")))
		v := remoteVerifier(t, srv, newFakeClock(testNow), true)
		if n := len(v.issuers[0].keys.Load().keys); n != 1 {
			t.Fatalf("verification set has %d keys, want 1", n)
		}
		checkErr(t, "Verify(1024-bit key)", verifyTok(v, tokenFor(t, "weak", k.rsa1024)), ErrUnknownKey)
		// With e=1 the "signature" is the encoded message itself.
		tokE1 := forgeE1(t, "e-one", k.rsa2.N)
		checkErr(t, "Verify(e=1 forgery)", verifyTok(v, tokE1), ErrUnknownKey)
		checkErr(t, "Verify(control)", verifyTok(v, validToken(t)), nil)
	})
	t.Run("weak-key/ec-point-not-on-curve", func(t *testing.T) {
		bad := map[string]any{"kty": "EC", "crv": "P-256", "kid": "bad-ec", "alg": "ES256",
			"x": enc.EncodeToString(big.NewInt(1).FillBytes(make([]byte, 32))), "y": enc.EncodeToString(big.NewInt(1).FillBytes(make([]byte, 32)))}
		srv := newJWKSServer(t, jwksJSON(bad, jwkOf(k.rsa, "k1", "RS256")))
		v := remoteVerifier(t, srv, newFakeClock(testNow), true)
		if n := len(v.issuers[0].keys.Load().keys); n != 1 {
			t.Fatalf("verification set has %d keys, want 1", n)
		}
		tok := mint(t, `{"alg":"ES256","kid":"bad-ec","typ":"at+jwt"}`, claimsJSON(), "ES256", k.ec)
		checkErr(t, "Verify(off-curve key)", verifyTok(v, tok), ErrUnknownKey)
		checkErr(t, "Verify(control)", verifyTok(v, validToken(t)), nil)
	})
	t.Run("encryption-key/use-enc-or-key-ops-encrypt", func(t *testing.T) {
		encKey := jwkOf(k.rsa2, "enc1", "")
		encKey["use"] = "enc"
		opsKey := jwkOf(k.rsa2, "ops1", "")
		opsKey["key_ops"] = []string{"encrypt", "wrapKey"}
		sigKey := jwkOf(k.rsa, "k1", "RS256")
		sigKey["use"] = "sig"
		sigKey["key_ops"] = []string{"verify"}
		srv := newJWKSServer(t, jwksJSON(encKey, opsKey, sigKey))
		v := remoteVerifier(t, srv, newFakeClock(testNow), true)
		checkErr(t, "Verify(use=enc key)", verifyTok(v, tokenFor(t, "enc1", k.rsa2)), ErrUnknownKey)
		checkErr(t, "Verify(key_ops=encrypt key)", verifyTok(v, tokenFor(t, "ops1", k.rsa2)), ErrUnknownKey)
		checkErr(t, "Verify(use=sig key)", verifyTok(v, validToken(t)), nil)
	})
	t.Run("alg-less-key/verifies-its-key-type", func(t *testing.T) {
		srv := newJWKSServer(t, jwksJSON(jwkOf(k.rsa, "k1", ""), jwkOf(k.ec, "e1", "")))
		v := remoteVerifier(t, srv, newFakeClock(testNow), true)
		checkErr(t, "Verify(RS256)", verifyTok(v, validToken(t)), nil)
		ps := mint(t, `{"alg":"PS256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "PS256", k.rsa)
		checkErr(t, "Verify(PS256 on the same alg-less RSA key)", verifyTok(v, ps), nil)
		es := mint(t, `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, claimsJSON(), "ES256", k.ec)
		checkErr(t, "Verify(ES256)", verifyTok(v, es), nil)
		esOnRSA := mint(t, `{"alg":"ES256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "ES256", k.ec)
		checkErr(t, "Verify(ES256 naming the RSA key)", verifyTok(v, esOnRSA), ErrAlgorithm)
	})
	t.Run("alg-less-key/outside-allow-list", func(t *testing.T) {
		srv := newJWKSServer(t, jwksJSON(jwkOf(k.rsa, "k1", ""), jwkOf(k.ec, "e1", "")))
		v := remoteVerifier(t, srv, newFakeClock(testNow), true, func(c *Issuer) { c.Algorithms = []string{"ES256"} })
		if n := len(v.issuers[0].keys.Load().keys); n != 1 {
			t.Fatalf("verification set has %d keys, want 1 (the RSA key fits no allowed alg)", n)
		}
		checkErr(t, "Verify(RS256)", verifyTok(v, validToken(t)), ErrAlgorithm)
	})
	t.Run("duplicate-kid/different-keys", func(t *testing.T) {
		srv := newJWKSServer(t, jwksJSON(jwkOf(k.attacker, "dup", "RS256"), jwkOf(k.rsa, "dup", "RS256"), jwkOf(k.rsa2, "k2", "RS256")))
		v := remoteVerifier(t, srv, newFakeClock(testNow), true)
		checkErr(t, "Verify(real key of a duplicated kid)", verifyTok(v, tokenFor(t, "dup", k.rsa)), ErrUnknownKey)
		checkErr(t, "Verify(attacker key of a duplicated kid)", verifyTok(v, tokenFor(t, "dup", k.attacker)), ErrUnknownKey)
		checkErr(t, "Verify(other kid)", verifyTok(v, tokenFor(t, "k2", k.rsa2)), nil)
	})
	t.Run("duplicate-kid/same-key-different-alg", func(t *testing.T) {
		srv := newJWKSServer(t, jwksJSON(jwkOf(k.rsa, "k1", "RS256"), jwkOf(k.rsa, "k1", "PS256")))
		v := remoteVerifier(t, srv, newFakeClock(testNow), true)
		checkErr(t, "Verify(RS256)", verifyTok(v, validToken(t)), nil)
		ps := mint(t, `{"alg":"PS256","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "PS256", k.rsa)
		checkErr(t, "Verify(PS256)", verifyTok(v, ps), nil)
		rs384 := mint(t, `{"alg":"RS384","kid":"k1","typ":"at+jwt"}`, claimsJSON(), "RS384", k.rsa)
		checkErr(t, "Verify(RS384)", verifyTok(v, rs384), ErrAlgorithm)
	})
	t.Run("too-many-keys/1500", func(t *testing.T) {
		many := make([]map[string]any, 1500)
		for i := range many {
			many[i] = jwkOf(k.ec, fmt.Sprintf("k%d", i), "ES256")
		}
		srv := newJWKSServer(t, jwksJSON(many...))
		clock := newFakeClock(testNow)
		v := remoteVerifier(t, srv, clock, false)
		waitFor(t, "a fetch", func() bool { return srv.hits.Load() >= 1 })
		checkErr(t, "Verify(no usable set yet)", verifyTok(v, validToken(t)), ErrKeysUnavailable)
		srv.set(http.StatusOK, mainJWKS(t))
		clock.Advance(time.Minute)
		checkErr(t, "Verify(after a good set)", verifyTok(v, validToken(t)), nil)
		// A later oversized set keeps the last good one (and the unknown
		// kid that made mcpauthz fetch it cannot be decided).
		srv.set(http.StatusOK, jwksJSON(many...))
		clock.Advance(time.Minute)
		checkErr(t, "Verify(unknown kid triggers a refetch)", verifyTok(v, tokenFor(t, "k2", k.rsa2)), ErrKeysUnavailable)
		checkErr(t, "Verify(last good set)", verifyTok(v, validToken(t)), nil)
	})
	t.Run("jwks-url-never-from-token", func(t *testing.T) {
		srv := newJWKSServer(t, mainJWKS(t))
		v := remoteVerifier(t, srv, newFakeClock(testNow), true)
		attacker := countingServer(t)
		before := srv.hits.Load()
		// An issuer that is not configured is never discovered.
		tokIss := mint(t, hdrRS256, claimsJSON("iss", strings.TrimSuffix(attacker, "/jwks.json")), "RS256", k.attacker)
		checkErr(t, "Verify(iss = attacker URL)", verifyTok(v, tokIss), ErrUnknownIssuer)
		tokJKU := mint(t, `{"alg":"RS256","kid":"k1","typ":"at+jwt","jku":"`+attacker+`"}`, claimsJSON(), "RS256", k.attacker)
		checkErr(t, "Verify(jku)", verifyTok(v, tokJKU), ErrMalformed)
		if n := srv.hits.Load() - before; n != 0 {
			t.Fatalf("the issuer's JWKS was fetched %d times, want 0", n)
		}
	})
}

// forgeE1 builds an RS256 token "signed" for a key with exponent 1: the
// signature is the PKCS#1 v1.5 encoded digest itself.
func forgeE1(t *testing.T, kid string, n *big.Int) string {
	in := enc.EncodeToString([]byte(`{"alg":"RS256","kid":"`+kid+`","typ":"at+jwt"}`)) + "." + enc.EncodeToString([]byte(claimsJSON()))
	sum := sha256.Sum256([]byte(in))
	prefix := []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
	kLen := (n.BitLen() + 7) / 8
	em := make([]byte, kLen)
	em[1] = 1
	tLen := len(prefix) + len(sum)
	for i := 2; i < kLen-tLen-1; i++ {
		em[i] = 0xff
	}
	copy(em[kLen-tLen:], append(prefix, sum[:]...))
	return in + "." + enc.EncodeToString(em)
}

func TestJWKSRotation(t *testing.T) {
	k := keys(t)
	srv := newJWKSServer(t, jwksJSON(jwkOf(k.rsa, "k1", "RS256")))
	clock := newFakeClock(testNow)
	v := remoteVerifier(t, srv, clock, true)
	base := srv.hits.Load()

	// Key rotation: the IdP publishes k2 and a token signed with it arrives
	// before the scheduled refresh: one refetch, then accepted.
	srv.set(http.StatusOK, jwksJSON(jwkOf(k.rsa, "k1", "RS256"), jwkOf(k.rsa2, "k2", "RS256")))
	checkErr(t, "Verify(k2 after rotation)", verifyTok(v, tokenFor(t, "k2", k.rsa2)), nil)
	if n := srv.hits.Load() - base; n != 1 {
		t.Fatalf("rotation caused %d fetches, want 1", n)
	}
	checkErr(t, "Verify(k2 again)", verifyTok(v, tokenFor(t, "k2", k.rsa2)), nil)
	if n := srv.hits.Load() - base; n != 1 {
		t.Fatalf("known kid caused a fetch (%d)", n)
	}

	// The next rotation within unknown_kid_interval is rate-limited and
	// fails at once; after the interval the refetch happens.
	srv.set(http.StatusOK, jwksJSON(jwkOf(k.rsa2, "k2", "RS256"), jwkOf(k.ec, "e3", "ES256")))
	es := mint(t, `{"alg":"ES256","kid":"e3","typ":"at+jwt"}`, claimsJSON(), "ES256", k.ec)
	checkErr(t, "Verify(e3, rate-limited)", verifyTok(v, es), ErrUnknownKey)
	if n := srv.hits.Load() - base; n != 1 {
		t.Fatalf("rate-limited refetch happened (%d fetches)", n)
	}
	clock.Advance(10 * time.Second)
	checkErr(t, "Verify(e3 after the interval)", verifyTok(v, es), nil)
	if n := srv.hits.Load() - base; n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// Revocation: k1 was removed by that refresh.
	checkErr(t, "Verify(k1 after its removal)", verifyTok(v, validToken(t)), ErrUnknownKey)
}

func TestJWKSUnknownKIDFlood(t *testing.T) {
	// Unknown-kid flood: 1000 tokens with random kids cause a handful of
	// fetches, not one each, and are rejected as unknown (the set is
	// current: the JWKS answers).
	srv := newJWKSServer(t, mainJWKS(t))
	clock := newFakeClock(testNow)
	// A wait long enough for the joined fetch even on a loaded machine:
	// this test counts fetches (the bound is TestUnknownKIDWaitBounded's).
	v := remoteVerifier(t, srv, clock, true, func(c *Issuer) { c.JWKS.UnknownKIDWait = 10 * time.Second })
	toks := make([]string, 1000)
	for i := range toks {
		toks[i] = mint(t, fmt.Sprintf(`{"alg":"RS256","kid":"rand-%d","typ":"at+jwt"}`, i), claimsJSON(), "RS256", keys(t).attacker)
	}
	base := srv.hits.Load()
	var wg sync.WaitGroup
	for _, tok := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := verifyTok(v, tok); !errors.Is(err, ErrUnknownKey) {
				t.Errorf("Verify(random kid) = %v, want ErrUnknownKey", err)
			}
		}()
	}
	wg.Wait()
	if n := srv.hits.Load() - base; n > 2 {
		t.Fatalf("1000 unknown kids caused %d fetches, want at most 2", n)
	}
	checkErr(t, "Verify(control)", verifyTok(v, validToken(t)), nil)
}

func TestJWKSLastGoodKept(t *testing.T) {
	// A bad answer (error status, not JSON, empty, truncated, oversized,
	// only unusable keys) never replaces the last good set. The unknown
	// kid that made mcpauthz ask cannot be decided then (503): the key may
	// be in the set the IdP failed to deliver.
	k := keys(t)
	bad := map[string]struct {
		status int
		body   []byte
	}{
		"500":                {http.StatusInternalServerError, mainJWKS(t)},
		"html":               {http.StatusOK, []byte("<html><body>maintenance</body></html>")},
		"garbage":            {http.StatusOK, []byte("\x00\x01garbage")},
		"empty-keys":         {http.StatusOK, []byte(`{"keys":[]}`)},
		"empty-object":       {http.StatusOK, []byte(`{}`)},
		"truncated":          {http.StatusOK, mainJWKS(t)[:100]},
		"only-oct":           {http.StatusOK, jwksJSON(map[string]any{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"})},
		"only-weak":          {http.StatusOK, jwksJSON(jwkOf(k.rsa1024, "k1", "RS256"))},
		"2MiB-body":          {http.StatusOK, append([]byte(`{"keys":[],"pad":"`), append([]byte(strings.Repeat("x", 2<<20)), `"}`...)...)},
		"keys-not-an-array":  {http.StatusOK, []byte(`{"keys":"x"}`)},
		"redirect-no-target": {http.StatusFound, nil},
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			srv := newJWKSServer(t, mainJWKS(t))
			clock := newFakeClock(testNow)
			var failures atomic.Int64
			c := Issuer{Issuer: testIss, JWKSURI: srv.URL + "/jwks"}
			v := newTestVerifier(t, []Issuer{c}, Options{Clock: clock.Now, OnJWKSRefresh: func(iss string, n int, err error) {
				if err != nil {
					if iss != testIss || n != 4 {
						t.Errorf("OnJWKSRefresh(%q, %d, %v), want 4 keys still in use", iss, n, err)
					}
					failures.Add(1)
				}
			}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := v.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			srv.set(b.status, b.body)
			before := srv.hits.Load()
			clock.Advance(time.Minute)
			checkErr(t, "Verify(unknown kid)", verifyTok(v, tokenFor(t, "k2", k.rsa2)), ErrKeysUnavailable)
			if srv.hits.Load() == before {
				t.Fatal("no refetch happened")
			}
			waitFor(t, "the failure report", func() bool { return failures.Load() > 0 })
			checkErr(t, "Verify(last good key)", verifyTok(v, validToken(t)), nil)
			if !v.Ready() {
				t.Fatal("Ready() = false after a failed refresh")
			}
		})
	}
}

func TestJWKSStartupDown(t *testing.T) {
	// JWKS down at startup: not ready, ErrKeysUnavailable (503),
	// never an accept; ready as soon as the keys arrive.
	srv := newJWKSServer(t, nil)
	srv.set(http.StatusServiceUnavailable, nil)
	clock := newFakeClock(testNow)
	v := remoteVerifier(t, srv, clock, false)
	waitFor(t, "a first fetch", func() bool { return srv.hits.Load() >= 1 })
	if v.Ready() {
		t.Fatal("Ready() = true without keys")
	}
	err := verifyTok(v, validToken(t))
	checkErr(t, "Verify(no keys)", err, ErrKeysUnavailable)
	if errors.Is(err, ErrInvalidToken) {
		t.Fatal("ErrKeysUnavailable must not wrap ErrInvalidToken (503, not 401)")
	}
	// Garbage tokens are still 401: keys are not needed to reject them.
	checkErr(t, "Verify(garbage)", verifyTok(v, "a.b"), ErrMalformed)

	srv.set(http.StatusOK, mainJWKS(t))
	// The background retry loop (not a request) makes the verifier ready.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if !v.Ready() {
		t.Fatal("Ready() = false after WaitReady")
	}
	checkErr(t, "Verify(after keys arrived)", verifyTok(v, validToken(t)), nil)
}

func TestJWKSStartupDownRequestTriggersFetch(t *testing.T) {
	// A request for a keyless issuer triggers a (rate-limited) fetch
	// itself, without waiting for the backoff loop.
	srv := newJWKSServer(t, nil)
	srv.set(http.StatusServiceUnavailable, nil)
	clock := newFakeClock(testNow)
	v := remoteVerifier(t, srv, clock, false, func(c *Issuer) { c.JWKS.MinRefresh = time.Duration(time.Hour) })
	waitFor(t, "a first fetch", func() bool { return srv.hits.Load() >= 1 })
	srv.set(http.StatusOK, mainJWKS(t))
	clock.Advance(time.Minute)
	// The backoff loop may win the race; either way the request waits for
	// the fetch and succeeds.
	checkErr(t, "Verify", verifyTok(v, validToken(t)), nil)
}

func TestJWKSPeriodicRefreshSingleChain(t *testing.T) {
	// The jwk.Cache chain refreshes on its own (Cache-Control clamped to
	// max_refresh); request-triggered refetches must not start extra
	// chains (httprc v1 starts one per Refresh call).
	srv := newJWKSServer(t, mainJWKS(t))
	srv.headers = map[string]string{"Cache-Control": "public, max-age=86400"}
	clock := newFakeClock(testNow)
	v := remoteVerifier(t, srv, clock, true, func(c *Issuer) {
		c.JWKS.MinRefresh = time.Duration(time.Second)
		c.JWKS.MaxRefresh = time.Duration(time.Second)
		c.JWKS.UnknownKIDInterval = time.Duration(time.Second)
	})
	for range 5 {
		clock.Advance(time.Second)
		checkErr(t, "Verify(unknown kid)", verifyTok(v, tokenFor(t, "nope", keys(t).rsa)), ErrUnknownKey)
	}
	// One chain refreshes about once a second (max_refresh and the httprc
	// window are 1s); six chains would make about six fetches a second.
	start := srv.hits.Load()
	time.Sleep(2200 * time.Millisecond)
	if n := srv.hits.Load() - start; n < 1 || n > 5 {
		t.Fatalf("%d periodic fetches in 2.2s, want 1..5 (one refresh chain)", n)
	}
}

func TestDiscovery(t *testing.T) {
	k := keys(t)
	type doc struct{ oauth, oidc bool }
	newIdP := func(t *testing.T, path string, d doc, mutate func(issuer string, md map[string]any)) (*httptest.Server, *atomic.Int64) {
		var jwksHits atomic.Int64
		var srv *httptest.Server
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			issuer := srv.URL + path
			md := map[string]any{"issuer": issuer, "jwks_uri": srv.URL + "/keys", "token_endpoint": srv.URL + "/token"}
			if mutate != nil {
				mutate(issuer, md)
			}
			switch {
			case d.oauth && r.URL.Path == "/.well-known/oauth-authorization-server"+path:
			case d.oidc && r.URL.Path == path+"/.well-known/openid-configuration":
			case r.URL.Path == "/keys":
				jwksHits.Add(1)
				w.Write(jwksJSON(jwkOf(k.rsa, "k1", "RS256")))
				return
			default:
				http.NotFound(w, r)
				return
			}
			json.NewEncoder(w).Encode(md)
		}))
		t.Cleanup(srv.Close)
		return srv, &jwksHits
	}
	verifierFor := func(t *testing.T, issuer string) *Verifier {
		return newTestVerifier(t, []Issuer{{Issuer: issuer}}, Options{})
	}
	waitReady := func(t *testing.T, v *Verifier) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := v.WaitReady(ctx); err != nil {
			t.Fatalf("WaitReady: %v", err)
		}
	}
	for name, tc := range map[string]struct {
		path string
		doc  doc
	}{
		"rfc8414":           {"", doc{oauth: true}},
		"rfc8414-with-path": {"/tenant1", doc{oauth: true}},
		"oidc-fallback":     {"/realms/mcp", doc{oidc: true}},
	} {
		t.Run(name, func(t *testing.T) {
			srv, _ := newIdP(t, tc.path, tc.doc, nil)
			v := verifierFor(t, srv.URL+tc.path)
			waitReady(t, v)
			tok := mint(t, hdrRS256, claimsJSON("iss", srv.URL+tc.path), "RS256", k.rsa)
			checkErr(t, "Verify", verifyTok(v, tok), nil)
		})
	}
	for name, mutate := range map[string]func(string, map[string]any){
		"issuer-mismatch":        func(iss string, md map[string]any) { md["issuer"] = iss + "/" },
		"jwks_uri-http-external": func(iss string, md map[string]any) { md["jwks_uri"] = "http://example.com/keys" },
		"jwks_uri-missing":       func(iss string, md map[string]any) { delete(md, "jwks_uri") },
		"jwks_uri-not-string":    func(iss string, md map[string]any) { md["jwks_uri"] = 1 },
	} {
		t.Run(name, func(t *testing.T) {
			srv, jwksHits := newIdP(t, "", doc{oauth: true, oidc: true}, mutate)
			v := verifierFor(t, srv.URL)
			tok := mint(t, hdrRS256, claimsJSON("iss", srv.URL), "RS256", k.rsa)
			checkErr(t, "Verify", verifyTok(v, tok), ErrKeysUnavailable)
			if v.Ready() || jwksHits.Load() != 0 {
				t.Fatalf("Ready() = %v, JWKS fetched %d times; want not ready, no fetch", v.Ready(), jwksHits.Load())
			}
		})
	}
}

func TestDiscoveryIssuerMismatchFallsBackToOIDC(t *testing.T) {
	k := keys(t)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			json.NewEncoder(w).Encode(map[string]any{"issuer": "https://elsewhere.example.com", "jwks_uri": srv.URL + "/evil"})
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/keys"})
		case "/keys":
			w.Write(jwksJSON(jwkOf(k.rsa, "k1", "RS256")))
		default:
			t.Errorf("unexpected fetch of %s", r.URL.Path)
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	v := newTestVerifier(t, []Issuer{{Issuer: srv.URL}}, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRefreshAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lo, hi := 5*time.Minute, time.Hour
	tests := []struct {
		name string
		h    map[string]string
		want time.Duration
	}{
		{"none", nil, lo},
		{"max-age-between", map[string]string{"Cache-Control": "public, max-age=1800"}, 30 * time.Minute},
		{"max-age-below-min", map[string]string{"Cache-Control": "max-age=10"}, lo},
		{"max-age-above-max", map[string]string{"Cache-Control": "max-age=86400"}, hi},
		{"max-age-huge", map[string]string{"Cache-Control": "max-age=99999999999999999"}, hi},
		{"max-age-overflowing-int64", map[string]string{"Cache-Control": "max-age=999999999999999999999"}, lo},
		{"max-age-quoted", map[string]string{"Cache-Control": `max-age="1800"`}, 30 * time.Minute},
		{"max-age-upper-case", map[string]string{"Cache-Control": "MAX-AGE=1800"}, 30 * time.Minute},
		{"no-store", map[string]string{"Cache-Control": "no-store, max-age=1800"}, lo},
		{"no-cache", map[string]string{"Cache-Control": "no-cache"}, lo},
		{"max-age-garbage", map[string]string{"Cache-Control": "max-age=abc"}, lo},
		{"expires", map[string]string{"Expires": now.Add(20 * time.Minute).Format(http.TimeFormat)}, 20 * time.Minute},
		{"expires-past", map[string]string{"Expires": now.Add(-time.Hour).Format(http.TimeFormat)}, lo},
		{"expires-far", map[string]string{"Expires": now.Add(48 * time.Hour).Format(http.TimeFormat)}, hi},
		{"max-age-wins-over-expires", map[string]string{"Cache-Control": "max-age=600", "Expires": now.Add(50 * time.Minute).Format(http.TimeFormat)}, 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.h {
				h.Set(k, v)
			}
			if got := refreshAfter(h, now, lo, hi); got != tt.want {
				t.Fatalf("refreshAfter(%v) = %v, want %v", tt.h, got, tt.want)
			}
		})
	}
}

func TestMetadataURLs(t *testing.T) {
	tests := map[string][2]string{
		"https://as.example.com":           {"https://as.example.com/.well-known/oauth-authorization-server", "https://as.example.com/.well-known/openid-configuration"},
		"https://as.example.com/":          {"https://as.example.com/.well-known/oauth-authorization-server", "https://as.example.com/.well-known/openid-configuration"},
		"https://as.example.com/tenant1":   {"https://as.example.com/.well-known/oauth-authorization-server/tenant1", "https://as.example.com/tenant1/.well-known/openid-configuration"},
		"https://kc.example.com/realms/a/": {"https://kc.example.com/.well-known/oauth-authorization-server/realms/a", "https://kc.example.com/realms/a/.well-known/openid-configuration"},
		"http://127.0.0.1:8080/dev":        {"http://127.0.0.1:8080/.well-known/oauth-authorization-server/dev", "http://127.0.0.1:8080/dev/.well-known/openid-configuration"},
	}
	for issuer, want := range tests {
		got := metadataURLs(issuer)
		if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("metadataURLs(%q) = %q, want %q", issuer, got, want)
		}
	}
}

func TestCheckFetchURL(t *testing.T) {
	ok := []string{"https://idp.example.com/keys", "http://127.0.0.1:8080/keys", "http://127.5.6.7/k", "http://localhost:1/k", "http://LOCALHOST/k", "http://[::1]:9/k", "http://[::ffff:127.0.0.1]/k"}
	bad := []string{"http://idp.example.com/keys", "http://10.0.0.1/k", "http://169.254.169.254/latest", "http://localhost.evil.com/k", "ftp://idp.example.com/k", "/keys", "idp.example.com/keys", "https://user:pw@idp.example.com/k", "https://idp.example.com/k#frag", "file:///etc/passwd", "https:///k"}
	for _, u := range ok {
		if err := checkFetchURL(u); err != nil {
			t.Errorf("checkFetchURL(%q) = %v, want ok", u, err)
		}
	}
	for _, u := range bad {
		if err := checkFetchURL(u); err == nil {
			t.Errorf("checkFetchURL(%q) = nil, want an error", u)
		}
	}
}

func TestRedirectPolicy(t *testing.T) {
	c := newHTTPClient(nil)
	req := func(u string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, u, nil)
		return r
	}
	if err := c.CheckRedirect(req("https://other.example.com/keys"), []*http.Request{req("https://idp.example.com")}); err != nil {
		t.Errorf("https redirect refused: %v", err)
	}
	if err := c.CheckRedirect(req("http://idp.example.com/keys"), []*http.Request{req("https://idp.example.com")}); err == nil {
		t.Error("https→http redirect allowed")
	}
	via := make([]*http.Request, 5)
	if err := c.CheckRedirect(req("https://other.example.com/keys"), via); err == nil {
		t.Error("sixth redirect allowed")
	}
	// Through a real server: a redirect to non-loopback http fails the
	// fetch and keeps the verifier unready.
	redirector := httptest.NewServer(http.RedirectHandler("http://169.254.169.254/keys", http.StatusFound))
	defer redirector.Close()
	v := newTestVerifier(t, []Issuer{{Issuer: testIss, JWKSURI: redirector.URL}}, Options{})
	checkErr(t, "Verify", verifyTok(v, validToken(t)), ErrKeysUnavailable)
}

func TestCloseStopsBackgroundWork(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	srv := newJWKSServer(t, nil)
	srv.set(http.StatusServiceUnavailable, nil)
	v, err := NewVerifier(Options{Issuers: []Issuer{{Issuer: testIss, JWKSURI: srv.URL}}, DefaultAudience: testAud})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is fetched before Start: constructing a verifier (as
	// `mcpauthz validate` does) never touches the network.
	time.Sleep(50 * time.Millisecond)
	if n := srv.hits.Load(); n != 0 {
		t.Fatalf("%d fetches before Start, want 0", n)
	}
	checkErr(t, "Verify before Start", verifyTok(v, validToken(t)), ErrKeysUnavailable)
	v.Start()
	waitFor(t, "a fetch", func() bool { return srv.hits.Load() >= 1 })
	v.Close()
	srv.Close()
	goleak.VerifyNone(t, ignore)
	checkErr(t, "Verify after Close", verifyTok(v, validToken(t)), ErrKeysUnavailable)
	wctx, wcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer wcancel()
	if err := v.WaitReady(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady = %v, want the deadline", err)
	}
}

func TestDemandWaitIsBoundedByRequestContext(t *testing.T) {
	// A slow JWKS endpoint never holds a request longer than its
	// context (or unknownKIDWait).
	release := make(chan struct{})
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.Write(mainJWKS(t))
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	clock := newFakeClock(testNow)
	v := newTestVerifier(t, []Issuer{{Issuer: testIss, JWKSURI: srv.URL}}, Options{Clock: clock.Now})
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := v.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := v.Verify(ctx, tokenFor(t, "k2", keys(t).rsa2))
	checkErr(t, "Verify(unknown kid, slow JWKS)", err, ErrKeysUnavailable)
	if ctx.Err() == nil {
		// Verify returned before the request deadline: fine only if the
		// fetch finished, which it cannot have.
		t.Fatal("Verify returned before the slow fetch or the deadline")
	}
	// Known keys keep working while the fetch hangs.
	checkErr(t, "Verify(k1 during a hanging fetch)", verifyTok(v, validToken(t)), nil)
}

func TestOnJWKSRefreshHook(t *testing.T) {
	type call struct {
		issuer string
		keys   int
		err    bool
	}
	var mu sync.Mutex
	var calls []call
	hook := func(iss string, n int, err error) {
		mu.Lock()
		calls = append(calls, call{iss, n, err != nil})
		mu.Unlock()
	}
	srv := newJWKSServer(t, mainJWKS(t))
	file := writeFile(t, "jwks.json", jwksJSON(jwkOf(keys(t).rsa, "k1", "RS256")))
	clock := newFakeClock(testNow)
	v := newTestVerifier(t, []Issuer{
		{Issuer: testIss, JWKSURI: srv.URL},
		{Issuer: issB, JWKSFile: file},
	}, Options{Clock: clock.Now, OnJWKSRefresh: hook})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	srv.set(http.StatusInternalServerError, nil)
	checkErr(t, "Verify(unknown kid)", verifyTok(v, tokenFor(t, "k2", keys(t).rsa2)), ErrKeysUnavailable)
	want := []call{{issB, 1, false}, {testIss, 4, false}, {testIss, 4, true}}
	waitFor(t, "three hook calls", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) >= 3
	})
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 3 || calls[0] != want[0] || calls[1] != want[1] || calls[2] != want[2] {
		t.Fatalf("hook calls = %+v, want %+v", calls, want)
	}
}

func TestConcurrentVerifyDuringRefresh(t *testing.T) {
	// A key-set swap under load: requests see the old or the new set, never
	// a partial one.
	k := keys(t)
	srv := newJWKSServer(t, mainJWKS(t))
	clock := newFakeClock(testNow)
	v := remoteVerifier(t, srv, clock, true, func(c *Issuer) { c.JWKS.UnknownKIDInterval = time.Duration(time.Second) })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tok := validToken(t)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := verifyTok(v, tok); err != nil {
					t.Errorf("Verify during refresh = %v", err)
					return
				}
			}
		}()
	}
	for i := range 20 {
		if i%2 == 0 {
			srv.set(http.StatusOK, jwksJSON(jwkOf(k.rsa, "k1", "RS256")))
		} else {
			srv.set(http.StatusOK, mainJWKS(t))
		}
		clock.Advance(time.Second)
		verifyTok(v, tokenFor(t, fmt.Sprintf("new-%d", i), k.rsa2))
	}
	close(stop)
	wg.Wait()
}

// hangingJWKS serves mainJWKS once, then holds every request until
// release is closed and answers it with the main set plus k2 (a rotation
// the IdP published while its endpoint hung). entered receives one value
// per held request.
func hangingJWKS(t *testing.T) (srv *httptest.Server, entered <-chan struct{}, release chan struct{}, hits *atomic.Int64) {
	k := keys(t)
	release = make(chan struct{})
	in := make(chan struct{}, 16)
	hits = new(atomic.Int64)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.Write(mainJWKS(t))
			return
		}
		in <- struct{}{}
		select {
		case <-release:
			w.Write(jwksJSON(jwkOf(k.rsa, "k1", "RS256"), jwkOf(k.rsa2, "k2", "RS256")))
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	return srv, in, release, hits
}

// TestUnknownKIDWaitBounded: while the JWKS endpoint hangs, a token with
// an unknown kid waits jwks.unknown_kid_wait (here 75ms, observed through
// the timer the wait uses), not the fetch: it is answered "cannot
// decide" (ErrKeysUnavailable, 503, so that the client retries instead of
// discarding a token that may be valid) while the fetch is still held.
// The fetch goes on in the background; once the JWKS answers, the same
// kid verifies without another fetch.
func TestUnknownKIDWaitBounded(t *testing.T) {
	srv, entered, release, hits := hangingJWKS(t)
	clock := newFakeClock(testNow)
	v := newTestVerifier(t, []Issuer{{Issuer: testIss, JWKSURI: srv.URL, JWKS: JWKS{
		UnknownKIDWait: 75 * time.Millisecond, FetchTimeout: 30 * time.Second,
	}}}, Options{Clock: clock.Now})
	waits := make(chan time.Duration, 4)
	fire := make(chan time.Time)
	v.after = func(d time.Duration) <-chan time.Time {
		waits <- d
		return fire
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := v.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}

	k2 := tokenFor(t, "k2", keys(t).rsa2)
	result := make(chan error, 1)
	go func() { result <- verifyTok(v, k2) }()
	<-entered // the refetch is at the (hanging) endpoint
	if d := <-waits; d != 75*time.Millisecond {
		t.Fatalf("the unknown-kid wait used a %s timer, want the configured 75ms", d)
	}
	select {
	case err := <-result:
		t.Fatalf("Verify returned %v before its wait ended or the fetch did", err)
	default:
	}
	close(fire) // the bound elapses
	err := <-result
	checkErr(t, "Verify(unknown kid, JWKS hanging)", err, ErrKeysUnavailable)
	if hits.Load() != 2 {
		t.Fatalf("%d fetches, want 2 (the first, and the one still held)", hits.Load())
	}
	// Known keys keep working meanwhile, without waiting.
	checkErr(t, "Verify(k1 during the hang)", verifyTok(v, validToken(t)), nil)

	close(release)
	is := v.exact[testIss]
	waitFor(t, "the background fetch to publish k2", func() bool { return len(is.keys.Load().byKID["k2"]) > 0 })
	checkErr(t, "Verify(k2 after the JWKS answered)", verifyTok(v, k2), nil)
	if hits.Load() != 2 {
		t.Fatalf("%d fetches, want 2: the held fetch was the one that completed", hits.Load())
	}
}

// TestUnknownKIDWaitDefault: the same with the default bound and a real
// timer: the answer arrives while the fetch is still held, so the wait
// was not the fetch's (the bound's value is TestIssuerDefaults').
func TestUnknownKIDWaitDefault(t *testing.T) {
	srv, entered, release, hits := hangingJWKS(t)
	defer close(release)
	clock := newFakeClock(testNow)
	v := remoteVerifierURL(t, srv.URL, clock)
	start := time.Now()
	err := verifyTok(v, tokenFor(t, "k2", keys(t).rsa2))
	elapsed := time.Since(start)
	checkErr(t, "Verify(unknown kid, JWKS hanging)", err, ErrKeysUnavailable)
	select {
	case <-entered:
	default:
		t.Fatal("no refetch reached the endpoint")
	}
	if hits.Load() != 2 {
		t.Fatalf("%d fetches, want 2", hits.Load())
	}
	t.Logf("unknown kid answered after %s with the fetch still held (bound %s)", elapsed, defaultUnknownKIDWait)

	// A second unknown kid joins the fetch still held (no new fetch) and
	// waits its own bound.
	checkErr(t, "Verify(another unknown kid)", verifyTok(v, tokenFor(t, "k3", keys(t).rsa2)), ErrKeysUnavailable)
	if hits.Load() != 2 {
		t.Fatalf("%d fetches, want 2", hits.Load())
	}
}

// remoteVerifierURL is a started, ready Verifier of testIss with its
// keys at url.
func remoteVerifierURL(t *testing.T, url string, clock *fakeClock) *Verifier {
	t.Helper()
	v := newTestVerifier(t, []Issuer{{Issuer: testIss, JWKSURI: url}}, Options{Clock: clock.Now})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestUnknownKIDDecision: whether an unknown kid is a rejection (401) or
// "cannot decide" (503) depends on whether the key set is known to be
// current, that is on the last fetch that ended.
func TestUnknownKIDDecision(t *testing.T) {
	k := keys(t)
	rotated := jwksJSON(jwkOf(k.rsa, "k1", "RS256"), jwkOf(k.rsa2, "k2", "RS256"))
	// One request: the endpoint answers status and body from now on, the
	// clock moves by advance first (0: within the rate limit of the
	// previous refetch), and the token names kid.
	type step struct {
		status  int
		body    []byte
		advance time.Duration
		kid     string
		want    error
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"fetched-kid-absent-is-unknown", []step{{200, mainJWKS(t), time.Minute, "k9", ErrUnknownKey}}},
		{"fetched-kid-present-is-accepted", []step{{200, rotated, time.Minute, "k2", nil}}},
		{"rate-limited-after-a-good-fetch-is-unknown", []step{
			{200, mainJWKS(t), time.Minute, "k9", ErrUnknownKey},
			{200, rotated, 0, "k2", ErrUnknownKey}, // not refetched yet
		}},
		{"fetch-failed-cannot-decide", []step{{500, nil, time.Minute, "k2", ErrKeysUnavailable}}},
		{"rate-limited-after-a-failed-fetch-cannot-decide", []step{
			{500, nil, time.Minute, "k9", ErrKeysUnavailable},
			{200, rotated, 0, "k2", ErrKeysUnavailable},
		}},
		{"recovered-after-the-interval", []step{
			{500, nil, time.Minute, "k2", ErrKeysUnavailable},
			{200, rotated, 10 * time.Second, "k2", nil},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newJWKSServer(t, mainJWKS(t))
			clock := newFakeClock(testNow)
			v := remoteVerifierURL(t, srv.URL, clock)
			for i, st := range tt.steps {
				srv.set(st.status, st.body)
				clock.Advance(st.advance)
				priv := k.rsa2
				if st.kid == "k9" {
					priv = k.attacker
				}
				checkErr(t, fmt.Sprintf("step %d: Verify(kid %s)", i, st.kid), verifyTok(v, tokenFor(t, st.kid, priv)), st.want)
			}
		})
	}
}
