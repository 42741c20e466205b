package jwtauth

import (
	"errors"
	"slices"
)

// Identity is a verified access token, reduced to what authorization needs.
//
// Identities returned by Verify may share their slices with the
// verified-token cache and with other requests: callers must not modify
// them.
type Identity struct {
	Issuer string
	// Subject is sub; empty only for issuers with require_subject false.
	Subject  string
	ClientID string
	Audience []string
	// Scopes are the granted scopes (from the issuer's scope claims and mapped
	// claims), de-duplicated and sorted.
	Scopes []string
	// JTI is the token identifier, empty when absent.
	JTI string
	// Azp is the authorized party (OpenID Connect), empty when absent.
	Azp string
	// Actors is the delegation chain of the act claim (RFC 8693 §4.1),
	// the current actor first; nil when the token has no act.
	Actors []Actor
	// MayAct is the may_act claim (a JSON object), nil when absent.
	MayAct []byte
	// Claims is the verified JSON payload of the token, as sent by the issuer
	// (strict JSON: a payload with duplicate names is rejected). For an
	// opaque token it is the introspection answer (RFC 7662 §2.2), as sent
	// by the authorization server.
	Claims []byte
	// Expiry is the exp claim as Unix seconds (0 when the token has none,
	// which only introspection results may lack).
	Expiry int64
}

// The errors a Verifier returns. Every rejection of the token itself wraps
// ErrInvalidToken (answered with 401 invalid_token) together with a more
// precise cause from the list below; ErrKeysUnavailable means the verifier
// could not decide (answered with 503).
var (
	ErrInvalidToken    = errors.New("invalid token")
	ErrKeysUnavailable = errors.New("verification keys unavailable")

	ErrMalformed      = errors.New("malformed token")
	ErrTooLarge       = errors.New("token too large")
	ErrUnknownIssuer  = errors.New("unknown issuer")
	ErrBadSignature   = errors.New("signature verification failed")
	ErrUnknownKey     = errors.New("no key matches the token's kid")
	ErrAlgorithm      = errors.New("algorithm not allowed")
	ErrCritical       = errors.New("unsupported critical header")
	ErrType           = errors.New("token type not accepted")
	ErrExpired        = errors.New("token expired")
	ErrNotYetValid    = errors.New("token not yet valid")
	ErrIssuedInFuture = errors.New("token issued in the future")
	ErrMissingClaim   = errors.New("required claim missing")
	// ErrMissingSubject means sub is absent or empty and the issuer
	// requires a subject (the default).
	ErrMissingSubject = errors.New("subject missing")
	ErrAudience       = errors.New("audience not accepted")
	ErrIssuer         = errors.New("issuer mismatch")
	ErrInactive       = errors.New("token inactive")
	// ErrLifetime means exp - iat (or exp - now without iat) exceeds the
	// issuer's max_lifetime.
	ErrLifetime = errors.New("token lifetime exceeds max_lifetime")
	// ErrIntrospectionResponse means the introspection endpoint answered
	// 200 with a JSON object that is not a valid RFC 7662 answer
	// (duplicate names, active missing or not a boolean, claims of the
	// wrong type). The token is rejected (401), as if inactive, and the
	// answer is not cached.
	ErrIntrospectionResponse = errors.New("invalid introspection response")
)

// The errors of introspection that mean "cannot decide". Both wrap
// ErrKeysUnavailable, so errors.Is(err, ErrKeysUnavailable) holds and
// callers that answer 503 for it need no change; Reason tells them apart.
var (
	// ErrUnavailable means the introspection endpoint could not be asked
	// or did not answer usably: transport or TLS error, timeout, a status
	// other than 200, a body over 1 MiB or one that is not a JSON object.
	ErrUnavailable error = &unavailableError{"introspection unavailable", ErrKeysUnavailable}
	// ErrRateLimited means the token needed an introspection call and the
	// issuer's max_concurrent or rate_limit was reached: a flood of random
	// tokens cannot turn into a flood of calls to the endpoint. It wraps
	// ErrUnavailable.
	ErrRateLimited error = &unavailableError{"introspection rate limit exceeded", ErrUnavailable}
)

// unavailableError is a sentinel that wraps a more general one.
type unavailableError struct {
	msg    string
	parent error
}

func (e *unavailableError) Error() string { return e.msg }
func (e *unavailableError) Unwrap() error { return e.parent }

// Reason maps an error of Verify to a short identifier
// for logs and metric labels. It never includes token material. The set
// of labels is closed (see Reasons):
//
//	token_too_large             ErrTooLarge
//	malformed_token             ErrMalformed
//	unknown_issuer              ErrUnknownIssuer
//	unknown_key                 ErrUnknownKey
//	algorithm_not_allowed       ErrAlgorithm
//	critical_header             ErrCritical
//	wrong_token_type            ErrType
//	bad_signature               ErrBadSignature
//	expired                     ErrExpired
//	not_yet_valid               ErrNotYetValid
//	issued_in_future            ErrIssuedInFuture
//	lifetime_too_long           ErrLifetime
//	missing_claim               ErrMissingClaim
//	missing_subject             ErrMissingSubject
//	wrong_audience              ErrAudience
//	wrong_issuer                ErrIssuer
//	inactive                    ErrInactive
//	bad_introspection_response  ErrIntrospectionResponse
//	introspection_rate_limited  ErrRateLimited
//	introspection_unavailable   ErrUnavailable
//	keys_unavailable            ErrKeysUnavailable
//	invalid_token               any other error
func Reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	for _, r := range unavailableReasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "invalid_token"
}

// Reasons returns every label Reason can return, sorted.
func Reasons() []string {
	out := []string{"invalid_token"}
	for _, r := range reasons {
		out = append(out, r.reason)
	}
	for _, r := range unavailableReasons {
		out = append(out, r.reason)
	}
	slices.Sort(out)
	return out
}

// reasons are the precise causes of a rejection: a Verify error wraps
// exactly one of them (besides ErrInvalidToken).
var reasons = []struct {
	err    error
	reason string
}{
	{ErrTooLarge, "token_too_large"},
	{ErrMalformed, "malformed_token"},
	{ErrUnknownIssuer, "unknown_issuer"},
	{ErrUnknownKey, "unknown_key"},
	{ErrAlgorithm, "algorithm_not_allowed"},
	{ErrCritical, "critical_header"},
	{ErrType, "wrong_token_type"},
	{ErrBadSignature, "bad_signature"},
	{ErrExpired, "expired"},
	{ErrNotYetValid, "not_yet_valid"},
	{ErrIssuedInFuture, "issued_in_future"},
	{ErrLifetime, "lifetime_too_long"},
	{ErrMissingClaim, "missing_claim"},
	{ErrMissingSubject, "missing_subject"},
	{ErrAudience, "wrong_audience"},
	{ErrIssuer, "wrong_issuer"},
	{ErrInactive, "inactive"},
	{ErrIntrospectionResponse, "bad_introspection_response"},
}

// unavailableReasons label the cannot-decide errors, most precise first.
var unavailableReasons = []struct {
	err    error
	reason string
}{
	{ErrRateLimited, "introspection_rate_limited"},
	{ErrUnavailable, "introspection_unavailable"},
	{ErrKeysUnavailable, "keys_unavailable"},
}
