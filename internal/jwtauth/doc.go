// Package jwtauth verifies access tokens against the configured issuers:
// JWT access tokens locally, opaque tokens by RFC 7662 introspection.
//
// # Lifecycle
//
// NewVerifier validates its Options and reads static key sets and secrets;
// it does no network I/O. Start begins fetching remote key sets; Close
// stops every goroutine the Verifier started (key refreshes, introspection
// calls) and waits for them. Background calls run under the Verifier's own
// context, which only Close cancels: a request ending, or a shutdown
// signal, never cancels a call other requests are waiting for.
//
// # Errors
//
// Verifier.Verify wraps ErrInvalidToken and one precise sentinel for every
// rejection (see Reason), except the errors that mean the verifier cannot
// decide (503): ErrKeysUnavailable (no key set yet, or an unknown kid that
// a current key set could not confirm absent; see Keys) and the
// introspection failures ErrUnavailable and ErrRateLimited, which wrap
// ErrKeysUnavailable so that errors.Is(err, ErrKeysUnavailable) holds for
// every cannot-decide error. Reason maps every error to a label of a
// closed set (Reasons). Error messages never contain token material or
// secrets.
//
// # Routing
//
// A token with the shape of a compact JWS (three dot-separated segments
// whose first decodes, leniently, to a JSON object with an alg member)
// takes the JWT path only. When an issuer has introspection (at most one
// may: an opaque token names no issuer, so a second endpoint would receive
// the first one's tokens), every other token takes the introspection path
// only; without one, it fails as a malformed JWT. A token that fails on
// its path is never tried on the other, so the two paths cannot disagree
// about one token. An issuer with
// introspection and no jwks_uri, jwks_file or hmac_secret_file takes no
// JWTs (ErrType) and discovers no keys.
//
// # Introspection
//
// The token is POSTed (form-urlencoded, token_type_hint=access_token) to
// the configured endpoint with HTTP Basic client authentication, client ID
// and secret each form-urlencoded first (RFC 7662 §2.1, RFC 6749 §2.3.1).
// Redirects are not followed; the answer is read up to 1 MiB within the
// timeout. A transport or TLS error, a timeout, a status other than 200,
// a larger body or one that is not a JSON object is ErrUnavailable. The
// object is then read strictly (see issuer.introspectionIdentity): a
// duplicate name or a non-boolean active is ErrIntrospectionResponse,
// active false is ErrInactive, then token_type, iss, the time claims, aud
// (checked only when present: without it, audience binding rests on the
// authorization server), required claims and cnf are checked.
//
// Concurrent requests with the same token share one call (single-flight).
// The call runs detached from the requests, within the timeout: a request
// whose context ends stops waiting (ErrUnavailable) without cancelling the
// call for the others. A new call needs a free slot of max_concurrent and
// a token of the per-issuer bucket (rate_limit per second, burst of the
// same size, on Options.Clock); otherwise the request fails at once with
// ErrRateLimited, so a flood of random tokens costs the endpoint at most
// rate_limit calls per second. Active answers go to the verified-
// token cache until min(exp, now + cache_ttl); definitive rejections of a
// valid answer (inactive, wrong audience, ...) go to a separate bounded
// negative cache for negative_cache_ttl; failures and invalid answers are
// never cached.
//
// # Verified-token cache
//
// Successful verifications (JWT or introspection) are kept in a bounded
// cache (Options.TokenCacheSize entries, default 10000; CLOCK eviction, sharded)
// keyed by the SHA-256 of the token; the token itself is never kept. An
// entry is never served at or after the token's exp (nor after cache_ttl
// for introspection), and a hit checks the time claims again against the
// clock, so it decides exactly as a full verification would. Only
// successes are cached: invalid tokens can neither grow the cache nor
// evict valid entries. One token may have several valid spellings
// (a high-s ECDSA signature and its low-s twin); each is its own entry, which the bound makes
// harmless. When a key set refresh removes a key (no key with the same kid
// and public key in the new set), the entries verified with it are purged; a per-issuer generation counter keeps a verification that loaded
// the old set from re-inserting its result after the purge. Revocation is
// the policy's job and runs on every request after Verify, cached or not.
//
// A second cache of the same size remembers, for 30 seconds, the JWTs
// rejected after their signature was checked (a bad signature, or an
// authentic token failing a claim check), so that a token sent again
// costs a hash and a lookup instead of a signature verification. It is
// consulted only after the verified-token cache, holds hashes and errors
// only, and cannot evict verified entries. Rejections that time can undo
// (nbf or iat in the future, max_lifetime measured from now) are not
// kept, and an entry is ignored once the issuer's key set is replaced
// (the new set may hold the key). Tokens refused before the signature
// check (malformed, unknown issuer or kid, algorithm) never enter it:
// that check is cheaper than the cache.
// Identities returned share their slices with the cache and must not be
// modified.
//
// # Parsing
//
// Tokens are compact JWS only: exactly three non-empty segments of
// canonical, unpadded base64url (so one token has one spelling; the std
// alphabet, padding, CR/LF and non-zero trailing bits are refused). The
// header and the payload are decoded by this package with
// github.com/go-json-experiment/json: duplicate member names, invalid UTF-8,
// trailing data and more than 32 levels of nesting are rejected, so the
// claims handed to the policy (Identity.Claims, the exact verified bytes)
// cannot be read differently by another JSON parser. The header is
// decoded and checked first (it decides most rejections); only the header
// and iss are read before the signature is verified. The signature is
// checked by jwx's verifier of the header's algorithm (jws.NewVerifier)
// over the signing input as sent, with the single key selected below:
// jws.Verify would parse the token once more, which costs as much as an
// RS256 verification itself.
//
// # Subject
//
// sub must be a non-empty string (ErrMissingSubject), in JWTs and
// introspection answers alike, unless the issuer sets RequireSubject to
// false: identity headers, subject revocation and session binding key on
// it, and would silently do nothing without it. A sub of another type is
// ErrMalformed (ErrIntrospectionResponse) whatever the setting.
//
// # Header decisions
//
//   - crit is rejected whatever its value: no extension is supported.
//   - jwk, jku and x5u are rejected (they would name the key to verify
//     with); b64 is rejected (RFC 7797 requires crit). x5c, x5t and
//     x5t#S256 are ignored: keys come only from the issuer's configured or
//     discovered key set.
//   - typ is checked only for issuers with token_type at+jwt.
//   - max_lifetime, when set, bounds exp - iat (exp - now - leeway
//     without iat): ErrLifetime.
//   - A token without kid is accepted only when its issuer's set has
//     exactly one usable key; otherwise it fails with ErrUnknownKey (and no
//     refetch, which could not help).
//   - Tokens with a cnf claim (DPoP or mTLS bound) are rejected with
//     ErrType: their binding cannot be checked by a bearer verifier.
//
// # Keys
//
// Each issuer has its own key set and tokens are verified only with the
// keys of the issuer their iss selected. Fetched and static sets are
// filtered (see buildKeySet): symmetric keys, encryption keys, keys with a
// disallowed alg, weak RSA keys, invalid points and ambiguous duplicate
// kids are dropped. Keys without alg are accepted; the header alg must
// then be allowed and fit the key type and curve. HMAC algorithms use only
// the issuer's hmac_secret_file, never a key from a set.
//
// Remote sets are refreshed in the background by jwk.Cache and published
// with an atomic.Pointer; a request never waits for a scheduled refresh.
// An unknown kid (or a missing set) triggers one refetch, single-flight
// and at most once per unknown_kid_interval per issuer (on Options.Clock);
// the request waits for it at most unknown_kid_wait (default 100ms, well
// inside Envoy's default ext_authz timeout of 200ms), within its context,
// while the fetch goes on in the background within fetch_timeout. A
// request that joined a fetch already under way tries once more after it,
// within the same rate limit and the same wait; a rate-limited request
// does not wait. If the kid is still unknown, the answer is ErrUnknownKey
// when the key set is known to be current (the last fetch that ended
// succeeded, and ended before the wait did), and ErrKeysUnavailable
// otherwise: with the endpoint hanging or failing, the key may exist, and
// a 401 would make an MCP client discard a token a 503 lets it retry.
// An empty, unparsable or oversized (1 MiB) fetched set never replaces a
// usable one (and counts as a failed fetch).
//
// Until an issuer has loaded a usable set, a background loop retries with
// exponential backoff (250ms up to 30s or min_refresh). Key sets are not
// considered stale after any time: the last good set stays in use for as
// long as the JWKS endpoint fails (logged and reported through
// Options.OnJWKSRefresh).
package jwtauth
