package extproc

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/mcpauthz/mcpauthz/internal/mcprpc"
)

// callAccepts reports whether the request parser accepts a call of method
// with params member key set to value, and the resource URI it derives.
func callAccepts(t testing.TB, method, key, value string) (bool, string) {
	t.Helper()
	q, err := jsontext.AppendQuote(nil, value)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":{"` + key + `":` + string(q) + `}}`
	b, err := mcprpc.Parse([]byte(body), mcprpc.Options{})
	if err != nil {
		return false, ""
	}
	return true, b.Messages[0].ResourceURI
}

// checkNameRules asserts that the list filter removes exactly the items
// whose use the request parser would refuse, and normalises URIs as it
// does.
func checkNameRules(t *testing.T, s string) {
	if !utf8.ValidString(s) {
		return // not a JSON string: the body would be refused as a whole
	}
	if ok, _ := callAccepts(t, "tools/call", "name", s); ok != usableToolName(s) {
		t.Errorf("tool %q: call path accepts=%v, list filter usable=%v", s, ok, usableToolName(s))
	}
	if ok, _ := callAccepts(t, "prompts/get", "name", s); ok != usablePromptName(s) {
		t.Errorf("prompt %q: call path accepts=%v, list filter usable=%v", s, ok, usablePromptName(s))
	}
	ok, uri := callAccepts(t, "resources/read", "uri", s)
	norm, normal := normalizeURI(s)
	if usable := normal && usableURI(s); ok != usable {
		t.Errorf("uri %q: call path accepts=%v, list filter usable=%v", s, ok, usable)
	}
	if ok && uri != norm {
		t.Errorf("uri %q: call path reads %q, list filter %q", s, uri, norm)
	}
}

func TestNameRulesMatchCallPath(t *testing.T) {
	for _, s := range []string{
		"get_weather", "a.b-c_D9", "", " ", "x y", "tool\t", "naïve", "\u200b", "\u00a0", "a\u0085b",
		"a\u009fb", "a\u00a0b", "\u2028", "é", string(make([]byte, 129)), "file:///a/../b", "FILE://HOST/%7e",
		"https://example.com/a b", "x\x7f", "\U0001F600",
	} {
		checkNameRules(t, s)
	}
	long := make([]byte, 128)
	for i := range long {
		long[i] = 'a'
	}
	checkNameRules(t, string(long))
	checkNameRules(t, string(long)+"a")
}

func FuzzNameRulesMatchCallPath(f *testing.F) {
	for _, s := range []string{"get_weather", "a b", "file:///x/%2e%2e/y", "\u0085", "é\u00a0", "\U0001F600"} {
		f.Add(s)
	}
	f.Fuzz(checkNameRules)
}

func TestTemplatePrefix(t *testing.T) {
	for tmpl, want := range map[string]string{
		"file:///{path}":         "file:///",
		"db://reports/{id}/{x}":  "db://reports/",
		"{+uri}":                 "",
		"static://no/expression": "static://no/expression",
	} {
		if got := templatePrefix(tmpl); got != want {
			t.Errorf("templatePrefix(%q) = %q, want %q", tmpl, got, want)
		}
	}
}

// FuzzFoldKey checks that folding keys are equal exactly when
// strings.EqualFold says so (the request parser's notion of case variants).
func FuzzFoldKey(f *testing.F) {
	for _, p := range [][2]string{{"tools", "TOOLS"}, {"name", "nAme"}, {"params", "paramſ"}, {"k", "\u212a"}, {"ß", "SS"}, {"é", "É"}} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return
		}
		same := string(appendFoldKey(nil, []byte(a))) == string(appendFoldKey(nil, []byte(b)))
		if same != strings.EqualFold(a, b) {
			t.Fatalf("%q %q: keys equal=%v, EqualFold=%v", a, b, same, strings.EqualFold(a, b))
		}
		var s nameSet
		s.addKey([]byte(a))
		if _, dup := s.addKey([]byte(b)); dup != strings.EqualFold(a, b) {
			t.Fatalf("nameSet %q %q: dup=%v", a, b, dup)
		}
	})
}
