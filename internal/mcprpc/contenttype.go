package mcprpc

import "strings"

// CheckContentType decides whether a POST with Content-Type ct may be
// parsed as an MCP JSON-RPC body. It accepts the media type
// application/json (any letter case) with any parameters, as long as a
// charset parameter, if present, is UTF-8 (any letter case, quoted or not):
// that is what the MCP SDK servers accept, and what Parse reads.
//
// It rejects, with an *Error of reason content_type (CodeInvalidRequest; the
// caller answers 415):
//   - an absent or empty Content-Type;
//   - any other media type, including the +json structured syntax suffixes
//     (application/json-patch+json, application/merge-patch+json) and
//     application/json-seq: they are not JSON-RPC messages, and a server may
//     route them to other handlers;
//   - a charset other than utf-8 ("utf8", "utf-16", "iso-8859-1"): a server
//     that decodes the body by the declared charset reads other text than
//     Parse, which only reads UTF-8;
//   - a charset given twice (readers disagree about which one counts), a
//     charset with quoted-pair escapes (Go's mime keeps the backslash of
//     "utf\-8", JavaScript's content-type drops it), and RFC 2231 extended
//     parameters ("charset*=…", "charset*0=…"), which Go's mime package
//     decodes into charset and JavaScript media-type parsers ignore;
//   - anything that is not a media type by RFC 9110 §8.3.1 (several media
//     types separated by commas, white space around "=", control
//     characters, unterminated quoted strings).
//
// Parameter names are compared case-insensitively; parameters other than
// charset are accepted whatever their value.
func CheckContentType(ct string) error {
	s := trimOWS(ct)
	if s == "" {
		return contentTypeError("missing Content-Type")
	}
	i := 0
	for i < len(s) && s[i] != ';' && s[i] != ' ' && s[i] != '\t' {
		i++
	}
	typ, sub, ok := strings.Cut(s[:i], "/")
	if !ok || !isToken(typ) || !isToken(sub) {
		return contentTypeError("malformed media type")
	}
	if !strings.EqualFold(typ, "application") || !strings.EqualFold(sub, "json") {
		return contentTypeError("media type is not application/json")
	}
	charsets := 0
	rest := s[i:]
	for {
		rest = trimLeftOWS(rest)
		if rest == "" {
			break
		}
		if rest[0] != ';' {
			return contentTypeError("malformed media type parameters")
		}
		rest = trimLeftOWS(rest[1:])
		if rest == "" || rest[0] == ';' {
			continue // empty parameter: allowed by RFC 9110
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 || !isToken(rest[:eq]) {
			return contentTypeError("malformed media type parameter")
		}
		name := rest[:eq]
		value, n, escaped, ok := parameterValue(rest[eq+1:])
		if !ok {
			return contentTypeError("malformed media type parameter value")
		}
		rest = rest[eq+1+n:]
		switch {
		case strings.IndexByte(name, '*') >= 0:
			return contentTypeError("extended (RFC 2231) media type parameters are not accepted")
		case strings.EqualFold(name, "charset"):
			charsets++
			switch {
			case charsets > 1:
				return contentTypeError("charset given more than once")
			case escaped:
				// Go's mime keeps the backslash of "\-", JavaScript's
				// content-type drops it: the readers disagree.
				return contentTypeError("charset with a quoted-pair escape")
			case !strings.EqualFold(value, "utf-8"):
				return contentTypeError("charset is not UTF-8")
			}
		}
	}
	return nil
}

func contentTypeError(msg string) *Error {
	return newError(ReasonContentType, CodeInvalidRequest, nil, "Unsupported Content-Type: "+msg)
}

// parameterValue reads a token or a quoted-string at the start of s and
// returns its value (quoted-pairs resolved), the number of bytes read, and
// whether the value had quoted-pairs.
func parameterValue(s string) (value string, n int, escaped, ok bool) {
	if s == "" {
		return "", 0, false, false
	}
	if s[0] != '"' {
		for n < len(s) && isTokenChar(s[n]) {
			n++
		}
		return s[:n], n, false, n > 0
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), i + 1, escaped, true
		case c == '\\':
			i++
			if i == len(s) || !isQuotedTextChar(s[i]) && s[i] != '"' && s[i] != '\\' {
				return "", 0, false, false
			}
			escaped = true
			b.WriteByte(s[i])
		case isQuotedTextChar(c):
			b.WriteByte(c)
		default:
			return "", 0, false, false
		}
	}
	return "", 0, false, false // unterminated
}

// isQuotedTextChar is qdtext of RFC 9110 §5.6.4 (HTAB, SP, visible ASCII
// but '"' and '\', obs-text).
func isQuotedTextChar(c byte) bool {
	return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) || c >= 0x80
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// isTokenChar is tchar of RFC 9110 §5.6.2.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func trimOWS(s string) string { return strings.TrimRight(trimLeftOWS(s), " \t") }

func trimLeftOWS(s string) string { return strings.TrimLeft(s, " \t") }
