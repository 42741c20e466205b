package jwtauth

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/mcpauthz/mcpauthz/internal/oauth"
	"github.com/mcpauthz/mcpauthz/internal/problem"
)

// Verifier verifies the access tokens of the configured issuers. It is safe
// for concurrent use.
//
// A Verifier does no network I/O until Start: construction reads the
// static key sets and secrets only. Start begins fetching the remote key
// sets; Close stops every goroutine the Verifier started and waits for
// them.
type Verifier struct {
	log       *slog.Logger
	client    *http.Client
	now       func() time.Time
	onRefresh func(string, int, error)

	issuers  []*issuer
	exact    map[string]*issuer
	patterns []*issuer
	maxSize  int // the largest max_token_size, checked before parsing

	// cache holds verified identities by token hash; nil when disabled.
	cache *clockCache[*cacheEntry]
	// rejected holds recent rejections that cost a signature check, by
	// token hash; nil when the cache is disabled.
	rejected *clockCache[*rejection]
	// after is time.After; tests replace it to observe and end the
	// unknown-kid wait.
	after func(time.Duration) <-chan time.Time
	// intro introspects opaque tokens; nil when no issuer has
	// introspection.
	intro *introspector

	readyOnce sync.Once
	readyCh   chan struct{}

	// ctx bounds every background call (key fetches, introspection); only
	// Close cancels it, so a request's end or a shutdown signal never
	// cancels work other requests wait for.
	ctx     context.Context
	cancel  context.CancelFunc
	bgMu    sync.Mutex
	started bool
	closed  bool
	bg      sync.WaitGroup
}

// NewVerifier validates opts, applying the defaults documented on Options
// and Issuer, and reads static key sets (jwks_file) and secrets. Every
// problem is reported at once, each as a *problem.Error. It starts nothing:
// call Start to fetch remote keys, and Close when done.
func NewVerifier(opts Options) (*Verifier, error) {
	v := &Verifier{
		log:       opts.Logger,
		client:    newHTTPClient(opts.HTTPClient),
		now:       opts.Clock,
		onRefresh: opts.OnJWKSRefresh,
		exact:     make(map[string]*issuer),
		readyCh:   make(chan struct{}),
		after:     time.After,
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.now == nil {
		v.now = time.Now
	}

	var errs problem.List
	if len(opts.Issuers) == 0 {
		errs.Add("issuers", "at least one trusted issuer is required")
	}
	introspecting := -1
	for i, c := range opts.Issuers {
		path := fmt.Sprintf("issuers[%d]", i)
		if c.Introspection != nil {
			if introspecting >= 0 {
				// Opaque tokens carry no issuer: each would be sent to every
				// introspecting server, leaking it to all but its own.
				errs.Add(path+".introspection", "only one issuer may use introspection; issuers[%d] already does (opaque tokens would be sent to the wrong authorization server)", introspecting)
			} else {
				introspecting = i
			}
		}
		is, err := newIssuer(c, opts.DefaultAudience)
		if err != nil {
			errs.Merge(path, err)
			continue
		}
		if j := slices.IndexFunc(v.issuers, func(o *issuer) bool { return o.name == is.name }); j >= 0 {
			errs.Add(path+".issuer", "duplicate of issuers[%d]", j)
			continue
		}
		if is.jwksFile != "" {
			ks, st, err := loadKeyFile(is.jwksFile, is.algs)
			if err != nil {
				errs.Add(path+".jwks_file", "%s: %v", is.jwksFile, err)
				continue
			}
			is.keys.Store(ks)
			v.log.Info("jwks loaded", append([]any{"issuer", is.name, "jwks_file", is.jwksFile}, st.logAttrs()...)...)
			if v.onRefresh != nil {
				v.onRefresh(is.name, st.usable, nil)
			}
		}
		v.issuers = append(v.issuers, is)
		if is.pattern {
			v.patterns = append(v.patterns, is)
		} else {
			v.exact[is.name] = is
		}
		v.maxSize = max(v.maxSize, is.maxTokenSize)
	}
	size := opts.TokenCacheSize
	switch {
	case size == 0:
		size = defaultCacheSize
	case size < -1 || size > 10_000_000:
		errs.Add("token_cache_size", "must be -1 (disabled), 0 (default %d) or a size up to 10000000", defaultCacheSize)
	}
	maxBytes := opts.TokenCacheBytes
	switch {
	case maxBytes == 0:
		maxBytes = defaultCacheBytes
	case maxBytes < 65536 || maxBytes > 1<<34:
		errs.Add("token_cache_bytes", "must be 0 (default %d) or from 65536 to %d bytes", defaultCacheBytes, int64(1)<<34)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}

	v.ctx, v.cancel = context.WithCancel(context.Background())
	v.cache = newClockCacheBytes(size, maxBytes, (*cacheEntry).size)
	v.rejected = newClockCacheBytes(size, maxBytes, (*rejection).size)
	for _, is := range v.issuers {
		if is.introspection != nil {
			v.intro = newIntrospector(v, is, size)
		}
		if is.jwksURI != "" || is.discovery {
			is.remote = newRemoteKeys(v, is)
		}
	}
	v.checkReady()
	return v, nil
}

// Start begins fetching the remote key sets in the background (it returns
// at once; see Ready and WaitReady). It does nothing after the first call
// or after Close.
func (v *Verifier) Start() {
	v.bgMu.Lock()
	defer v.bgMu.Unlock()
	if v.started || v.closed {
		return
	}
	v.started = true
	for _, is := range v.issuers {
		if r := is.remote; r != nil {
			r.start()
			v.bg.Add(1)
			go func() {
				defer v.bg.Done()
				r.run()
			}()
		}
	}
}

// Close stops the key refreshes and the introspection calls in flight and
// waits for every goroutine the Verifier started. Requests verified after
// Close get ErrKeysUnavailable where they would need the network.
func (v *Verifier) Close() error {
	v.bgMu.Lock()
	v.closed = true
	v.bgMu.Unlock()
	v.cancel()
	v.bg.Wait()
	v.client.CloseIdleConnections()
	return nil
}

// goBackground runs f on a goroutine that Close waits for; it reports false
// (and does not run f) once the Verifier is closed or before Start.
func (v *Verifier) goBackground(f func()) bool {
	v.bgMu.Lock()
	defer v.bgMu.Unlock()
	if v.closed || !v.started {
		return false
	}
	v.bg.Add(1)
	go func() {
		defer v.bg.Done()
		f()
	}()
	return true
}

// Ready reports whether every issuer has a usable key set. Once true, it
// stays true: a usable set is only ever replaced by another usable set.
func (v *Verifier) Ready() bool {
	for _, is := range v.issuers {
		if !is.ready() {
			return false
		}
	}
	return true
}

// ReadyChan is closed once Ready is true.
func (v *Verifier) ReadyChan() <-chan struct{} { return v.readyCh }

// WaitReady blocks until Ready is true or ctx is done.
func (v *Verifier) WaitReady(ctx context.Context) error {
	select {
	case <-v.readyCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (v *Verifier) checkReady() {
	if v.Ready() {
		v.readyOnce.Do(func() { close(v.readyCh) })
	}
}

// Verify verifies an access token and returns its identity.
//
// A token already verified and still cached (see the package doc) is
// answered from the cache, after its time claims are checked again; a JWT
// rejected after its signature check in the last 30 seconds is answered
// from the negative cache. Any
// other token with the shape of a compact JWS (see looksLikeJWS) is
// verified as a JWT; when an issuer has introspection, every other token
// is introspected. A token takes one of these paths only: a JWT that fails
// is never introspected, and an opaque token is never parsed as a JWT
// (so the two paths cannot disagree about one token).
//
// The JWT checks run in this order; every rejection wraps ErrInvalidToken
// and the precise cause, except ErrKeysUnavailable (no key set yet: the
// verifier cannot decide):
//
//  1. size (ErrTooLarge), then structure: three non-empty segments of
//     the base64url alphabet, the header canonical base64url and a strict
//     JSON object (ErrMalformed);
//  2. header: crit present (ErrCritical); jwk, jku, x5u or b64 present,
//     alg missing or not a string, kid or typ not a string (ErrMalformed);
//     then the payload and the signature canonical base64url, the
//     payload a strict JSON object (ErrMalformed);
//  3. issuer: the unverified iss selects exactly one configured issuer
//     (ErrUnknownIssuer; ErrMissingClaim without iss); an issuer without
//     keys (introspection only) takes no JWTs (ErrType);
//  4. typ, when the issuer requires at+jwt (ErrType);
//  5. alg in the issuer's allow-list (ErrAlgorithm);
//  6. key: by kid among that issuer's keys only, refetching once
//     (rate-limited, waiting at most unknown_kid_wait) on an unknown kid
//     (ErrUnknownKey, or ErrKeysUnavailable when the set could not be
//     confirmed current); the key must fit alg by type, curve and its
//     own alg (ErrAlgorithm);
//  7. signature, with jwx's verifier of alg and that single key
//     (ErrBadSignature);
//  8. claims, read only now that they are authentic: exp, nbf, iat,
//     max_lifetime (ErrLifetime), aud, tenant, required claims, cnf, sub
//     (ErrMissingSubject), and the types of the claims used.
//
// Introspection is described in the package doc. ctx bounds the wait for
// a key refetch or an introspection call; it never cancels a call other
// requests are waiting for.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	if len(token) > v.maxSize {
		return nil, invalid(ErrTooLarge, "token exceeds %d bytes", v.maxSize)
	}
	var key tokenKey
	if v.cache != nil || v.intro != nil {
		key = keyOf(token)
	}
	if v.cache != nil {
		now := v.now()
		if e, ok := v.cache.get(key, now.UnixNano()); ok {
			return e.identity(now)
		}
		if r, ok := v.rejected.get(key, now.UnixNano()); ok && r.valid() {
			return nil, r.err
		}
	}
	if v.intro != nil && !looksLikeJWS(token) {
		return v.intro.verify(ctx, token, key)
	}
	return v.verifyJWT(ctx, token, key)
}

// verifyJWT verifies a compact JWS and caches the result; key is the
// token's hash (unset when the cache is disabled).
func (v *Verifier) verifyJWT(ctx context.Context, token string, key tokenKey) (*Identity, error) {
	j, err := parseJOSE(token)
	if err != nil {
		return nil, err
	}

	iss, ok, err := stringMember(j.claims, "iss")
	if err != nil {
		return nil, malformed("iss is not a string")
	}
	if !ok {
		return nil, invalid(ErrMissingClaim, "iss missing")
	}
	is, tenant := v.selectIssuer(iss)
	if is == nil {
		return nil, invalid(ErrUnknownIssuer, "issuer not configured")
	}
	if len(token) > is.maxTokenSize {
		return nil, invalid(ErrTooLarge, "token exceeds %d bytes", is.maxTokenSize)
	}
	if !is.acceptsJWT() {
		return nil, invalid(ErrType, "the issuer is configured for opaque tokens (introspection) only")
	}
	if is.requireATJWT && !isATJWT(j) {
		return nil, invalid(ErrType, "typ is not at+jwt")
	}
	if !is.algs[j.alg] {
		return nil, invalid(ErrAlgorithm, "algorithm not allowed for this issuer")
	}
	// Read before the key set: see purgeRemovedKeys.
	gen := is.keyGen.Load()
	vk, ks, err := v.selectKey(ctx, is, j)
	if err != nil {
		return nil, err
	}
	// The signature, with the key and algorithm chosen above only. jwx's
	// verifier of that algorithm runs on the signing input as sent:
	// parseJOSE has checked and decoded it, so jws.Verify's own parse
	// (half the cost of an RS256 verification) would only repeat it.
	if err := is.verifiers[j.alg].Verify([]byte(j.signed), j.sig, vk.pub); err != nil {
		err = invalid(ErrBadSignature, "signature verification failed")
		v.reject(key, is, ks, err)
		return nil, err
	}
	now := v.now()
	id, times, err := is.identity(j, iss, tenant, now)
	if err != nil {
		v.reject(key, is, ks, err)
		return nil, err
	}
	if v.cache != nil {
		e := &cacheEntry{id: id, is: is, times: times, kid: vk.kid, keyed: vk.family != famHMAC}
		cp := *id
		v.cache.add(key, e, unixNano(times.exp), now.UnixNano(), func() bool { return is.keyGen.Load() == gen })
		return &cp, nil
	}
	return id, nil
}

// CacheStats describes the verified-token cache and the cache of recently
// rejected JWTs.
func (v *Verifier) CacheStats() (verified, rejected CacheStats) {
	return v.cache.stats(), v.rejected.stats()
}

// purgeRemovedKeys removes from the cache the tokens of is verified with a
// key of old that next no longer has (same kid and same public key): a key
// removed from the JWKS stops verifying cached tokens too. It runs
// after next is published; the generation bump makes a verification that
// loaded old and finishes after the purge skip the cache.
func (v *Verifier) purgeRemovedKeys(is *issuer, old, next *keySet) {
	if old == nil || v.cache == nil {
		return
	}
	removed := make(map[string]bool)
	for _, k := range old.keys {
		cands := next.keys
		if k.kid != "" {
			cands = next.byKID[k.kid]
		}
		kept := slices.ContainsFunc(cands, func(n *verificationKey) bool {
			return n.kid == k.kid && samePublicKey(n.pub, k.pub)
		})
		if !kept {
			removed[k.kid] = true
		}
	}
	if len(removed) == 0 {
		return
	}
	is.keyGen.Add(1)
	n := v.cache.removeIf(func(e *cacheEntry) bool { return e.is == is && e.keyed && removed[e.kid] })
	if n > 0 {
		v.log.Info("cached tokens purged after key removal", "issuer", is.name, "keys_removed", len(removed), "tokens_purged", n)
	}
}

// selectIssuer returns the issuer whose iss is exactly iss, else the first
// pattern issuer that matches it, with the matched tenant.
func (v *Verifier) selectIssuer(iss string) (*issuer, string) {
	if is := v.exact[iss]; is != nil {
		return is, ""
	}
	for _, is := range v.patterns {
		if tenant, ok := is.matchTenant(iss); ok {
			return is, tenant
		}
	}
	return nil, ""
}

// isATJWT reports whether typ is at+jwt or application/at+jwt, compared
// case-insensitively (RFC 9068 §4, RFC 2045 media types).
func isATJWT(j *jose) bool {
	return j.hasTyp && (strings.EqualFold(j.typ, "at+jwt") || strings.EqualFold(j.typ, "application/at+jwt"))
}

// selectKey finds the verification key of the token in the issuer's set
// (for HMAC, a key holding the issuer's secret) and returns the set it
// used (nil for HMAC).
//
// An unknown kid triggers a refetch (see remoteKeys.refresh). If the kid
// is still unknown, the answer depends on whether the set is known to be
// current: after a successful fetch it is ErrUnknownKey (401); when the
// wait ended first or the last fetch failed, it is ErrKeysUnavailable
// (503): the key may exist, and a 401 would make an MCP client throw away
// a token that is possibly valid, where a 503 makes it retry.
func (v *Verifier) selectKey(ctx context.Context, is *issuer, j *jose) (*verificationKey, *keySet, error) {
	if algFamily[j.alg] == famHMAC {
		// Allowed only when the issuer has a secret.
		return &verificationKey{family: famHMAC, alg: j.alg, pub: is.hmacKey}, nil, nil
	}
	ks := is.keys.Load()
	if ks == nil && is.remote != nil {
		is.remote.refresh(ctx, func() bool { return is.keys.Load() != nil })
		ks = is.keys.Load()
	}
	if ks == nil {
		return nil, nil, fmt.Errorf("%w: no key set loaded yet for the issuer", ErrKeysUnavailable)
	}
	cands, refreshable := ks.lookup(j.kid, j.hasKID)
	if refreshable && is.remote != nil {
		current := is.remote.refresh(ctx, func() bool {
			c, _ := is.keys.Load().lookup(j.kid, j.hasKID)
			return len(c) > 0
		})
		ks = is.keys.Load()
		cands, _ = ks.lookup(j.kid, j.hasKID)
		if len(cands) == 0 && !current {
			return nil, nil, fmt.Errorf("%w: the token's kid is unknown and the key set could not be refreshed in time", ErrKeysUnavailable)
		}
	}
	if len(cands) == 0 {
		if !j.hasKID {
			return nil, nil, invalid(ErrUnknownKey, "token has no kid and the issuer has several keys")
		}
		return nil, nil, invalid(ErrUnknownKey, "no key with the token's kid")
	}
	for _, k := range cands {
		if k.fits(j.alg) {
			return k, ks, nil
		}
	}
	return nil, nil, invalid(ErrAlgorithm, "the key does not fit the algorithm")
}

// identity checks the verified claims and builds the Identity.
func (is *issuer) identity(j *jose, iss, tenant string, now time.Time) (*Identity, tokenTimes, error) {
	c := j.claims
	times, err := readTimes(c)
	if err != nil {
		return nil, times, malformed("%w", err)
	}
	if !times.hasExp {
		return nil, times, invalid(ErrMissingClaim, "exp missing")
	}
	if err := is.checkTimes(times, now); err != nil {
		return nil, times, err
	}

	aud, _, err := stringsMember(c, "aud")
	if err != nil {
		return nil, times, malformed("%w", err)
	}
	if !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(is.audiences, a) }) {
		return nil, times, invalid(ErrAudience, "no accepted audience in aud")
	}

	if is.pattern {
		tid, ok, err := stringMember(c, is.tenantClaim)
		if err != nil {
			return nil, times, malformed("%w", err)
		}
		if !ok {
			return nil, times, invalid(ErrMissingClaim, "tenant claim missing")
		}
		if tid != tenant {
			return nil, times, invalid(ErrIssuer, "tenant claim does not match the issuer")
		}
	}
	for _, name := range is.requiredClaims {
		if v, ok := c[name]; !ok || v.Kind() == jsontext.KindNull {
			return nil, times, invalid(ErrMissingClaim, "required claim missing")
		}
	}
	if _, ok := c["cnf"]; ok {
		// A sender-constrained token (DPoP, RFC 9449; mTLS, RFC 8705)
		// must not be accepted as a bearer token: its binding cannot be
		// checked here.
		return nil, times, invalid(ErrType, "sender-constrained token (cnf) presented as a bearer token")
	}

	id := &Identity{
		Issuer:   iss,
		Audience: aud,
		Claims:   j.payload,
		Expiry:   times.exp.Unix(),
	}
	if id.Subject, _, err = stringMember(c, "sub"); err != nil {
		return nil, times, malformed("%w", err)
	}
	if id.Subject == "" && is.requireSubject {
		return nil, times, invalid(ErrMissingSubject, "sub missing or empty")
	}
	if id.JTI, _, err = stringMember(c, "jti"); err != nil {
		return nil, times, malformed("%w", err)
	}
	for _, name := range []string{"client_id", "azp", "cid"} {
		s, _, err := stringMember(c, name)
		if err != nil {
			return nil, times, malformed("%w", err)
		}
		if id.ClientID == "" {
			id.ClientID = s
		}
	}
	if id.Scopes, err = is.scopes(c); err != nil {
		return nil, times, malformed("%w", err)
	}
	if id.Azp, id.Actors, id.MayAct, err = readDelegation(c); err != nil {
		return nil, times, malformed("%w", err)
	}
	return id, times, nil
}

// scopes collects the scopes of the scope claims (strings are split on
// white space; array elements too) and of the mapped claims (each value
// prefixed, values containing white space dropped). Tokens that are not
// RFC 6749 scope-tokens (%x21 / %x23-5B / %x5D-7E) are dropped. The
// result is de-duplicated and sorted.
func (is *issuer) scopes(c map[string]jsontext.Value) ([]string, error) {
	var out []string
	for _, name := range is.scopeClaims {
		vals, _, err := stringsMember(c, name)
		if err != nil {
			return nil, err
		}
		for _, v := range vals {
			for _, s := range strings.Fields(v) {
				if oauth.ValidScope(s) {
					out = append(out, s)
				}
			}
		}
	}
	for _, cs := range is.claimScopes {
		vals, _, err := stringsMember(c, cs.claim)
		if err != nil {
			return nil, err
		}
		for _, v := range vals {
			if s := cs.prefix + v; v != "" && oauth.ValidScope(s) {
				out = append(out, s)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
