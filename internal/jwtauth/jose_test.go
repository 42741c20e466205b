package jwtauth

import (
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// TestDecodeObjectAgreesWithUnmarshal: the token loop of decodeObject reads
// JSON objects exactly as json.Unmarshal into a map of raw values does
// (same members, same raw bytes, same rejections), strictness included.
func TestDecodeObjectAgreesWithUnmarshal(t *testing.T) {
	for _, in := range []string{
		`{}`, ` { "a" : 1 , "b":[1,{"c":null}] } `, `{"\u0061lg":"RS256"}`,
		`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, "{\"a\":\"\xff\"}", `{"a":"\ud800"}`,
		`{"a":1} x`, `{"a":1}{}`, `{"a":}`, `{"a":1,}`, `{"a" 1}`, `[1]`, `"s"`, `{`,
		`{"a":"x\"y","b":"\\"}`, `{"n":12345678901234567890.5e-3}`, "{\"a\":1}\n",
	} {
		want := map[string]jsontext.Value{}
		werr := json.Unmarshal([]byte(in), &want)
		got, gerr := decodeObject([]byte(in))
		if (werr != nil) != (gerr != nil) {
			t.Errorf("%q: decodeObject error %v, json.Unmarshal error %v", in, gerr, werr)
			continue
		}
		if werr != nil {
			continue
		}
		if len(got) != len(want) {
			t.Errorf("%q: %d members, want %d", in, len(got), len(want))
		}
		for k, v := range want {
			if string(got[k]) != string(v) {
				t.Errorf("%q: member %q = %q, want %q", in, k, got[k], v)
			}
		}
	}
}
