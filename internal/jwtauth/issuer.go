package jwtauth

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/mcpauthz/mcpauthz/internal/config"
)

// Defaults for zero-valued config.Issuer fields (see config.Issuer).
const (
	defaultTenantClaim        = "tid"
	defaultLeeway             = 60 * time.Second
	defaultMaxTokenSize       = 16384
	defaultMinRefresh         = 5 * time.Minute
	defaultMaxRefresh         = time.Hour
	defaultUnknownKIDInterval = 10 * time.Second
	defaultFetchTimeout       = 5 * time.Second

	defaultIntrospectionCacheTTL    = 5 * time.Minute
	defaultIntrospectionNegativeTTL = 10 * time.Second
	defaultIntrospectionTimeout     = 2 * time.Second
	defaultIntrospectionConcurrency = 16
	defaultIntrospectionRate        = 100

	tokenTypeAny   = "any"
	tokenTypeATJWT = "at+jwt"

	tenantPlaceholder = "{tenantid}"
)

var (
	defaultScopeClaims = []string{"scope", "scp"}
	// defaultAlgorithms are the asymmetric algorithms allowed when an
	// issuer does not configure any. HS256/384/512 are added only when
	// the issuer has an hmac_secret_file.
	defaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}
)

// keyFamily is the kind of key an algorithm verifies with.
type keyFamily uint8

const (
	famNone keyFamily = iota
	famRSA
	famP256
	famP384
	famP521
	famEd25519
	famHMAC
)

// algFamily lists every algorithm that can be configured. "none" is not
// here and can never be allowed.
var algFamily = map[string]keyFamily{
	"RS256": famRSA, "RS384": famRSA, "RS512": famRSA,
	"PS256": famRSA, "PS384": famRSA, "PS512": famRSA,
	"ES256": famP256, "ES384": famP384, "ES512": famP521,
	"EdDSA": famEd25519,
	"HS256": famHMAC, "HS384": famHMAC, "HS512": famHMAC,
}

// hmacMinLen is the minimum secret length of each HMAC algorithm: the size
// of the hash output (RFC 7518 §3.2).
var hmacMinLen = map[string]int{"HS256": 32, "HS384": 48, "HS512": 64}

// issuer is one configured issuer with its defaults applied.
type issuer struct {
	name string // the configured issuer string, used in logs and metrics

	// pattern issuers contain {tenantid}: iss must be prefix+tenant+suffix.
	pattern        bool
	prefix, suffix string
	tenantClaim    string

	audiences      []string
	algs           map[string]bool
	hmacKey        []byte
	requireATJWT   bool
	leeway         time.Duration
	scopeClaims    []string
	claimScopes    []claimScope
	requiredClaims []string
	maxTokenSize   int
	maxLifetime    time.Duration // 0: unlimited

	jwksURI            string // configured; empty means discovery or static
	jwksFile           string
	discovery          bool // jwks_uri is discovered from the issuer metadata
	minRefresh         time.Duration
	maxRefresh         time.Duration
	unknownKIDInterval time.Duration
	fetchTimeout       time.Duration

	// keys is the current verification set; nil until the first usable set
	// is loaded. It is never replaced by an empty set.
	keys atomic.Pointer[keySet]
	// keyGen counts the key set replacements that removed keys. A token
	// verified with a set loaded at one generation is cached only if the
	// generation has not moved when it is inserted (see purgeRemovedKeys).
	keyGen atomic.Uint64
	// remote fetches keys over HTTP; nil for jwks_file and HMAC-only issuers.
	remote *remoteKeys

	// introspection is set for the (single) issuer that introspects
	// opaque tokens.
	introspection *introspectionConfig
}

// introspectionConfig is config.Introspection with defaults applied and
// the client secret read.
type introspectionConfig struct {
	endpoint      string
	clientID      string
	clientSecret  string
	cacheTTL      time.Duration
	negativeTTL   time.Duration
	timeout       time.Duration
	maxConcurrent int
	rateLimit     int
}

type claimScope struct {
	claim, prefix string
}

// newIssuer applies defaults to c and validates it, reporting every
// problem at once. It reads the HMAC secret but does no network I/O.
func newIssuer(c config.Issuer, defaultAudience string) (*issuer, error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	is := &issuer{
		name:               c.Issuer,
		tenantClaim:        orDefault(c.TenantClaim, defaultTenantClaim),
		leeway:             durationOr(c.Leeway, defaultLeeway),
		maxTokenSize:       c.MaxTokenSize,
		jwksURI:            c.JWKSURI,
		jwksFile:           c.JWKSFile,
		minRefresh:         durationOr(c.JWKS.MinRefresh, defaultMinRefresh),
		maxRefresh:         durationOr(c.JWKS.MaxRefresh, defaultMaxRefresh),
		unknownKIDInterval: durationOr(c.JWKS.UnknownKIDInterval, defaultUnknownKIDInterval),
		fetchTimeout:       durationOr(c.JWKS.FetchTimeout, defaultFetchTimeout),
		maxLifetime:        c.MaxLifetime.D(),
	}

	switch n := strings.Count(c.Issuer, tenantPlaceholder); {
	case c.Issuer == "":
		fail("issuer is empty")
	case n == 1:
		is.pattern = true
		is.prefix, is.suffix, _ = strings.Cut(c.Issuer, tenantPlaceholder)
	case n > 1:
		fail("issuer contains %s more than once", tenantPlaceholder)
	}

	if c.Introspection != nil {
		ic, err := newIntrospectionConfig(c.Introspection, is.pattern)
		if err != nil {
			fail("introspection: %w", err)
		}
		is.introspection = ic
	}

	if is.maxTokenSize == 0 {
		is.maxTokenSize = defaultMaxTokenSize
	} else if is.maxTokenSize < 0 {
		fail("max_token_size must be positive")
	}
	for name, d := range map[string]config.Duration{
		"leeway": c.Leeway, "jwks.min_refresh": c.JWKS.MinRefresh, "jwks.max_refresh": c.JWKS.MaxRefresh,
		"jwks.unknown_kid_interval": c.JWKS.UnknownKIDInterval, "jwks.fetch_timeout": c.JWKS.FetchTimeout,
		"max_lifetime": c.MaxLifetime,
	} {
		if d < 0 {
			fail("%s must not be negative", name)
		}
	}
	if is.maxRefresh < is.minRefresh {
		fail("jwks.max_refresh (%s) is shorter than jwks.min_refresh (%s)", is.maxRefresh, is.minRefresh)
	}

	switch c.TokenType {
	case "", tokenTypeAny:
	case tokenTypeATJWT:
		is.requireATJWT = true
	default:
		fail("token_type must be %q or %q", tokenTypeATJWT, tokenTypeAny)
	}

	is.audiences = c.Audiences
	if len(is.audiences) == 0 && defaultAudience != "" {
		is.audiences = []string{defaultAudience}
	}
	if len(is.audiences) == 0 {
		fail("no audience: set audiences or the resource")
	}
	if slices.Contains(is.audiences, "") {
		fail("audiences contains an empty string")
	}

	is.scopeClaims = c.ScopeClaims
	if len(is.scopeClaims) == 0 {
		is.scopeClaims = defaultScopeClaims
	}
	for claim, prefix := range c.ClaimScopes {
		is.claimScopes = append(is.claimScopes, claimScope{claim, prefix})
	}
	slices.SortFunc(is.claimScopes, func(a, b claimScope) int { return strings.Compare(a.claim, b.claim) })
	is.requiredClaims = c.RequiredClaims

	if c.HMACSecretFile != "" {
		secret, err := os.ReadFile(c.HMACSecretFile)
		if err != nil {
			fail("hmac_secret_file: %w", err)
		}
		// A trailing newline is an artefact of editors and of
		// "echo > file", not part of the secret.
		is.hmacKey = bytes.TrimRight(secret, "\r\n")
		if err == nil && len(is.hmacKey) < hmacMinLen["HS256"] {
			fail("hmac_secret_file: secret shorter than 32 bytes")
		}
	}

	is.algs = make(map[string]bool)
	if len(c.Algorithms) == 0 {
		for _, a := range defaultAlgorithms {
			is.algs[a] = true
		}
		for a, n := range hmacMinLen {
			if is.hmacKey != nil && len(is.hmacKey) >= n {
				is.algs[a] = true
			}
		}
	}
	for _, a := range c.Algorithms {
		fam, ok := algFamily[a]
		switch {
		case !ok:
			fail("algorithm %q is not supported", a)
		case fam == famHMAC && c.HMACSecretFile == "":
			fail("algorithm %s requires hmac_secret_file", a)
		case fam == famHMAC && is.hmacKey != nil && len(is.hmacKey) < hmacMinLen[a]:
			fail("algorithm %s requires a secret of at least %d bytes", a, hmacMinLen[a])
		default:
			is.algs[a] = true
		}
	}

	hmacOnly := c.HMACSecretFile != "" && c.JWKSURI == "" && c.JWKSFile == ""
	switch {
	case c.JWKSURI != "" && c.JWKSFile != "":
		fail("jwks_uri and jwks_file are mutually exclusive")
	case c.JWKSURI != "":
		if err := checkFetchURL(c.JWKSURI); err != nil {
			fail("jwks_uri: %w", err)
		}
	case c.JWKSFile != "" || hmacOnly:
	case is.pattern:
		fail("an issuer with %s needs jwks_uri or jwks_file (discovery needs a concrete issuer)", tenantPlaceholder)
	case c.Introspection != nil:
		// Introspection only: an opaque-token server need not publish
		// keys, and readiness must not wait for them. Set jwks_uri (or
		// jwks_file) to accept the issuer's JWTs too.
	default:
		is.discovery = true
		if err := checkFetchURL(c.Issuer); err != nil {
			fail("issuer (used for metadata discovery): %w", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return is, nil
}

// newIntrospectionConfig applies defaults to c, validates it and reads
// the client secret.
func newIntrospectionConfig(c *config.Introspection, pattern bool) (*introspectionConfig, error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	ic := &introspectionConfig{
		endpoint:      c.Endpoint,
		clientID:      c.ClientID,
		cacheTTL:      durationOr(c.CacheTTL, defaultIntrospectionCacheTTL),
		negativeTTL:   durationOr(c.NegativeCacheTTL, defaultIntrospectionNegativeTTL),
		timeout:       durationOr(c.Timeout, defaultIntrospectionTimeout),
		maxConcurrent: c.MaxConcurrent,
		rateLimit:     c.RateLimit,
	}
	if pattern {
		fail("not supported for an issuer with %s", tenantPlaceholder)
	}
	if c.Endpoint == "" {
		fail("endpoint is empty")
	} else if err := checkFetchURL(c.Endpoint); err != nil {
		fail("endpoint: %w", err)
	}
	if c.ClientID == "" {
		fail("client_id is empty")
	}
	switch {
	case (c.ClientSecretFile == "") == (c.ClientSecretEnv == ""):
		fail("set exactly one of client_secret_file and client_secret_env")
	case c.ClientSecretFile != "":
		b, err := os.ReadFile(c.ClientSecretFile)
		if err != nil {
			fail("client_secret_file: %w", err)
		}
		ic.clientSecret = string(bytes.TrimRight(b, "\r\n"))
		if err == nil && ic.clientSecret == "" {
			fail("client_secret_file is empty")
		}
	default:
		ic.clientSecret = os.Getenv(c.ClientSecretEnv)
		if ic.clientSecret == "" {
			fail("client_secret_env: %s is not set or empty", c.ClientSecretEnv)
		}
	}
	for name, d := range map[string]config.Duration{"cache_ttl": c.CacheTTL, "negative_cache_ttl": c.NegativeCacheTTL, "timeout": c.Timeout} {
		if d < 0 {
			fail("%s must not be negative", name)
		}
	}
	switch {
	case c.MaxConcurrent == 0:
		ic.maxConcurrent = defaultIntrospectionConcurrency
	case c.MaxConcurrent < 0:
		fail("max_concurrent must be positive")
	}
	switch {
	case c.RateLimit == 0:
		ic.rateLimit = defaultIntrospectionRate
	case c.RateLimit < 0:
		fail("rate_limit must be positive")
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ic, nil
}

// needsKeys reports whether the issuer verifies with a key set (it does
// unless it is HMAC-only or introspection-only).
func (is *issuer) needsKeys() bool {
	return is.jwksURI != "" || is.jwksFile != "" || is.discovery
}

// acceptsJWT reports whether the issuer can verify JWTs: it has a key set
// or an HMAC secret.
func (is *issuer) acceptsJWT() bool {
	return is.needsKeys() || is.hmacKey != nil
}

// tokenTimes are the time claims of a token (JWT claims or introspection
// answer).
type tokenTimes struct {
	exp, nbf, iat          time.Time
	hasExp, hasNbf, hasIat bool
}

// readTimes reads exp, nbf and iat (RFC 7519 NumericDates).
func readTimes(c map[string]jsontext.Value) (tokenTimes, error) {
	var t tokenTimes
	var err error
	if t.exp, t.hasExp, err = numericDate(c, "exp"); err != nil {
		return t, err
	}
	if t.nbf, t.hasNbf, err = numericDate(c, "nbf"); err != nil {
		return t, err
	}
	if t.iat, t.hasIat, err = numericDate(c, "iat"); err != nil {
		return t, err
	}
	return t, nil
}

// checkTimes checks the time claims at now, each with the issuer's leeway
// for clock skew: exp (the token is rejected from exp + leeway on), nbf,
// iat, and the issuer's max_lifetime: exp - iat, or without iat exp - now
// (then with the leeway added, for the skew). Absent claims are not
// checked here (JWTs require exp before).
func (is *issuer) checkTimes(t tokenTimes, now time.Time) error {
	if t.hasExp && !now.Before(t.exp.Add(is.leeway)) {
		return invalid(ErrExpired, "token expired")
	}
	if t.hasNbf && t.nbf.After(now.Add(is.leeway)) {
		return invalid(ErrNotYetValid, "nbf is in the future")
	}
	if t.hasIat && t.iat.After(now.Add(is.leeway)) {
		return invalid(ErrIssuedInFuture, "iat is in the future")
	}
	if is.maxLifetime > 0 && t.hasExp {
		if t.hasIat {
			if t.exp.Sub(t.iat) > is.maxLifetime {
				return invalid(ErrLifetime, "exp - iat exceeds max_lifetime (%s)", is.maxLifetime)
			}
		} else if t.exp.Sub(now) > is.maxLifetime+is.leeway {
			return invalid(ErrLifetime, "exp is further than max_lifetime (%s) away and the token has no iat", is.maxLifetime)
		}
	}
	return nil
}

func (is *issuer) ready() bool {
	return !is.needsKeys() || is.keys.Load() != nil
}

// matchTenant reports whether iss matches the pattern issuer and returns
// the {tenantid} part: one or more of [A-Za-z0-9-].
func (is *issuer) matchTenant(iss string) (string, bool) {
	if len(iss) <= len(is.prefix)+len(is.suffix) || !strings.HasPrefix(iss, is.prefix) || !strings.HasSuffix(iss, is.suffix) {
		return "", false
	}
	tenant := iss[len(is.prefix) : len(iss)-len(is.suffix)]
	for i := 0; i < len(tenant); i++ {
		c := tenant[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return "", false
		}
	}
	return tenant, true
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func durationOr(d config.Duration, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d.D()
}

// checkFetchURL accepts absolute https URLs, and http URLs whose host is a
// loopback address or localhost. User info and fragments are refused.
func checkFetchURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL")
	}
	if !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("URL %q is not absolute", raw)
	}
	if u.User != nil {
		return fmt.Errorf("URL must not contain user information")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return fmt.Errorf("URL %q must not contain a fragment", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("URL %q: http is only allowed for loopback hosts; use https", raw)
	}
	return fmt.Errorf("URL %q: scheme must be https", raw)
}

// isLoopbackHost reports whether host is localhost, 127.0.0.0/8 or ::1.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return ip.Unmap().IsLoopback()
}
