package jwtauth

import (
	"log/slog"
	"net/http"
	"time"
)

// Options configure a Verifier. Every field has a usable zero value except
// Issuers. NewVerifier applies the defaults and validates everything, and
// reports each problem as a *problem.Error whose path is the option's
// snake_case path ("issuers[0].jwks.min_refresh", "cache_size").
type Options struct {
	// Issuers are the trusted token issuers; at least one.
	Issuers []Issuer
	// DefaultAudience is the audience of issuers that list none (normally
	// the protected resource's URL).
	DefaultAudience string
	// TokenCacheSize is the capacity of the verified-token cache (and of
	// each negative cache: recently rejected JWTs, introspection
	// rejections): 0 means 10000, -1 disables every cache, at most
	// 10000000.
	TokenCacheSize int
	// TokenCacheBytes bounds the memory of the verified-token cache's
	// entries (and, separately, of each negative cache), as estimated per
	// entry from its claims and fields: 0 means 4 MiB (defaultCacheBytes),
	// at least 65536, at most 16 GiB.
	TokenCacheBytes int

	// Logger receives key set events (issuer URLs and counts only, never
	// tokens or keys). Nil discards them.
	Logger *slog.Logger
	// HTTPClient fetches metadata and key sets. Nil means a new
	// http.Client. Its CheckRedirect is wrapped so that redirects must
	// stay on https (or loopback http).
	HTTPClient *http.Client
	// Clock returns the current time for the time claims and the
	// unknown-kid rate limit. Nil means time.Now.
	Clock func() time.Time
	// OnJWKSRefresh is called after every load of an issuer's key set
	// (jwks_file at construction, and every fetch): with the number of
	// usable keys and a nil error on success, or with the number of keys
	// still in use and the error on failure. It may be called concurrently
	// and must not block.
	OnJWKSRefresh func(issuer string, keys int, err error)
}

// Issuer is one trusted token issuer. Zero fields take the defaults named
// in their comments.
type Issuer struct {
	// Issuer is the exact iss value. For multi-tenant identity providers it
	// may contain the placeholder {tenantid} once, matched against
	// TenantClaim.
	Issuer string
	// TenantClaim names the claim that must equal the {tenantid} part of
	// iss (default "tid").
	TenantClaim string
	// JWKSURI is where the keys are; discovered from the issuer's metadata
	// (RFC 8414, then OpenID Connect discovery) when empty and no other
	// key source is set.
	JWKSURI string
	// JWKSFile is a local key set, for air-gapped installations and tests.
	JWKSFile string
	// Audiences accepted in aud (default [Options.DefaultAudience]).
	Audiences []string
	// Algorithms allowed (default the asymmetric ones, plus each HS
	// algorithm the HMAC secret is long enough for).
	Algorithms []string
	// HMACSecretFile holds a shared secret for HS256/384/512; a secret must
	// be at least as long as the hash (32, 48, 64 bytes).
	HMACSecretFile string
	// TokenType is "at+jwt" (require the RFC 9068 typ) or "any" (default).
	TokenType string
	// Leeway for exp, nbf and iat (default 60s, at most 10m).
	Leeway time.Duration
	// ScopeClaims are read for scopes: a space-delimited string or an array
	// of strings (default [scope, scp]).
	ScopeClaims []string
	// ClaimScopes maps further claims (roles, permissions, groups) into
	// scopes; each value is a prefix added to the claim's values ("" for
	// none).
	ClaimScopes map[string]string
	// RequiredClaims must be present and not null (exp always is).
	RequiredClaims []string
	// RequireSubject, when nil or true, rejects tokens (JWTs and
	// introspection answers) without a non-empty string sub
	// (ErrMissingSubject): identity headers, subject revocation and
	// session binding all key on it (RFC 9068 §2.2 requires it). Set it
	// to false for an issuer whose tokens lack sub; Identity.Subject is
	// then empty for them. A sub of another type is malformed either way.
	RequireSubject *bool
	// MaxTokenSize caps the bearer token in bytes before any parsing
	// (default 16384, between 256 and 1048576).
	MaxTokenSize int
	// MaxLifetime rejects tokens whose lifetime is longer: exp - iat, or
	// exp - now when the token has no iat (default 0: unlimited).
	MaxLifetime time.Duration
	JWKS        JWKS
	// Introspection enables RFC 7662 introspection of opaque (non-JWS)
	// tokens with this issuer. At most one issuer may set it.
	Introspection *Introspection
}

// JWKS tunes the key set cache of one issuer.
type JWKS struct {
	// MinRefresh and MaxRefresh bound the refresh interval derived from
	// Cache-Control (defaults 5m and 1h; MinRefresh at least 1s).
	MinRefresh time.Duration
	MaxRefresh time.Duration
	// UnknownKIDInterval rate-limits refetches caused by an unknown kid
	// (default 10s, at least 1s).
	UnknownKIDInterval time.Duration
	// UnknownKIDWait bounds how long a request waits for the refetch its
	// unknown kid (or a missing key set) caused (default 100ms, at most
	// 10s): well inside Envoy's default ext_authz timeout of 200ms. The
	// fetch itself goes on in the background, within FetchTimeout.
	UnknownKIDWait time.Duration
	// FetchTimeout bounds one fetch (default 5s).
	FetchTimeout time.Duration
}

// Introspection configures RFC 7662 token introspection for opaque tokens.
type Introspection struct {
	// Endpoint is the introspection endpoint (https, or http on loopback).
	Endpoint string
	// ClientID and the secret authenticate mcpauthz to the endpoint with
	// HTTP Basic (RFC 7662 §2.1, RFC 6749 §2.3.1). Exactly one of
	// ClientSecretFile and ClientSecretEnv must be set.
	ClientID         string
	ClientSecretFile string
	ClientSecretEnv  string
	// CacheTTL bounds how long an active answer is reused (default 5m;
	// never past the token's exp): the longest a revocation can go
	// unnoticed.
	CacheTTL time.Duration
	// NegativeCacheTTL is how long an inactive answer is reused
	// (default 10s).
	NegativeCacheTTL time.Duration
	// Timeout bounds one introspection call (default 2s, at most 30s).
	Timeout time.Duration
	// MaxConcurrent bounds the calls in flight (default 16, at most 1024);
	// RateLimit bounds the calls per second, with a burst of the same size
	// (default 100, at most 100000). Requests beyond either are answered
	// as unavailable.
	MaxConcurrent int
	RateLimit     int
}

// Defaults for zero-valued fields (see the field comments).
const (
	defaultCacheSize          = 10000
	defaultCacheBytes         = 4 << 20
	defaultTenantClaim        = "tid"
	defaultLeeway             = 60 * time.Second
	defaultMaxTokenSize       = 16384
	defaultMinRefresh         = 5 * time.Minute
	defaultMaxRefresh         = time.Hour
	defaultUnknownKIDInterval = 10 * time.Second
	defaultUnknownKIDWait     = 100 * time.Millisecond
	maxUnknownKIDWait         = 10 * time.Second
	defaultFetchTimeout       = 5 * time.Second

	defaultIntrospectionCacheTTL    = 5 * time.Minute
	defaultIntrospectionNegativeTTL = 10 * time.Second
	defaultIntrospectionTimeout     = 2 * time.Second
	defaultIntrospectionConcurrency = 16
	defaultIntrospectionRate        = 100
)

var defaultScopeClaims = []string{"scope", "scp"}

// defaultAlgorithms are the asymmetric algorithms allowed when an issuer
// does not configure any. HS256/384/512 are added, each only when the
// issuer's secret is long enough for it.
var defaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}
