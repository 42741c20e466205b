// Package config is the mcpauthz configuration file format: the keys, their
// types, and strict decoding.
//
// Load reads YAML strictly (unknown keys and wrong types are problems, each
// with its file:line). It applies no defaults and checks no values: each
// package that takes options owns its defaults and its rules, and
// internal/app.Compile maps a Config onto them and reports their problems,
// which Config.Locate places in the file. The defaults named in the
// comments below are those packages' defaults.
package config

import (
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration file. The yaml names are a public
// contract.
type Config struct {
	GRPCAddr              string   `yaml:"grpc_addr"`
	HTTPAddr              string   `yaml:"http_addr"`
	Resource              string   `yaml:"resource"`
	ResourceName          string   `yaml:"resource_name"`
	ResourceDocumentation string   `yaml:"resource_documentation"`
	AuthorizationServers  []string `yaml:"authorization_servers"`
	// ScopesSupported overrides the scopes advertised in the protected
	// resource metadata and in 401 challenges; empty means "derive from the
	// policy data".
	ScopesSupported []string `yaml:"scopes_supported"`
	Issuers         []Issuer `yaml:"issuers"`
	// TokenCacheSize bounds the cache of verified tokens (keyed by a hash
	// of the token, entries expire at exp; default 10000, -1 disables).
	TokenCacheSize int `yaml:"token_cache_size"`
	// TokenCacheBytes bounds the memory of that cache's entries (default
	// 4194304, 4 MiB: about 5 000 tokens of a 330-byte payload, 2 300 of a
	// 1.2 KB one; at least 65536). The cache of recently rejected tokens
	// has the same bounds.
	TokenCacheBytes int `yaml:"token_cache_bytes"`
	// AnswerCacheSize bounds the verified identities whose answer parts
	// (identity headers, and the allows and denials they repeat, encoded
	// once) are kept (default 4096, -1 disables); AnswerCacheBytes bounds
	// the memory of those parts (default 2097152, 2 MiB: about 330
	// identities with an allow and a 403 each; at least 65536).
	AnswerCacheSize  int      `yaml:"answer_cache_size"`
	AnswerCacheBytes int      `yaml:"answer_cache_bytes"`
	Policy           Policy   `yaml:"policy"`
	MCP              MCP      `yaml:"mcp"`
	Upstream         Upstream `yaml:"upstream"`
	// ListFiltering filters list responses per caller (ext_proc).
	ListFiltering ListFiltering `yaml:"list_filtering"`
	// UpstreamCredentials are the named sources of credentials the policy
	// may give the MCP server for a request.
	UpstreamCredentials map[string]UpstreamCredential `yaml:"upstream_credentials"`
	Log                 Log                           `yaml:"log"`
	// Shadow allows every request that policy denies and records the
	// would-be denial (decision "shadow_deny") instead. Token and protocol
	// checks are still enforced.
	Shadow   bool     `yaml:"shadow"`
	Shutdown Shutdown `yaml:"shutdown"`
	// Tracing configures OpenTelemetry tracing; the OTEL_* environment
	// variables alone configure it too, and these keys override them.
	Tracing Tracing `yaml:"tracing"`

	// Where the configuration came from, for Locate.
	file string
	doc  *yaml.Node
}

// Tracing is the OpenTelemetry tracing of checks (docs/operations.md,
// Tracing). Every key overrides the OTEL_* variable named with it.
type Tracing struct {
	// Enabled forces tracing on or off; unset, it is on when an OTLP
	// endpoint is named here or in OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT.
	Enabled *bool `yaml:"enabled"`
	// Endpoint is the OTLP traces endpoint URL (http: without TLS);
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
	Endpoint string `yaml:"endpoint"`
	// Protocol is grpc or http/protobuf (default);
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL.
	Protocol string `yaml:"protocol"`
	// SampleRatio is the fraction of checks without a caller's trace that
	// start a recorded trace; checks in a caller's trace follow its
	// sampling decision. OTEL_TRACES_SAMPLER.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is service.name (default mcpauthz); OTEL_SERVICE_NAME.
	ServiceName string `yaml:"service_name"`
}

// Shutdown tunes the graceful stop on SIGTERM or SIGINT. From the signal
// on, /readyz and gRPC health report not serving while every check is
// still decided as before; the process exits within Timeout of the signal.
type Shutdown struct {
	// DrainDelay is how long mcpauthz keeps accepting new checks after the
	// signal, not ready but deciding as before, so that endpoint lists,
	// load balancers and Envoy's health checks move away before it stops
	// accepting. Default 5s, or a third of Timeout when that is shorter;
	// 0s accepts nothing new after the signal. It must be shorter than
	// Timeout.
	DrainDelay *Duration `yaml:"drain_delay"`
	// Timeout bounds the whole shutdown, from the signal to the exit
	// (default 15s): the drain delay, then the checks in flight, which are
	// stopped hard if they have not finished by then. Give the checks in
	// flight (Timeout - DrainDelay) more than the slowest check can take
	// (introspection timeout, JWKS fetch_timeout), and set Kubernetes'
	// terminationGracePeriodSeconds above Timeout.
	Timeout Duration `yaml:"timeout"`
}

// Issuer configures one trusted token issuer.
type Issuer struct {
	// Issuer is the exact iss value. For multi-tenant identity providers it
	// may contain the placeholder {tenantid}, matched against TenantClaim.
	Issuer string `yaml:"issuer"`
	// TenantClaim names the claim that must equal the {tenantid} part of
	// iss (default "tid").
	TenantClaim string `yaml:"tenant_claim"`
	// JWKSURI is where the keys are; discovered from the issuer's metadata
	// when empty (RFC 8414, then OpenID Connect discovery).
	JWKSURI string `yaml:"jwks_uri"`
	// JWKSFile is a local key set, for air-gapped installations and tests.
	JWKSFile string `yaml:"jwks_file"`
	// Audiences accepted in aud; default [resource].
	Audiences []string `yaml:"audiences"`
	// Algorithms allowed; default the asymmetric ones.
	Algorithms []string `yaml:"algorithms"`
	// HMACSecretFile enables HS256/384/512 with this shared secret.
	HMACSecretFile string `yaml:"hmac_secret_file"`
	// TokenType is "at+jwt" (require RFC 9068 typ) or "any" (default "any").
	TokenType string `yaml:"token_type"`
	// Leeway for exp, nbf and iat (default 60s).
	Leeway Duration `yaml:"leeway"`
	// ScopeClaims are read for scopes: a space-delimited string or an array
	// of strings (default [scope, scp]).
	ScopeClaims []string `yaml:"scope_claims"`
	// ClaimScopes maps further claims (roles, permissions, groups) into
	// scopes; each value is a prefix added to the claim's values ("" for
	// none).
	ClaimScopes map[string]string `yaml:"claim_scopes"`
	// RequiredClaims must be present (default [exp]; exp is always required).
	RequiredClaims []string `yaml:"required_claims"`
	// RequireSubject rejects tokens (JWTs and introspection answers)
	// without a non-empty sub (default true). Set it to false only for an
	// issuer whose tokens have no sub: identity headers and subject
	// revocation then have nothing to key on for them.
	RequireSubject *bool `yaml:"require_subject"`
	// MaxTokenSize caps the bearer token in bytes before any parsing
	// (default 16384).
	MaxTokenSize int `yaml:"max_token_size"`
	// MaxLifetime rejects tokens whose lifetime is longer: exp - iat, or
	// exp - now when the token has no iat (default 0: unlimited).
	MaxLifetime Duration `yaml:"max_lifetime"`
	JWKS        JWKS     `yaml:"jwks"`
	// Introspection enables RFC 7662 introspection of opaque (non-JWS)
	// tokens with this issuer. At most one issuer may set it.
	Introspection *Introspection `yaml:"introspection"`
}

// JWKS tunes the key set cache of one issuer.
type JWKS struct {
	// MinRefresh and MaxRefresh bound the refresh interval derived from
	// Cache-Control (defaults 5m and 1h).
	MinRefresh Duration `yaml:"min_refresh"`
	MaxRefresh Duration `yaml:"max_refresh"`
	// UnknownKIDInterval rate-limits refetches caused by an unknown kid
	// (default 10s).
	UnknownKIDInterval Duration `yaml:"unknown_kid_interval"`
	// UnknownKIDWait bounds how long a check waits for that refetch
	// (default 100ms, at most 10s); the fetch goes on in the background.
	UnknownKIDWait Duration `yaml:"unknown_kid_wait"`
	// FetchTimeout bounds one fetch (default 5s).
	FetchTimeout Duration `yaml:"fetch_timeout"`
}

// Introspection configures RFC 7662 token introspection for opaque tokens.
type Introspection struct {
	// Endpoint is the introspection endpoint (https, or http on loopback).
	Endpoint string `yaml:"endpoint"`
	// ClientID and the secret authenticate mcpauthz to the endpoint with
	// HTTP Basic (RFC 7662 §2.1, RFC 6749 §2.3.1). Exactly one of
	// ClientSecretFile and ClientSecretEnv must be set.
	ClientID         string `yaml:"client_id"`
	ClientSecretFile string `yaml:"client_secret_file"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	// CacheTTL bounds how long an active answer is reused (default 5m;
	// never past the token's exp): the longest a revocation can go
	// unnoticed.
	CacheTTL Duration `yaml:"cache_ttl"`
	// NegativeCacheTTL is how long an inactive answer is reused
	// (default 10s).
	NegativeCacheTTL Duration `yaml:"negative_cache_ttl"`
	// Timeout bounds one introspection call (default 2s).
	Timeout Duration `yaml:"timeout"`
	// MaxConcurrent bounds the calls in flight (default 16); RateLimit
	// bounds the calls per second, with a burst of the same size
	// (default 100). Requests beyond either are answered 503.
	MaxConcurrent int `yaml:"max_concurrent"`
	RateLimit     int `yaml:"rate_limit"`
}

// Defaults of the introspection keys.
const (
	DefaultIntrospectionCacheTTL         = 5 * time.Minute
	DefaultIntrospectionNegativeCacheTTL = 10 * time.Second
	DefaultIntrospectionTimeout          = 2 * time.Second
	DefaultIntrospectionMaxConcurrent    = 16
	DefaultIntrospectionRateLimit        = 100
)

// Policy selects the Rego policy and data.
type Policy struct {
	// Paths are .rego files, .json/.yaml data files, or directories of them;
	// empty selects the embedded default policy.
	Paths []string `yaml:"paths"`
	// ReloadInterval is how often Paths are checked for changes (default
	// 2s; 0 keeps the default, negative disables reloading).
	ReloadInterval Duration `yaml:"reload_interval"`
	// EvalTimeout bounds one evaluation (default 100ms).
	EvalTimeout Duration `yaml:"eval_timeout"`
	// DecisionCacheSize bounds the cache of policy decisions (default
	// 10000, -1 disables). A decision is reused only when every input the
	// policy reads is equal; policies that call time, HTTP or random
	// built-ins are never cached.
	DecisionCacheSize int `yaml:"decision_cache_size"`
	// DecisionCacheBytes bounds the memory of the decision cache's entries
	// (default 4194304, 4 MiB; a decision without headers takes about 200
	// bytes, so the entry bound comes first; at least 4096). The cache of
	// list visibility (tools/list filtering) has the same two bounds.
	DecisionCacheBytes int `yaml:"decision_cache_bytes"`
	// Bundle loads policy and data from an OPA bundle server instead of
	// Paths (use one or the other).
	Bundle *Bundle `yaml:"bundle"`
}

// Bundle is an OPA bundle served over HTTP, polled with ETags.
type Bundle struct {
	// URL of the bundle (.tar.gz); https except for loopback hosts.
	URL string `yaml:"url"`
	// PollMin and PollMax bound the polling interval and the retry backoff
	// (defaults 10s and 30s).
	PollMin Duration `yaml:"poll_min"`
	PollMax Duration `yaml:"poll_max"`
	// BearerTokenFile is read before every request and sent as
	// Authorization: Bearer (a rotated token is picked up).
	BearerTokenFile string `yaml:"bearer_token_file"`
	// Signing makes signed bundles mandatory and verifies them.
	Signing *BundleSigning `yaml:"signing"`
}

// BundleSigning verifies OPA bundle signatures (.signatures.json).
type BundleSigning struct {
	// PublicKeyFile (PEM) for RS*, PS*, ES*; SecretFile for HS*. Exactly one.
	PublicKeyFile string `yaml:"public_key_file"`
	SecretFile    string `yaml:"secret_file"`
	// Algorithm of the signature (default RS256).
	Algorithm string `yaml:"algorithm"`
	// KeyID names the key; informational.
	KeyID string `yaml:"key_id"`
	// Scope, when set, must equal the signature's scope claim.
	Scope string `yaml:"scope"`
}

// MCP describes the MCP endpoints behind Envoy.
type MCP struct {
	// Paths are the request paths that are MCP endpoints (default [/mcp]).
	Paths []string `yaml:"paths"`
	// AllowedOrigins lists the Origin values accepted; empty disables the
	// Origin check.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// MaxBatch caps JSON-RPC batch size (default 100).
	MaxBatch int `yaml:"max_batch"`
	// MaxDepth caps JSON nesting (default 64).
	MaxDepth int `yaml:"max_depth"`
}

// ListFiltering configures the ext_proc service that removes from
// tools/list, prompts/list, resources/list and resources/templates/list
// results what the caller may not use, by the same policy.
type ListFiltering struct {
	// Enabled serves the ext_proc service on grpc_addr and records, for
	// allowed list requests, what it needs (default true).
	Enabled *bool `yaml:"enabled"`
	// PolicyTimeout bounds the policy's visibility decision for one list
	// (default 1s).
	PolicyTimeout Duration `yaml:"policy_timeout"`
	// MaxBufferedBytes bounds the list response (JSON) or the one SSE event
	// being filtered (default 8 MiB).
	MaxBufferedBytes int `yaml:"max_buffered_bytes"`
	// ParseMemoSize bounds the list results whose strict parse is kept for
	// the next response with the same result (default 16, -1 disables);
	// ParseMemoBytes bounds their memory (default 2097152, 2 MiB; a result
	// over half of it is not kept).
	ParseMemoSize  int `yaml:"parse_memo_size"`
	ParseMemoBytes int `yaml:"parse_memo_bytes"`
}

// Upstream controls what the MCP server receives on allow.
type Upstream struct {
	// ForwardToken keeps the client's Authorization header (default false:
	// the token is removed, as MCP forbids token passthrough).
	ForwardToken    bool            `yaml:"forward_token"`
	IdentityHeaders IdentityHeaders `yaml:"identity_headers"`
}

// IdentityHeaders names the headers that carry the verified identity to the
// upstream. An empty name disables that header.
type IdentityHeaders struct {
	Subject  string `yaml:"subject"`
	ClientID string `yaml:"client_id"`
	Scopes   string `yaml:"scopes"`
	Issuer   string `yaml:"issuer"`
	// Actor carries the token's delegation chain (default x-mcp-actor).
	Actor string `yaml:"actor"`
}

// UpstreamCredential is one named source of credentials for the MCP server
// itself (docs/upstream-credentials.md). A policy chooses one per request
// with decision.upstream_credential.
type UpstreamCredential struct {
	// Type is token_exchange, client_credentials or static.
	Type string `yaml:"type"`
	// Profile of a token exchange: rfc8693 (default) or entra_obo.
	Profile string `yaml:"profile"`
	// Issuer is the authorization server whose metadata names the token
	// endpoint; TokenEndpoint sets it directly.
	Issuer        string `yaml:"issuer"`
	TokenEndpoint string `yaml:"token_endpoint"`
	// Audiences, Resources and Scopes are asked for (RFC 8693 audience,
	// RFC 8707 resource, scope).
	Audiences []string `yaml:"audiences"`
	Resources []string `yaml:"resources"`
	Scopes    []string `yaml:"scopes"`
	// SubjectTokenType and RequestedTokenType of a token exchange
	// (default the access-token type).
	SubjectTokenType            string `yaml:"subject_token_type"`
	RequestedTokenType          string `yaml:"requested_token_type"`
	AllowMissingIssuedTokenType bool   `yaml:"allow_missing_issued_token_type"`
	// Client authenticates mcpauthz at the token endpoint.
	Client UpstreamClient `yaml:"client"`
	// CAFile trusts a private CA for the token endpoint.
	CAFile string `yaml:"ca_file"`
	// Header the credential goes into (default authorization) and the
	// scheme before it (default Bearer for authorization, none otherwise).
	Header string `yaml:"header"`
	Scheme string `yaml:"scheme"`
	// Timeout bounds one token request (default 500ms).
	Timeout Duration `yaml:"timeout"`
	// CacheSize bounds the exchanged tokens kept (default 10000),
	// CacheBytes their memory (default 4194304, 4 MiB: about 3 000 tokens
	// of 1.2 KB; at least 65536) and MaxConcurrent the exchanges in
	// flight (default 64).
	CacheSize     int `yaml:"cache_size"`
	CacheBytes    int `yaml:"cache_bytes"`
	MaxConcurrent int `yaml:"max_concurrent"`
	// File holds the secret of a static source; PollInterval is how often
	// it is checked for changes (default 5s).
	File         string   `yaml:"file"`
	PollInterval Duration `yaml:"poll_interval"`
}

// UpstreamClient is how mcpauthz authenticates to a token endpoint.
type UpstreamClient struct {
	ID string `yaml:"id"`
	// Auth is client_secret_basic, client_secret_post, private_key_jwt or
	// tls_client_auth.
	Auth              string `yaml:"auth"`
	SecretFile        string `yaml:"secret_file"`
	PrivateKeyFile    string `yaml:"private_key_file"`
	KeyID             string `yaml:"key_id"`
	SigningAlg        string `yaml:"signing_alg"`
	AssertionAudience string `yaml:"assertion_audience"`
	CertificateFile   string `yaml:"certificate_file"`
	TLSCertFile       string `yaml:"tls_cert_file"`
	TLSKeyFile        string `yaml:"tls_key_file"`
}

// Log configures logging.
type Log struct {
	Level     string      `yaml:"level"`  // debug, info, warn, error (default info)
	Format    string      `yaml:"format"` // json or text (default json)
	Decisions DecisionLog `yaml:"decisions"`
}

// DecisionLog configures the one-line-per-decision log.
type DecisionLog struct {
	// AllowSampleRate is the fraction of allowed decisions logged, 0 to 1
	// (default 1). Denials are always logged.
	AllowSampleRate *float64 `yaml:"allow_sample_rate"`
	// Arguments adds tool and prompt arguments to the log (default false).
	Arguments bool `yaml:"arguments"`
	// RedactKeys are argument member names (at any depth, case-insensitive)
	// whose values are replaced by "[REDACTED]" when Arguments is on
	// (default: password, secret, token, authorization, api_key, apikey,
	// access_token, refresh_token, client_secret, cookie).
	RedactKeys []string `yaml:"redact_keys"`
}

// Duration is a time.Duration written as a Go duration string ("60s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
