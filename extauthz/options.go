package extauthz

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
	"github.com/mcpauthz/mcpauthz/internal/problem"
	"github.com/mcpauthz/mcpauthz/policy"
)

// Options configure a Server. Zero fields take the defaults named in their
// comments. New validates them and reports every problem at once, each as
// an error whose text starts with the option's snake_case path
// ("mcp.paths[0]: ...").
type Options struct {
	// Resource is the canonical URI of the protected MCP server: the RFC
	// 9728 "resource", the audience tokens must carry by default, and the
	// base of the metadata URL. Required; https (or http on loopback),
	// without query or fragment.
	Resource              string
	ResourceName          string
	ResourceDocumentation string
	// AuthorizationServers are the issuer URLs clients are sent to (at
	// least one).
	AuthorizationServers []string
	// ScopesSupported overrides the scopes advertised in the metadata and
	// in 401 challenges; empty means the policy's scopes_supported.
	ScopesSupported []string
	MCP             MCPOptions
	Upstream        UpstreamOptions
	// Shadow allows every request that policy denies and records the
	// would-be denial instead. Token and protocol checks stay enforced.
	Shadow bool
	// ListFilter records, in the dynamic metadata of every allowed request
	// that holds list requests (tools/list, prompts/list, resources/list,
	// resources/templates/list), what the ext_proc list filter (package
	// extproc) needs to filter the response for this caller.
	ListFilter bool

	// Credentials are the upstream credential sources a policy may choose
	// (decision.upstream_credential), by name.
	Credentials map[string]CredentialSource

	// Authenticator verifies bearer tokens. Required.
	Authenticator Authenticator
	// Logger receives panics and other internal errors; nil discards them.
	Logger *slog.Logger
	// Recorders observe each decision, in order.
	Recorders []Recorder
	// Tracer records a span per check (CheckSpan) with children for the
	// token, the policy and the upstream credential; nil traces nothing
	// and costs nothing. Recorders get the check's span in their context.
	Tracer trace.Tracer

	// AnswerCacheSize bounds the verified identities whose answer parts
	// (identity headers, shared allows and denials) are kept (default
	// DefaultAnswerCacheSize, -1 keeps none), and AnswerCacheBytes the
	// memory of those parts (default DefaultAnswerCacheBytes, at least
	// 65536).
	AnswerCacheSize  int
	AnswerCacheBytes int
}

// MCPOptions describe the MCP endpoints behind Envoy.
type MCPOptions struct {
	// Paths are the request paths that are MCP endpoints (default [/mcp]).
	Paths []string
	// AllowedOrigins lists the Origin values accepted; empty disables the
	// Origin check.
	AllowedOrigins []string
	// MaxBatch caps JSON-RPC batch size (default 100).
	MaxBatch int
	// MaxDepth caps JSON nesting (default 64, between 2 and 1000).
	MaxDepth int
}

// UpstreamOptions control what the MCP server receives on allow.
type UpstreamOptions struct {
	// ForwardToken keeps the client's Authorization header (default false:
	// the token is removed, as MCP forbids token passthrough).
	ForwardToken bool
	// IdentityHeaders name the headers that carry the verified identity;
	// all empty selects x-mcp-subject, x-mcp-client-id, x-mcp-scopes and
	// x-mcp-issuer.
	IdentityHeaders IdentityHeaders
}

// IdentityHeaders names the headers that carry the verified identity to the
// upstream. An empty name disables that header (unless all are empty: then
// the defaults apply).
type IdentityHeaders struct {
	Subject  string
	ClientID string
	Scopes   string
	Issuer   string
	// Actor carries the delegation chain of the token (its act claim): the
	// acting parties, the current actor first, each by client_id (or sub
	// when it has none), separated by ", ".
	Actor string
}

// Defaults of the options that have one.
const (
	DefaultMCPPath  = "/mcp"
	DefaultMaxBatch = 100
	DefaultMaxDepth = 64
)

// DefaultIdentityHeaders are the identity headers when none is configured.
var DefaultIdentityHeaders = IdentityHeaders{Subject: "x-mcp-subject", ClientID: "x-mcp-client-id", Scopes: "x-mcp-scopes", Issuer: "x-mcp-issuer", Actor: "x-mcp-actor"}

func (o *Options) applyDefaults() {
	if len(o.MCP.Paths) == 0 {
		o.MCP.Paths = []string{DefaultMCPPath}
	}
	if o.MCP.MaxBatch == 0 {
		o.MCP.MaxBatch = DefaultMaxBatch
	}
	if o.MCP.MaxDepth == 0 {
		o.MCP.MaxDepth = DefaultMaxDepth
	}
	if o.Upstream.IdentityHeaders == (IdentityHeaders{}) {
		o.Upstream.IdentityHeaders = DefaultIdentityHeaders
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AnswerCacheSize == 0 {
		o.AnswerCacheSize = DefaultAnswerCacheSize
	}
	if o.AnswerCacheBytes == 0 {
		o.AnswerCacheBytes = DefaultAnswerCacheBytes
	}
}

// validate reports every problem of defaulted options.
func (o *Options) validate() error {
	var errs problem.List
	if o.Resource == "" {
		errs.Add("resource", "required: the canonical URI of the MCP server, e.g. https://mcp.example.com/mcp")
	} else if u, err := oauth.ParseEndpointURL(o.Resource); err != nil {
		errs.Add("resource", "%v", err)
	} else {
		if u.RawQuery != "" || u.ForceQuery {
			errs.Add("resource", "must not contain a query")
		}
		if strings.ContainsAny(o.Resource, "=,\"\\ ") {
			errs.Add("resource", `must not contain '=', ',', '"', '\' or spaces (it is quoted in WWW-Authenticate challenges)`)
		}
	}
	if len(o.AuthorizationServers) == 0 {
		errs.Add("authorization_servers", "at least one authorization server (issuer URL) is required")
	}
	for i, s := range o.AuthorizationServers {
		if _, err := oauth.ParseEndpointURL(s); err != nil {
			errs.Add(fmt.Sprintf("authorization_servers[%d]", i), "%v", err)
		}
	}
	for i, s := range o.ScopesSupported {
		path := fmt.Sprintf("scopes_supported[%d]", i)
		switch {
		case !oauth.ValidScope(s):
			errs.Add(path, "%q is not a valid scope token (printable ASCII without space, quote or backslash)", s)
		case s == "offline_access":
			errs.Add(path, "offline_access must not be advertised by a resource server (MCP 2026-07-28)")
		}
	}
	for i, p := range o.MCP.Paths {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?# \t") {
			errs.Add(fmt.Sprintf("mcp.paths[%d]", i), "%q must be an absolute path without query or fragment", p)
		}
	}
	for i, s := range o.MCP.AllowedOrigins {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			errs.Add(fmt.Sprintf("mcp.allowed_origins[%d]", i), "%q is not an origin (scheme://host[:port])", s)
		}
	}
	if o.MCP.MaxBatch < 1 {
		errs.Add("mcp.max_batch", "must be at least 1")
	}
	if o.MCP.MaxDepth < 2 || o.MCP.MaxDepth > 1000 {
		errs.Add("mcp.max_depth", "must be between 2 and 1000")
	}
	h := o.Upstream.IdentityHeaders
	for _, f := range [][2]string{{"subject", h.Subject}, {"client_id", h.ClientID}, {"scopes", h.Scopes}, {"issuer", h.Issuer}, {"actor", h.Actor}} {
		if f[1] != "" && !validUpstreamHeader(f[1]) {
			errs.Add("upstream.identity_headers."+f[0], "%q is not a lowercase header name mcpauthz may set (no pseudo-headers, host, authorization, x-envoy-*)", f[1])
		}
	}
	if o.Authenticator == nil {
		errs.Add("", "no Authenticator")
	}
	for _, name := range slices.Sorted(maps.Keys(o.Credentials)) {
		path := "upstream_credentials." + name
		src := o.Credentials[name]
		switch hdr := src.Header(); {
		case !validUpstreamHeader(hdr) && hdr != "authorization":
			errs.Add(path+".header", "%q is not a header mcpauthz may set", hdr)
		case isIdentityHeader(o.Upstream.IdentityHeaders, hdr):
			errs.Add(path+".header", "%q is an identity header", hdr)
		}
	}
	if o.AnswerCacheSize < -1 || o.AnswerCacheSize > 10_000_000 {
		errs.Add("answer_cache_size", "must be -1 (disabled), 0 (default %d) or a size up to 10000000", DefaultAnswerCacheSize)
	}
	if o.AnswerCacheBytes < 65536 || o.AnswerCacheBytes > 1<<34 {
		errs.Add("answer_cache_bytes", "must be 0 (default %d) or from 65536 to %d bytes", DefaultAnswerCacheBytes, int64(1)<<34)
	}
	return errs.Err()
}

// Identity is a verified access token, reduced to what authorization needs.
// Identities may be shared between requests: never modify one.
type Identity struct {
	Issuer   string
	Subject  string
	ClientID string
	Audience []string
	// Scopes are the granted scopes, de-duplicated and sorted.
	Scopes []string
	// JTI is the token identifier, empty when absent.
	JTI string
	// Azp is the authorized party, empty when absent.
	Azp string
	// Actors is the delegation chain of the act claim (RFC 8693 §4.1), the
	// current actor first; nil without act.
	Actors []Actor
	// MayAct is the may_act claim (a JSON object), nil when absent.
	MayAct []byte
	// Claims is the verified JSON payload of the token (for an opaque
	// token, the introspection answer).
	Claims []byte
	// Expiry is the exp claim as Unix seconds, 0 when unknown.
	Expiry int64
}

// Actor is one party of a delegation chain.
type Actor struct {
	Subject  string
	Issuer   string
	ClientID string
}

// CredentialSource gives the MCP server a credential of its own for a
// request (RFC 8693 token exchange, client credentials, a managed secret):
// never the client's token.
type CredentialSource interface {
	// Header is the lowercase header the credential goes into.
	Header() string
	// Credential returns the credential for the request's verified token.
	// Any error answers the request 503 (upstream_credential_unavailable):
	// it is never forwarded without its credential. An error with a
	// Reason() string method names the cause for logs and metrics; error
	// texts must not hold secrets.
	Credential(ctx context.Context, req CredentialRequest) (UpstreamCredential, error)
}

// CredentialRequest is what a credential is asked for with.
type CredentialRequest struct {
	// Token is the client's verified access token (the subject token of a
	// token exchange). Never log it.
	Token    string
	Identity *Identity
	// Scopes, when not nil, is the policy's narrowing of the credential's
	// scopes.
	Scopes []string
}

// UpstreamCredential is a header to set on the upstream request, replacing
// whatever the client sent in it.
type UpstreamCredential struct {
	Header string
	Value  string
}

// Authenticator verifies bearer tokens.
type Authenticator interface {
	// Authenticate verifies token. A rejection is a *TokenError (any other
	// error counts as an invalid token).
	Authenticate(ctx context.Context, token string) (*Identity, error)
}

// TokenError is an Authenticator's answer for a token it rejects or cannot
// judge.
type TokenError struct {
	// Reason names the cause from a closed set (a metric label: never token
	// material).
	Reason string
	// Unavailable means the authenticator could not decide (no keys yet,
	// introspection down): the answer is 503, not 401.
	Unavailable bool
	// Err is the underlying error, for logs.
	Err error
}

func (e *TokenError) Error() string {
	if e.Err != nil {
		return e.Err.Error()
	}
	return e.Reason
}

func (e *TokenError) Unwrap() error { return e.Err }

// Policy is one immutable policy generation (policy.Generation implements
// it).
type Policy interface {
	Decide(ctx context.Context, req *policy.Request, tok *policy.Token, msgs []policy.MCP) ([]policy.Decision, error)
	Revision() string
	// ScopesSupported, ScopePrefixes and BaselineScopes describe the scope
	// vocabulary of the policy: read once per generation, when it is
	// published. BaselineScopes are asked for in every 401 challenge.
	ScopesSupported() []string
	ScopePrefixes() []string
	BaselineScopes() []string
}

// Recorder observes every decision after it was made (metrics, decision
// log). It must not block.
type Recorder interface {
	Record(ctx context.Context, d *Decision)
}
