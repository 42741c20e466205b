package extauthz

import (
	"net/url"
	"strings"
	"testing"
)

// urlTokenRows are request targets (path and query as in :path), named
// by the spelling of the token parameter, with whether mcpauthz refuses
// them as a token in the URL.
var urlTokenRows = []struct {
	name   string
	target string
	want   bool
}{
	{"query-ampersand/only", "/mcp?access_token=t", true},
	{"query-ampersand/after-another", "/mcp?a=1&access_token=t", true},
	{"query-ampersand/empty-value", "/mcp?access_token=", true},
	{"query-ampersand/bare-name", "/mcp?x=1&access_token", true},
	{"query-ampersand/repeated", "/mcp?access_token=a&access_token=b", true},
	{"query-semicolon/after-another", "/mcp?a=1;access_token=t", true},
	{"query-semicolon/before-another", "/mcp?access_token=t;a=1", true},
	{"query-semicolon/mixed-separators", "/mcp?a=1;b=2&c=3;access_token=t", true},
	{"query-semicolon/inside-a-value", "/mcp?redirect=/x;access_token=t", true},
	{"name-case/upper", "/mcp?ACCESS_TOKEN=t", true},
	{"name-case/mixed", "/mcp?Access_Token=t", true},
	{"name-case/long-s-raw", "/mcp?acce\u017f\u017f_token=t", true},
	{"name-case/long-s-escaped", "/mcp?acce%C5%BF%C5%BF_token=t", true},
	{"name-escaped/underscore", "/mcp?access%5Ftoken=t", true},
	{"name-escaped/lower-hex", "/mcp?access%5ftoken=t", true},
	{"name-escaped/letter", "/mcp?%61ccess_token=t", true},
	{"name-escaped/every-byte", "/mcp?%61%63%63%65%73%73%5F%74%6F%6B%65%6E=t", true},
	{"name-escaped/equals-sign", "/mcp?access_token%3Dt", true},
	{"name-php/dot", "/mcp?access.token=t", true},
	{"name-php/space-as-plus", "/mcp?access+token=t", true},
	{"name-php/space-escaped", "/mcp?access%20token=t", true},
	{"name-php/unmatched-bracket", "/mcp?access[token=t", true},
	{"name-php/leading-space", "/mcp?+access_token=t", true},
	{"name-php/leading-space-escaped", "/mcp?%20access_token=t", true},
	{"name-array/empty-index", "/mcp?access_token[]=t", true},
	{"name-array/index", "/mcp?access_token[0]=t", true},
	{"name-array/escaped", "/mcp?access_token%5B%5D=t", true},
	{"path-parameter/last-segment", "/mcp;access_token=t", true},
	{"path-parameter/after-another", "/mcp;jsessionid=1;access_token=t", true},
	{"path-parameter/inner-segment", "/a;access_token=t/mcp", true},
	{"path-parameter/bare-name", "/mcp;access_token", true},
	{"path-parameter/escaped-name", "/mcp;access%5Ftoken=t", true},
	{"path-parameter/escaped-semicolon", "/mcp%3Baccess_token=t", true},
	{"path-parameter/with-a-query", "/mcp;access_token=t?a=1", true},

	{"not-a-token/no-query", "/mcp", false},
	{"not-a-token/empty-query", "/mcp?", false},
	{"not-a-token/other-parameters", "/mcp?session=1&a=b;c=d", false},
	{"not-a-token/name-as-value", "/mcp?q=access_token", false},
	{"not-a-token/escaped-in-a-value", "/mcp?redirect=%2F%3Faccess_token%3Dt", false},
	{"not-a-token/longer-name", "/mcp?access_tokens=t", false},
	{"not-a-token/prefixed-name", "/mcp?xaccess_token=t", false},
	{"not-a-token/other-token-names", "/mcp?id_token=t&token=t&refresh_token=t", false},
	{"not-a-token/invalid-escape-in-name", "/mcp?access_token%zz=t", false},
	{"not-a-token/path-segment-named-so", "/oauth/access_token", false},
	{"not-a-token/other-path-parameter", "/mcp;jsessionid=1", false},
	{"not-a-token/invalid-path-escape", "/mcp%zz;a=1", false},
}

// TestHasURLToken pins which request targets count as a token in the URL
// (answered 400 token_in_query, see TestCheckLadder).
func TestHasURLToken(t *testing.T) {
	seen := map[string]bool{}
	for _, tt := range urlTokenRows {
		if seen[tt.name] {
			t.Fatalf("duplicate row %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			r := &httpRequest{rawPath: tt.target}
			r.path, r.query, _ = strings.Cut(tt.target, "?")
			if got := r.hasURLToken(); got != tt.want {
				t.Fatalf("hasURLToken(%q) = %v, want %v", tt.target, got, tt.want)
			}
		})
	}
}

// FuzzHasURLToken checks hasURLToken against readers of the query: a
// target in which Go's url.ParseQuery, with ";" read as "&" (the servers
// that honour both), finds a parameter named access_token in any letter
// case is refused; so is one with such a path parameter; and adding other
// parameters never hides a token.
func FuzzHasURLToken(f *testing.F) {
	for _, tt := range urlTokenRows {
		f.Add(tt.target)
	}
	f.Fuzz(func(t *testing.T, target string) {
		r := &httpRequest{rawPath: target}
		r.path, r.query, _ = strings.Cut(target, "?")
		got := r.hasURLToken()

		want := false
		for _, part := range strings.FieldsFunc(r.query, func(c rune) bool { return c == '&' || c == ';' }) {
			v, err := url.ParseQuery(part)
			if err != nil {
				continue
			}
			for name := range v {
				if strings.EqualFold(strings.Trim(name, " "), accessTokenParam) {
					want = true
				}
			}
		}
		for _, seg := range strings.Split(r.path, "/") {
			_, params, _ := strings.Cut(seg, ";")
			for _, p := range strings.Split(params, ";") {
				if name, _, _ := strings.Cut(p, "="); strings.EqualFold(name, accessTokenParam) {
					want = true
				}
			}
		}
		if want && !got {
			t.Fatalf("hasURLToken(%q) = false, but a reader finds access_token", target)
		}
		if got {
			more := &httpRequest{path: "/x;a=1" + r.path, query: "a=1&b=2;" + r.query}
			if !more.hasURLToken() {
				t.Fatalf("hasURLToken(%q) = true, but false with other parameters around it", target)
			}
		}
	})
}
