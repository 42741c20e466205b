package jwtauth

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
	"github.com/mcpauthz/mcpauthz/internal/problem"
)

const (
	tokenTypeAny   = "any"
	tokenTypeATJWT = "at+jwt"

	tenantPlaceholder = "{tenantid}"
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
	requireSubject bool
	maxTokenSize   int
	maxLifetime    time.Duration // 0: unlimited

	jwksURI            string // configured; empty means discovery or static
	jwksFile           string
	discovery          bool // jwks_uri is discovered from the issuer metadata
	minRefresh         time.Duration
	maxRefresh         time.Duration
	unknownKIDInterval time.Duration
	unknownKIDWait     time.Duration
	fetchTimeout       time.Duration

	// verifiers are jwx's signature verifiers of the allowed algorithms
	// (stateless, shared by all requests).
	verifiers map[string]jws.Verifier

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

// newIssuer applies the defaults to c and validates it, reporting every
// problem at once as *problem.Error with paths relative to the issuer. It
// reads the HMAC and introspection secrets but does no network I/O.
func newIssuer(c Issuer, defaultAudience string) (*issuer, error) {
	var errs problem.List
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
		unknownKIDWait:     durationOr(c.JWKS.UnknownKIDWait, defaultUnknownKIDWait),
		fetchTimeout:       durationOr(c.JWKS.FetchTimeout, defaultFetchTimeout),
		maxLifetime:        c.MaxLifetime,
	}

	switch n := strings.Count(c.Issuer, tenantPlaceholder); {
	case c.Issuer == "":
		errs.Add("issuer", "required")
	case n > 1:
		errs.Add("issuer", "%s may appear at most once", tenantPlaceholder)
	default:
		if n == 1 {
			is.pattern = true
			is.prefix, is.suffix, _ = strings.Cut(c.Issuer, tenantPlaceholder)
		}
		if _, err := oauth.ParseEndpointURL(strings.ReplaceAll(c.Issuer, tenantPlaceholder, "tenant")); err != nil {
			errs.Add("issuer", "%v", err)
		}
	}

	for _, d := range []struct {
		path string
		d    time.Duration
	}{
		{"leeway", c.Leeway}, {"jwks.min_refresh", c.JWKS.MinRefresh}, {"jwks.max_refresh", c.JWKS.MaxRefresh},
		{"jwks.unknown_kid_interval", c.JWKS.UnknownKIDInterval}, {"jwks.unknown_kid_wait", c.JWKS.UnknownKIDWait},
		{"jwks.fetch_timeout", c.JWKS.FetchTimeout},
		{"max_lifetime", c.MaxLifetime},
	} {
		if d.d < 0 {
			errs.Add(d.path, "must not be negative")
		}
	}
	if is.leeway > 10*time.Minute {
		errs.Add("leeway", "must be at most 10m")
	}
	if is.minRefresh < time.Second {
		errs.Add("jwks.min_refresh", "must be at least 1s")
	}
	if is.maxRefresh < is.minRefresh {
		errs.Add("jwks.max_refresh", "must not be less than min_refresh (%s)", is.minRefresh)
	}
	if is.unknownKIDInterval < time.Second {
		errs.Add("jwks.unknown_kid_interval", "must be at least 1s")
	}
	if is.unknownKIDWait > maxUnknownKIDWait {
		errs.Add("jwks.unknown_kid_wait", "must be at most %s (Envoy gives a check 200ms by default)", maxUnknownKIDWait)
	}

	switch {
	case is.maxTokenSize == 0:
		is.maxTokenSize = defaultMaxTokenSize
	case is.maxTokenSize < 256 || is.maxTokenSize > 1<<20:
		errs.Add("max_token_size", "must be between 256 and 1048576 bytes")
	}

	switch c.TokenType {
	case "", tokenTypeAny:
	case tokenTypeATJWT:
		is.requireATJWT = true
	default:
		errs.Add("token_type", "%q is not one of %s, %s", c.TokenType, tokenTypeATJWT, tokenTypeAny)
	}

	is.audiences = c.Audiences
	if len(is.audiences) == 0 && defaultAudience != "" {
		is.audiences = []string{defaultAudience}
	}
	if len(is.audiences) == 0 {
		errs.Add("audiences", "at least one audience is required (it defaults to the resource)")
	}
	for i, a := range c.Audiences {
		if strings.TrimSpace(a) == "" {
			errs.Add(fmt.Sprintf("audiences[%d]", i), "must not be empty")
		}
	}

	is.scopeClaims = c.ScopeClaims
	if len(is.scopeClaims) == 0 {
		is.scopeClaims = defaultScopeClaims
	}
	for i, name := range c.ScopeClaims {
		if name == "" {
			errs.Add(fmt.Sprintf("scope_claims[%d]", i), "must not be empty")
		}
	}
	for _, claim := range slices.Sorted(maps.Keys(c.ClaimScopes)) {
		prefix := c.ClaimScopes[claim]
		if claim == "" || strings.ContainsAny(prefix, " \"\\") {
			errs.Add("claim_scopes", "claim %q: prefix %q must be a scope fragment (no space, quote or backslash)", claim, prefix)
			continue
		}
		is.claimScopes = append(is.claimScopes, claimScope{claim, prefix})
	}
	slices.SortFunc(is.claimScopes, func(a, b claimScope) int { return strings.Compare(a.claim, b.claim) })
	is.requiredClaims = c.RequiredClaims
	is.requireSubject = c.RequireSubject == nil || *c.RequireSubject
	if !is.requireSubject && slices.Contains(c.RequiredClaims, "sub") {
		errs.Add("require_subject", "is false, but required_claims lists sub")
	}

	if c.HMACSecretFile != "" {
		secret, err := os.ReadFile(c.HMACSecretFile)
		switch {
		case err != nil:
			errs.Add("hmac_secret_file", "cannot read %q", c.HMACSecretFile)
		default:
			// A trailing newline is an artefact of editors and of
			// "echo > file", not part of the secret.
			is.hmacKey = bytes.TrimRight(secret, "\r\n")
			if len(is.hmacKey) < hmacMinLen["HS256"] {
				errs.Add("hmac_secret_file", "the secret is shorter than 32 bytes")
			}
		}
	}

	is.algs = make(map[string]bool)
	if len(c.Algorithms) == 0 {
		for _, a := range defaultAlgorithms {
			is.algs[a] = true
		}
		for a, n := range hmacMinLen {
			if len(is.hmacKey) >= n {
				is.algs[a] = true
			}
		}
	}
	for i, a := range c.Algorithms {
		path := fmt.Sprintf("algorithms[%d]", i)
		fam, ok := algFamily[a]
		switch {
		case strings.EqualFold(a, "none"):
			errs.Add(path, `"none" is never accepted`)
		case !ok:
			errs.Add(path, "%q is not one of %s", a, strings.Join(knownAlgorithms(), ", "))
		case fam == famHMAC && c.HMACSecretFile == "":
			errs.Add(path, "%s requires hmac_secret_file", a)
		case fam == famHMAC && is.hmacKey != nil && len(is.hmacKey) < hmacMinLen[a]:
			errs.Add(path, "%s requires a secret of at least %d bytes", a, hmacMinLen[a])
		default:
			is.algs[a] = true
		}
	}

	is.verifiers = make(map[string]jws.Verifier, len(is.algs))
	for a := range is.algs {
		jv, err := jws.NewVerifier(jwa.SignatureAlgorithm(a))
		if err != nil {
			errs.Add("algorithms", "%s: %v", a, err)
			continue
		}
		is.verifiers[a] = jv
	}

	if c.Introspection != nil {
		ic, err := newIntrospectionConfig(c.Introspection, is.pattern)
		errs.Merge("introspection", err)
		is.introspection = ic
	}

	hmacOnly := c.HMACSecretFile != "" && c.JWKSURI == "" && c.JWKSFile == ""
	switch {
	case c.JWKSURI != "" && c.JWKSFile != "":
		errs.Add("jwks_file", "set either jwks_uri or jwks_file, not both")
	case c.JWKSURI != "":
		if _, err := oauth.ParseEndpointURL(c.JWKSURI); err != nil {
			errs.Add("jwks_uri", "%v", err)
		}
	case c.JWKSFile != "":
		if _, err := os.Stat(c.JWKSFile); err != nil {
			errs.Add("jwks_file", "cannot read %q", c.JWKSFile)
		}
	case hmacOnly:
	case is.pattern:
		errs.Add("jwks_uri", "required for an issuer with %s (discovery needs a concrete issuer)", tenantPlaceholder)
	case c.Introspection != nil:
		// Introspection only: an opaque-token server need not publish
		// keys, and readiness must not wait for them. Set jwks_uri (or
		// jwks_file) to accept the issuer's JWTs too.
	default:
		// The issuer URL was checked above; its metadata names the keys.
		is.discovery = true
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return is, nil
}

// knownAlgorithms lists the algorithms an issuer may allow, sorted.
func knownAlgorithms() []string {
	out := make([]string, 0, len(algFamily))
	for a := range algFamily {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// newIntrospectionConfig applies the defaults to c, validates it and reads
// the client secret; problems have paths relative to the introspection
// options.
func newIntrospectionConfig(c *Introspection, pattern bool) (*introspectionConfig, error) {
	var errs problem.List
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
		errs.Add("", "not supported for an issuer with %s: the introspection answer cannot select a tenant", tenantPlaceholder)
	}
	if c.Endpoint == "" {
		errs.Add("endpoint", "required")
	} else if _, err := oauth.ParseEndpointURL(c.Endpoint); err != nil {
		errs.Add("endpoint", "%v", err)
	}
	if c.ClientID == "" {
		errs.Add("client_id", "required: introspection endpoints must authenticate the caller (RFC 7662 §2.1)")
	}
	switch {
	case (c.ClientSecretFile == "") == (c.ClientSecretEnv == ""):
		errs.Add("", "set exactly one of client_secret_file or client_secret_env")
	case c.ClientSecretFile != "":
		b, err := os.ReadFile(c.ClientSecretFile)
		ic.clientSecret = string(bytes.TrimRight(b, "\r\n"))
		switch {
		case err != nil:
			errs.Add("client_secret_file", "cannot read %q", c.ClientSecretFile)
		case ic.clientSecret == "":
			errs.Add("client_secret_file", "%q is empty", c.ClientSecretFile)
		}
	default:
		ic.clientSecret = os.Getenv(c.ClientSecretEnv)
		if ic.clientSecret == "" {
			errs.Add("client_secret_env", "environment variable %s is not set or empty", c.ClientSecretEnv)
		}
	}
	for _, d := range []struct {
		path string
		d    time.Duration
	}{{"cache_ttl", c.CacheTTL}, {"negative_cache_ttl", c.NegativeCacheTTL}, {"timeout", c.Timeout}} {
		if d.d < 0 {
			errs.Add(d.path, "must not be negative")
		}
	}
	if ic.timeout > 30*time.Second {
		errs.Add("timeout", "must be at most 30s")
	}
	switch {
	case c.MaxConcurrent == 0:
		ic.maxConcurrent = defaultIntrospectionConcurrency
	case c.MaxConcurrent < 0 || c.MaxConcurrent > 1024:
		errs.Add("max_concurrent", "must be between 1 and 1024")
	}
	switch {
	case c.RateLimit == 0:
		ic.rateLimit = defaultIntrospectionRate
	case c.RateLimit < 0 || c.RateLimit > 100000:
		errs.Add("rate_limit", "must be between 1 and 100000 calls per second")
	}
	if err := errs.Err(); err != nil {
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

func durationOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
