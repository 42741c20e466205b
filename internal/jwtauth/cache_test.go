package jwtauth

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

func testKey(i int) tokenKey {
	var k tokenKey
	binary.BigEndian.PutUint64(k[8:], uint64(i))
	k[0] = byte(i)
	return k
}

func TestClockCacheCapacityAndExpiry(t *testing.T) {
	for _, capacity := range []int{1, 7, 1023, 1024, 10000} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			c := newClockCache[int](capacity)
			if got := c.capacity(); got != capacity {
				t.Fatalf("capacity() = %d, want %d", got, capacity)
			}
			for i := range 3 * capacity {
				c.add(testKey(i), i, 100, 0, nil)
				if n := c.len(); n > capacity {
					t.Fatalf("len() = %d after %d adds, capacity %d", n, i+1, capacity)
				}
			}
			if n := c.len(); n != capacity {
				t.Fatalf("len() = %d, want %d (full)", n, capacity)
			}
		})
	}

	c := newClockCache[string](4)
	c.add(testKey(1), "a", 100, 0, nil)
	if v, ok := c.get(testKey(1), 99); !ok || v != "a" {
		t.Fatalf("get before until = %q, %v", v, ok)
	}
	if _, ok := c.get(testKey(1), 100); ok {
		t.Fatal("get at until: hit, want miss (never served at or after until)")
	}
	if n := c.len(); n != 0 {
		t.Fatalf("expired entry not reclaimed on get: len %d", n)
	}
	c.add(testKey(2), "b", 50, 50, nil)
	if n := c.len(); n != 0 {
		t.Fatal("an entry that expires at once was stored")
	}
	c.add(testKey(3), "c", 100, 0, func() bool { return false })
	if _, ok := c.get(testKey(3), 0); ok {
		t.Fatal("stored an entry that admit refused")
	}
	var nilCache *clockCache[int]
	nilCache.add(testKey(1), 1, 100, 0, nil)
	if _, ok := nilCache.get(testKey(1), 0); ok || nilCache.len() != 0 || newClockCache[int](0) != nil || newClockCache[int](-1) != nil {
		t.Fatal("a disabled cache stores entries")
	}
}

func TestClockCacheSecondChance(t *testing.T) {
	// One shard of 4: entries read since the hand passed survive an
	// eviction; expired ones go first.
	c := newClockCache[int](4)
	for i := range 4 {
		c.add(testKey(i), i, 1000, 0, nil)
	}
	c.get(testKey(0), 1)
	c.get(testKey(2), 1)
	c.add(testKey(4), 4, 1000, 1, nil) // evicts 1 (first unreferenced)
	c.add(testKey(5), 5, 1000, 1, nil) // evicts 3
	for i, want := range []bool{true, false, true, false, true, true} {
		if _, ok := c.get(testKey(i), 2); ok != want {
			t.Errorf("entry %d present = %v, want %v", i, ok, want)
		}
	}
	// Everything referenced now except nothing expired: the hand clears
	// the bits and evicts after one turn.
	c.add(testKey(6), 6, 1000, 2, nil)
	if n := c.len(); n != 4 {
		t.Fatalf("len = %d, want 4", n)
	}
	// An expired entry is taken before a referenced one.
	c2 := newClockCache[int](2)
	c2.add(testKey(0), 0, 1000, 0, nil)
	c2.add(testKey(1), 1, 10, 0, nil)
	c2.get(testKey(0), 5)
	c2.add(testKey(2), 2, 1000, 20, nil)
	if _, ok := c2.get(testKey(0), 20); !ok {
		t.Fatal("a referenced live entry was evicted before an expired one")
	}
}

// TestClockCacheBytes: with a byte bound, entries are evicted (CLOCK
// order, expired first) until an insertion fits; live entries evicted are
// counted, expired ones are not; a value larger than the budget is not
// stored; a replaced entry's bytes are given back.
func TestClockCacheBytes(t *testing.T) {
	size := func(v int) int { return v }
	c := newClockCacheBytes(100, 5*(slotBytes+100), size) // one shard
	for i := range 5 {
		c.add(testKey(i), 100, 1000, 0, nil)
	}
	if st := c.stats(); st.Entries != 5 || st.Bytes != 5*(slotBytes+100) || st.Evictions != 0 {
		t.Fatalf("full: %+v", st)
	}
	c.get(testKey(0), 1)
	c.add(testKey(5), 100+slotBytes+100, 1000, 1, nil) // needs two entries' room
	st := c.stats()
	if st.Entries != 4 || st.Bytes > 5*(slotBytes+100) || st.Evictions != 2 {
		t.Fatalf("after a double-size insert: %+v, want 4 entries within the bound and 2 evictions", st)
	}
	if _, ok := c.get(testKey(0), 2); !ok {
		t.Error("the referenced entry was evicted")
	}
	c.add(testKey(5), 100, 1000, 2, nil)
	if st := c.stats(); st.Bytes != 4*(slotBytes+100) {
		t.Errorf("after replacing an entry with a smaller one: %d bytes, want %d", st.Bytes, 4*(slotBytes+100))
	}
	c.add(testKey(9), 10_000, 1000, 2, nil)
	if _, ok := c.get(testKey(9), 3); ok {
		t.Error("a value larger than the whole budget was stored")
	}
	// Expired entries make room without counting as evictions.
	c2 := newClockCacheBytes(100, 2*(slotBytes+100), size)
	c2.add(testKey(0), 100, 10, 0, nil)
	c2.add(testKey(1), 100, 10, 0, nil)
	c2.add(testKey(2), 100, 1000, 20, nil)
	if st := c2.stats(); st.Evictions != 0 || st.Entries != 2 {
		t.Errorf("expired entries reclaimed: %+v, want no evictions", st)
	}
}

// TestTokenCacheBytesOption: the byte bound of the verified-token cache is
// validated, and bounds the entries verified tokens make.
func TestTokenCacheBytesOption(t *testing.T) {
	issuer := []Issuer{{Issuer: testIss, JWKSFile: writeFile(t, "jwks.json", mainJWKS(t)), TokenType: "at+jwt"}}
	for _, bad := range []int{-1, 1000, 1 << 40} {
		if _, err := NewVerifier(Options{Issuers: issuer, TokenCacheBytes: bad}); err == nil || !strings.Contains(err.Error(), "token_cache_bytes") {
			t.Errorf("TokenCacheBytes %d: %v, want a token_cache_bytes error", bad, err)
		}
	}
	v := newTestVerifier(t, issuer, Options{Clock: newFakeClock(testNow).Now, TokenCacheBytes: 65536})
	k := keys(t)
	for i := range 200 {
		tok := mint(t, `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, claimsJSON("jti", fmt.Sprintf("j%d", i)), "ES256", k.ec)
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := v.CacheStats()
	if st.Bytes > 65536 || st.Entries >= 200 || st.Evictions == 0 || int(st.Evictions)+st.Entries != 200 {
		t.Errorf("verified-token cache after 200 tokens within 64 KiB: %+v", st)
	}
}

func TestClockCacheRemoveIf(t *testing.T) {
	c := newClockCache[int](2048)
	for i := range 2048 {
		c.add(testKey(i), i, 1000, 0, nil)
	}
	// Keys spread over the shards by i%16: remove half of every shard.
	even := func(v int) bool { return (v/16)%2 == 0 }
	if n := c.removeIf(even); n != 1024 {
		t.Fatalf("removeIf removed %d, want 1024", n)
	}
	if n := c.len(); n != 1024 {
		t.Fatalf("len = %d, want 1024", n)
	}
	// Freed slots are reused before anything is evicted.
	for i := 2048; i < 2048+1024; i++ {
		c.add(testKey(i), i, 1000, 0, nil)
	}
	for i := range 2048 {
		if _, ok := c.get(testKey(i), 1); !ok && !even(i) {
			t.Fatalf("entry %d evicted although free slots existed", i)
		}
	}
}

func TestTokenBucket(t *testing.T) {
	b := newTokenBucket(3)
	now := testNow
	for i := range 3 {
		if !b.take(now) {
			t.Fatalf("take %d refused within the burst", i)
		}
	}
	if b.take(now) {
		t.Fatal("take beyond the burst allowed")
	}
	if b.take(now.Add(-time.Hour)) {
		t.Fatal("a clock step back refilled the bucket")
	}
	now = now.Add(400 * time.Millisecond)
	if !b.take(now) || b.take(now) {
		t.Fatal("one token after 400ms at 3/s expected")
	}
	now = now.Add(time.Hour)
	n := 0
	for b.take(now) {
		n++
	}
	if n != 3 {
		t.Fatalf("after an hour %d tokens, want the burst of 3", n)
	}
}

func mustParseSet(t testing.TB, b []byte) jwk.Set {
	t.Helper()
	s, err := jwk.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// cacheVerifier is a verifier of testIss with the main key set on clock.
func cacheVerifier(t testing.TB, clock *fakeClock, size int, mod ...func(*Issuer)) *Verifier {
	c := Issuer{Issuer: testIss, JWKSFile: writeFile(t, "jwks.json", mainJWKS(t)), TokenType: "at+jwt"}
	for _, m := range mod {
		m(&c)
	}
	return newTestVerifier(t, []Issuer{c}, Options{Clock: clock.Now, TokenCacheSize: size})
}

// dropKeys replaces the issuer's key set with one that has no key at all
// usable for the test tokens, without purging the cache: a token still
// accepted afterwards was answered from the cache.
func dropKeys(t testing.TB, v *Verifier) {
	t.Helper()
	ks, _, err := buildKeySet(mustParseSet(t, jwksJSON(jwkOf(keys(t).rsaB, "other", "RS256"))), v.issuers[0].algs)
	if err != nil {
		t.Fatal(err)
	}
	v.issuers[0].keys.Store(ks)
}

func TestVerifiedTokenCache(t *testing.T) {
	clock := newFakeClock(testNow)
	v := cacheVerifier(t, clock, 0)
	tok := validToken(t)
	id1, err := v.Verify(context.Background(), tok)
	checkErr(t, "Verify(cold)", err, nil)
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache len = %d after one valid token, want 1", n)
	}
	ks := v.issuers[0].keys.Load()
	dropKeys(t, v)
	id2, err := v.Verify(context.Background(), tok)
	checkErr(t, "Verify(warm, keys gone without purge)", err, nil)
	if id1 == id2 || id1.Subject != id2.Subject || string(id1.Claims) != string(id2.Claims) || id2.Expiry != testNow.Unix()+300 {
		t.Fatalf("cached identity %+v differs from %+v (or is the same pointer)", id2, id1)
	}
	// A caller modifying its Identity does not change the cache.
	id2.Subject = "mallory"
	if id3, _ := v.Verify(context.Background(), tok); id3.Subject != "alice" {
		t.Fatalf("cache entry modified through a returned Identity: %q", id3.Subject)
	}
	if v.cache.capacity() != defaultCacheSize {
		t.Fatalf("default capacity = %d", v.cache.capacity())
	}

	// Entries are never served at or after exp; beyond the leeway the
	// token is expired.
	clock.Advance(300 * time.Second)
	checkErr(t, "Verify(at exp, within leeway, keys gone)", verifyTok(v, tok), ErrUnknownKey)
	v.issuers[0].keys.Store(ks)
	checkErr(t, "Verify(at exp, within leeway)", verifyTok(v, tok), nil)
	if n := v.cache.len(); n != 0 {
		t.Fatalf("cache len = %d: a token past its exp was cached", n)
	}
	clock.Advance(60 * time.Second)
	checkErr(t, "Verify(after exp + leeway)", verifyTok(v, tok), ErrExpired)
	if n := v.cache.len(); n != 0 {
		t.Fatalf("cache len = %d after expiry, want 0", n)
	}
}

func TestCacheHitRechecksTimeClaims(t *testing.T) {
	// A clock that steps back makes nbf/iat future again: a hit decides
	// exactly as a full verification would.
	clock := newFakeClock(testNow)
	v := cacheVerifier(t, clock, 0)
	tok := validToken(t)
	checkErr(t, "Verify", verifyTok(v, tok), nil)
	clock.Advance(-2 * time.Minute)
	checkErr(t, "Verify(hit, clock 2m back)", verifyTok(v, tok), ErrNotYetValid)
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache len = %d", n)
	}
}

func TestCacheOnlyValidTokens(t *testing.T) {
	// A flood of distinct invalid tokens neither grows the cache nor
	// evicts a warm entry, even in a tiny cache.
	clock := newFakeClock(testNow)
	v := cacheVerifier(t, clock, 16)
	good := validToken(t)
	checkErr(t, "Verify(good)", verifyTok(v, good), nil)
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache len = %d, want 1", n)
	}
	hdr := enc.EncodeToString([]byte(hdrRS256))
	payload := enc.EncodeToString([]byte(claimsJSON()))
	buf := make([]byte, 48)
	for i := range 100_000 {
		rand.Read(buf)
		var tok string
		switch i % 4 {
		case 0: // random base64url
			tok = enc.EncodeToString(buf)
		case 1: // random JWS-shaped
			tok = enc.EncodeToString(buf[:16]) + "." + enc.EncodeToString(buf[16:32]) + "." + enc.EncodeToString(buf[32:])
		case 2: // real header and payload, bad signature (bounded: RSA work)
			if i%200 == 2 {
				tok = hdr + "." + payload + "." + enc.EncodeToString(append(buf, make([]byte, 256-48)...))
			} else {
				tok = hdr + "." + enc.EncodeToString(buf) + ".AAAA"
			}
		case 3: // expired or wrong audience, validly signed (few: RSA signing)
			if i%2000 == 3 {
				tok = validToken(t, "aud", fmt.Sprint("https://other-", i))
			} else {
				tok = strings.Repeat(".", i%64)
			}
		}
		if _, err := v.Verify(context.Background(), tok); err == nil {
			t.Fatalf("random token %d accepted", i)
		}
	}
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache len = %d after 100k invalid tokens, want 1", n)
	}
	if n := v.rejected.len(); n == 0 || n > 16 {
		t.Fatalf("rejected len = %d, want 1..16 (bounded by the cache size)", n)
	}
	dropKeys(t, v)
	checkErr(t, "Verify(good, warm after the flood)", verifyTok(v, good), nil)
}

func TestCacheFarExpiry(t *testing.T) {
	// exp after 2262 (UnixNano's range) is cached, until exp.
	clock := newFakeClock(testNow)
	v := cacheVerifier(t, clock, 0)
	for _, exp := range []int64{1e10, 253402300799} {
		tok := validToken(t, "exp", exp)
		checkErr(t, "Verify", verifyTok(v, tok), nil)
	}
	if n := v.cache.len(); n != 2 {
		t.Fatalf("cache len = %d, want 2", n)
	}
	dropKeys(t, v)
	checkErr(t, "Verify(year 2286, cached)", verifyTok(v, validToken(t, "exp", int64(1e10))), nil)
	if unixNano(time.Unix(253402300799, 0)) != math.MaxInt64 || unixNano(testNow) != testNow.UnixNano() {
		t.Fatal("unixNano does not saturate")
	}
}

func TestCacheDisabled(t *testing.T) {
	clock := newFakeClock(testNow)
	v := cacheVerifier(t, clock, -1)
	tok := validToken(t)
	checkErr(t, "Verify", verifyTok(v, tok), nil)
	dropKeys(t, v)
	checkErr(t, "Verify(no cache, keys gone)", verifyTok(v, tok), ErrUnknownKey)
	if v.cache != nil || v.cache.len() != 0 {
		t.Fatal("cache present with CacheSize -1")
	}
}

func TestCacheBounded(t *testing.T) {
	clock := newFakeClock(testNow)
	v := cacheVerifier(t, clock, 4)
	for i := range 10 {
		checkErr(t, "Verify", verifyTok(v, validToken(t, "jti", fmt.Sprint("jti-", i))), nil)
		if n := v.cache.len(); n > 4 {
			t.Fatalf("cache len = %d, capacity 4", n)
		}
	}
}

func TestCacheHighSSpellings(t *testing.T) {
	// ECDSA malleability: both spellings of one token (s and n-s) verify;
	// each is its own entry, which the bound on the cache makes harmless.
	clock := newFakeClock(testNow)
	v := cacheVerifier(t, clock, 0)
	tok := mint(t, `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, claimsJSON(), "ES256", keys(t).ec)
	sig := sigOf(t, tok)
	n := elliptic.P256().Params().N
	s := new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:]))
	high := withSig(tok, append(sig[:32:32], s.FillBytes(make([]byte, 32))...))
	checkErr(t, "Verify(low s)", verifyTok(v, tok), nil)
	checkErr(t, "Verify(high s)", verifyTok(v, high), nil)
	if got := v.cache.len(); got != 2 {
		t.Fatalf("cache len = %d, want 2 (one per spelling)", got)
	}
}

func TestCachePurgedOnKeyRemoval(t *testing.T) {
	// Revocation: when a refresh removes k1, tokens verified with k1 leave
	// the cache; tokens of kept keys stay.
	k := keys(t)
	srv := newJWKSServer(t, jwksJSON(jwkOf(k.rsa, "k1", "RS256"), jwkOf(k.ec, "e1", "ES256")))
	clock := newFakeClock(testNow)
	v := remoteVerifier(t, srv, clock, true)
	tokK1 := validToken(t)
	tokE1 := mint(t, `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, claimsJSON(), "ES256", k.ec)
	checkErr(t, "Verify(k1)", verifyTok(v, tokK1), nil)
	checkErr(t, "Verify(e1)", verifyTok(v, tokE1), nil)
	if n := v.cache.len(); n != 2 {
		t.Fatalf("cache len = %d, want 2", n)
	}
	// Same keys again (a routine refresh): nothing is purged.
	gen := v.issuers[0].keyGen.Load()
	srv.set(http.StatusOK, jwksJSON(jwkOf(k.rsa, "k1", "RS256"), jwkOf(k.ec, "e1", "ES256"), jwkOf(k.rsa2, "k2", "RS256")))
	checkErr(t, "Verify(k2, triggers a refetch)", verifyTok(v, tokenFor(t, "k2", k.rsa2)), nil)
	if v.issuers[0].keyGen.Load() != gen || v.cache.len() != 3 {
		t.Fatalf("a refresh that removed nothing purged the cache (len %d)", v.cache.len())
	}
	// k1 is removed (and k2 replaced by another key under the same kid).
	srv.set(http.StatusOK, jwksJSON(jwkOf(k.ec, "e1", "ES256"), jwkOf(k.attacker, "k2", "RS256"), jwkOf(k.ec384, "e384", "ES384")))
	clock.Advance(time.Minute)
	checkErr(t, "Verify(e384, triggers a refetch)", verifyTok(v, mint(t, `{"alg":"ES384","kid":"e384","typ":"at+jwt"}`, claimsJSON(), "ES384", k.ec384)), nil)
	if v.issuers[0].keyGen.Load() == gen {
		t.Fatal("key removal did not move the generation")
	}
	checkErr(t, "Verify(k1 after its removal)", verifyTok(v, tokK1), ErrUnknownKey)
	checkErr(t, "Verify(k2 after its replacement)", verifyTok(v, tokenFor(t, "k2", k.rsa2)), ErrBadSignature)
	dropKeys(t, v)
	checkErr(t, "Verify(e1, kept: still cached)", verifyTok(v, tokE1), nil)
}

func TestCacheGenerationGuard(t *testing.T) {
	// A verification that loaded a key set before a purge does not insert
	// its result after it.
	clock := newFakeClock(testNow)
	v := cacheVerifier(t, clock, 0)
	is := v.issuers[0]
	gen := is.keyGen.Load()
	is.keyGen.Add(1)
	e := &cacheEntry{id: &Identity{}, is: is, kid: "k1", keyed: true}
	v.cache.add(keyOf("x"), e, testNow.Add(time.Hour).UnixNano(), testNow.UnixNano(), func() bool { return is.keyGen.Load() == gen })
	if v.cache.len() != 0 {
		t.Fatal("an entry verified before a purge was inserted after it")
	}
}

func TestCacheConcurrent(t *testing.T) {
	// Run with -race: hits, inserts, evictions and purges at once.
	k := keys(t)
	srv := newJWKSServer(t, jwksJSON(jwkOf(k.rsa, "k1", "RS256"), jwkOf(k.rsa2, "k2", "RS256")))
	clock := newFakeClock(testNow)
	v := newTestVerifier(t, []Issuer{{Issuer: testIss, JWKSURI: srv.URL + "/jwks", JWKS: JWKS{UnknownKIDInterval: time.Duration(time.Second)}}},
		Options{Clock: clock.Now, TokenCacheSize: 8})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	var toks []string
	for i := range 16 {
		toks = append(toks, validToken(t, "jti", fmt.Sprint(i)))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				_, err := v.Verify(context.Background(), toks[(g+i)%len(toks)])
				if err != nil && !strings.Contains(err.Error(), "kid") {
					t.Errorf("Verify = %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			if i%2 == 0 {
				srv.set(http.StatusOK, jwksJSON(jwkOf(k.rsa2, "k2", "RS256")))
			} else {
				srv.set(http.StatusOK, jwksJSON(jwkOf(k.rsa, "k1", "RS256"), jwkOf(k.rsa2, "k2", "RS256")))
			}
			clock.Advance(2 * time.Second)
			verifyTok(v, tokenFor(t, fmt.Sprint("unknown-", i), k.rsa))
		}
	})
	wg.Wait()
	if n := v.cache.len(); n > 8 {
		t.Fatalf("cache len = %d, capacity 8", n)
	}
}

// countingVerifier counts the signature verifications of one algorithm.
type countingVerifier struct {
	jws.Verifier
	n atomic.Int64
}

func (c *countingVerifier) Verify(payload, sig []byte, key any) error {
	c.n.Add(1)
	return c.Verifier.Verify(payload, sig, key)
}

// countRS256 makes the first issuer of v count its RS256 verifications;
// call it before v is used concurrently.
func countRS256(v *Verifier) *countingVerifier {
	is := v.issuers[0]
	c := &countingVerifier{Verifier: is.verifiers["RS256"]}
	is.verifiers["RS256"] = c
	return c
}

// TestRecentRejections: a token rejected after its signature was checked
// is answered from the negative cache when it comes again (no second RSA
// verification), unless time could change the answer; tokens rejected
// before the signature check never enter it.
func TestRecentRejections(t *testing.T) {
	now := testNow.Unix()
	forged := func(t testing.TB) string {
		sig := make([]byte, 256)
		rand.Read(sig)
		return withSig(validToken(t), sig)
	}
	tests := []struct {
		name   string
		token  func(t testing.TB) string
		want   error
		cached bool // the second Verify skips the signature
		checks int64
	}{
		{"forged-signature/known-kid", forged, ErrBadSignature, true, 1},
		{"forged-signature/tampered-payload", func(t testing.TB) string {
			return withSig(validToken(t, "scope", "tools:*"), sigOf(t, validToken(t)))
		}, ErrBadSignature, true, 1},
		{"authentic/expired", func(t testing.TB) string {
			return validToken(t, "exp", now-3600, "iat", now-7200, "nbf", now-7200)
		}, ErrExpired, true, 1},
		{"authentic/wrong-audience", func(t testing.TB) string { return validToken(t, "aud", "https://other.example/mcp") }, ErrAudience, true, 1},
		{"authentic/no-subject", func(t testing.TB) string { return validToken(t, "sub", del) }, ErrMissingSubject, true, 1},
		{"authentic/claim-of-wrong-type", func(t testing.TB) string { return validToken(t, "client_id", 5) }, ErrMalformed, true, 1},
		// Time alone turns these into acceptances: never remembered.
		{"time-heals/not-yet-valid", func(t testing.TB) string { return validToken(t, "nbf", now+3600) }, ErrNotYetValid, false, 2},
		{"time-heals/issued-in-future", func(t testing.TB) string { return validToken(t, "iat", now+3600) }, ErrIssuedInFuture, false, 2},
		// Rejected before any signature check: cheap, never remembered.
		{"before-signature/malformed", func(testing.TB) string { return "eyJhbGciOiJSUzI1NiJ9.e30" }, ErrMalformed, false, 0},
		{"before-signature/no-issuer", func(testing.TB) string { return "eyJhbGciOiJSUzI1NiJ9.e30.AAAA" }, ErrMissingClaim, false, 0},
		{"before-signature/unknown-kid", func(t testing.TB) string {
			return mint(t, `{"alg":"RS256","kid":"nope","typ":"at+jwt"}`, claimsJSON(), "RS256", keys(t).rsa)
		}, ErrUnknownKey, false, 0},
		{"before-signature/alg-none", func(t testing.TB) string {
			return enc.EncodeToString([]byte(`{"alg":"none","kid":"k1","typ":"at+jwt"}`)) + "." + enc.EncodeToString([]byte(claimsJSON())) + ".AA"
		}, ErrAlgorithm, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := cacheVerifier(t, newFakeClock(testNow), 0)
			c := countRS256(v)
			tok := tt.token(t)
			first := verifyTok(v, tok)
			checkErr(t, "Verify", first, tt.want)
			second := verifyTok(v, tok)
			checkErr(t, "Verify(again)", second, tt.want)
			if got := c.n.Load(); got != tt.checks {
				t.Fatalf("%d signature verifications, want %d", got, tt.checks)
			}
			if tt.cached != (v.rejected.len() == 1) {
				t.Fatalf("rejected len = %d, want cached = %v", v.rejected.len(), tt.cached)
			}
			if tt.cached && second != first {
				t.Fatalf("Verify(again) = %v, want the remembered %v", second, first)
			}
		})
	}

	t.Run("forgotten-after-ttl", func(t *testing.T) {
		clock := newFakeClock(testNow)
		v := cacheVerifier(t, clock, 0)
		c := countRS256(v)
		tok := forged(t)
		checkErr(t, "Verify", verifyTok(v, tok), ErrBadSignature)
		clock.Advance(rejectedTTL - time.Second)
		checkErr(t, "Verify(within the TTL)", verifyTok(v, tok), ErrBadSignature)
		clock.Advance(time.Second)
		checkErr(t, "Verify(after the TTL)", verifyTok(v, tok), ErrBadSignature)
		if got := c.n.Load(); got != 2 {
			t.Fatalf("%d signature verifications, want 2", got)
		}
	})
	t.Run("forgotten-when-the-key-set-changes", func(t *testing.T) {
		// A new set may map the kid to another key (a reused kid) that
		// verifies the token: the rejection is for the set it was checked
		// against only.
		v := cacheVerifier(t, newFakeClock(testNow), 0)
		c := countRS256(v)
		k := keys(t)
		forgedByNextKey := mint(t, hdrRS256, claimsJSON(), "RS256", k.rsa2)
		checkErr(t, "Verify(k1 is the old key)", verifyTok(v, forgedByNextKey), ErrBadSignature)
		ks, _, err := buildKeySet(mustParseSet(t, jwksJSON(jwkOf(k.rsa2, "k1", "RS256"))), v.issuers[0].algs)
		if err != nil {
			t.Fatal(err)
		}
		v.issuers[0].keys.Store(ks)
		checkErr(t, "Verify(k1 is now that key)", verifyTok(v, forgedByNextKey), nil)
		if got := c.n.Load(); got != 2 {
			t.Fatalf("%d signature verifications, want 2", got)
		}
	})
	t.Run("disabled-with-the-cache", func(t *testing.T) {
		v := cacheVerifier(t, newFakeClock(testNow), -1)
		c := countRS256(v)
		tok := forged(t)
		checkErr(t, "Verify", verifyTok(v, tok), ErrBadSignature)
		checkErr(t, "Verify(again)", verifyTok(v, tok), ErrBadSignature)
		if got := c.n.Load(); got != 2 || v.rejected != nil {
			t.Fatalf("%d signature verifications (want 2), rejected cache %v (want none)", got, v.rejected)
		}
	})
}

// BenchmarkVerifyCache compares a cold verification (cache disabled) with
// a warm one (cache hit) for an RS256 token.
func BenchmarkVerifyCache(b *testing.B) {
	tok := validToken(b)
	for _, bc := range []struct {
		name string
		size int
	}{{"cold", -1}, {"warm", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			v := cacheVerifier(b, newFakeClock(testNow), bc.size)
			ctx := context.Background()
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("warm-parallel", func(b *testing.B) {
		v := cacheVerifier(b, newFakeClock(testNow), 0)
		if _, err := v.Verify(context.Background(), tok); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := v.Verify(context.Background(), tok); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkTokenCacheMemory measures what one verified-token cache entry
// costs the heap (the live heap after filling the cache with n distinct
// tokens, over n) next to what the byte bound counts for it (the estimate
// of cacheEntry.size plus slotBytes), for tokens of the test issuer's
// shape (a payload of about 330 bytes, 2 scopes) and with a 1.2 KB payload
// (30 groups), as an IdP that puts groups in access tokens issues.
func BenchmarkTokenCacheMemory(b *testing.B) {
	k := keys(b)
	for _, bc := range []struct {
		name   string
		claims func(i int) string
	}{
		{"payload330", func(i int) string { return claimsJSON("jti", fmt.Sprintf("jti-%08d", i)) }},
		{"payload1200", func(i int) string {
			groups := make([]string, 30)
			for g := range groups {
				groups[g] = fmt.Sprintf("group-%02d-of-the-organisation", g)
			}
			return claimsJSON("jti", fmt.Sprintf("jti-%08d", i), "groups", groups)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const n = 3000
			toks := make([]string, n)
			for i := range toks {
				toks[i] = mint(b, `{"alg":"ES256","kid":"e1","typ":"at+jwt"}`, bc.claims(i), "ES256", k.ec)
			}
			for b.Loop() {
				c := Issuer{Issuer: testIss, JWKSFile: writeFile(b, "jwks.json", mainJWKS(b)), TokenType: "at+jwt"}
				v := newTestVerifier(b, []Issuer{c}, Options{Clock: newFakeClock(testNow).Now, TokenCacheSize: 4 * n, TokenCacheBytes: 1 << 30})
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				for _, tok := range toks {
					if _, err := v.Verify(context.Background(), tok); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				st, _ := v.CacheStats()
				if st.Entries != n {
					b.Fatalf("%d entries, want %d", st.Entries, n)
				}
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/entry")
				b.ReportMetric(float64(st.Bytes)/n, "counted-B/entry")
				runtime.KeepAlive(v)
			}
		})
	}
}
