// Package devauth is a local OAuth 2.1 authorization server for development:
// what "mcpauthz serve --dev" runs so that real MCP clients (the MCP SDKs,
// MCP Inspector, Claude Code, VS Code) can go through the whole MCP
// authorization flow against mcpauthz on one machine. It has no users and
// no login: every authorization is granted to one development user
// (Options.Subject, "dev-user"), after a consent page or at once. Never run
// it where anyone else can reach it.
//
// # Flow
//
// A client discovers the server from the protected resource metadata that
// mcpauthz serves (authorization_servers), then:
//
//  1. reads the metadata: RFC 8414 at /.well-known/oauth-authorization-server
//     and OpenID Connect discovery at /.well-known/openid-configuration (the
//     same document; for an issuer with a path, both well-known forms);
//  2. registers: dynamic client registration (RFC 7591) at /register, public
//     (token_endpoint_auth_method none) or confidential (a client_secret is
//     issued); or uses a client ID metadata document (its client_id is an
//     https URL, or http on a loopback host, whose JSON document the server
//     fetches: at most 16 KiB, within 5 s, no redirects, client_id equal to
//     the URL, redirect_uris present); or is pre-registered (Options.Clients,
//     and always the public client "mcpauthz-dev");
//  3. sends the user to /authorize with response_type=code, PKCE S256
//     (required: plain and a missing challenge are refused), state, scope and
//     resource (RFC 8707). The redirect URI must be registered exactly,
//     except that a loopback http redirect (127.0.0.1, [::1], localhost)
//     matches on any port (RFC 8252 §7.3). The resource must be one of
//     Options.Resources (else invalid_target); without one, the code is
//     bound to the first. Errors before the client and its redirect URI are
//     known to be good (unknown client, unregistered redirect, a metadata
//     document that cannot be used) are shown to the user, as an HTML page or
//     JSON, and never redirected; later ones are redirected with error,
//     error_description, state and iss (RFC 9207);
//  4. consent: with ApprovePage the server renders a page (html/template,
//     no script) naming the client, its redirect URI, the resource and a
//     ticked checkbox per requested scope; Approve grants the ticked ones,
//     Deny redirects access_denied. The form carries a random pending-request
//     ID and a CSRF token bound to it, both single-use, and is refused when a
//     browser says it was posted from another site (net/http's
//     CrossOriginProtection). The page cannot be framed (CSP frame-ancestors
//     'none', X-Frame-Options DENY) and allows no script at all (its one
//     style sheet passes by hash). With ApproveAuto every requested scope is
//     granted at once, for scripts and CI, when the redirect URI is a
//     loopback one; any other redirect URI still gets the page, so that a web
//     page cannot register a client with its own redirect URI and collect
//     codes for the development user without the user seeing it;
//  5. redeems the code at /token (single-use, Options.CodeTTL, default 60 s;
//     a replayed code revokes the tokens issued from it, RFC 6749 §4.1.2)
//     with its code_verifier, and receives an RFC 9068 access token (a JWT
//     with typ at+jwt, signed RS256 by the development key: iss, sub, aud =
//     the resource, scope, client_id, jti, iat, nbf, exp) and a refresh token
//     (always, offline_access or not);
//  6. refreshes at /token: every refresh rotates the refresh token and
//     retires the previous access token; presenting a used refresh token is
//     taken as theft and revokes the whole family (every token descended from
//     the authorization, RFC 6819 §5.2.2.3);
//  7. after a 403 insufficient_scope from mcpauthz, authorizes again with
//     more scopes. Clients registered without a scope list may be granted any
//     valid scope, named at registration or not (the SDKs register with the
//     scope of the first challenge and step up later); pre-registered clients
//     with Client.Scopes are limited to those;
//  8. revokes at /revoke (RFC 7009): an access or refresh token revokes its
//     whole grant.
//
// Confidential clients may also use client_credentials (sub = client_id,
// aud = the resource parameter or the default resource). /introspect (RFC
// 7662) answers pre-registered clients with Client.Introspect over
// client_secret_basic: the claims of a live access token, token_use
// refresh_token for a refresh token, {"active":false} for anything revoked,
// expired or unknown.
//
// The server answers only requests whose Host is the issuer's host: a web
// page that points a name of its own at 127.0.0.1 (DNS rebinding) is
// refused with 421.
//
// Every error is the RFC 6749 §5.2 / RFC 7591 §3.2.2 / RFC 8707 JSON object
// (error, error_description) with Cache-Control: no-store. Browser-based
// clients get CORS on the metadata, key set, token, registration and
// revocation endpoints (no endpoint honours cookies).
//
// # Why fosite
//
// The OAuth machinery is github.com/ory/fosite: authorization-code issuance
// and redemption, PKCE verification, client authentication
// (client_secret_basic, client_secret_post, none), refresh-token rotation
// with reuse detection, client credentials, revocation and introspection.
// fosite is a toolkit: it leaves storage, token format, registration and
// the user interface to its user, which is what a development server needs
// (in-memory storage, tokens that are exactly those of devissuer.Mint, our
// own consent page). zitadel/oidc's op package is a complete OpenID
// provider around a large storage interface and its own login redirects,
// with ID tokens and sessions this server has no use for.
//
// What this package adds on top of fosite: RFC 8707 resources (fosite knows
// only its own "audience" parameter), RFC 9207 iss in redirects, dynamic
// registration and client ID metadata documents, loopback redirects on any
// port for localhost (fosite does it for IP literals only), optional state
// (fosite requires 8 characters; a placeholder stands in for a shorter or
// absent one inside fosite, and the client's own value is what is
// redirected), the JWT access-token strategy (devissuer.Mint, so that
// "mcpauthz token" and this server mint identical tokens), a SHA-256
// client-secret hasher (secrets are 256-bit random; bcrypt would cost a
// quarter second per token request), and the storage.
//
// # Storage and concurrency
//
// Everything lives in memory, keyed by signatures (never by the tokens or
// codes themselves), and is bounded: 1000 registered clients, 100 cached
// metadata documents (5 minutes each), 1000 pending consents (10 minutes),
// 10000 codes and 10000 tokens of each kind; beyond a bound the oldest entry
// is evicted, and expired entries are dropped lazily when new ones arrive.
// The server starts no goroutine and has nothing to close. Calls into fosite
// that read or write grants are serialised by one mutex, which makes its
// multi-step updates (check a code, then spend it; rotate a refresh token)
// atomic without transactions. fosite reads the wall clock itself, so the
// server has no injectable clock.
//
// # Logging
//
// One line per registration, grant, token issuance, revocation and refused
// request, with client IDs, scopes and error codes. Tokens, codes, code
// verifiers, client secrets and state are never logged.
//
// # Binding
//
// The package does not listen by itself: Handler serves every endpoint, and
// Listen binds a loopback address (refusing any other unless told
// otherwise). A plain-http issuer must be on a loopback host unless
// Options.AllowRemote. "mcpauthz serve --dev" binds 127.0.0.1 unless told
// otherwise.
package devauth
