package policy

import (
	"github.com/go-json-experiment/json/jsontext"
)

// Request is input.request: the HTTP request as Envoy saw it.
type Request struct {
	Method string
	// Path is the raw :path without the query string.
	Path string
	Host string
	// Headers are lowercased; repeated headers are joined with ",". The
	// engine drops authorization, proxy-authorization and cookie: policy
	// never sees credentials.
	Headers map[string]string
	// Query holds the decoded query parameters.
	Query map[string][]string
}

// Token is input.token: the verified access token.
type Token struct {
	Issuer   string
	Subject  string
	ClientID string
	Audience []string
	// Scopes are the granted scopes after the issuer's scope-claim mapping,
	// de-duplicated and sorted.
	Scopes []string
	// Azp is the authorized party (azp), "" when absent.
	Azp string
	// Actors is the delegation chain of the token's act claim (RFC 8693
	// §4.1), the current actor first: input.token.act. Empty without act.
	Actors []Actor
	// MayAct is the may_act claim (a JSON object), nil when absent:
	// input.token.may_act (null then).
	MayAct jsontext.Value
	// Claims is the raw, verified JSON payload of the token (a JSON object).
	// Nil for tokens without a JSON payload (never for JWTs).
	Claims jsontext.Value
	// Expiry is the token's exp (Unix seconds), 0 when unknown. It is not
	// part of the input: it bounds how long a decision for this token may be
	// cached (never with 0).
	Expiry int64
}

// Actor is one party of a delegation chain: input.token.act[i].
type Actor struct {
	Subject  string
	Issuer   string
	ClientID string
}

// MCP is input.mcp for one JSON-RPC message (one evaluation per batch
// element).
type MCP struct {
	ProtocolVersion string
	SessionID       string
	// Kind is request, notification, response, stream or session_end.
	Kind string
	// ID is the raw JSON id, nil when absent.
	ID        jsontext.Value
	Method    string
	Tool      string
	Prompt    string
	Arguments jsontext.Value
	// ResourceURI is the normalised resource URI.
	ResourceURI  string
	ResourceURIs []string
	TaskID       string
}

// Decision is data.mcp.authz.decision for one evaluation.
type Decision struct {
	Allow  bool
	Reason string
	// RequiredScopes are the scopes that would allow the request; non-empty
	// only on a denial that more scope can fix.
	RequiredScopes []string
	// Headers are extra headers for the upstream on allow.
	Headers map[string]string
	// Shadow marks a denial the policy wants logged but not enforced
	// (reserved for the shadow-mode feature).
	Shadow bool
	// UpstreamCredential names the configured upstream credential source
	// (upstream_credentials) whose credential the MCP server gets on allow;
	// "" for none.
	UpstreamCredential string
	// UpstreamScopes, when not nil, narrows the scopes of that credential
	// (a subset of the source's configured scopes).
	UpstreamScopes []string
	// Revision is the revision of the policy that made the decision; set by
	// the engine, not by the policy.
	Revision string
}
