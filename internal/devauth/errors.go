package devauth

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/ory/fosite"
)

// oauthError is an error response of RFC 6749 §5.2 / §4.1.2.1, RFC 7591
// §3.2.2 or RFC 8707 §2: an error code, a human-readable description and
// the HTTP status it is sent with (when it is not redirected).
type oauthError struct {
	status int
	code   string
	desc   string
}

func (e *oauthError) Error() string { return e.code + ": " + e.desc }

func newError(status int, code, desc string) *oauthError {
	return &oauthError{status: status, code: code, desc: desc}
}

// Error codes this package produces itself (fosite produces the others).
const (
	errInvalidRequest          = "invalid_request"
	errInvalidClient           = "invalid_client"
	errInvalidGrant            = "invalid_grant"
	errInvalidScope            = "invalid_scope"
	errInvalidTarget           = "invalid_target"
	errAccessDenied            = "access_denied"
	errUnsupportedGrantType    = "unsupported_grant_type"
	errUnsupportedResponseType = "unsupported_response_type"
	errInvalidRedirectURI      = "invalid_redirect_uri"
	errInvalidClientMetadata   = "invalid_client_metadata"
	errServerError             = "server_error"
	errTemporarilyUnavailable  = "temporarily_unavailable"
)

func invalidRequest(desc string) *oauthError {
	return newError(http.StatusBadRequest, errInvalidRequest, desc)
}

func invalidTarget(desc string) *oauthError {
	return newError(http.StatusBadRequest, errInvalidTarget, desc)
}

func invalidMetadata(desc string) *oauthError {
	return newError(http.StatusBadRequest, errInvalidClientMetadata, desc)
}

func invalidRedirect(desc string) *oauthError {
	return newError(http.StatusBadRequest, errInvalidRedirectURI, desc)
}

// asOAuthError turns any error (ours or fosite's) into an oauthError. The
// description of a fosite error is its description and hint, never its
// debug text (which may quote internal state).
func asOAuthError(err error) *oauthError {
	if e := (*oauthError)(nil); errors.As(err, &e) {
		return e
	}
	rfc := fosite.ErrorToRFC6749Error(err)
	desc := rfc.DescriptionField
	if rfc.HintField != "" {
		desc += " " + rfc.HintField
	}
	status := rfc.CodeField
	if status == 0 {
		status = http.StatusInternalServerError
	}
	return &oauthError{status: status, code: rfc.ErrorField, desc: desc}
}

// description makes s fit the error_description syntax (RFC 6749
// §5.2: %x20-21 / %x23-5B / %x5D-7E), so that no client parser trips on a
// quote or a backslash.
func description(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '"':
			return '\''
		case r == '\\':
			return '/'
		case r < 0x20 || r > 0x7e:
			return '?'
		}
		return r
	}, s)
}

func noStore(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}

// writeJSON writes v as a no-store JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"server_error"}`)
	}
	noStore(w.Header())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError writes e as the JSON error response of RFC 6749 §5.2.
func writeError(w http.ResponseWriter, e *oauthError) {
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": description(e.desc)})
}
