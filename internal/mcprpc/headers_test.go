package mcprpc

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"
)

func b64(s string) string { return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?=" }

func TestDecodeHeaderValue(t *testing.T) {
	tests := []struct {
		name, in string
		want     string
		wantErr  bool
	}{
		{name: "plain", in: "tools/call", want: "tools/call"},
		{name: "plain_empty", in: "", want: ""},
		{name: "plain_with_space", in: "a b", want: "a b"},
		{name: "base64_ascii", in: b64("get_weather"), want: "get_weather"},
		{name: "base64_unicode", in: b64("café ✓"), want: "café ✓"},
		{name: "base64_empty", in: "=?base64??=", want: ""},
		{name: "undecodable_base64/invalid_chars", in: "=?base64?!!!!?=", wantErr: true},
		{name: "undecodable_base64/bad_padding", in: "=?base64?YWJj?=" + "x", wantErr: true},
		{name: "undecodable_base64/missing_padding", in: "=?base64?YWI?=", wantErr: true},
		{name: "undecodable_base64/non_canonical_bits", in: "=?base64?YWJ=?=", wantErr: true},
		{name: "undecodable_base64/url_alphabet", in: "=?base64?" + base64.URLEncoding.EncodeToString([]byte("\xfb\xff")) + "?=", wantErr: true},
		{name: "undecodable_base64/embedded_newline", in: "=?base64?YW\nJj?=", wantErr: true},
		{name: "undecodable_base64/embedded_cr", in: "=?base64?YW\rJj?=", wantErr: true},
		{name: "undecodable_base64/invalid_utf8", in: "=?base64?" + base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe}) + "?=", wantErr: true},
		{name: "undecodable_base64/decoded_control", in: b64("a\x00b"), wantErr: true},
		{name: "undecodable_base64/no_suffix", in: "=?base64?YWJj", wantErr: true},
		{name: "undecodable_base64/prefix_only", in: "=?base64?", wantErr: true},
		{name: "undecodable_base64/overlapping_prefix_suffix", in: "=?base64?=", wantErr: true},
		{name: "undecodable_base64/upper_prefix", in: "=?BASE64?YWJj?=", wantErr: true},
		{name: "raw_control", in: "tools/call\x00", wantErr: true},
		{name: "raw_tab", in: "a\tb", wantErr: true},
		{name: "raw_del", in: "a\x7f", wantErr: true},
		{name: "raw_non_ascii", in: "café", wantErr: true},
		{name: "raw_crlf", in: "a\r\nX-Injected: 1", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeHeaderValue(tc.in)
			if tc.wantErr {
				checkErr(t, err, &Error{Reason: ReasonInvalidHeader, Code: CodeHeaderMismatch})
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("DecodeHeaderValue(%q) = %q, %v, want %q, nil", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestCheckHeaders(t *testing.T) {
	call := Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "danger", Name: "danger", MetaProtocolVersion: "2026-07-28"}
	list := Message{Kind: KindRequest, ID: id("2"), Method: "tools/list", MetaProtocolVersion: "2026-07-28"}
	read := Message{Kind: KindRequest, ID: id("3"), Method: "resources/read", Name: "file:///a b", ResourceURI: "file:///a%20b",
		MetaProtocolVersion: "2026-07-28"}
	task := Message{Kind: KindRequest, ID: id("4"), Method: "tasks/get", TaskID: "t1", Name: "t1", MetaProtocolVersion: "2026-07-28"}
	notif := Message{Kind: KindNotification, Method: "notifications/progress", MetaProtocolVersion: "2026-07-28"}
	legacyCall := Message{Kind: KindRequest, ID: id("5"), Method: "tools/call", Tool: "danger", Name: "danger"}
	response := Message{Kind: KindResponse, ID: id("6")}

	modern := func(method, name string) Headers {
		return Headers{ProtocolVersion: "2026-07-28", Method: method, HasMethod: true, Name: name, HasName: name != ""}
	}
	mismatch := func(id string) *Error { return perr(ReasonHeaderMismatch, CodeHeaderMismatch, id) }

	tests := []struct {
		name    string
		h       Headers
		m       Message
		wantErr *Error
		wantMsg string // substring of the error message, when set
	}{
		{name: "2026/tools_call_ok", h: modern("tools/call", "danger"), m: call},
		{name: "2026/tools_call_base64_name_ok", h: modern("tools/call", b64("danger")), m: call},
		{name: "2026/tools_list_ok", h: modern("tools/list", ""), m: list},
		{name: "2026/resources_read_ok", h: modern("resources/read", b64("file:///a b")), m: read},
		{name: "2026/tasks_get_ok", h: modern("tasks/get", "t1"), m: task},
		{name: "2026/notification_ok", h: modern("notifications/progress", ""), m: notif},
		{name: "2026/later_version_same_rules", h: Headers{ProtocolVersion: "2027-01-01", Method: "tools/list", HasMethod: true},
			m: Message{Kind: KindRequest, ID: id("2"), Method: "tools/list", MetaProtocolVersion: "2027-01-01"}},
		{name: "header_mismatch/method_header_differs", h: modern("tools/list", "danger"), m: call, wantErr: mismatch("1"),
			wantMsg: "Header mismatch: Mcp-Method header value 'tools/list' does not match body value 'tools/call'"},
		{name: "header_mismatch/name_header_differs", h: modern("tools/call", "safe"), m: call, wantErr: mismatch("1"),
			wantMsg: "Header mismatch: Mcp-Name header value 'safe' does not match body value 'danger'"},
		{name: "header_mismatch/name_header_case_differs", h: modern("tools/call", "Danger"), m: call, wantErr: mismatch("1")},
		{name: "header_mismatch/base64_name_differs", h: modern("tools/call", b64("safe")), m: call, wantErr: mismatch("1")},
		{name: "header_mismatch/missing_method_header", h: Headers{ProtocolVersion: "2026-07-28", Name: "danger", HasName: true}, m: call,
			wantErr: mismatch("1"), wantMsg: "missing required Mcp-Method header"},
		{name: "header_mismatch/missing_name_header", h: modern("tools/call", ""), m: call, wantErr: mismatch("1"),
			wantMsg: "missing required Mcp-Name header"},
		{name: "header_mismatch/missing_name_header_resources_read", h: modern("resources/read", ""), m: read, wantErr: mismatch("3")},
		{name: "header_mismatch/missing_name_header_tasks", h: modern("tasks/get", ""), m: task, wantErr: mismatch("4")},
		{name: "header_mismatch/empty_method_header", h: Headers{ProtocolVersion: "2026-07-28", HasMethod: true}, m: list, wantErr: mismatch("2")},
		{name: "header_mismatch/name_header_on_method_without_name", h: modern("tools/list", "x"), m: list, wantErr: mismatch("2")},
		{name: "header_mismatch/undecodable_name_header", h: modern("tools/call", "=?base64?!!?="), m: call, wantErr: mismatch("1"),
			wantMsg: "Mcp-Name header value is not valid"},
		{name: "header_mismatch/undecodable_method_header", h: modern("=?base64?dG9vbHMvY2FsbA?=", "danger"), m: call, wantErr: mismatch("1")},
		{name: "header_mismatch/raw_control_in_name_header", h: modern("tools/call", "danger\x00"), m: call, wantErr: mismatch("1")},
		{name: "header_mismatch/raw_base64_text_is_not_the_name", h: modern("tools/call", "=?base64?ZGFuZ2Vy?= "), m: call, wantErr: mismatch("1")},
		{name: "2026/response_forbidden", h: modern("", ""), m: response,
			wantErr: perr(ReasonInvalidMessage, CodeInvalidRequest, "6")},
		{name: "protocol_version_mismatch/meta_missing_in_2026", h: modern("tools/list", ""),
			m: Message{Kind: KindRequest, ID: id("2"), Method: "tools/list"}, wantErr: mismatch("2"),
			wantMsg: "missing required _meta"},
		{name: "protocol_version_mismatch/header_and_meta_differ", h: Headers{ProtocolVersion: "2026-07-28", Method: "tools/list", HasMethod: true},
			m: Message{Kind: KindRequest, ID: id("2"), Method: "tools/list", MetaProtocolVersion: "2025-11-25"}, wantErr: mismatch("2"),
			wantMsg: "Header mismatch: MCP-Protocol-Version header value '2026-07-28' does not match body value '2025-11-25'"},
		{name: "protocol_version_mismatch/legacy_header_and_meta_differ", h: Headers{ProtocolVersion: "2025-06-18"},
			m: Message{Kind: KindRequest, ID: id("2"), Method: "tools/list", MetaProtocolVersion: "2025-11-25"}, wantErr: mismatch("2")},
		{name: "protocol_version_mismatch/downgrade_by_dropping_header", h: Headers{Method: "tools/call", HasMethod: true, Name: "danger", HasName: true},
			m: call, wantErr: mismatch("1"), wantMsg: "missing required MCP-Protocol-Version header"},
		{name: "protocol_version_mismatch/legacy_meta_without_header_ok", h: Headers{},
			m: Message{Kind: KindRequest, ID: id("2"), Method: "tools/list", MetaProtocolVersion: "2025-11-25"}},
		{name: "legacy/no_headers_ok", h: Headers{ProtocolVersion: "2025-11-25"}, m: legacyCall},
		{name: "legacy/no_version_ok", h: Headers{}, m: legacyCall},
		{name: "legacy/response_ok", h: Headers{ProtocolVersion: "2025-06-18"}, m: response},
		{name: "legacy/present_method_header_checked", h: Headers{ProtocolVersion: "2025-11-25", Method: "tools/list", HasMethod: true},
			m: legacyCall, wantErr: mismatch("5")},
		{name: "legacy/present_name_header_checked", h: Headers{ProtocolVersion: "2025-11-25", Name: "safe", HasName: true},
			m: legacyCall, wantErr: mismatch("5")},
		{name: "legacy/matching_headers_ok", h: Headers{ProtocolVersion: "2025-11-25", Method: "tools/call", HasMethod: true, Name: "danger", HasName: true},
			m: legacyCall},
		{name: "legacy/meta_missing_ok", h: Headers{ProtocolVersion: "2025-11-25", Method: "tools/call", HasMethod: true}, m: legacyCall},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckHeaders(tc.h, tc.m)
			if tc.wantErr == nil {
				if err != nil {
					t.Errorf("CheckHeaders() = %v, want nil", err)
				}
				return
			}
			checkErr(t, err, tc.wantErr)
			if tc.wantMsg != "" && err != nil && !strings.Contains(err.(*Error).Message, tc.wantMsg) {
				t.Errorf("CheckHeaders() message = %q, want it to contain %q", err.(*Error).Message, tc.wantMsg)
			}
		})
	}
}

// TestCheckHeadersEchoIsSanitized pins that echoed values are truncated to
// 64 bytes and free of non-printable characters.
func TestCheckHeadersEchoIsSanitized(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	m := Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Name: "bar\u202e\x1b[31m" + long, MetaProtocolVersion: "2026-07-28"}
	h := Headers{ProtocolVersion: "2026-07-28", Method: "tools/call", HasMethod: true, Name: b64(long + "x"), HasName: true}
	err := CheckHeaders(h, m)
	var e *Error
	if err == nil {
		t.Fatal("CheckHeaders() = nil, want mismatch")
	}
	e = err.(*Error)
	parts := strings.Split(e.Message, "'")
	if len(parts) != 5 {
		t.Fatalf("message %q does not have two quoted values", e.Message)
	}
	for _, v := range []string{parts[1], parts[3]} {
		if len(v) > maxEchoBytes {
			t.Errorf("echoed value %q is %d bytes, want <= %d", v, len(v), maxEchoBytes)
		}
		if !strings.HasSuffix(v, "...") {
			t.Errorf("echoed value %q is not marked as truncated", v)
		}
		if !utf8.ValidString(v) {
			t.Errorf("echoed value %q is not valid UTF-8", v)
		}
	}
	if strings.ContainsAny(e.Message, "\u202e\x1b") {
		t.Errorf("message %q contains non-printable characters", e.Message)
	}
	if !strings.HasPrefix(parts[3], "bar??[31m") {
		t.Errorf("body value echoed as %q, want non-printables replaced by '?'", parts[3])
	}
}

func TestSanitize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"foo", "foo"},
		{"", ""},
		{strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), strings.Repeat("a", 61) + "..."},
		{"a\x00b\nc", "a?b?c"},
		{"\xff", "?"},
		{"x\u200by", "x?y"},
		{strings.Repeat("€", 30), strings.Repeat("€", 20) + "..."}, // 3-byte runes: 20*3+3 = 63
	}
	for _, tc := range tests {
		if got := sanitize(tc.in); got != tc.want {
			t.Errorf("sanitize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSupportedProtocolVersion(t *testing.T) {
	for _, v := range []string{"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"} {
		if !SupportedProtocolVersion(v) {
			t.Errorf("SupportedProtocolVersion(%q) = false, want true", v)
		}
	}
	for _, v := range []string{"", "2025-11-24", "2026-07-29", "2026-07-28 ", "2024-11-05\x00", "latest", "2025-3-26"} {
		if SupportedProtocolVersion(v) {
			t.Errorf("SupportedProtocolVersion(%q) = true, want false", v)
		}
	}
}

func TestBatchAllowed(t *testing.T) {
	tests := map[string]bool{
		"": true, "2025-03-26": true,
		"2024-11-05": false, "2025-06-18": false, "2025-11-25": false, "2026-07-28": false, "bogus": false,
	}
	for v, want := range tests {
		if got := BatchAllowed(v); got != want {
			t.Errorf("BatchAllowed(%q) = %v, want %v", v, got, want)
		}
	}
}
