package upstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrUnavailable is wrapped by every error a source returns: the upstream
// request cannot be given its credential, and mcpauthz answers 503
// (upstream_credential_unavailable) instead of forwarding it without one.
var ErrUnavailable = errors.New("upstream credential unavailable")

// Reason is the closed set of causes of an *Error, for metric labels and
// logs. It never carries token material.
type Reason string

// The reasons. Reasons lists them all.
const (
	// ReasonTimeout: the token endpoint did not answer within the source's
	// timeout, or the request's own deadline ended while it waited.
	ReasonTimeout Reason = "timeout"
	// ReasonCanceled: the request was cancelled while it waited (the client
	// went away).
	ReasonCanceled Reason = "canceled"
	// ReasonUnreachable: connecting to the token endpoint failed (DNS,
	// TCP, TLS, an answer cut short).
	ReasonUnreachable Reason = "unreachable"
	// ReasonBadStatus: the token endpoint answered a status that is neither
	// 200 nor an RFC 6749 §5.2 error (a redirect, 5xx, a 4xx without a
	// JSON error object).
	ReasonBadStatus Reason = "bad_status"
	// ReasonInvalidResponse: a 200 answer that is not a valid token
	// response (not strict JSON, access_token missing, wrong
	// issued_token_type or token_type, bad expires_in, a token that cannot
	// go into an HTTP header).
	ReasonInvalidResponse Reason = "invalid_response"
	// ReasonRejected: the authorization server refused with an RFC 6749
	// §5.2 error; Error.Code holds its code.
	ReasonRejected Reason = "rejected"
	// ReasonOverloaded: the source's max_concurrent exchanges were already
	// in flight.
	ReasonOverloaded Reason = "overloaded"
	// ReasonDiscoveryFailed: the token endpoint could not be discovered
	// from the issuer's metadata (RFC 8414 / OpenID Connect Discovery).
	ReasonDiscoveryFailed Reason = "discovery_failed"
	// ReasonClientAuth: mcpauthz could not build its own client
	// authentication (the private_key_jwt assertion could not be signed).
	ReasonClientAuth Reason = "client_auth"
	// ReasonExpired: a client_credentials token expired and no refresh
	// has succeeded yet, without a recorded failure.
	ReasonExpired Reason = "expired"
	// ReasonFileUnreadable: a static secret file is missing or cannot be
	// read.
	ReasonFileUnreadable Reason = "file_unreadable"
	// ReasonFileEmpty: a static secret file is empty (after the trailing
	// newline is trimmed).
	ReasonFileEmpty Reason = "file_empty"
	// ReasonFileInvalid: a static secret file is too large or holds bytes
	// that cannot go into an HTTP header value.
	ReasonFileInvalid Reason = "file_invalid"
	// ReasonScopeNotAllowed: the policy asked for scopes that are not a
	// subset of the source's configured scopes (or asked a source that
	// cannot narrow its scopes to narrow them).
	ReasonScopeNotAllowed Reason = "scope_not_allowed"
	// ReasonNoSubjectToken: a token exchange was asked for without the
	// client's verified token.
	ReasonNoSubjectToken Reason = "no_subject_token"
	// ReasonClosed: the source has been closed.
	ReasonClosed Reason = "closed"
)

// Reasons returns every Reason, for pre-registering metric label values.
func Reasons() []Reason {
	return []Reason{
		ReasonTimeout, ReasonCanceled, ReasonUnreachable, ReasonBadStatus,
		ReasonInvalidResponse, ReasonRejected, ReasonOverloaded,
		ReasonDiscoveryFailed, ReasonClientAuth, ReasonExpired,
		ReasonFileUnreadable, ReasonFileEmpty, ReasonFileInvalid,
		ReasonScopeNotAllowed, ReasonNoSubjectToken, ReasonClosed,
	}
}

// ResultOK is the result label of a successful fetch (see Observer).
const ResultOK = "ok"

// Error is the error of every source. It wraps ErrUnavailable. Its message
// names the source and the cause; it never contains a credential, a
// subject token, a client secret or an assertion (descriptions sent by an
// authorization server are filtered, see sanitizeDescription).
type Error struct {
	// Source is the name of the configured credential source.
	Source string
	// Reason is the closed cause label.
	Reason Reason
	// Code is the RFC 6749 §5.2 error code of a rejection (ReasonRejected
	// only): one of RejectionCodes, or "other".
	Code string
	// Status is the HTTP status of a ReasonBadStatus or ReasonRejected
	// answer, 0 otherwise.
	Status int

	detail string
	cause  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("upstream credential %q: %s", e.Source, e.detail)
}

// Unwrap returns ErrUnavailable and the cause (a transport error, or a
// context error), so errors.Is works for both.
func (e *Error) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrUnavailable}
	}
	return []error{ErrUnavailable, e.cause}
}

// ReasonOf returns the Reason of err, or "" when err is not an *Error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func newError(source string, r Reason, format string, args ...any) *Error {
	return &Error{Source: source, Reason: r, detail: fmt.Sprintf(format, args...)}
}

// ctxError maps the end of a waiting request's context to an error.
func ctxError(ctx context.Context, source, what string) *Error {
	r := ReasonTimeout
	if errors.Is(ctx.Err(), context.Canceled) {
		r = ReasonCanceled
	}
	e := newError(source, r, "request ended before %s", what)
	e.cause = ctx.Err()
	return e
}

// RejectionCodes are the RFC 6749 §5.2, RFC 8693 §2.2.2 and Microsoft
// identity platform error codes that Error.Code reports as themselves;
// any other code is reported as "other", so the label set stays closed.
func RejectionCodes() []string {
	return []string{
		"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
		"unsupported_grant_type", "invalid_scope", "invalid_target",
		"interaction_required", "consent_required", "invalid_resource",
		"temporarily_unavailable", "access_denied", "other",
	}
}

func rejectionCode(code string) string {
	for _, c := range RejectionCodes() {
		if c == code {
			return c
		}
	}
	return "other"
}

// maxDescription caps the part of an error_description kept in an error.
const maxDescription = 200

// sanitizeDescription keeps what of an authorization server's
// error_description may go into an error message and a log line. The text
// comes from a remote party and might echo what it was sent, so: every
// secret of the request (subject token, client secret, assertion) is cut
// out wherever it appears; every run of characters from the token
// alphabets (base64url, base64, token68) that is 24 or more long, or that
// is a piece (8 or more characters) of one of the secrets, is replaced, so
// that neither a token nor a fragment of one passes; then only the
// characters RFC 6749 §5.2 allows are kept, at most maxDescription bytes.
func sanitizeDescription(desc string, secrets ...string) string {
	all := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		if s != "" {
			all = append(all, s, keepAllowed(s))
		}
	}
	cut := func(d string) string {
		for _, s := range all {
			if s != "" {
				d = strings.ReplaceAll(d, s, "[redacted]")
			}
		}
		return d
	}
	// Cut before and after filtering: dropping a character may join the
	// pieces of a secret.
	desc = cut(keepAllowed(cut(desc)))
	var b strings.Builder
	start := -1
	flush := func(end int) {
		run := desc[start:end]
		if len(run) >= 24 || len(run) >= 8 && pieceOf(run, all) {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(run)
		}
		start = -1
	}
	for i := 0; i < len(desc); i++ {
		if isTokenChar(desc[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			flush(i)
		}
		b.WriteByte(desc[i])
	}
	if start >= 0 {
		flush(len(desc))
	}
	out := b.String()
	if len(out) > maxDescription {
		out = out[:maxDescription] + "..."
	}
	return out
}

// keepAllowed drops the characters RFC 6749 §5.2 does not allow in an
// error_description (%x20-21 / %x23-5B / %x5D-7E).
func keepAllowed(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func pieceOf(s string, secrets []string) bool {
	for _, sec := range secrets {
		if strings.Contains(sec, s) {
			return true
		}
	}
	return false
}

// isTokenChar reports whether c belongs to the base64url, base64 or
// token68 alphabets (letters, digits, - . _ ~ + / =).
func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '='
}
