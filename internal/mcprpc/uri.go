package mcprpc

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"golang.org/x/net/idna"
)

// NormalizeURI returns the normal form of a resource URI that policy compares
// and prefix-matches, or an *Error (reason invalid_resource_uri or
// ambiguous_resource_uri, CodeInvalidParams, no id) when the URI cannot be
// brought to one unambiguously. The rules are in the package documentation
// under "Resource URIs"; in short, special schemes (http, https, ws, wss,
// ftp, file) follow the WHATWG URL Standard, the way the TypeScript and
// Python SDKs read them, other schemes RFC 3986 §6.2.2, and every URI that
// the two readings, or common server code, would resolve differently is
// rejected rather than guessed at.
//
// The result is idempotent (normalising it again returns it unchanged), has
// the input's scheme in lower case, and contains no "." or ".." segment, no
// backslash, and no encoded slash or backslash.
func NormalizeURI(s string) (string, error) {
	out, p := normalizeURI(s, false)
	if p != nil {
		return "", p.err(nil)
	}
	return out, nil
}

// NormalizeURITemplate is NormalizeURI for a URI template (RFC 6570), the
// uri of a completion/complete ref/resource: expressions in braces ("{id}",
// "{+path}", "{?q}") are kept as they are and are never a dot segment; the
// text around them follows the NormalizeURI rules. A template with an
// expression in its authority keeps the authority as sent, lower-cased
// outside the expressions.
func NormalizeURITemplate(s string) (string, error) {
	out, p := normalizeURI(s, true)
	if p != nil {
		return "", p.err(nil)
	}
	return out, nil
}

// uriProblem is why a URI was rejected; the values are immutable.
type uriProblem struct{ reason, msg string }

func (p *uriProblem) err(id jsontext.Value) *Error {
	return newError(p.reason, CodeInvalidParams, id, "Invalid params: resource URI "+p.msg)
}

func invalidURI(msg string) *uriProblem   { return &uriProblem{ReasonInvalidResourceURI, msg} }
func ambiguousURI(msg string) *uriProblem { return &uriProblem{ReasonAmbiguousResourceURI, msg} }

// The reasons a URI is rejected. Messages never echo the URI.
var (
	uriEmpty          = invalidURI("is empty")
	uriBadUTF8        = invalidURI("is not valid UTF-8")
	uriControl        = invalidURI("contains a control character or white space")
	uriNoScheme       = invalidURI("is not an absolute URI (no scheme)")
	uriBadEscape      = invalidURI("contains a malformed percent-escape")
	uriEncodedControl = invalidURI("contains a percent-encoded control character")
	uriBadPort        = invalidURI("has a port that is not a number from 0 to 65535")
	uriFilePort       = invalidURI("is a file URI with a port")
	uriNoHost         = invalidURI("has an empty host")
	uriBadHost        = invalidURI("has a host that is not a DNS name, an IPv4 address or a bracketed IPv6 address")
	uriBadIPv6        = invalidURI("has an invalid IPv6 address")
	uriBadPunycode    = invalidURI("has a host with an invalid xn-- label")
	uriBadTemplate    = invalidURI("has unbalanced template braces")
	uriBackslash      = ambiguousURI("contains a backslash (read as a slash by WHATWG URL parsers, as a file-name character by others)")
	uriEncodedSlash   = ambiguousURI("contains a percent-encoded slash or backslash (%2F, %5C), which servers decode before resolving the path")
	uriDoubleEncoded  = ambiguousURI("contains a double percent-encoded dot, slash or backslash (%252E, %252F, %255C)")
	uriNoSlashes      = ambiguousURI("has a special scheme but no \"//\" before the host")
	uriFileRelative   = ambiguousURI("is a file URI without an absolute path")
	uriUserinfo       = ambiguousURI("has userinfo (credentials before an @)")
	uriNonASCIIHost   = ambiguousURI("has a non-ASCII host name (send internationalised names as xn-- labels)")
	uriEmptyLabel     = ambiguousURI("has an empty label in its host name (such as a trailing dot)")
	uriIPv4Form       = ambiguousURI("has an IPv4 address that is not in dotted-decimal form")
	uriEmptySegment   = ambiguousURI("has an empty path segment (\"//\"), which some servers merge and others keep")
	uriAboveRoot      = ambiguousURI("has a \"..\" segment that climbs above the root")
	uriOpaqueDots     = ambiguousURI("has a \".\" or \"..\" segment in a path without a leading slash, which WHATWG URL parsers keep and RFC 3986 resolves")
	uriQueryDots      = ambiguousURI("has a \".\" or \"..\" segment in its query or fragment, which template expressions such as {+path} can capture")
	uriDriveLetter    = ambiguousURI("has a Windows drive letter written with \"|\" or combined with \"..\"")
)

// specialPorts are the WHATWG special schemes with their default ports
// (file has no port).
var specialPorts = map[string]string{"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21", "file": ""}

// hostnameProfile validates xn-- labels the way WHATWG "domain to ASCII"
// does (UTS #46 non-transitional, hyphens unchecked, joiners and bidi
// checked, no STD3 restrictions).
var hostnameProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false),
	idna.CheckHyphens(false), idna.CheckJoiners(true), idna.StrictDomainName(false))

// Characters that are percent-encoded when they appear raw, per component:
// the characters RFC 3986 does not allow there, which include everything
// the WHATWG percent-encode sets of that component add. Raw controls, space
// and backslash never reach these tables (they are rejected first).
var (
	pathEncode          = encodeSet(`"<>[]^{|}` + "`")
	queryEncode         = encodeSet(`"<>[]^{|}` + "`")
	specialQueryEncode  = encodeSet(`"'<>[]^{|}` + "`")
	fragmentEncode      = encodeSet(`"#<>[]^{|}` + "`")
	opaqueHostForbidden = encodeSet(`"#<>[]^{|}` + "`/?@:")
)

func encodeSet(chars string) (t [256]bool) {
	for i := 0; i < len(chars); i++ {
		t[chars[i]] = true
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	return t
}

// normalizeURI implements NormalizeURI and, with template set,
// NormalizeURITemplate.
func normalizeURI(s string, template bool) (string, *uriProblem) {
	if s == "" {
		return "", uriEmpty
	}
	if p := checkRawURI(s); p != nil {
		return "", p
	}
	i := schemeEnd(s)
	if i <= 0 {
		return "", uriNoScheme
	}
	b := make([]byte, 0, len(s)+16)
	b = appendLowerASCII(b, s[:i])
	scheme := string(b) // does not escape when s is returned unchanged
	b = append(b, ':')
	rest := s[i+1:]
	defaultPort, special := specialPorts[scheme]
	isFile := scheme == "file"

	// Authority.
	hasAuthority := strings.HasPrefix(rest, "//")
	switch {
	case special && !isFile && !hasAuthority:
		return "", uriNoSlashes // WHATWG reads "http:h/x" and "http:/h" as host h
	case isFile && !hasAuthority:
		if !strings.HasPrefix(rest, "/") {
			return "", uriFileRelative
		}
		rest = "//" + rest // file:/p is file:///p
		hasAuthority = true
	}
	if hasAuthority {
		rest = rest[2:]
		end := indexAny(rest, "/?#", template)
		if end < 0 {
			end = len(rest)
		}
		authority := rest[:end]
		rest = rest[end:]
		b = append(b, '/', '/')
		var p *uriProblem
		if template && strings.IndexByte(authority, '{') >= 0 {
			b, p = appendTemplateAuthority(b, authority)
		} else {
			b, p = appendAuthority(b, authority, special, isFile, defaultPort)
		}
		if p != nil {
			return "", p
		}
	}

	// Path, query, fragment.
	path, query, fragment, hasQuery, hasFragment := splitTail(rest, template)
	var p *uriProblem
	if hasAuthority || strings.HasPrefix(path, "/") {
		if special && path == "" {
			path = "/"
		}
		b, p = appendHierarchicalPath(b, path, isFile, template)
	} else {
		b, p = appendOpaquePath(b, path, template)
	}
	if p != nil {
		return "", p
	}
	if hasQuery {
		b = append(b, '?')
		set := &queryEncode
		if special {
			set = &specialQueryEncode
		}
		if b, p = appendQueryOrFragment(b, query, set, template); p != nil {
			return "", p
		}
	}
	if hasFragment {
		b = append(b, '#')
		if b, p = appendQueryOrFragment(b, fragment, &fragmentEncode, template); p != nil {
			return "", p
		}
	}
	if string(b) == s {
		return s, nil
	}
	return string(b), nil
}

// checkRawURI rejects invalid UTF-8, control characters, white space (ASCII
// and Unicode) and backslashes anywhere in the URI. WHATWG parsers silently
// drop tabs and newlines and trim spaces, so "file:///pub\nlic" reaches the
// server as "file:///public".
func checkRawURI(s string) *uriProblem {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c <= ' ' || c == 0x7f:
				return uriControl
			case c == '\\':
				return uriBackslash
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return uriBadUTF8
		}
		if isControl(r) || unicode.IsSpace(r) {
			return uriControl
		}
		i += size
	}
	return nil
}

// indexAny is strings.IndexAny for ASCII chars that, in a template, skips
// over brace expressions (which may contain "/", "?" and "#").
func indexAny(s, chars string, template bool) int {
	switch {
	case template:
	case len(chars) == 1:
		return strings.IndexByte(s, chars[0])
	default:
		return strings.IndexAny(s, chars)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if template && c == '{' {
			if j := strings.IndexByte(s[i:], '}'); j > 0 {
				i += j
				continue
			}
		}
		if strings.IndexByte(chars, c) >= 0 {
			return i
		}
	}
	return -1
}

func splitTail(rest string, template bool) (path, query, fragment string, hasQuery, hasFragment bool) {
	path = rest
	if i := indexAny(rest, "#", template); i >= 0 {
		path, fragment, hasFragment = rest[:i], rest[i+1:], true
	}
	if i := indexAny(path, "?", template); i >= 0 {
		path, query, hasQuery = path[:i], path[i+1:], true
	}
	return path, query, fragment, hasQuery, hasFragment
}

// appendAuthority appends the normal form of host[:port]. Userinfo is
// rejected: credentials never identify a resource, and "https://good@evil/"
// reads as good to people and as evil to parsers.
func appendAuthority(b []byte, authority string, special, isFile bool, defaultPort string) ([]byte, *uriProblem) {
	if strings.IndexByte(authority, '@') >= 0 {
		return b, uriUserinfo
	}
	host, port, hasPort := authority, "", false
	if strings.HasPrefix(authority, "[") {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return b, uriBadIPv6
		}
		host = authority[:end+1]
		switch after := authority[end+1:]; {
		case after == "":
		case after[0] == ':':
			port, hasPort = after[1:], true
		default:
			return b, uriBadHost
		}
	} else if i := strings.IndexByte(authority, ':'); i >= 0 {
		host, port, hasPort = authority[:i], authority[i+1:], true
	}
	switch {
	case isFile && hasPort:
		return b, uriFilePort
	case host == "" && hasPort:
		return b, uriNoHost // WHATWG: a port needs a host, whatever the scheme
	}
	var p *uriProblem
	switch {
	case strings.HasPrefix(host, "["):
		b, p = appendIPv6Host(b, host)
	case special:
		b, p = appendSpecialHost(b, host, isFile)
	default:
		b, p = appendOpaqueHost(b, host)
	}
	if p != nil {
		return b, p
	}
	if hasPort && port != "" {
		n, ok := parsePort(port)
		if !ok {
			return b, uriBadPort
		}
		if ps := strconv.Itoa(n); !special || ps != defaultPort {
			b = append(b, ':')
			b = append(b, ps...)
		}
	}
	return b, nil
}

func parsePort(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return 0, false
		}
	}
	return n, true
}

// appendTemplateAuthority appends the authority of a URI template that
// contains an expression: lower-cased outside braces, otherwise as sent.
func appendTemplateAuthority(b []byte, authority string) ([]byte, *uriProblem) {
	depth := 0
	for i := 0; i < len(authority); i++ {
		c := authority[i]
		switch {
		case c == '{':
			if depth > 0 {
				return b, uriBadTemplate
			}
			depth++
		case c == '}':
			if depth == 0 {
				return b, uriBadTemplate
			}
			depth--
		case depth == 0 && c == '@':
			return b, uriUserinfo
		case depth == 0 && c == '%':
			return b, uriBadHost
		case depth == 0 && c >= utf8.RuneSelf:
			return b, uriNonASCIIHost
		case depth == 0 && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	if depth != 0 {
		return b, uriBadTemplate
	}
	return b, nil
}

// appendSpecialHost appends the host of a special URL the way WHATWG
// serialises it, for the hosts where every reader agrees: ASCII DNS names
// (lower-cased, percent-escapes decoded), dotted-decimal IPv4 addresses.
// Names that need IDNA mapping, IPv4 addresses in other notations
// ("0x7f.1", "127.1", "1.2.3.04"), and names with empty labels are
// rejected: RFC 3986 readers and resolvers see a different host in each.
func appendSpecialHost(b []byte, host string, isFile bool) ([]byte, *uriProblem) {
	start := len(b)
	for i := 0; i < len(host); i++ {
		c := host[i]
		if c == '%' {
			v, ok := unescape(host, i)
			if !ok {
				return b, uriBadEscape
			}
			c = v
			i += 2
		}
		switch {
		case c >= utf8.RuneSelf:
			return b, uriNonASCIIHost
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return b, uriBadHost
		}
		b = append(b, c)
	}
	name := string(b[start:])
	if name == "" {
		if isFile {
			return b, nil
		}
		return b, uriNoHost
	}
	if isFile && name == "localhost" {
		return b[:start], nil // WHATWG: file://localhost/p is file:///p
	}
	if name[0] == '.' || name[len(name)-1] == '.' || strings.Contains(name, "..") {
		return b, uriEmptyLabel
	}
	if isNumericLabel(name[strings.LastIndexByte(name, '.')+1:]) {
		if !canonicalIPv4(name) {
			return b, uriIPv4Form
		}
		return b, nil
	}
	if strings.Contains(name, "xn--") && !validPunycode(strings.Clone(name)) {
		return b, uriBadPunycode
	}
	return b, nil
}

// validPunycode reports whether every xn-- label of the lower-case ASCII
// name decodes to a valid internationalised label that encodes back to
// itself. Labels with joiners (U+200C, U+200D) are refused as well: their
// contextual rules are where IDNA implementations disagree. Unicode versions
// still differ (x/net/idna against a server's ICU): a label valid here may
// be refused by the server's URL parser, which then fails the request,
// the safe direction.
func validPunycode(name string) bool {
	for l, more := name, true; more; {
		var label string
		label, l, more = strings.Cut(l, ".")
		if !strings.HasPrefix(label, "xn--") {
			continue
		}
		a, err := hostnameProfile.ToASCII(label)
		if err != nil || a != label {
			return false
		}
		if u, err := hostnameProfile.ToUnicode(label); err != nil || strings.ContainsAny(u, "\u200c\u200d") {
			return false
		}
	}
	return true
}

// isNumericLabel is the WHATWG "ends in a number" test for the last label:
// all decimal digits, or 0x followed by hex digits.
func isNumericLabel(l string) bool {
	if len(l) >= 2 && l[0] == '0' && l[1] == 'x' {
		for i := 2; i < len(l); i++ {
			if _, ok := unhex(l[i]); !ok {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

// canonicalIPv4 reports whether name is four decimal numbers 0–255 without
// leading zeros, separated by dots.
func canonicalIPv4(name string) bool {
	if strings.Count(name, ".") != 3 {
		return false
	}
	for l, more := name, true; more; {
		var label string
		label, l, more = strings.Cut(l, ".")
		if label == "" || len(label) > 3 || (len(label) > 1 && label[0] == '0') {
			return false
		}
		n := 0
		for i := 0; i < len(label); i++ {
			if label[i] < '0' || label[i] > '9' {
				return false
			}
			n = n*10 + int(label[i]-'0')
		}
		if n > 255 {
			return false
		}
	}
	return true
}

// appendIPv6Host appends a bracketed IPv6 address in the WHATWG
// serialisation (lower case, longest run of zero pieces compressed, IPv4
// suffixes written as hex pieces). Zones are rejected, as WHATWG does.
func appendIPv6Host(b []byte, host string) ([]byte, *uriProblem) {
	a, err := netip.ParseAddr(host[1 : len(host)-1])
	if err != nil || !a.Is6() || a.Zone() != "" {
		return b, uriBadIPv6
	}
	ip := a.As16()
	var pieces [8]uint16
	for i := range pieces {
		pieces[i] = uint16(ip[2*i])<<8 | uint16(ip[2*i+1])
	}
	// The first longest run of two or more zero pieces is compressed.
	best, bestLen := -1, 1
	for i := 0; i < 8; {
		if pieces[i] != 0 {
			i++
			continue
		}
		j := i
		for j < 8 && pieces[j] == 0 {
			j++
		}
		if j-i > bestLen {
			best, bestLen = i, j-i
		}
		i = j
	}
	b = append(b, '[')
	for i := 0; i < 8; i++ {
		if i == best {
			if i == 0 {
				b = append(b, ':')
			}
			b = append(b, ':')
			i += bestLen - 1
			continue
		}
		b = strconv.AppendUint(b, uint64(pieces[i]), 16)
		if i < 7 {
			b = append(b, ':')
		}
	}
	return append(b, ']'), nil
}

// appendOpaqueHost appends the host of a non-special URI: RFC 3986
// reg-name normalisation (lower case, unreserved escapes decoded, others
// upper-cased, non-ASCII percent-encoded as UTF-8).
func appendOpaqueHost(b []byte, host string) ([]byte, *uriProblem) {
	start := len(b)
	for i := 0; i < len(host); i++ {
		if c := host[i]; c < utf8.RuneSelf && opaqueHostForbidden[c] {
			return b, uriBadHost
		}
	}
	b, p := appendComponent(b, host, &opaqueHostForbidden, false)
	if p != nil {
		return b, p
	}
	lowerHost(b[start:])
	return b, nil
}

// appendHierarchicalPath appends a path that starts with "/" (or is empty
// after an authority), resolving dot segments the way both WHATWG and
// RFC 3986 do, after decoding %2E. Empty segments, ".." above the root and
// Windows drive letters that WHATWG treats specially are rejected.
func appendHierarchicalPath(b []byte, path string, isFile, template bool) ([]byte, *uriProblem) {
	if path == "" {
		return b, nil
	}
	pathStart := len(b)
	segs := path[1:]
	hasDrive, hasDotDot := false, false
	for {
		seg, more := segs, false
		if i := indexAny(segs, "/", template); i >= 0 {
			seg, segs, more = segs[:i], segs[i+1:], true
		}
		if isFile && isDriveLetter(seg) {
			if seg[1] == '|' {
				return b, uriDriveLetter
			}
			hasDrive = true
		}
		segStart := len(b)
		b = append(b, '/')
		var p *uriProblem
		if b, p = appendComponent(b, seg, &pathEncode, template); p != nil {
			return b, p
		}
		switch canon := string(b[segStart+1:]); {
		case canon == ".":
			b = b[:segStart]
			if !more {
				b = append(b, '/')
			}
		case canon == "..":
			hasDotDot = true
			b = b[:segStart]
			j := bytes.LastIndexByte(b[pathStart:], '/')
			if j < 0 {
				return b, uriAboveRoot
			}
			b = b[:pathStart+j]
			if !more {
				b = append(b, '/')
			}
		case canon == "" && more:
			return b, uriEmptySegment
		}
		if !more {
			break
		}
	}
	if hasDrive && hasDotDot {
		return b, uriDriveLetter
	}
	return b, nil
}

// isDriveLetter reports whether seg is a Windows drive letter ("C:" or
// "C|"), which WHATWG never pops with ".." and rewrites from "|" to ":".
func isDriveLetter(seg string) bool {
	return len(seg) == 2 && ('a' <= seg[0] && seg[0] <= 'z' || 'A' <= seg[0] && seg[0] <= 'Z') &&
		(seg[1] == ':' || seg[1] == '|')
}

// appendOpaquePath appends a path without a leading slash ("urn:isbn:1",
// "mem:a/b"). WHATWG keeps such a path as it is and RFC 3986 resolves its
// dot segments, so a dot segment, like an empty segment, is rejected.
func appendOpaquePath(b []byte, path string, template bool) ([]byte, *uriProblem) {
	start := len(b)
	b, p := appendComponent(b, path, &pathEncode, template)
	if p != nil {
		return b, p
	}
	if p := checkPieces(string(b[start:]), template, uriOpaqueDots, true); p != nil {
		return b, p
	}
	return b, nil
}

// appendQueryOrFragment appends a query or a fragment. A greedy template
// expression ({+path}, {#frag}; and the whole query in older SDKs) hands
// them to a handler as part of a path, so dot segments are rejected here
// too.
func appendQueryOrFragment(b []byte, s string, set *[256]bool, template bool) ([]byte, *uriProblem) {
	start := len(b)
	b, p := appendComponent(b, s, set, template)
	if p != nil {
		return b, p
	}
	if p := checkPieces(string(b[start:]), template, uriQueryDots, false); p != nil {
		return b, p
	}
	return b, nil
}

// checkPieces rejects "." and ".." pieces of s split at "/" (and, when
// noEmpty is set, empty pieces other than the last).
func checkPieces(s string, template bool, dots *uriProblem, noEmpty bool) *uriProblem {
	for {
		piece, more := s, false
		if i := indexAny(s, "/", template); i >= 0 {
			piece, s, more = s[:i], s[i+1:], true
		}
		switch {
		case piece == "." || piece == "..":
			return dots
		case piece == "" && more && noEmpty:
			return uriEmptySegment
		}
		if !more {
			return nil
		}
	}
}

// appendComponent appends s with its percent-escapes normalised (RFC 3986
// §6.2.2.2: unreserved characters decoded, others with upper-case hex
// digits) and the raw characters in encode percent-encoded. In a template,
// brace expressions are copied as they are. It rejects malformed escapes,
// encoded controls, encoded slashes and backslashes, and double-encoded
// dots, slashes and backslashes.
func appendComponent(b []byte, s string, encode *[256]bool, template bool) ([]byte, *uriProblem) {
	const upper = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			v, ok := unescape(s, i)
			if !ok {
				return b, uriBadEscape
			}
			switch {
			case isUnreserved(v):
				b = append(b, v)
			case v == '/' || v == '\\':
				return b, uriEncodedSlash
			case v < 0x20 || v == 0x7f:
				return b, uriEncodedControl
			case v == '%' && doubleEncodedSeparator(s[i+3:]):
				return b, uriDoubleEncoded
			default:
				b = append(b, '%', upper[v>>4], upper[v&15])
			}
			i += 2
		case template && c == '{':
			j := strings.IndexByte(s[i:], '}')
			if j < 0 || strings.IndexByte(s[i+1:i+j], '{') >= 0 {
				return b, uriBadTemplate
			}
			b = append(b, s[i:i+j+1]...)
			i += j
		case template && c == '}':
			return b, uriBadTemplate
		case encode[c]:
			b = append(b, '%', upper[c>>4], upper[c&15])
		default:
			b = append(b, c)
		}
	}
	return b, nil
}

// doubleEncodedSeparator reports whether s (what follows a "%25") starts
// with the hex digits of ".", "/" or "\": a server that decodes twice reads
// "%252E%252E" as "..".
func doubleEncodedSeparator(s string) bool {
	if len(s) < 2 {
		return false
	}
	hi, lo := s[0], s[1]|0x20
	return hi == '2' && (lo == 'e' || lo == 'f') || hi == '5' && lo == 'c'
}

// unescape decodes the percent-escape at s[i].
func unescape(s string, i int) (byte, bool) {
	if i+2 >= len(s) {
		return 0, false
	}
	hi, ok1 := unhex(s[i+1])
	lo, ok2 := unhex(s[i+2])
	return hi<<4 | lo, ok1 && ok2
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
