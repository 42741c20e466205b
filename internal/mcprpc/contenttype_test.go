package mcprpc

import (
	"errors"
	"mime"
	"strings"
	"testing"
)

// contentTypeCases: application/json with any parameters is accepted as the
// SDK servers accept it; everything a server could read as another type or
// charset is rejected.
var contentTypeCases = []struct {
	name string
	ct   string
	ok   bool
}{
	{"plain", "application/json", true},
	{"upper_case", "APPLICATION/JSON", true},
	{"mixed_case", "Application/Json", true},
	{"charset_utf8", "application/json; charset=utf-8", true},
	{"charset_upper", "application/json; charset=UTF-8", true},
	{"charset_quoted", `application/json; charset="utf-8"`, true},
	{"charset_name_upper", "application/json; CHARSET=utf-8", true},
	{"profile_parameter", "application/json; profile=x", true},
	{"quoted_parameter", `application/json; profile="https://example.com/p; v=1"`, true},
	{"parameters_around_charset", "application/json;v=1;charset=utf-8;x=y", true},
	{"duplicate_other_parameter", "application/json; a=1; a=2", true},
	{"no_space", "application/json;charset=utf-8", true},
	{"tabs_and_spaces", "application/json \t;\t charset=utf-8 ", true},
	{"empty_parameter", "application/json;", true},
	{"empty_parameters", "application/json;;charset=utf-8;", true},
	{"surrounding_whitespace", "  application/json  ", true},

	{"missing", "", false},
	{"whitespace_only", " \t", false},
	{"text_plain", "text/plain", false},
	{"form", "application/x-www-form-urlencoded", false},
	{"json_seq", "application/json-seq", false},
	{"jsonl", "application/jsonl", false},
	{"json_patch_suffix", "application/json-patch+json", false},
	{"merge_patch_suffix", "application/merge-patch+json", false},
	{"vendor_suffix", "application/vnd.api+json", false},
	{"type_only", "application", false},
	{"no_subtype", "application/", false},
	{"wildcard", "*/*", false},
	{"two_media_types", "text/plain, application/json", false},
	{"two_media_types_json_first", "application/json, text/plain", false},
	{"json_in_parameter", "x/y; p=application/json", false},
	{"charset_utf16", "application/json; charset=utf-16le", false},
	{"charset_utf7", "application/json; charset=utf-7", false},
	{"charset_latin1", "application/json; charset=iso-8859-1", false},
	{"charset_utf8_alias_without_dash", "application/json; charset=utf8", false},
	{"charset_empty_quoted", `application/json; charset=""`, false},
	{"charset_duplicate", "application/json; charset=utf-8; charset=utf-8", false},
	{"charset_duplicate_case_variant", "application/json; charset=utf-8; Charset=utf-16", false},
	{"charset_quoted_pair_readers_disagree", `application/json; charset="utf\-8"`, false},
	{"other_parameter_quoted_pair_ok", `application/json; p="a\"b"`, true},
	{"charset_rfc2231_extended", "application/json; charset*=utf-8''utf-16", false},
	{"charset_rfc2231_continuation", "application/json; charset*0=utf; charset*1=-16", false},
	{"space_before_equals", "application/json; charset =utf-8", false},
	{"space_after_equals", "application/json; charset= utf-8", false},
	{"space_in_type", "application / json", false},
	{"parameter_without_value", "application/json; charset", false},
	{"parameter_without_name", "application/json; =utf-8", false},
	{"unterminated_quote", `application/json; charset="utf-8`, false},
	{"garbage_after_quote", `application/json; charset="utf-8"x`, false},
	{"control_character", "application/json; charset=utf-8\x00", false},
	{"newline", "application/json\r\nX: y", false},
	{"non_ascii", "application/jsön", false},
}

func TestCheckContentType(t *testing.T) {
	for _, tc := range contentTypeCases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckContentType(tc.ct)
			if tc.ok {
				if err != nil {
					t.Fatalf("CheckContentType(%q) = %v, want nil", tc.ct, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("CheckContentType(%q) = %v, want an *Error", tc.ct, err)
			}
			if e.Reason != ReasonContentType || e.Code != CodeInvalidRequest || e.ID != nil || e.Message == "" {
				t.Errorf("CheckContentType(%q) = %+v, want reason %s code %d", tc.ct, e, ReasonContentType, CodeInvalidRequest)
			}
		})
	}
}

// FuzzCheckContentType checks CheckContentType against Go's mime package:
// whatever CheckContentType accepts, mime.ParseMediaType either cannot parse
// or also reads as application/json with no charset or a UTF-8 one. (The
// reverse does not hold on purpose: mime accepts duplicate-free RFC 2231
// parameters that CheckContentType refuses.)
func FuzzCheckContentType(f *testing.F) {
	for _, tc := range contentTypeCases {
		f.Add(tc.ct)
	}
	f.Fuzz(func(t *testing.T, ct string) {
		err := CheckContentType(ct)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		mt, params, merr := mime.ParseMediaType(ct)
		if merr != nil {
			return
		}
		if mt != "application/json" {
			t.Fatalf("CheckContentType(%q) accepted, mime reads media type %q", ct, mt)
		}
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			t.Fatalf("CheckContentType(%q) accepted, mime reads charset %q", ct, cs)
		}
	})
}
