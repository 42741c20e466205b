package extauthz

import (
	"errors"
	"strings"
)

// The errors of extractBearer.
var (
	// errNoBearer means no bearer credential was presented: the header is
	// absent or empty, uses another scheme (Basic, DPoP, ...), or is
	// "Bearer" with nothing usable after it. The caller answers 401
	// without an error attribute (RFC 6750 §3.1).
	errNoBearer = errors.New("no bearer token")
	// errMalformedHeader means the Authorization value contains a comma,
	// which is how Envoy joins repeated headers: several credentials were
	// sent. The caller answers 400 invalid_request (RFC 6750 §3.1).
	errMalformedHeader = errors.New("malformed authorization header")
	// errMalformedBearer means the credential is not a b64token: a
	// malformed token (401 invalid_token).
	errMalformedBearer = errors.New("bearer credential is not a b64token")
)

// extractBearer returns the token of an Authorization header value of the
// form "Bearer" 1*SP b64token (RFC 6750 §2.1). The scheme is matched
// case-insensitively (RFC 9110 §11.1).
//
// It returns errNoBearer when there is no bearer credential,
// errMalformedHeader when the value contains a comma (several values
// joined), and errMalformedBearer when the credential does not match the
// b64token grammar (for example when it has trailing white space, CR/LF,
// quotes or non-ASCII bytes).
func extractBearer(authorization string) (string, error) {
	if authorization == "" {
		return "", errNoBearer
	}
	if strings.IndexByte(authorization, ',') >= 0 {
		return "", errMalformedHeader
	}
	sp := strings.IndexByte(authorization, ' ')
	if sp < 0 {
		// "Bearer", "Bearer<t>", "Bearer\t<t>", "Basic".
		return "", errNoBearer
	}
	if !strings.EqualFold(authorization[:sp], "Bearer") {
		return "", errNoBearer
	}
	token := strings.TrimLeft(authorization[sp:], " ")
	if token == "" {
		return "", errNoBearer
	}
	if !isB64Token(token) {
		return "", errMalformedBearer
	}
	return token, nil
}

// isB64Token reports whether s matches
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	i := 0
	for i < len(s) && isB64TokenChar(s[i]) {
		i++
	}
	if i == 0 {
		return false
	}
	for i < len(s) && s[i] == '=' {
		i++
	}
	return i == len(s)
}

func isB64TokenChar(c byte) bool { return b64TokenChars[c] }

// b64TokenChars is the RFC 6750 b64token alphabet as a lookup table: the
// check runs over every byte of every token.
var b64TokenChars = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			t[c] = true
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
			t[c] = true
		}
	}
	return t
}()
