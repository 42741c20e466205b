package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"go.opentelemetry.io/otel/trace"
)

// The token type URIs of RFC 8693 §3.
const (
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"
)

// The token exchange profiles.
const (
	// ProfileRFC8693 is OAuth 2.0 Token Exchange (RFC 8693 §2.1).
	ProfileRFC8693 = "rfc8693"
	// ProfileEntraOBO is the Microsoft identity platform's on-behalf-of
	// flow: grant_type urn:ietf:params:oauth:grant-type:jwt-bearer with the
	// token as assertion and requested_token_use=on_behalf_of. It is not
	// RFC 8693 syntax: no subject_token, no audience or resource (the
	// target is named by scope, e.g. api://app-id/.default), and no
	// issued_token_type in the answer.
	ProfileEntraOBO = "entra_obo"
)

const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	grantJWTBearer     = "urn:ietf:params:oauth:grant-type:jwt-bearer"
)

// Defaults of TokenExchangeConfig.
const (
	// DefaultExchangeTimeout bounds one exchange. It must stay well inside
	// Envoy's ext_authz timeout (1s in envoy/envoy.yaml, 200ms when unset)
	// together with the rest of the check; lower it if Envoy's is lower.
	DefaultExchangeTimeout = 500 * time.Millisecond
	// DefaultCacheSize is the number of exchanged tokens a source keeps,
	// and DefaultCacheBytes the bytes they may hold (counted as the
	// header value plus a fixed cost per entry).
	DefaultCacheSize  = 10000
	DefaultCacheBytes = 4 << 20
	// DefaultMaxConcurrent bounds the exchanges in flight per source.
	DefaultMaxConcurrent = 64
)

// maxScopes bounds the configured scopes of a source: a policy's choice is
// kept as a bit mask over them.
const maxScopes = 64

// skewCap caps the safety margin taken off an issued token's lifetime.
const skewCap = time.Minute

// TokenExchangeConfig configures a token_exchange source.
type TokenExchangeConfig struct {
	// Name names the source in policies, errors, logs and metrics.
	Name string
	// Profile is ProfileRFC8693 (default) or ProfileEntraOBO.
	Profile string
	// TokenEndpoint is the authorization server's token endpoint. When
	// empty it is discovered from Issuer's metadata (RFC 8414, then
	// OpenID Connect Discovery), in the background.
	TokenEndpoint string
	// Issuer is the authorization server's issuer identifier, used for
	// discovery only.
	Issuer string
	// Audiences and Resources name the upstream (RFC 8693 §2.1 audience,
	// RFC 8707 resource); each value is sent as its own parameter. Not
	// used by ProfileEntraOBO.
	Audiences []string
	Resources []string
	// Scopes are requested as the space-separated scope parameter. A
	// policy may narrow them per request (SubjectToken.Scopes). At most 64.
	Scopes []string
	// SubjectTokenType is sent as subject_token_type (default
	// TokenTypeAccessToken; Auth0 Custom Token Exchange needs a URI of
	// your own). Not used by ProfileEntraOBO.
	SubjectTokenType string
	// RequestedTokenType is sent as requested_token_type, and the answer's
	// issued_token_type must equal it (default TokenTypeAccessToken). Not
	// used by ProfileEntraOBO.
	RequestedTokenType string
	// AllowMissingIssuedTokenType accepts an RFC 8693 answer without
	// issued_token_type, which the RFC requires (some servers omit it). An
	// issued_token_type that differs from RequestedTokenType is always
	// refused.
	AllowMissingIssuedTokenType bool
	// Client is mcpauthz's client authentication at the token endpoint.
	Client ClientAuth
	// CAFile, when set, is the PEM bundle trusted for the token endpoint
	// (and metadata) instead of the system roots.
	CAFile string
	// Header is the upstream request header (default authorization) and
	// Scheme its authentication scheme ("" = Bearer for authorization and
	// none for other headers; "none" = the raw token).
	Header string
	Scheme string
	// Timeout bounds one exchange (default DefaultExchangeTimeout).
	Timeout time.Duration
	// CacheSize bounds the cached tokens (default DefaultCacheSize) and
	// CacheBytes their memory (default DefaultCacheBytes, at least 65536).
	CacheSize  int
	CacheBytes int
	// MaxConcurrent bounds the exchanges in flight (default
	// DefaultMaxConcurrent); beyond it requests fail at once with
	// ReasonOverloaded.
	MaxConcurrent int
}

// TokenExchange obtains, per client token, a token for the upstream by
// exchanging the client's token at an authorization server. It is safe
// for concurrent use; Close stops it.
type TokenExchange struct {
	name     string
	profile  string
	header   string
	form     url.Values // the parameters common to every exchange
	scopes   []string
	allMask  uint64
	rules    responseRules
	timeout  time.Duration
	maxConc  int
	endpoint *tokenEndpoint
	cache    *lru.Cache[cacheKey, *cacheEntry]
	// cacheBytes is what the cached entries hold (entryBytes), at most
	// maxBytes once an Add returns.
	cacheBytes atomic.Int64
	maxBytes   int64
	clk        clock
	obs        Observer
	// keyBufs recycles the buffers of key, so a cache hit allocates
	// nothing.
	keyBufs sync.Pool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	bg     background

	mu      sync.Mutex
	closed  bool
	flights map[cacheKey]*flight
}

// cacheKey is the SHA-256 of a request's cache key material (see key).
type cacheKey [sha256.Size]byte

// cacheEntry is one exchanged token. It is immutable once cached.
type cacheEntry struct {
	value string // the header value
	until int64  // Unix nanoseconds; not served at or after it
}

// entryBytes is what e counts for in the byte bound: its value, the entry
// and the LRU's list element and map slot.
func entryBytes(e *cacheEntry) int64 { return int64(len(e.value)) + 160 }

// flight is one exchange in progress; value and err are set before done
// is closed.
type flight struct {
	done  chan struct{}
	value string
	err   *Error
}

// NewTokenExchange validates cfg and reads the client's secret or key. It
// contacts no server: Start begins the discovery of the token endpoint,
// when it is not configured, and exchanges happen on demand.
func NewTokenExchange(cfg TokenExchangeConfig, opts Options) (*TokenExchange, error) {
	s, err := newTokenExchange(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("upstream credential %q: %w", cfg.Name, err)
	}
	return s, nil
}

func newTokenExchange(cfg TokenExchangeConfig, opts Options) (*TokenExchange, error) {
	if cfg.Name == "" {
		return nil, errors.New("name is required")
	}
	s := &TokenExchange{
		name:    cfg.Name,
		profile: cfg.Profile,
		header:  cfg.Header,
		scopes:  slices.Clone(cfg.Scopes),
		timeout: cfg.Timeout,
		maxConc: cfg.MaxConcurrent,
		clk:     opts.clk(),
		obs:     opts.observer(),
		flights: make(map[cacheKey]*flight),
		form:    url.Values{},
	}
	if s.profile == "" {
		s.profile = ProfileRFC8693
	}
	if s.header == "" {
		s.header = defaultHeader
	}
	if err := checkHeaderName(s.header); err != nil {
		return nil, err
	}
	vb, err := newValueBuilder(s.header, cfg.Scheme)
	if err != nil {
		return nil, err
	}
	if s.timeout == 0 {
		s.timeout = DefaultExchangeTimeout
	}
	if s.timeout < 0 {
		return nil, errors.New("timeout must not be negative")
	}
	size := cfg.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	if size < 0 {
		return nil, errors.New("cache_size must not be negative")
	}
	s.maxBytes = int64(cfg.CacheBytes)
	switch {
	case s.maxBytes == 0:
		s.maxBytes = DefaultCacheBytes
	case s.maxBytes < 65536 || s.maxBytes > 1<<34:
		return nil, fmt.Errorf("cache_bytes must be 0 (default %d) or from 65536 to %d bytes", DefaultCacheBytes, int64(1)<<34)
	}
	if s.maxConc == 0 {
		s.maxConc = DefaultMaxConcurrent
	}
	if s.maxConc < 0 {
		return nil, errors.New("max_concurrent must not be negative")
	}
	if err := checkScopes(s.scopes); err != nil {
		return nil, err
	}
	s.allMask = fullMask(len(s.scopes))

	switch s.profile {
	case ProfileRFC8693:
		stt := orDefault(cfg.SubjectTokenType, TokenTypeAccessToken)
		rtt := orDefault(cfg.RequestedTokenType, TokenTypeAccessToken)
		for name, v := range map[string]string{"subject_token_type": stt, "requested_token_type": rtt} {
			if u, err := url.Parse(v); err != nil || !u.IsAbs() {
				return nil, fmt.Errorf("%s %q is not an absolute URI", name, v)
			}
		}
		s.form.Set("grant_type", grantTokenExchange)
		s.form.Set("subject_token_type", stt)
		s.form.Set("requested_token_type", rtt)
		for _, a := range cfg.Audiences {
			if a == "" {
				return nil, errors.New("audience must not contain empty values")
			}
			s.form.Add("audience", a)
		}
		for _, r := range cfg.Resources {
			// RFC 8707 §2: an absolute URI without a fragment.
			if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(r, "#") {
				return nil, fmt.Errorf("resource %q is not an absolute URI without a fragment", r)
			}
			s.form.Add("resource", r)
		}
		s.rules = responseRules{
			issuedTokenType:    rtt,
			issuedTypeOptional: cfg.AllowMissingIssuedTokenType,
			// N_A means "not an access token" (RFC 8693 §2.2.1): usable only
			// as a raw header value, never after "Bearer".
			allowNA: rtt != TokenTypeAccessToken && vb.scheme == "",
			value:   vb,
		}
	case ProfileEntraOBO:
		switch {
		case len(cfg.Audiences) > 0 || len(cfg.Resources) > 0:
			return nil, errors.New("profile entra_obo takes no audience or resource: name the upstream API in scope (api://<app-id>/.default)")
		case cfg.SubjectTokenType != "" || cfg.RequestedTokenType != "" || cfg.AllowMissingIssuedTokenType:
			return nil, errors.New("profile entra_obo takes no subject_token_type, requested_token_type or allow_missing_issued_token_type")
		case len(s.scopes) == 0:
			return nil, errors.New("profile entra_obo requires scope (for example api://<app-id>/.default)")
		}
		s.form.Set("grant_type", grantJWTBearer)
		s.form.Set("requested_token_use", "on_behalf_of")
		s.rules = responseRules{value: vb}
	default:
		return nil, fmt.Errorf("unknown profile %q (want %s or %s)", s.profile, ProfileRFC8693, ProfileEntraOBO)
	}

	auth, err := newClientAuth(cfg.Client, opts.logger())
	if err != nil {
		return nil, err
	}
	s.endpoint, err = newTokenEndpoint(s.name, endpointConfig{issuer: cfg.Issuer, tokenEndpoint: cfg.TokenEndpoint, caFile: cfg.CAFile}, auth, opts)
	if err != nil {
		return nil, err
	}
	s.cache, err = lru.NewWithEvict(size, func(_ cacheKey, e *cacheEntry) { s.cacheBytes.Add(-entryBytes(e)) })
	if err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.endpoint.needsDiscovery() {
		s.bg.add(func() { s.endpoint.run(s.ctx) })
	}
	return s, nil
}

// Start starts discovering the token endpoint, when it is not configured.
// Nothing is contacted before Start.
func (s *TokenExchange) Start() { s.bg.start(s.ctx, &s.wg) }

// Name returns the source's name.
func (s *TokenExchange) Name() string { return s.name }

// Header returns the (lowercase) header the credential goes into.
func (s *TokenExchange) Header() string { return s.header }

// Credential returns the upstream credential for the client's token: from
// the cache when an exchange for the same key is still valid, else from a
// new exchange. Concurrent requests with the same key share one exchange;
// each waits at most until its ctx ends, while the exchange itself runs to
// its own timeout and its result is cached for the others.
//
// The cache key is the SHA-256 of the subject's issuer, subject, client ID,
// the token itself and the chosen scopes (the source's audience,
// resource and token types are fixed per source, and each source has its
// own cache). Keying by the token and not only by the subject means a
// token never gets an upstream token exchanged for another of the same
// user's tokens, which may carry other scopes, another lifetime or have
// been revoked.
func (s *TokenExchange) Credential(ctx context.Context, sub SubjectToken) (Credential, error) {
	if sub.Token == "" {
		return Credential{}, newError(s.name, ReasonNoSubjectToken, "no verified client token to exchange")
	}
	mask, err := scopeMask(s.name, s.scopes, s.allMask, sub.Scopes)
	if err != nil {
		return Credential{}, err
	}
	key := s.key(&sub, mask)
	if e, ok := s.cache.Get(key); ok && e.until > s.clk.Now().UnixNano() {
		s.obs.ObserveCache(s.name, CacheHit)
		return Credential{Header: s.header, Value: e.value}, nil
	}
	s.obs.ObserveCache(s.name, CacheMiss)

	s.mu.Lock()
	f := s.flights[key]
	if f == nil {
		// A flight for this key may have ended since the cache was read:
		// its result is cached before it leaves flights.
		if e, ok := s.cache.Peek(key); ok && e.until > s.clk.Now().UnixNano() {
			s.mu.Unlock()
			return Credential{Header: s.header, Value: e.value}, nil
		}
		if s.closed {
			s.mu.Unlock()
			return Credential{}, newError(s.name, ReasonClosed, "source is closed")
		}
		if len(s.flights) >= s.maxConc {
			s.mu.Unlock()
			return Credential{}, newError(s.name, ReasonOverloaded, "%d exchanges in flight (max_concurrent)", s.maxConc)
		}
		f = &flight{done: make(chan struct{})}
		s.flights[key] = f
		s.wg.Add(1)
		go s.run(trace.SpanFromContext(ctx), f, key, sub, mask)
	}
	s.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		return Credential{}, ctxError(ctx, s.name, "the token exchange answered")
	}
	if f.err != nil {
		return Credential{}, f.err
	}
	return Credential{Header: s.header, Value: f.value}, nil
}

// run performs the exchange for f, detached from the requests waiting for
// it and bounded by the source's timeout, caches a success and releases the
// waiters. Failures are not cached: the next request tries again, and
// max_concurrent bounds how many try at once. The exchange's HTTP call is
// traced below parent, the span of the request that started it.
func (s *TokenExchange) run(parent trace.Span, f *flight, key cacheKey, sub SubjectToken, mask uint64) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(trace.ContextWithSpan(s.ctx, parent), s.timeout)
	defer cancel()
	start := s.clk.Now()
	resp, err := s.endpoint.do(ctx, s.request(sub.Token, mask))
	if err == nil {
		f.value = resp.value
		if until, ok := cacheUntil(start, resp, sub.Expiry); ok && until.After(s.clk.Now()) {
			e := &cacheEntry{value: resp.value, until: until.UnixNano()}
			if old, ok := s.cache.Peek(key); ok { // replaced: Add does not call the eviction callback
				s.cacheBytes.Add(-entryBytes(old))
			}
			s.cacheBytes.Add(entryBytes(e))
			if s.cache.Add(key, e) {
				s.obs.ObserveCache(s.name, CacheEviction)
			}
			for s.cacheBytes.Load() > s.maxBytes {
				if _, _, ok := s.cache.RemoveOldest(); !ok {
					break
				}
				s.obs.ObserveCache(s.name, CacheEviction)
			}
		}
	}
	f.err = err
	s.mu.Lock()
	delete(s.flights, key)
	s.mu.Unlock()
	close(f.done)
}

// request builds the exchange request for token.
func (s *TokenExchange) request(token string, mask uint64) tokenRequest {
	form := make(url.Values, len(s.form)+4)
	for k, v := range s.form {
		form[k] = v
	}
	if s.profile == ProfileEntraOBO {
		form.Set("assertion", token)
	} else {
		form.Set("subject_token", token)
	}
	if sc := maskedScopes(s.scopes, mask); sc != "" {
		form.Set("scope", sc)
	}
	return tokenRequest{form: form, secrets: []string{token}, rules: s.rules}
}

// Close stops discovery and waits for the exchanges in flight, which are
// cancelled. Requests after Close fail with ReasonClosed unless the cache
// answers them.
func (s *TokenExchange) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.endpoint.transport.CloseIdleConnections()
	return nil
}

// cacheUntil returns until when an exchanged token may be served: its
// lifetime from the moment the request was sent, less a margin of 10% of
// the lifetime capped at one minute (for clock skew and the upstream's
// own check), and never past the subject token's exp. An answer without
// expires_in is not cached.
func cacheUntil(sent time.Time, resp tokenResponse, subjectExpiry time.Time) (time.Time, bool) {
	if !resp.hasExpiry {
		return time.Time{}, false
	}
	skew := min(resp.expiresIn/10, skewCap)
	until := sent.Add(resp.expiresIn - skew)
	if !subjectExpiry.IsZero() && subjectExpiry.Before(until) {
		until = subjectExpiry
	}
	return until, true
}

// key hashes the cache key material: length-prefixed fields, so that no
// two different inputs share a preimage.
func (s *TokenExchange) key(sub *SubjectToken, mask uint64) cacheKey {
	bp, _ := s.keyBufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, 4096)
		bp = &b
	}
	buf := (*bp)[:0]
	for _, f := range [...]string{sub.Issuer, sub.Subject, sub.ClientID, sub.Token} {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(f)))
		buf = append(buf, f...)
	}
	buf = binary.BigEndian.AppendUint64(buf, mask)
	k := sha256.Sum256(buf)
	// The buffer held the token: clear it before it is reused.
	clear(buf)
	if cap(buf) <= 64<<10 {
		*bp = buf
		s.keyBufs.Put(bp)
	}
	return k
}

// checkScopes validates configured scopes: RFC 6749 §3.3 scope tokens
// (%x21 / %x23-5B / %x5D-7E), no duplicates, at most maxScopes.
func checkScopes(scopes []string) error {
	if len(scopes) > maxScopes {
		return fmt.Errorf("at most %d scopes", maxScopes)
	}
	for i, sc := range scopes {
		if sc == "" {
			return errors.New("scope must not contain empty values")
		}
		for j := 0; j < len(sc); j++ {
			if c := sc[j]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
				return fmt.Errorf("scope %q is not an RFC 6749 scope token", sc)
			}
		}
		if slices.Contains(scopes[:i], sc) {
			return fmt.Errorf("scope %q listed twice", sc)
		}
	}
	return nil
}

func fullMask(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// scopeMask turns the policy's choice into a mask over the configured
// scopes: nil is all of them; otherwise every chosen scope must be
// configured, and at least one must be chosen.
func scopeMask(source string, configured []string, all uint64, chosen []string) (uint64, *Error) {
	if chosen == nil {
		return all, nil
	}
	var m uint64
	for _, c := range chosen {
		i := slices.Index(configured, c)
		if i < 0 {
			return 0, newError(source, ReasonScopeNotAllowed, "the policy asked for scope %q, which the source is not configured to request", truncate(c, 64))
		}
		m |= 1 << i
	}
	if m == 0 {
		return 0, newError(source, ReasonScopeNotAllowed, "the policy asked for no scopes")
	}
	return m, nil
}

// maskedScopes joins the configured scopes selected by mask, in their
// configured order.
func maskedScopes(scopes []string, mask uint64) string {
	var b strings.Builder
	for i, sc := range scopes {
		if mask&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(sc)
		}
	}
	return b.String()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
