package mcprpc

import (
	"errors"
	"strings"
	"testing"
)

// uriCase is one row of TestNormalizeURI: either want (accepted, the
// normal form) or reason (rejected).
type uriCase struct {
	name     string
	in       string
	template bool
	want     string
	reason   string
}

const (
	invalidURIReason   = ReasonInvalidResourceURI
	ambiguousURIReason = ReasonAmbiguousResourceURI
)

// uriCases has a named row per attack class on prefix rules such as
// "file:///srv/data/", and the controls that must keep working. Every
// rejection names its class in the row name.
var uriCases = []uriCase{
	// Controls: normal forms.
	{name: "control/already_normal", in: "https://example.com/a/b?x=1#f", want: "https://example.com/a/b?x=1#f"},
	{name: "control/scheme_and_host_lowercased", in: "HTTPS://Example.COM/Path", want: "https://example.com/Path"},
	{name: "control/path_case_kept", in: "file:///Srv/Docs", want: "file:///Srv/Docs"},
	{name: "control/unreserved_escapes_decoded", in: "http://h/%7Euser/%41%2d%5F", want: "http://h/~user/A-_"},
	{name: "control/reserved_escapes_uppercased", in: "http://h/a%3ab%40", want: "http://h/a%3Ab%40"},
	{name: "control/non_ascii_path_percent_encoded", in: "file:///srv/café", want: "file:///srv/caf%C3%A9"},
	{name: "control/encoded_and_raw_unicode_agree", in: "file:///srv/caf%c3%a9", want: "file:///srv/caf%C3%A9"},
	{name: "control/whatwg_path_set_encoded", in: "file:///a/\"<>`{}", want: "file:///a/%22%3C%3E%60%7B%7D"},
	{name: "control/rfc_disallowed_encoded", in: "file:///a/^|[]", want: "file:///a/%5E%7C%5B%5D"},
	{name: "control/special_query_quote_encoded", in: "https://h/?a='b'", want: "https://h/?a=%27b%27"},
	{name: "control/non_special_query_quote_kept", in: "mem://h/?a='b'", want: "mem://h/?a='b'"},
	{name: "control/second_hash_encoded", in: "http://h/a#b#c", want: "http://h/a#b%23c"},
	{name: "control/empty_path_becomes_slash", in: "http://Example.com", want: "http://example.com/"},
	{name: "control/non_special_empty_path_kept", in: "mem://h", want: "mem://h"},
	{name: "control/default_port_dropped", in: "https://h:443/x", want: "https://h/x"},
	{name: "control/default_port_with_zeros_dropped", in: "http://h:0080/", want: "http://h/"},
	{name: "control/ws_default_port_dropped", in: "ws://h:80/", want: "ws://h/"},
	{name: "control/wss_default_port_dropped", in: "wss://h:443/", want: "wss://h/"},
	{name: "control/ftp_default_port_dropped", in: "ftp://h:21/", want: "ftp://h/"},
	{name: "control/other_port_kept", in: "https://h:8443/x", want: "https://h:8443/x"},
	{name: "control/empty_port_dropped", in: "https://h:/x", want: "https://h/x"},
	{name: "control/non_special_port_canonical", in: "mem://h:080/", want: "mem://h:80/"},
	{name: "control/percent_encoded_host_decoded", in: "http://%65xample.com/", want: "http://example.com/"},
	{name: "control/ipv4", in: "http://127.0.0.1:8080/", want: "http://127.0.0.1:8080/"},
	{name: "control/ipv6_compressed_lowercased", in: "http://[2001:DB8:0:0:0:0:0:1]/", want: "http://[2001:db8::1]/"},
	{name: "control/ipv6_v4_suffix_as_hex", in: "http://[::ffff:1.2.3.4]/", want: "http://[::ffff:102:304]/"},
	{name: "control/ipv6_single_zero_not_compressed", in: "http://[1::2:3:4:5:6:7]/", want: "http://[1:0:2:3:4:5:6:7]/"},
	{name: "control/punycode_host_lowercased", in: "https://XN--CAF-DMA.example/", want: "https://xn--caf-dma.example/"},
	{name: "control/file_localhost_is_empty_host", in: "file://LOCALHOST/etc/x", want: "file:///etc/x"},
	{name: "control/file_single_slash", in: "file:/srv/data/x", want: "file:///srv/data/x"},
	{name: "control/file_host_kept", in: "file://Server/share/x", want: "file://server/share/x"},
	{name: "control/windows_drive_letter", in: "file:///C:/data/x", want: "file:///C:/data/x"},
	{name: "control/urn", in: "URN:ISBN:0451450523", want: "urn:ISBN:0451450523"},
	{name: "control/opaque_path_kept", in: "mem:a/b", want: "mem:a/b"},
	{name: "control/non_special_host_lowercased", in: "mem://Host.Example/x", want: "mem://host.example/x"},
	{name: "control/non_special_unicode_host_encoded", in: "mem://é/x", want: "mem://%C3%A9/x"},
	{name: "control/custom_scheme_rooted_path", in: "mem:/a/./b/../c", want: "mem:/a/c"},
	{name: "control/dot_in_name_kept", in: "file:///a/.hidden/b..c/...", want: "file:///a/.hidden/b..c/..."},
	{name: "control/encoded_dot_in_name_decoded", in: "http://h/a%2Eb", want: "http://h/a.b"},
	{name: "control/empty_query_kept", in: "http://h/x?", want: "http://h/x?"},
	{name: "control/query_escapes_normalised", in: "http://h/?q=%7e%3a", want: "http://h/?q=~%3A"},
	{name: "control/trailing_slash_kept", in: "file:///srv/data/", want: "file:///srv/data/"},

	// Dot segments are resolved (WHATWG and RFC 3986 agree on them).
	{name: "dot_segments/resolved", in: "http://h/a/b/c/./../../g", want: "http://h/a/g"},
	{name: "dot_segments/escape_prefix", in: "file:///srv/data/../../etc/passwd", want: "file:///etc/passwd"},
	{name: "dot_segments/encoded_dotdot", in: "file:///srv/data/%2e%2E/secret", want: "file:///srv/secret"},
	{name: "dot_segments/half_encoded_dotdot", in: "file:///srv/data/.%2e/x", want: "file:///srv/x"},
	{name: "dot_segments/encoded_dot", in: "file:///srv/%2e/data", want: "file:///srv/data"},
	{name: "dot_segments/trailing_dot", in: "http://h/a/.", want: "http://h/a/"},
	{name: "dot_segments/trailing_dotdot", in: "http://h/a/b/..", want: "http://h/a/"},
	{name: "dot_segments/trailing_encoded_dotdot", in: "http://h/a/%2e%2e", want: "http://h/"},
	{name: "dot_segments/non_special_with_authority", in: "mem://h/a/../b", want: "mem://h/b"},
	{name: "dot_segments/climbs_above_root", in: "file:///../etc/passwd", reason: ambiguousURIReason},
	{name: "dot_segments/climbs_above_root_later", in: "file:///srv/../../etc/passwd", reason: ambiguousURIReason},
	{name: "dot_segments/climbs_above_root_non_special", in: "mem://h/..", reason: ambiguousURIReason},
	{name: "dot_segments/climbs_above_root_rooted", in: "mem:/a/../..", reason: ambiguousURIReason},

	// Malformed percent-escapes are rejected, never matched raw.
	{name: "malformed_escape/invalid_hex", in: "file:///srv/data/%zz/../../../etc/passwd", reason: invalidURIReason},
	{name: "malformed_escape/truncated", in: "file:///srv/data/../../etc/passwd%4", reason: invalidURIReason},
	{name: "malformed_escape/trailing_percent", in: "file:///srv/data/a%", reason: invalidURIReason},
	{name: "malformed_escape/in_query", in: "file:///srv/data/x?%g1", reason: invalidURIReason},
	{name: "malformed_escape/in_host", in: "http://ex%zzample.com/", reason: invalidURIReason},
	{name: "malformed_escape/in_opaque_host", in: "mem://a%z/", reason: invalidURIReason},

	// Backslashes: WHATWG reads them as "/" in special URLs, RFC 3986
	// readers as a file-name character.
	{name: "backslash/traversal", in: `file:///srv/data/..\..\etc\passwd`, reason: ambiguousURIReason},
	{name: "backslash/separator_only", in: `file:///srv/data\x`, reason: ambiguousURIReason},
	{name: "backslash/after_scheme", in: `http:\\evil.example\x`, reason: ambiguousURIReason},
	{name: "backslash/in_authority", in: `http://good.example\@evil.example/`, reason: ambiguousURIReason},
	{name: "backslash/non_special", in: `mem://h/a\..\b`, reason: ambiguousURIReason},
	{name: "backslash/in_query", in: `http://h/x?a\b`, reason: ambiguousURIReason},

	// Encoded separators: servers decode them before resolving the path.
	{name: "encoded_separator/slash", in: "file:///srv/data/..%2F..%2Fetc%2Fpasswd", reason: ambiguousURIReason},
	{name: "encoded_separator/slash_lower", in: "file:///srv/data/..%2f..%2fetc", reason: ambiguousURIReason},
	{name: "encoded_separator/backslash", in: "file:///srv/data/..%5C..%5Cetc", reason: ambiguousURIReason},
	{name: "encoded_separator/in_opaque_path", in: "urn:x:..%2F..%2Fetc", reason: ambiguousURIReason},
	{name: "encoded_separator/in_query", in: "file:///srv/data/x?p=..%2F..%2Fetc", reason: ambiguousURIReason},
	{name: "encoded_separator/in_fragment", in: "file:///srv/data/x#%2F..%2Fetc", reason: ambiguousURIReason},
	{name: "encoded_separator/in_opaque_host", in: "mem://a%2Fb/", reason: ambiguousURIReason},
	{name: "encoded_separator/in_special_host", in: "http://ex%2Fample.com/", reason: invalidURIReason},

	// Double encoding: a server that decodes twice reads "..".
	{name: "double_encoding/dot", in: "file:///srv/data/%252e%252e/secret", reason: ambiguousURIReason},
	{name: "double_encoding/slash", in: "file:///srv/data/..%252F..%252Fetc", reason: ambiguousURIReason},
	{name: "double_encoding/backslash", in: "file:///srv/data/..%255c..%255cetc", reason: ambiguousURIReason},
	{name: "double_encoding/plain_percent_kept", in: "file:///srv/100%25.txt", want: "file:///srv/100%25.txt"},

	// Dot segments where WHATWG keeps them and RFC 3986 resolves them, or
	// where greedy template expressions capture them.
	{name: "opaque_dots/rootless_path", in: "mem:secret/../public/x", reason: ambiguousURIReason},
	{name: "opaque_dots/rootless_encoded", in: "mem:a/%2e%2e/b", reason: ambiguousURIReason},
	{name: "opaque_dots/single_dot", in: "mem:./x", reason: ambiguousURIReason},
	{name: "query_dots/fragment_traversal", in: "file:///srv/data/x#/../../../etc/passwd", reason: ambiguousURIReason},
	{name: "query_dots/query_traversal", in: "file:///srv/data/x?/../../../etc/passwd", reason: ambiguousURIReason},
	{name: "query_dots/encoded_in_query", in: "file:///srv/data/x?a/%2e%2e/b", reason: ambiguousURIReason},
	{name: "query_dots/dots_inside_values_ok", in: "http://h/x?v=1..2&w=../", want: "http://h/x?v=1..2&w=../"},

	// Empty segments: file servers merge "//", URL-keyed servers do not.
	{name: "empty_segment/double_slash", in: "file:///srv//secret/x", reason: ambiguousURIReason},
	{name: "empty_segment/with_dotdot", in: "http://h/a//../x", reason: ambiguousURIReason},
	{name: "empty_segment/unc_like_file", in: "file:////server/share", reason: ambiguousURIReason},
	{name: "empty_segment/dot_then_empty", in: "mem:/.//x", reason: ambiguousURIReason},
	{name: "empty_segment/opaque", in: "mem:a//b", reason: ambiguousURIReason},

	// Control characters and white space: WHATWG drops tabs and newlines.
	{name: "control_chars/newline_dropped_by_whatwg", in: "file:///srv/da\nta/x", reason: invalidURIReason},
	{name: "control_chars/tab", in: "file:///srv/\tdata", reason: invalidURIReason},
	{name: "control_chars/space", in: "file:///a b", reason: invalidURIReason},
	{name: "control_chars/nul", in: "file:///a\x00", reason: invalidURIReason},
	{name: "control_chars/c1", in: "file:///a\u0085", reason: invalidURIReason},
	{name: "control_chars/nbsp", in: "file:///a\u00a0b", reason: invalidURIReason},
	{name: "control_chars/encoded_nul", in: "file:///srv/data/x.txt%00.png", reason: invalidURIReason},
	{name: "control_chars/encoded_newline", in: "file:///srv/data/%0a", reason: invalidURIReason},
	{name: "control_chars/invalid_utf8", in: "file:///\xff", reason: invalidURIReason},

	// Not an absolute URI.
	{name: "not_absolute/empty", in: "", reason: invalidURIReason},
	{name: "not_absolute/relative_path", in: "a/../b", reason: invalidURIReason},
	{name: "not_absolute/scheme_relative", in: "//h/x", reason: invalidURIReason},
	{name: "not_absolute/scheme_starts_with_digit", in: "1http://h/", reason: invalidURIReason},

	// Special schemes whose authority WHATWG finds without "//".
	{name: "special_slashes/no_slashes", in: "http:evil.example/x", reason: ambiguousURIReason},
	{name: "special_slashes/one_slash", in: "https:/evil.example/x", reason: ambiguousURIReason},
	{name: "special_slashes/three_slashes", in: "http:///evil.example/x", reason: invalidURIReason},
	{name: "special_slashes/file_relative", in: "file:etc/passwd", reason: ambiguousURIReason},

	// Hosts.
	{name: "host/userinfo_confusion", in: "https://good.example@evil.example/", reason: ambiguousURIReason},
	{name: "host/userinfo_non_special", in: "mem://user:pw@h/", reason: ambiguousURIReason},
	{name: "host/ipv4_hex", in: "http://0x7f.1/", reason: ambiguousURIReason},
	{name: "host/ipv4_short", in: "http://127.1/", reason: ambiguousURIReason},
	{name: "host/ipv4_leading_zero", in: "http://1.2.3.04/", reason: ambiguousURIReason},
	{name: "host/ipv4_octal", in: "http://0177.0.0.1/", reason: ambiguousURIReason},
	{name: "host/ipv4_out_of_range", in: "http://256.1.1.1/", reason: ambiguousURIReason},
	{name: "host/ipv4_numeric_last_label", in: "http://a.1/", reason: ambiguousURIReason},
	{name: "host/trailing_dot", in: "https://example.com./x", reason: ambiguousURIReason},
	{name: "host/empty_label", in: "https://a..b/", reason: ambiguousURIReason},
	{name: "host/unicode", in: "https://café.example/", reason: ambiguousURIReason},
	{name: "host/encoded_unicode", in: "https://caf%C3%A9.example/", reason: ambiguousURIReason},
	{name: "host/fullwidth_idna_mapping", in: "https://ｅxample.com/", reason: ambiguousURIReason},
	{name: "host/invalid_punycode", in: "https://xn--a.example/", reason: invalidURIReason},
	{name: "host/forbidden_char", in: "https://a<b.example/", reason: invalidURIReason},
	{name: "host/empty_special", in: "https://:443/x", reason: invalidURIReason},
	{name: "host/ipv6_zone", in: "http://[fe80::1%25eth0]/", reason: invalidURIReason},
	{name: "host/ipv6_invalid", in: "http://[::g]/", reason: invalidURIReason},
	{name: "host/ipv6_ipv4_only", in: "http://[1.2.3.4]/", reason: invalidURIReason},
	{name: "host/ipv6_unterminated", in: "http://[::1/", reason: invalidURIReason},
	{name: "host/port_not_number", in: "http://h:8x/", reason: invalidURIReason},
	{name: "host/port_too_large", in: "http://h:65536/", reason: invalidURIReason},
	{name: "host/port_colon_twice", in: "http://h:1:2/", reason: invalidURIReason},
	{name: "host/file_with_port", in: "file://h:22/x", reason: invalidURIReason},
	{name: "host/file_drive_in_host", in: "file://C:/x", reason: invalidURIReason},
	{name: "host/non_special_forbidden", in: "mem://a^b/", reason: invalidURIReason},

	// Windows drive letters: WHATWG rewrites "C|" to "C:" and never pops a
	// drive letter with "..", RFC 3986 readers do.
	{name: "drive_letter/pipe", in: "file:///C|/data/x", reason: ambiguousURIReason},
	{name: "drive_letter/pipe_after_dotdot", in: "file:///a/../C|/x", reason: ambiguousURIReason},
	{name: "drive_letter/dotdot_pinned", in: "file:///C:/../../data/x", reason: ambiguousURIReason},

	// Templates (completion/complete ref/resource).
	{name: "template/braces_kept", in: "FILE:///a/./b/{x}", template: true, want: "file:///a/b/{x}"},
	{name: "template/operators_kept", in: "file:///srv/{+path}{?q,r}{#f}", template: true, want: "file:///srv/{+path}{?q,r}{#f}"},
	{name: "template/host_expression", in: "Users://{userId}/Profile", template: true, want: "users://{userId}/Profile"},
	{name: "template/slash_inside_expression", in: "file:///srv/{/a,b}/x", template: true, want: "file:///srv/{/a,b}/x"},
	{name: "template/dots_resolved", in: "file:///srv/data/../../etc/{x}", template: true, want: "file:///etc/{x}"},
	{name: "template/unbalanced_open", in: "file:///srv/{x", template: true, reason: invalidURIReason},
	{name: "template/unbalanced_close", in: "file:///srv/x}", template: true, reason: invalidURIReason},
	{name: "template/nested", in: "file:///srv/{a{b}}", template: true, reason: invalidURIReason},
	{name: "template/backslash", in: `file:///srv/{x}\..\..`, template: true, reason: ambiguousURIReason},
	{name: "template/braces_encoded_outside_templates", in: "file:///a/{x}", want: "file:///a/%7Bx%7D"},
}

func TestNormalizeURI(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range uriCases {
		if seen[tc.name] {
			t.Fatalf("duplicate row name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			normalize := NormalizeURI
			if tc.template {
				normalize = NormalizeURITemplate
			}
			got, err := normalize(tc.in)
			if tc.reason != "" {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("normalize(%q) = %q, %v; want an *Error with reason %s", tc.in, got, err, tc.reason)
				}
				if e.Reason != tc.reason || e.Code != CodeInvalidParams || e.ID != nil {
					t.Errorf("normalize(%q) error = {%s %d %s} %v, want {%s %d}", tc.in, e.Reason, e.Code, e.ID, e, tc.reason, CodeInvalidParams)
				}
				if got != "" {
					t.Errorf("normalize(%q) returned %q with an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("normalize(%q) error = %v, want %q", tc.in, err, tc.want)
			}
			if got != tc.want {
				t.Errorf("normalize(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if again, err := normalize(got); err != nil || again != got {
				t.Errorf("not idempotent: normalize(%q) = %q, %v", got, again, err)
			}
			checkNormalURI(t, tc.in, got, tc.template)
		})
	}
}

// TestNormalizeURIMessagesDoNotEchoInput pins that error messages describe
// the class of problem without repeating the URI (which may be anything the
// client sent).
func TestNormalizeURIMessagesDoNotEchoInput(t *testing.T) {
	for _, tc := range uriCases {
		if tc.reason == "" || len(tc.in) < 8 {
			continue
		}
		_, err := normalizeURI(tc.in, tc.template)
		if err == nil {
			t.Fatalf("%s: accepted", tc.name)
		}
		for _, part := range []string{tc.in, tc.in[len(tc.in)/2:]} {
			if len(part) >= 6 && strings.Contains(err.msg, part) {
				t.Errorf("%s: message %q echoes the input", tc.name, err.msg)
			}
		}
	}
}

func TestNormalizeURIUnchangedDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	s := "https://example.com/a/b"
	// One allocation for the work buffer; the input is returned as is.
	if n := testing.AllocsPerRun(100, func() { _, _ = NormalizeURI(s) }); n > 1 {
		t.Errorf("NormalizeURI(%q) allocates %v times, want <= 1", s, n)
	}
}
