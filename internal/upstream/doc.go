// Package upstream gives the upstream MCP server a credential of its own
// for the request mcpauthz allows, instead of the client's token, which
// mcpauthz removes (the MCP specification forbids token passthrough: an
// upstream that receives the client's token could replay it anywhere the
// token is accepted, and its own calls would be indistinguishable from the
// client's).
//
// # Sources
//
// A source is configured by name and asked once per allowed request
// (Credential(ctx, SubjectToken)) for what to set on the upstream request:
// a header and its value, replacing whatever the client sent.
//
//   - TokenExchange exchanges the client's verified token at an
//     authorization server: RFC 8693 (grant_type
//     urn:ietf:params:oauth:grant-type:token-exchange, subject_token,
//     subject_token_type, requested_token_type, audience, resource, scope)
//     or the Microsoft identity platform's on-behalf-of flow (profile
//     entra_obo: grant_type urn:ietf:params:oauth:grant-type:jwt-bearer,
//     assertion, requested_token_use=on_behalf_of, scope). The upstream
//     token represents the same user, for the upstream's audience.
//   - ClientCredentials holds a token for mcpauthz itself (RFC 6749 §4.4),
//     refreshed in the background; the same token serves every request.
//   - Static serves a secret read from a file (a Kubernetes Secret mount)
//     and follows its changes.
//
// The token endpoint is configured, or discovered in the background from
// the issuer's RFC 8414 or OpenID Connect metadata (whose issuer must match
// exactly). mcpauthz authenticates as a client with client_secret_basic,
// client_secret_post, private_key_jwt (RFC 7523: a fresh assertion per
// request with iss = sub = client_id, aud = the token endpoint, a random
// jti and a 60-second exp) or tls_client_auth (RFC 8705: a client
// certificate on the source's own TLS configuration, reloaded when its
// files change). Redirects are never followed; answers are read up to
// 1 MiB.
//
// # Answers
//
// A 200 answer must be application/json and a strict JSON object
// (duplicate names and invalid UTF-8 are refused) with a non-empty string
// access_token that fits its header (token68 after a scheme such as
// Bearer; a plain header value otherwise; at most 32 KiB), token_type
// Bearer (N_A only for non-access tokens in a raw header),
// issued_token_type equal to the requested type (RFC 8693; a missing one
// only with AllowMissingIssuedTokenType), and expires_in, when present, a
// non-negative integer. refresh_token is discarded. A 4xx with an RFC 6749
// §5.2 error object is ReasonRejected with its code; any other status is
// ReasonBadStatus.
//
// # Caching
//
// TokenExchange caches successes in a bounded LRU
// (github.com/hashicorp/golang-lru/v2), keyed by the SHA-256 of the
// subject token's issuer, subject, client ID, the token itself and the
// chosen scopes; the token is not kept as a key. An entry is served until
// the issued token's expires_in, less 10% of it (at most one minute),
// counted from when the request was sent, and never past the subject
// token's exp; an answer without expires_in is not cached. Concurrent
// misses for one key share one exchange, which runs detached from the
// requests within the source's timeout (each request waits at most until
// its own context ends); at most max_concurrent exchanges run at once per
// source. Failures are not cached, so a recovered authorization server is
// used at once; the concurrency bound limits the load a failing one sees.
// A warm hit costs one SHA-256 over the key material and an LRU lookup,
// without allocating.
//
// # Failure
//
// Every failure is an *Error that wraps ErrUnavailable and carries a
// closed Reason (timeout, unreachable, bad_status, invalid_response,
// rejected with Code, overloaded, discovery_failed, file_unreadable, ...).
// The caller answers 503 and never forwards the request without its
// credential. Error messages and log lines name sources, endpoints, files
// and causes; never a credential, a subject token, a client secret or an
// assertion. Descriptions that an authorization server sends in its
// errors are filtered before they are quoted (see sanitizeDescription).
//
// # Lifecycle
//
// Constructors validate, read secrets and keys, and start their
// background goroutines (discovery, the client_credentials refresher, the
// static poller); none of them contacts an authorization server before it
// returns, so readiness never depends on one. Close stops the goroutines
// and waits for them.
package upstream
