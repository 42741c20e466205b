package policy

import (
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/ast"
)

func TestJSONValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // Rego term syntax
	}{
		{`null`, `null`},
		{`true`, `true`},
		{`false`, `false`},
		{`"a\u00e9\n"`, `"aé\n"`},
		{`0`, `0`},
		{`-1.50`, `-1.50`},
		{`1e400`, `1e400`},
		{`12345678901234567890123`, `12345678901234567890123`},
		{`[]`, `[]`},
		{`{}`, `{}`},
		{` [1, "two", [3], {"four": 4}] `, `[1, "two", [3], {"four": 4}]`},
		{`{"b": {"c": [null, true]}, "a": ""}`, `{"a": "", "b": {"c": [null, true]}}`},
	}
	for _, tt := range tests {
		got, err := jsonValue(jsontext.Value(tt.in))
		if err != nil {
			t.Errorf("jsonValue(%s) error = %v", tt.in, err)
			continue
		}
		want := ast.MustParseTerm(tt.want).Value
		if got.Compare(want) != 0 {
			t.Errorf("jsonValue(%s) = %v, want %v", tt.in, got, want)
		}
	}
	// Numbers keep their text (no float rounding).
	if got, _ := jsonValue(jsontext.Value(`1.10`)); got != ast.Number("1.10") {
		t.Errorf("jsonValue(1.10) = %#v, want ast.Number(\"1.10\")", got)
	}
}

func TestJSONValueMalformed(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		``, ` `, `{`, `{"a":`, `{"a" 1}`, `{"a":1,}`, `[1,]`, `[1 2]`, `nul`, `01`, `"\x"`,
		"\"\xff\"", `{"a":1,"a":2}`, `1 2`, `{} x`, `}`, `{1:2}`,
	} {
		if got, err := jsonValue(jsontext.Value(in)); err == nil {
			t.Errorf("jsonValue(%q) = %v, want error", in, got)
		}
	}
}

// FuzzJSONValue checks that the walker never panics and accepts exactly the
// values jsontext accepts.
func FuzzJSONValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5,{"b":null}],"c":"d"}`, `[]`, `"x"`, `{"a":1,"a":2}`, `[1,]`, "\"\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := jsonValue(jsontext.Value(b))
		if valid := jsontext.Value(b).IsValid(); valid != (err == nil) {
			t.Fatalf("jsonValue(%q) = %v, %v; jsontext valid = %v", b, v, err, valid)
		}
	})
}

func TestDecisionFromValue(t *testing.T) {
	t.Parallel()
	v := ast.MustParseTerm(`{"allow": true, "reason": "r", "required_scopes": [], "headers": {"x-a": "1"}, "shadow": false, "other": 1}`).Value
	d, err := decisionFromValue(v)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allow || d.Reason != "r" || d.RequiredScopes != nil || d.Headers["x-a"] != "1" || len(d.Headers) != 1 || d.Shadow {
		t.Errorf("decisionFromValue() = %+v", d)
	}
}
