package extproc

import (
	"errors"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestMetadataRoundTrip(t *testing.T) {
	lc := ListContext{
		ProtocolVersion: "2025-03-26",
		PolicyRevision:  "3f2a9c",
		Requests:        []ListRequest{req("tools/list", "1"), req("prompts/list", `"a\"b"`), req("resources/list", "-7"), req("resources/templates/list", `"é"`)},
		Input:           jsontext.Value(testInput),
	}
	md := namespace(EncodeListMetadata(lc))
	// Through protojson, as Envoy's Struct would travel.
	raw, err := protojson.Marshal(md)
	if err != nil {
		t.Fatal(err)
	}
	back := &corev3.Metadata{}
	if err := protojson.Unmarshal(raw, back); err != nil {
		t.Fatal(err)
	}
	got, err := ParseMetadata(back)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(lc, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	st := EncodeListMetadata(lc)
	if len(st.Fields) != 2 || !st.Fields[KeyListFilter].GetBoolValue() || st.Fields[KeyList].GetStructValue() == nil {
		t.Errorf("EncodeListMetadata fields: %v", st)
	}
}

func TestParseMetadataErrors(t *testing.T) {
	good := func() *structpb.Struct { return listMetadata(req("tools/list", "1")).FilterMetadata[MetadataNamespace] }
	list := func(st *structpb.Struct) map[string]*structpb.Value {
		return st.Fields[KeyList].GetStructValue().Fields
	}
	secret := "eyJhbGciOiJSUzI1NiJ9.secret-token-value"
	tests := []struct {
		name   string
		md     func() *corev3.Metadata
		reason Reason // "" means ErrNoListFilter
	}{
		{"nil", func() *corev3.Metadata { return nil }, ReasonMissingMetadata},
		{"no_namespace", func() *corev3.Metadata {
			return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.mcp": {}}}
		}, ReasonMissingMetadata},
		{"typed_only", func() *corev3.Metadata { return &corev3.Metadata{} }, ReasonMissingMetadata},
		{"no_list_filter", func() *corev3.Metadata { return authzOnlyMetadata() }, ""},
		{"list_filter_false", func() *corev3.Metadata {
			st := good()
			st.Fields[KeyListFilter] = structpb.NewBoolValue(false)
			return namespace(st)
		}, ""},
		{"list_filter_string", func() *corev3.Metadata {
			st := good()
			st.Fields[KeyListFilter] = structpb.NewStringValue("true")
			return namespace(st)
		}, ReasonBadMetadata},
		{"list_missing", func() *corev3.Metadata {
			st := good()
			delete(st.Fields, KeyList)
			return namespace(st)
		}, ReasonBadMetadata},
		{"list_not_struct", func() *corev3.Metadata {
			st := good()
			st.Fields[KeyList] = structpb.NewStringValue("{}")
			return namespace(st)
		}, ReasonBadMetadata},
		{"version_2", func() *corev3.Metadata {
			st := good()
			list(st)["v"] = structpb.NewNumberValue(2)
			return namespace(st)
		}, ReasonBadMetadata},
		{"version_string", func() *corev3.Metadata {
			st := good()
			list(st)["v"] = structpb.NewStringValue("1")
			return namespace(st)
		}, ReasonBadMetadata},
		{"no_requests", func() *corev3.Metadata {
			st := good()
			list(st)["requests"] = structpb.NewListValue(&structpb.ListValue{})
			return namespace(st)
		}, ReasonBadMetadata},
		{"method_not_list", func() *corev3.Metadata {
			return listMetadata(req("tools/call", "1"))
		}, ReasonBadMetadata},
		{"id_fraction", func() *corev3.Metadata { return listMetadata(req("tools/list", "1.5")) }, ReasonBadMetadata},
		{"id_null", func() *corev3.Metadata { return listMetadata(req("tools/list", "null")) }, ReasonBadMetadata},
		{"id_leading_zero", func() *corev3.Metadata { return listMetadata(req("tools/list", "01")) }, ReasonBadMetadata},
		{"id_two_values", func() *corev3.Metadata { return listMetadata(req("tools/list", `"a" "b"`)) }, ReasonBadMetadata},
		{"id_injection", func() *corev3.Metadata { return listMetadata(req("tools/list", `1,"result":{}`)) }, ReasonBadMetadata},
		{"id_empty", func() *corev3.Metadata { return listMetadata(req("tools/list", "")) }, ReasonBadMetadata},
		{"input_not_json", func() *corev3.Metadata {
			st := good()
			list(st)["input"] = structpb.NewStringValue(`{"token":{"raw":"` + secret + `"`)
			return namespace(st)
		}, ReasonBadMetadata},
		{"input_duplicate_names", func() *corev3.Metadata {
			st := good()
			list(st)["input"] = structpb.NewStringValue(`{"request":{},"token":{},"token":{"sub":"` + secret + `"}}`)
			return namespace(st)
		}, ReasonBadMetadata},
		{"input_without_token", func() *corev3.Metadata {
			st := good()
			list(st)["input"] = structpb.NewStringValue(`{"request":{}}`)
			return namespace(st)
		}, ReasonBadMetadata},
		{"input_array", func() *corev3.Metadata {
			st := good()
			list(st)["input"] = structpb.NewStringValue(`[]`)
			return namespace(st)
		}, ReasonBadMetadata},
		{"input_trailing", func() *corev3.Metadata {
			st := good()
			list(st)["input"] = structpb.NewStringValue(`{"request":{},"token":{}} {}`)
			return namespace(st)
		}, ReasonBadMetadata},
		{"protocol_version_missing", func() *corev3.Metadata {
			st := good()
			delete(list(st), "protocol_version")
			return namespace(st)
		}, ReasonBadMetadata},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMetadata(tt.md())
			if tt.reason == "" {
				if !errors.Is(err, ErrNoListFilter) {
					t.Fatalf("err = %v, want ErrNoListFilter", err)
				}
				return
			}
			var me *MetadataError
			if !errors.As(err, &me) || me.Reason != tt.reason {
				t.Fatalf("err = %v, want reason %s", err, tt.reason)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "alice") {
				t.Errorf("error message leaks metadata content: %v", err)
			}
		})
	}
}

func TestValidRequestID(t *testing.T) {
	for id, want := range map[string]bool{
		`0`: true, `-0`: true, `42`: true, `-17`: true, `"a"`: true, `""`: true, `"\u00e9"`: true,
		`01`: false, `1.0`: false, `1e3`: false, `-`: false, `null`: false, `true`: false,
		`"a`: false, `"a""b"`: false, ` 1`: false, `1 `: false, `"\ud800"`: false, "\"\xff\"": false, `{}`: false,
	} {
		if got := validRequestID([]byte(id)); got != want {
			t.Errorf("validRequestID(%s) = %v, want %v", id, got, want)
		}
	}
}

func TestIDKey(t *testing.T) {
	same := [][2]string{
		{`"abc"`, `"\u0061bc"`},
		{`1`, `1.0`},
		{`1`, `1e0`},
		{`0`, `-0`},
		{`12345678901234567890`, `12345678901234567000`},
		{`"a/b"`, `"a\/b"`},
	}
	for _, p := range same {
		a, okA := idKey([]byte(p[0]))
		b, okB := idKey([]byte(p[1]))
		if !okA || !okB || a != b {
			t.Errorf("idKey(%s)=%q,%v idKey(%s)=%q,%v: want equal", p[0], a, okA, p[1], b, okB)
		}
	}
	different := [][2]string{{`1`, `"1"`}, {`1`, `2`}, {`"a"`, `"A"`}, {`"1"`, `"1.0"`}}
	for _, p := range different {
		a, _ := idKey([]byte(p[0]))
		b, _ := idKey([]byte(p[1]))
		if a == b {
			t.Errorf("idKey(%s) == idKey(%s)", p[0], p[1])
		}
	}
	for _, v := range []string{`null`, `true`, `{}`, `[]`, ``} {
		if _, ok := idKey([]byte(v)); ok {
			t.Errorf("idKey(%s) ok", v)
		}
	}
}
