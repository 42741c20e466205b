package extproc

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/mcpauthz/mcpauthz/internal/mcprpc"
)

// The checks below mirror what the request parser (internal/mcprpc) accepts
// in tools/call params.name, prompts/get params.name and resources/read
// params.uri. An item that fails them can never be used through mcpauthz,
// so it is removed without asking the policy. names_test.go cross-checks
// them against mcprpc.Parse.

// usableToolName reports whether name is 1 to 128 characters of
// [A-Za-z0-9_.-].
func usableToolName(name string) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// usablePromptName reports whether name is non-empty and free of control
// characters (C0, DEL, C1).
func usablePromptName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < 0x20 || c == 0x7f {
			return false
		}
		if c == 0xc2 && i+1 < len(name) && name[i+1] >= 0x80 && name[i+1] < 0xa0 {
			return false
		}
	}
	return true
}

// usableURI reports whether uri is non-empty and free of control
// characters and white space.
func usableURI(uri string) bool {
	if uri == "" {
		return false
	}
	for i := 0; i < len(uri); {
		c := uri[i]
		if c < utf8.RuneSelf {
			if c <= ' ' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(uri[i:])
		if r < 0xa0 || unicode.IsSpace(r) {
			return false
		}
		i += size
	}
	return true
}

// templatePrefix returns the literal part of a URI template before its
// first expression.
func templatePrefix(tmpl string) string {
	if i := strings.IndexByte(tmpl, '{'); i >= 0 {
		return tmpl[:i]
	}
	return tmpl
}

// normalizeURI is the call path's normal form of uri; ok is false for a URI
// the call path refuses (it cannot be normalised unambiguously), which no
// caller could read.
func normalizeURI(uri string) (string, bool) {
	n, err := mcprpc.NormalizeURI(uri)
	return n, err == nil
}

// normalizeTemplatePrefix normalises the literal part of a URI template the
// way the call path normalises a template reference.
func normalizeTemplatePrefix(tmpl string) (string, bool) {
	n, err := mcprpc.NormalizeURITemplate(templatePrefix(tmpl))
	return n, err == nil
}

// idKey returns the value of a JSON-RPC id as a comparable key, so that a
// response matches its request however the server re-encoded the id:
// strings by their decoded value ("\u0061" is "a"), numbers by their
// float64 value (a JavaScript server echoes 12345678901234567890 as
// 12345678901234567000, and -0 as 0). Matching too much is safe (the
// response is then filtered or refused); matching too little would let a
// list through unfiltered. ok is false for null and anything else that is
// not a string or a number.
func idKey(raw []byte) (key string, ok bool) {
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		if !hasByte(raw, '\\') {
			return "s" + string(raw[1:len(raw)-1]), true
		}
		b, err := jsontext.AppendUnquote([]byte{'s'}, raw)
		if err != nil {
			return "", false
		}
		return string(b), true
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		// raw is a JSON number (validated by the decoder); out of range
		// values are compared as ±Inf or 0, as the server would read them.
		f, _ := strconv.ParseFloat(string(raw), 64)
		if f == 0 {
			return "n0", true
		}
		return "n" + strconv.FormatFloat(f, 'g', -1, 64), true
	}
	return "", false
}

func hasByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}
