// Package jwtauth extracts bearer tokens and verifies JWT access tokens
// against the configured issuers.
//
// # Errors
//
// ExtractBearer returns ErrNoBearer (no credential: 401 without an error
// attribute), ErrMalformedHeader (several comma-joined values: 400) or an
// error wrapping ErrInvalidToken and ErrMalformed (401 invalid_token).
// Verifier.Verify wraps ErrInvalidToken and one precise sentinel for every
// rejection (see Reason), except ErrKeysUnavailable, which means the
// verifier cannot decide yet (503). Error messages never contain token
// material.
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
// cannot be read differently by another JSON parser. Only the header and
// iss are read before the signature is verified.
//
// # Header decisions
//
//   - crit is rejected whatever its value: no extension is supported.
//   - jwk, jku and x5u are rejected (they would name the key to verify
//     with); b64 is rejected (RFC 7797 requires crit). x5c, x5t and
//     x5t#S256 are ignored: keys come only from the issuer's configured or
//     discovered key set.
//   - typ is checked only for issuers with token_type at+jwt.
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
// the request waits for it at most one second, within its context. A
// request that joined a fetch already under way tries once more after it,
// within the same rate limit; a rate-limited request fails at once with
// ErrUnknownKey. An empty, unparsable or oversized (1 MiB)
// fetched set never replaces a usable one.
//
// Until an issuer has loaded a usable set, a background loop retries with
// exponential backoff (250ms up to 30s or min_refresh). Key sets are not
// considered stale after any time: the last good set stays in use for as
// long as the JWKS endpoint fails (logged and reported through
// Options.OnJWKSRefresh).
package jwtauth
