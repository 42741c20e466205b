package jwtauth

import (
	"errors"
)

// Identity is a verified access token, reduced to what authorization needs.
type Identity struct {
	Issuer   string
	Subject  string
	ClientID string
	Audience []string
	// Scopes are the granted scopes (from the issuer's scope claims and mapped
	// claims), de-duplicated and sorted.
	Scopes []string
	// JTI is the token identifier, empty when absent.
	JTI string
	// Claims is the verified JSON payload of the token, as sent by the issuer
	// (strict JSON: a payload with duplicate names is rejected).
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
	ErrAudience       = errors.New("audience not accepted")
	ErrIssuer         = errors.New("issuer mismatch")
	ErrInactive       = errors.New("token inactive")
	ErrRevoked        = errors.New("token revoked")
)

// Reason maps a Verify error to a short, closed-set identifier for logs and
// metric labels ("expired", "bad_signature", ...). It never includes token
// material.
func Reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	if errors.Is(err, ErrKeysUnavailable) {
		return "keys_unavailable"
	}
	return "invalid_token"
}

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
	{ErrMissingClaim, "missing_claim"},
	{ErrAudience, "wrong_audience"},
	{ErrIssuer, "wrong_issuer"},
	{ErrInactive, "inactive"},
	{ErrRevoked, "revoked"},
}
