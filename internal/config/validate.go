package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// ApplyDefaults fills every unset key that has a default. It is idempotent.
func (c *Config) ApplyDefaults() {
	if c.GRPCAddr == "" {
		c.GRPCAddr = DefaultGRPCAddr
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if len(c.MCP.Paths) == 0 {
		c.MCP.Paths = []string{DefaultMCPPath}
	}
	if c.MCP.MaxBatch == 0 {
		c.MCP.MaxBatch = DefaultMaxBatch
	}
	if c.MCP.MaxDepth == 0 {
		c.MCP.MaxDepth = DefaultMaxDepth
	}
	if c.Policy.ReloadInterval == 0 {
		c.Policy.ReloadInterval = Duration(DefaultReloadInterval)
	}
	if c.Policy.EvalTimeout == 0 {
		c.Policy.EvalTimeout = Duration(DefaultEvalTimeout)
	}
	h := &c.Upstream.IdentityHeaders
	if h.Subject == "" && h.ClientID == "" && h.Scopes == "" && h.Issuer == "" {
		*h = IdentityHeaders{Subject: "x-mcp-subject", ClientID: "x-mcp-client-id", Scopes: "x-mcp-scopes", Issuer: "x-mcp-issuer"}
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	if c.Log.Decisions.AllowSampleRate == nil {
		one := 1.0
		c.Log.Decisions.AllowSampleRate = &one
	}
	if len(c.Log.Decisions.RedactKeys) == 0 {
		c.Log.Decisions.RedactKeys = slices.Clone(DefaultRedactKeys)
	}
	if c.Shutdown.Timeout == 0 {
		c.Shutdown.Timeout = Duration(DefaultShutdownTimeout)
	}
	for i := range c.Issuers {
		c.Issuers[i].applyDefaults(c.Resource)
	}
}

func (is *Issuer) applyDefaults(resource string) {
	if len(is.Audiences) == 0 && resource != "" {
		is.Audiences = []string{resource}
	}
	if len(is.Algorithms) == 0 {
		is.Algorithms = slices.Clone(DefaultAlgorithms)
		if is.HMACSecretFile != "" {
			is.Algorithms = append(is.Algorithms, "HS256", "HS384", "HS512")
		}
	}
	if is.TokenType == "" {
		is.TokenType = "any"
	}
	if is.Leeway == 0 {
		is.Leeway = Duration(DefaultLeeway)
	}
	if len(is.ScopeClaims) == 0 {
		is.ScopeClaims = slices.Clone(DefaultScopeClaims)
	}
	if is.MaxTokenSize == 0 {
		is.MaxTokenSize = DefaultMaxTokenSize
	}
	if is.TenantClaim == "" {
		is.TenantClaim = DefaultTenantClaim
	}
	if is.JWKS.MinRefresh == 0 {
		is.JWKS.MinRefresh = Duration(DefaultJWKSMinRefresh)
	}
	if is.JWKS.MaxRefresh == 0 {
		is.JWKS.MaxRefresh = Duration(DefaultJWKSMaxRefresh)
	}
	if is.JWKS.UnknownKIDInterval == 0 {
		is.JWKS.UnknownKIDInterval = Duration(DefaultUnknownKIDWait)
	}
	if is.JWKS.FetchTimeout == 0 {
		is.JWKS.FetchTimeout = Duration(DefaultFetchTimeout)
	}
	if in := is.Introspection; in != nil {
		if in.CacheTTL == 0 {
			in.CacheTTL = Duration(DefaultIntrospectionCacheTTL)
		}
		if in.NegativeCacheTTL == 0 {
			in.NegativeCacheTTL = Duration(DefaultIntrospectionNegativeCacheTTL)
		}
		if in.Timeout == 0 {
			in.Timeout = Duration(DefaultIntrospectionTimeout)
		}
		if in.MaxConcurrent == 0 {
			in.MaxConcurrent = DefaultIntrospectionMaxConcurrent
		}
		if in.RateLimit == 0 {
			in.RateLimit = DefaultIntrospectionRateLimit
		}
	}
}

// knownAlgorithms are the JWS algorithms an issuer may list.
var knownAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"}

// Validate reports every problem of a defaulted Config, joined; each is a
// Problem naming its key. It has no side effects.
func (c *Config) Validate() error {
	var v validator
	v.addr("grpc_addr", c.GRPCAddr)
	v.addr("http_addr", c.HTTPAddr)
	if c.Resource == "" {
		v.add("resource", "required: the canonical URI of the MCP server, e.g. https://mcp.example.com/mcp")
	} else if u := v.url("resource", c.Resource); u != nil {
		if u.Fragment != "" || strings.Contains(c.Resource, "#") {
			v.add("resource", "must not contain a fragment")
		}
		if u.RawQuery != "" {
			v.add("resource", "must not contain a query")
		}
		if strings.ContainsAny(c.Resource, "=,\"\\ ") {
			v.add("resource", `must not contain '=', ',', '"', '\\' or spaces (it is quoted in WWW-Authenticate challenges)`)
		}
	}
	if len(c.AuthorizationServers) == 0 {
		v.add("authorization_servers", "at least one authorization server (issuer URL) is required")
	}
	for i, s := range c.AuthorizationServers {
		v.url(fmt.Sprintf("authorization_servers[%d]", i), s)
	}
	for i, s := range c.ScopesSupported {
		key := fmt.Sprintf("scopes_supported[%d]", i)
		switch {
		case !ValidScope(s):
			v.add(key, fmt.Sprintf("%q is not a valid scope token (printable ASCII without space, quote or backslash)", s))
		case s == "offline_access":
			v.add(key, "offline_access must not be advertised by a resource server (MCP 2026-07-28)")
		}
	}
	if len(c.Issuers) == 0 {
		v.add("issuers", "at least one trusted issuer is required")
	}
	seen := map[string]int{}
	introspecting := -1
	for i := range c.Issuers {
		key := fmt.Sprintf("issuers[%d]", i)
		if j, dup := seen[c.Issuers[i].Issuer]; dup && c.Issuers[i].Issuer != "" {
			v.add(key+".issuer", fmt.Sprintf("duplicate of issuers[%d]", j))
		}
		seen[c.Issuers[i].Issuer] = i
		if c.Issuers[i].Introspection != nil {
			if introspecting >= 0 {
				// Opaque tokens carry no issuer: each would be sent to every
				// introspecting server, leaking it to all but its own.
				v.add(key+".introspection", fmt.Sprintf("only one issuer may use introspection; issuers[%d] already does (opaque tokens would be sent to the wrong authorization server)", introspecting))
			} else {
				introspecting = i
			}
		}
		c.Issuers[i].validate(&v, key)
	}
	for i, p := range c.Policy.Paths {
		key := fmt.Sprintf("policy.paths[%d]", i)
		if _, err := os.Stat(p); err != nil {
			v.add(key, fmt.Sprintf("cannot read %q: %v", p, errors.Unwrap(err)))
		}
	}
	if c.Policy.EvalTimeout < 0 {
		v.add("policy.eval_timeout", "must be positive")
	}
	if b := c.Policy.Bundle; b != nil {
		if len(c.Policy.Paths) > 0 {
			v.add("policy.bundle", "set either policy.paths or policy.bundle, not both")
		}
		if b.URL == "" {
			v.add("policy.bundle.url", "required")
		} else {
			v.url("policy.bundle.url", b.URL)
		}
		if b.PollMin < 0 || b.PollMax < 0 || b.PollMax > 0 && b.PollMax < b.PollMin {
			v.add("policy.bundle.poll_max", "poll_min and poll_max must be positive and poll_max ≥ poll_min")
		}
		v.file("policy.bundle.bearer_token_file", b.BearerTokenFile)
		if sg := b.Signing; sg != nil {
			if (sg.PublicKeyFile == "") == (sg.SecretFile == "") {
				v.add("policy.bundle.signing", "set exactly one of public_key_file or secret_file")
			}
			v.file("policy.bundle.signing.public_key_file", sg.PublicKeyFile)
			v.file("policy.bundle.signing.secret_file", sg.SecretFile)
		}
	}
	for i, p := range c.MCP.Paths {
		key := fmt.Sprintf("mcp.paths[%d]", i)
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?# \t") {
			v.add(key, fmt.Sprintf("%q must be an absolute path without query or fragment", p))
		}
	}
	for i, o := range c.MCP.AllowedOrigins {
		key := fmt.Sprintf("mcp.allowed_origins[%d]", i)
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			v.add(key, fmt.Sprintf("%q is not an origin (scheme://host[:port])", o))
		}
	}
	if c.Policy.DecisionCacheSize < -1 || c.Policy.DecisionCacheSize > 10_000_000 {
		v.add("policy.decision_cache_size", "must be -1 (disabled), 0 (default 10000) or a size up to 10000000")
	}
	if c.TokenCacheSize < -1 || c.TokenCacheSize > 10_000_000 {
		v.add("token_cache_size", "must be -1 (disabled), 0 (default 10000) or a size up to 10000000")
	}
	if c.MCP.MaxBatch < 1 {
		v.add("mcp.max_batch", "must be at least 1")
	}
	if c.MCP.MaxDepth < 2 || c.MCP.MaxDepth > 1000 {
		v.add("mcp.max_depth", "must be between 2 and 1000")
	}
	h := c.Upstream.IdentityHeaders
	for key, name := range map[string]string{"subject": h.Subject, "client_id": h.ClientID, "scopes": h.Scopes, "issuer": h.Issuer} {
		if name != "" && !ValidUpstreamHeader(name) {
			v.add("upstream.identity_headers."+key, fmt.Sprintf("%q is not a lowercase header name mcpauthz may set (no pseudo-headers, host, authorization, x-envoy-*)", name))
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		v.add("log.level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.Log.Level))
	}
	if !slices.Contains([]string{"json", "text"}, c.Log.Format) {
		v.add("log.format", fmt.Sprintf("%q is not one of json, text", c.Log.Format))
	}
	if r := c.Log.Decisions.AllowSampleRate; r != nil && (*r < 0 || *r > 1) {
		v.add("log.decisions.allow_sample_rate", "must be between 0 and 1")
	}
	if c.Shutdown.DrainDelay < 0 || c.Shutdown.DrainDelay.D() > 5*time.Minute {
		v.add("shutdown.drain_delay", "must be between 0s and 5m")
	}
	if c.Shutdown.Timeout <= 0 {
		v.add("shutdown.timeout", "must be positive")
	}
	return v.err()
}

func (is *Issuer) validate(v *validator, key string) {
	if is.Issuer == "" {
		v.add(key+".issuer", "required")
	} else {
		pattern := strings.Count(is.Issuer, "{tenantid}")
		if pattern > 1 {
			v.add(key+".issuer", "{tenantid} may appear at most once")
		}
		v.url(key+".issuer", strings.ReplaceAll(is.Issuer, "{tenantid}", "tenant"))
	}
	if is.JWKSURI != "" && is.JWKSFile != "" {
		v.add(key+".jwks_file", "set either jwks_uri or jwks_file, not both")
	}
	if is.JWKSURI != "" {
		v.url(key+".jwks_uri", is.JWKSURI)
	}
	if is.JWKSFile != "" {
		if _, err := os.Stat(is.JWKSFile); err != nil {
			v.add(key+".jwks_file", fmt.Sprintf("cannot read %q", is.JWKSFile))
		}
	}
	if strings.Contains(is.Issuer, "{tenantid}") && is.JWKSURI == "" && is.JWKSFile == "" {
		v.add(key+".jwks_uri", "required for an issuer pattern (discovery needs a concrete issuer)")
	}
	if len(is.Audiences) == 0 {
		v.add(key+".audiences", "at least one audience is required (defaults to resource)")
	}
	for i, a := range is.Audiences {
		if strings.TrimSpace(a) == "" {
			v.add(fmt.Sprintf("%s.audiences[%d]", key, i), "must not be empty")
		}
	}
	hmac := false
	for i, a := range is.Algorithms {
		k := fmt.Sprintf("%s.algorithms[%d]", key, i)
		switch {
		case strings.EqualFold(a, "none"):
			v.add(k, `"none" is never accepted`)
		case !slices.Contains(knownAlgorithms, a):
			v.add(k, fmt.Sprintf("%q is not one of %s", a, strings.Join(knownAlgorithms, ", ")))
		case strings.HasPrefix(a, "HS"):
			hmac = true
		}
	}
	if hmac && is.HMACSecretFile == "" {
		v.add(key+".algorithms", "HS256/384/512 require hmac_secret_file")
	}
	if is.HMACSecretFile != "" {
		if _, err := os.Stat(is.HMACSecretFile); err != nil {
			v.add(key+".hmac_secret_file", fmt.Sprintf("cannot read %q", is.HMACSecretFile))
		}
	}
	if is.TokenType != "at+jwt" && is.TokenType != "any" {
		v.add(key+".token_type", fmt.Sprintf("%q is not one of at+jwt, any", is.TokenType))
	}
	if is.Leeway < 0 || is.Leeway.D() > 10*time.Minute {
		v.add(key+".leeway", "must be between 0s and 10m")
	}
	for i, c := range is.ScopeClaims {
		if c == "" {
			v.add(fmt.Sprintf("%s.scope_claims[%d]", key, i), "must not be empty")
		}
	}
	for claim, prefix := range is.ClaimScopes {
		if claim == "" || strings.ContainsAny(prefix, " \"\\") {
			v.add(key+".claim_scopes", fmt.Sprintf("claim %q: prefix %q must be a scope fragment", claim, prefix))
		}
	}
	if is.MaxTokenSize < 256 || is.MaxTokenSize > 1<<20 {
		v.add(key+".max_token_size", "must be between 256 and 1048576 bytes")
	}
	if is.MaxLifetime < 0 {
		v.add(key+".max_lifetime", "must not be negative (0 means unlimited)")
	}
	j := is.JWKS
	if j.MinRefresh.D() < time.Second {
		v.add(key+".jwks.min_refresh", "must be at least 1s")
	}
	if j.MaxRefresh < j.MinRefresh {
		v.add(key+".jwks.max_refresh", "must not be less than min_refresh")
	}
	if j.UnknownKIDInterval.D() < time.Second {
		v.add(key+".jwks.unknown_kid_interval", "must be at least 1s")
	}
	if j.FetchTimeout <= 0 {
		v.add(key+".jwks.fetch_timeout", "must be positive")
	}
	if in := is.Introspection; in != nil {
		is.validateIntrospection(v, key+".introspection")
	}
}

func (is *Issuer) validateIntrospection(v *validator, ik string) {
	in := is.Introspection
	if strings.Contains(is.Issuer, "{tenantid}") {
		v.add(ik, "not supported for an issuer pattern: the introspection answer cannot select a tenant")
	}
	if in.Endpoint == "" {
		v.add(ik+".endpoint", "required")
	} else if u := v.url(ik+".endpoint", in.Endpoint); u != nil {
		if u.User != nil {
			v.add(ik+".endpoint", "must not contain user information (use client_id and the client secret)")
		}
		if u.Fragment != "" || strings.Contains(in.Endpoint, "#") {
			v.add(ik+".endpoint", "must not contain a fragment")
		}
	}
	if in.ClientID == "" {
		v.add(ik+".client_id", "required: introspection endpoints must authenticate the caller (RFC 7662 §2.1)")
	}
	switch {
	case (in.ClientSecretFile == "") == (in.ClientSecretEnv == ""):
		v.add(ik, "set exactly one of client_secret_file or client_secret_env")
	case in.ClientSecretFile != "":
		if _, err := os.Stat(in.ClientSecretFile); err != nil {
			v.add(ik+".client_secret_file", fmt.Sprintf("cannot read %q", in.ClientSecretFile))
		}
	default:
		if os.Getenv(in.ClientSecretEnv) == "" {
			v.add(ik+".client_secret_env", fmt.Sprintf("environment variable %s is not set or empty", in.ClientSecretEnv))
		}
	}
	if in.CacheTTL <= 0 {
		v.add(ik+".cache_ttl", "must be positive (it bounds how long a revoked token is still accepted)")
	}
	if in.NegativeCacheTTL <= 0 {
		v.add(ik+".negative_cache_ttl", "must be positive")
	}
	if in.Timeout <= 0 || in.Timeout.D() > 30*time.Second {
		v.add(ik+".timeout", "must be positive and at most 30s")
	}
	if in.MaxConcurrent < 1 || in.MaxConcurrent > 1024 {
		v.add(ik+".max_concurrent", "must be between 1 and 1024")
	}
	if in.RateLimit < 1 || in.RateLimit > 100000 {
		v.add(ik+".rate_limit", "must be between 1 and 100000 calls per second")
	}
}

// validator collects Problems.
type validator struct{ errs []error }

func (v *validator) add(key, msg string) { v.errs = append(v.errs, Problem{Key: key, Msg: msg}) }

func (v *validator) err() error { return errors.Join(v.errs...) }

// file checks that an optional file path is readable.
func (v *validator) file(key, path string) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		v.add(key, fmt.Sprintf("cannot read %q", path))
	}
}

func (v *validator) addr(key, a string) {
	if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
		v.add(key, fmt.Sprintf("%q is not host:port", a))
	}
}

// url checks an absolute https URL; http is accepted only for loopback hosts.
func (v *validator) url(key, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		v.add(key, fmt.Sprintf("%q is not an absolute http(s) URL", s))
		return nil
	}
	if u.Scheme == "http" && !IsLoopback(u.Hostname()) {
		v.add(key, fmt.Sprintf("%q must use https (http is allowed only for loopback hosts)", s))
		return nil
	}
	return u
}

// IsLoopback reports whether host is localhost or a loopback IP.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ValidScope reports whether s is an RFC 6749 scope token: %x21 / %x23-5B /
// %x5D-7E, non-empty.
func ValidScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// ValidUpstreamHeader reports whether name may be set on the upstream
// request by mcpauthz: a lowercase RFC 9110 token that is not a pseudo-header
// and not a header Envoy or the transport owns.
func ValidUpstreamHeader(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	switch name {
	case "host", "authorization", "cookie", "content-length", "content-type", "content-encoding", "transfer-encoding", "connection", "upgrade", "te", "keep-alive", "proxy-authorization", "x-request-id":
		return false
	}
	return !strings.HasPrefix(name, "x-envoy-")
}
