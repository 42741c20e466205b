package mcprpc

import (
	"strings"
)

// NormalizeURI returns the RFC 3986 §6.2.2 syntax-based normal form of a
// resource URI, so that policy can compare and prefix-match URIs:
//
//   - the scheme is lower-cased;
//   - for URIs with an authority ("scheme://…"), the host is lower-cased
//     (userinfo and port are kept as they are);
//   - percent-encoded unreserved characters (A-Z a-z 0-9 - . _ ~) are decoded
//     in every component, and the remaining percent-escapes are upper-cased
//     ("%2f" → "%2F"; an encoded "/" is never decoded);
//   - dot segments are removed from the path (RFC 3986 §5.2.4), after the
//     percent-decoding, so "/a/%2E%2E/b" becomes "/b".
//
// Query and fragment are kept, except for their percent-escapes. Nothing else
// changes: no default port removal, no trailing-slash or empty-path rewriting,
// no IDNA or Unicode normalisation.
//
// NormalizeURI never fails. A URI it cannot parse (a "%" not followed by two
// hex digits), or whose components would change when dot segments are
// removed (a path that would start with "//" without an authority, or a
// relative path whose first segment would look like a scheme), is returned
// unchanged, and policy then matches on it as is.
func NormalizeURI(s string) string {
	if s == "" {
		return s
	}
	rest := s
	b := make([]byte, 0, len(s))
	if i := schemeEnd(s); i > 0 {
		b = appendLowerASCII(b, s[:i])
		b = append(b, ':')
		rest = s[i+1:]
	}
	var ok bool
	hasAuthority := strings.HasPrefix(rest, "//")
	if hasAuthority {
		b = append(b, "//"...)
		rest = rest[2:]
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		authority := rest[:end]
		rest = rest[end:]
		host := authority
		if at := strings.LastIndexByte(authority, '@'); at >= 0 {
			if b, ok = appendPercentNormalized(b, authority[:at+1]); !ok {
				return s
			}
			host = authority[at+1:]
		}
		hostStart := len(b)
		if b, ok = appendPercentNormalized(b, host); !ok {
			return s
		}
		lowerHost(b[hostStart:])
	}
	path, tail := rest, ""
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		path, tail = rest[:i], rest[i:]
	}
	pathStart := len(b)
	if b, ok = appendPercentNormalized(b, path); !ok {
		return s
	}
	if strings.IndexByte(string(b[pathStart:]), '.') >= 0 {
		rooted := b[pathStart] == '/'
		clean := removeDotSegments(string(b[pathStart:]))
		if !rooted {
			// §5.2.4 is written for merged, rooted paths: it turns a
			// rootless "a/../b" into "/b". Keep rootless paths rootless.
			clean = strings.TrimPrefix(clean, "/")
		}
		if !hasAuthority && strings.HasPrefix(clean, "//") {
			return s // the path would become an authority
		}
		b = append(b[:pathStart], clean...)
	}
	if pathStart == 0 && schemeEnd(string(b)) > 0 {
		return s // the first segment would become a scheme ("%61:b", "x/../a:b")
	}
	if b, ok = appendPercentNormalized(b, tail); !ok {
		return s
	}
	if string(b) == s {
		return s
	}
	return string(b)
}

// schemeEnd returns the index of the ':' ending the scheme of s, or -1 when s
// has no scheme (scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )).
func schemeEnd(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9', c == '+', c == '-', c == '.':
			if i == 0 {
				return -1
			}
		case c == ':':
			if i == 0 {
				return -1
			}
			return i
		default:
			return -1
		}
	}
	return -1
}

func appendLowerASCII(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

// lowerHost lower-cases ASCII letters in place, except the hex digits of
// percent-escapes, which stay upper-case.
func lowerHost(b []byte) {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '%':
			i += 2
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// appendPercentNormalized appends s with percent-encoded unreserved
// characters decoded and the other escapes upper-cased. It reports false for
// a malformed escape.
func appendPercentNormalized(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(s) {
			return b, false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return b, false
		}
		if d := hi<<4 | lo; isUnreserved(d) {
			b = append(b, d)
		} else {
			const upper = "0123456789ABCDEF"
			b = append(b, '%', upper[hi], upper[lo])
		}
		i += 2
	}
	return b, true
}

// removeDotSegments implements RFC 3986 §5.2.4.
func removeDotSegments(in string) string {
	out := make([]byte, 0, len(in))
	removeLast := func() {
		if i := strings.LastIndexByte(string(out), '/'); i >= 0 {
			out = out[:i]
		} else {
			out = out[:0]
		}
	}
	for len(in) > 0 {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			removeLast()
		case in == "/..":
			in = "/"
			removeLast()
		case in == "." || in == "..":
			in = ""
		default:
			i := 0
			if in[0] == '/' {
				i = 1
			}
			if j := strings.IndexByte(in[i:], '/'); j >= 0 {
				i += j
			} else {
				i = len(in)
			}
			out = append(out, in[:i]...)
			in = in[i:]
		}
	}
	return string(out)
}
