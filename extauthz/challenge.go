package extauthz

import (
	"strings"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// OAuth error codes of RFC 6750 §3.1 used in challenges.
const (
	errInvalidRequest    = "invalid_request"
	errInvalidToken      = "invalid_token"
	errInsufficientScope = "insufficient_scope"
)

// Challenge is one Bearer WWW-Authenticate challenge (RFC 6750 §3, RFC 9728
// §5.1). String is the only place a challenge value is built.
type Challenge struct {
	ResourceMetadata string
	Scopes           []string
	Error            string
	ErrorDescription string
}

// String renders the challenge as one header value. Parameter order is fixed
// per kind and follows the MCP specification's examples: a step-up challenge
// starts with error="insufficient_scope"; every other challenge starts with
// resource_metadata. Names are lowercase and every value is quoted, because
// the MCP SDKs parse challenges with a regular expression that knows neither
// escapes nor case. Values are sanitised to their RFC 6750 grammars rather
// than escaped for the same reason: scope tokens that are not valid are
// dropped, an empty scope is omitted, and error_description keeps only
// %x20-21 / %x23-5B / %x5D-7E without "=" (so no parameter can be spoofed
// inside it).
func (c Challenge) String() string {
	var b strings.Builder
	b.Grow(64 + len(c.ResourceMetadata) + 16*len(c.Scopes) + len(c.ErrorDescription))
	b.WriteString("Bearer")
	sep := " "
	param := func(name, value string) {
		if value == "" {
			return
		}
		b.WriteString(sep)
		b.WriteString(name)
		b.WriteString(`="`)
		b.WriteString(value)
		b.WriteByte('"')
		sep = ", "
	}
	scope := joinScopes(c.Scopes)
	metadata := sanitizeURI(c.ResourceMetadata)
	errCode := sanitizeToken(c.Error)
	if errCode == errInsufficientScope {
		param("error", errCode)
		param("scope", scope)
		param("resource_metadata", metadata)
	} else {
		param("resource_metadata", metadata)
		param("scope", scope)
		param("error", errCode)
	}
	param("error_description", sanitizeDescription(c.ErrorDescription))
	return b.String()
}

// joinScopes joins the scope tokens that are safe in a challenge with single
// spaces. A token containing "=" is legal in OAuth but dropped here: the SDK
// regexes would read "resource_metadata=x" inside the scope value as that
// parameter.
func joinScopes(scopes []string) string {
	var b strings.Builder
	for _, s := range scopes {
		if !oauth.ValidScope(s) || strings.IndexByte(s, '=') >= 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s)
	}
	return b.String()
}

// sanitizeToken keeps an error code only if it is made of the RFC 6750
// error characters (%x20-21 / %x23-5B / %x5D-7E, no space or "=").
func sanitizeToken(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '=' || c == ',' {
			return ""
		}
	}
	return s
}

// sanitizeURI drops a URI that could break out of its quoted string or be
// read as another parameter by the SDK regexes ("="). The resource metadata
// URL comes from validated configuration, so this only guards against
// programming errors.
func sanitizeURI(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '=' {
			return ""
		}
	}
	return s
}

// sanitizeDescription maps every character outside the error_description
// grammar, and "=", to a space, and trims the result to 200 bytes.
func sanitizeDescription(s string) string {
	const max = 200
	out := make([]byte, 0, min(len(s), max))
	for i := 0; i < len(s) && len(out) < max; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '=' {
			c = ' '
		}
		out = append(out, c)
	}
	return strings.TrimSpace(string(out))
}
