package mcprpc

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
)

// parseCase is one row of TestParse. Exactly one of wantErr and want is
// meaningful: when wantErr is set, want is ignored.
type parseCase struct {
	name    string
	body    string
	opts    Options
	wantErr *Error // Reason, Code and ID are compared
	want    Body
}

func perr(reason string, code int, id string) *Error {
	e := &Error{Reason: reason, Code: code}
	if id != "" {
		e.ID = jsontext.Value(id)
	}
	return e
}

func one(m Message) Body { return Body{Messages: []Message{m}} }

func id(s string) jsontext.Value { return jsontext.Value(s) }

// Shorthands for the expected errors.
func parseErr(reason string) *Error   { return perr(reason, CodeParseError, "") }
func reqErr(reason, id string) *Error { return perr(reason, CodeInvalidRequest, id) }
func paramsErr(id string) *Error      { return perr(ReasonInvalidParams, CodeInvalidParams, id) }
func toolErr(id string) *Error        { return perr(ReasonInvalidToolName, CodeInvalidParams, id) }
func uriErr(reason, id string) *Error { return perr(reason, CodeInvalidParams, id) }

func toolCall(name string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":` + name + `}}`
}

func nested(open, close string, n int, inner string) string {
	return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
}

func batchOf(n int) string {
	elems := make([]string, n)
	for i := range elems {
		elems[i] = `{"jsonrpc":"2.0","method":"notifications/progress"}`
	}
	return "[" + strings.Join(elems, ",") + "]"
}

// parseCases are the bodies Parse must read exactly as the MCP servers do, or
// reject: parser differentials (duplicate and case-variant members, trailing
// data, encodings, numbers, depth), MCP and JSON-RPC message rules, empty
// bodies, plus controls. Each row is named by the attack or malformed input
// it is.
var parseCases = []parseCase{
	// Controls.
	{
		name: "control/initialize",
		body: `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`,
		want: one(Message{Kind: KindRequest, ID: id("0"), Method: "initialize"}),
	},
	{
		name: "control/tools_call",
		body: `{"jsonrpc":"2.0","id":"req-1","method":"tools/call","params":{"name":"get_weather","arguments":{"location":"Seattle","days":3}}}`,
		want: one(Message{Kind: KindRequest, ID: id(`"req-1"`), Method: "tools/call", Tool: "get_weather",
			Name: "get_weather", Arguments: id(`{"location":"Seattle","days":3}`)}),
	},
	{
		name: "control/notification",
		body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		want: one(Message{Kind: KindNotification, Method: "notifications/initialized"}),
	},
	{
		name: "control/response_result",
		body: `{"jsonrpc":"2.0","id":7,"result":{"roots":[]}}`,
		want: one(Message{Kind: KindResponse, ID: id("7")}),
	},
	{
		name: "control/response_error",
		body: `{"jsonrpc":"2.0","id":"s1","error":{"code":-32601,"message":"nope"}}`,
		want: one(Message{Kind: KindResponse, ID: id(`"s1"`)}),
	},
	{
		name: "control/batch_of_two",
		body: `[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"}]`,
		want: Body{Batch: true, Messages: []Message{
			{Kind: KindRequest, ID: id("1"), Method: "tools/list"},
			{Kind: KindNotification, Method: "notifications/initialized"},
		}},
	},
	{
		name: "control/2026_request_with_meta",
		body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","arguments":{"location":"Seattle"},` +
			`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "get_weather", Name: "get_weather",
			Arguments: id(`{"location":"Seattle"}`), MetaProtocolVersion: "2026-07-28"}),
	},
	{
		name: "control/member_order_params_first",
		body: `{"params":{"arguments":{},"name":"t"},"method":"tools/call","id":2,"jsonrpc":"2.0"}`,
		want: one(Message{Kind: KindRequest, ID: id("2"), Method: "tools/call", Tool: "t", Name: "t", Arguments: id(`{}`)}),
	},
	{
		name: "control/unknown_members_tolerated",
		body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","x-extra":[1,{"a":null}],"params":{"cursor":"c","other":true}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/list"}),
	},

	// Parser differentials: bytes that mainstream JSON parsers read
	// differently (duplicates, case folding, trailing data, encodings,
	// numbers, depth, non-JSON syntax).
	{name: "duplicate_member/params_name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","name":"danger"}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{name: "duplicate_member/method", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"x"}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{name: "case_variant_member/method", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"tools/list","params":{"name":"danger"}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{name: "case_variant_member/params_name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger","Name":"safe"}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{name: "case_variant_member/long_s_params", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger"},"paramſ":{"name":"safe"}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{name: "case_variant_member/long_s_escaped", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger"},"param\u017f":{"name":"safe"}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{name: "case_variant_member/kelvin_sign_in_arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"kind":1,"` + "\u212a" + `ind":2}}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{name: "case_variant_member/upper_params", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger"},"PARAMS":{"name":"safe"}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{name: "lone_case_variant/id", body: `{"jsonrpc":"2.0","Id":1,"method":"tools/call","params":{"name":"danger"}}`,
		wantErr: parseErr(ReasonInvalidKey)},
	{name: "lone_case_variant/arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","Arguments":{"path":"/etc"}}}`,
		wantErr: parseErr(ReasonInvalidKey)},
	{name: "lone_case_variant/long_s_params", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","paramſ":{"name":"safe"}}`,
		wantErr: parseErr(ReasonInvalidKey)},
	{name: "lone_case_variant/kelvin_task_id", body: `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"tas` + "\u212a" + `Id":"t"}}`,
		wantErr: parseErr(ReasonInvalidKey)},
	{name: "lone_case_variant/upper_params", body: `{"jsonrpc":"2.0","method":"0","PARAMS":{}}`, wantErr: parseErr(ReasonInvalidKey)},
	{name: "lone_case_variant/meta", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_META":{}}}`, wantErr: parseErr(ReasonInvalidKey)},
	{name: "lone_case_variant/meta_version", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolversion":"2026-07-28"}}}`,
		wantErr: parseErr(ReasonInvalidKey)},
	{name: "lone_case_variant/ref_type", body: `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"Type":"ref/prompt","name":"p"}}}`,
		wantErr: parseErr(ReasonInvalidKey)},
	{name: "lone_case_variant/resource_subscriptions", body: `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourcesubscriptions":["a:b"]}}}`,
		wantErr: parseErr(ReasonInvalidKey)},
	{
		name: "lone_case_variant/inside_arguments_ok",
		body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"Name":1,"PARAMS":2,"Method":3}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "t", Name: "t",
			Arguments: id(`{"Name":1,"PARAMS":2,"Method":3}`)}),
	},
	{name: "control_char_in_member_name/nul_suffix_after_duplicate", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger","name\u0000":"safe"}}`,
		wantErr: parseErr(ReasonInvalidKey)},
	{name: "control_char_in_member_name/nul_suffix_alone", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name\u0000":"safe"}}`,
		wantErr: parseErr(ReasonInvalidKey)},
	{name: "control_char_in_member_name/nested_in_arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a\u001fb":1}}}`,
		wantErr: parseErr(ReasonInvalidKey)},
	{name: "case_variant_member/escaped", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger","n\u0041me":"safe"}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{name: "duplicate_member/escaped", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","\u006dethod":"ping","params":{"name":"x"}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{
		name: "escapes_decoded_before_policy",
		body: `{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"n\u0061me":"danger"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "danger", Name: "danger"}),
	},
	{name: "trailing_data/second_value", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"danger"}}`,
		wantErr: parseErr(ReasonTrailingData)},
	{name: "trailing_data/garbage", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}garbage`,
		wantErr: parseErr(ReasonTrailingData)},
	{
		name: "trailing_data/whitespace_ok",
		body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n\t ",
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/list"}),
	},
	{name: "not_utf8_json/utf8_bom", body: "\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}",
		wantErr: parseErr(ReasonInvalidJSON)},
	{name: "not_utf8_json/utf16le", body: utf16LE(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`),
		wantErr: parseErr(ReasonInvalidJSON)},
	{name: "not_utf8_json/utf16le_with_bom", body: "\xff\xfe" + utf16LE(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`),
		wantErr: parseErr(ReasonInvalidUTF8)},
	{name: "invalid_utf8/byte_in_name", body: toolCall("\"dang\xffer\""), wantErr: parseErr(ReasonInvalidUTF8)},
	{name: "invalid_utf8/overlong_quote", body: toolCall("\"dang\xc0\xa2er\""), wantErr: parseErr(ReasonInvalidUTF8)},
	{name: "lone_surrogate/in_name", body: toolCall(`"danger\ud800"`), wantErr: parseErr(ReasonInvalidJSON)},
	{name: "non_json_syntax/nan_id", body: `{"jsonrpc":"2.0","id":NaN,"method":"tools/list"}`, wantErr: parseErr(ReasonInvalidJSON)},
	{name: "number_out_of_range/id_1e400", body: `{"jsonrpc":"2.0","id":1e400,"method":"tools/list"}`, wantErr: parseErr(ReasonInvalidNumber)},
	{name: "number_out_of_range/arguments_minus_1e400", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"n":-1e400}}}`,
		wantErr: parseErr(ReasonInvalidNumber)},
	{
		name: "number_out_of_range/arguments_1e-400_underflow_ok",
		body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"n":1e-400}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "t", Name: "t", Arguments: id(`{"n":1e-400}`)}),
	},
	// Ids beyond 2^53 are read differently upstream (JavaScript rounds
	// 2^63 to 9223372036854776000, the Go SDK overflows int64), so the
	// response would not carry the client's id.
	{name: "id/2pow63_beyond_2pow53_tools_list", body: `{"jsonrpc":"2.0","id":9223372036854775808,"method":"tools/list"}`,
		wantErr: reqErr(ReasonInvalidID, "")},
	{name: "deep_nesting/10001_arrays", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":` + nested("[", "]", 10001, "") + `}}}`,
		wantErr: parseErr(ReasonTooDeep)},
	{name: "deep_nesting/300_arrays_default_cap", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":` + nested("[", "]", 300, "") + `}}}`,
		wantErr: parseErr(ReasonTooDeep)},
	{
		name: "deep_nesting/300_arrays_raised_cap",
		body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":` + nested("[", "]", 300, "") + `}}}`,
		opts: Options{MaxDepth: 303},
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "t", Name: "t",
			Arguments: id(`{"a":` + nested("[", "]", 300, "") + `}`)}),
	},
	{name: "deep_nesting/one_over_raised_cap", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":` + nested("[", "]", 300, "") + `}}}`,
		opts: Options{MaxDepth: 302}, wantErr: parseErr(ReasonTooDeep)},
	{name: "non_json_syntax/comment", body: `{"jsonrpc":"2.0",/*x*/"id":1,"method":"tools/list"}`, wantErr: parseErr(ReasonInvalidJSON)},
	{name: "non_json_syntax/trailing_comma", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list",}`, wantErr: parseErr(ReasonInvalidJSON)},
	{name: "non_json_syntax/single_quotes", body: `{'jsonrpc':'2.0','id':1,'method':'tools/list'}`, wantErr: parseErr(ReasonInvalidJSON)},
	{name: "non_json_syntax/raw_nul_in_string", body: toolCall("\"dan\x00ger\""), wantErr: parseErr(ReasonInvalidJSON)},
	{name: "escaped_nul_not_truncated/method", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call\u0000","params":{"name":"danger"}}`,
		wantErr: reqErr(ReasonInvalidMethod, "1")},
	{
		name: "proto_member_is_plain_data",
		body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger","__proto__":{"name":"safe"}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "danger", Name: "danger"}),
	},
	{name: "non_json_syntax/leading_nbsp", body: "\u00a0{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}", wantErr: parseErr(ReasonInvalidJSON)},
	{
		name: "leading_whitespace_ok",
		body: " \r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}",
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/list"}),
	},

	// MCP and JSON-RPC message semantics.
	{
		name: "control/tools_call_tool_extracted",
		body: toolCall(`"delete_repo"`),
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "delete_repo", Name: "delete_repo"}),
	},
	{name: "method_variant/Tools_Call", body: `{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"danger"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "Tools/Call"})},
	{name: "method_variant/trailing_space", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call ","params":{"name":"danger"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call "})},
	{name: "method_variant/TOOLS_CALL", body: `{"jsonrpc":"2.0","id":1,"method":"TOOLS/CALL","params":{"name":"danger"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "TOOLS/CALL"})},
	{name: "method_variant/double_slash", body: `{"jsonrpc":"2.0","id":1,"method":"tools//call","params":{"name":"danger"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools//call"})},
	{name: "method_variant/escaped_nul", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call\u0000","params":{"name":"danger"}}`,
		wantErr: reqErr(ReasonInvalidMethod, "1")},
	{
		name: "batch/allowed_and_denied",
		body: `[` + toolCall(`"allowed"`) + `,{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"denied"}}]`,
		want: Body{Batch: true, Messages: []Message{
			{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "allowed", Name: "allowed"},
			{Kind: KindRequest, ID: id("2"), Method: "tools/call", Tool: "denied", Name: "denied"},
		}},
	},
	{name: "batch/empty", body: `[]`, wantErr: reqErr(ReasonInvalidBatch, "")},
	{name: "batch/empty_whitespace", body: " [ \n ] ", wantErr: reqErr(ReasonInvalidBatch, "")},
	{name: "batch/101_elements", body: batchOf(101), wantErr: reqErr(ReasonBatchTooLarge, "")},
	{name: "batch/10000_elements", body: batchOf(10000), wantErr: reqErr(ReasonBatchTooLarge, "")},
	{
		name: "batch/100_elements_ok_count",
		body: batchOf(100),
		want: Body{Batch: true, Messages: repeatMsg(Message{Kind: KindNotification, Method: "notifications/progress"}, 100)},
	},
	{name: "batch/max_batch_option", body: batchOf(3), opts: Options{MaxBatch: 2}, wantErr: reqErr(ReasonBatchTooLarge, "")},
	{name: "batch/nested", body: `[[` + toolCall(`"x"`) + `]]`, wantErr: reqErr(ReasonInvalidBatch, "")},
	{name: "batch/non_object_element", body: `[` + toolCall(`"x"`) + `,1]`, wantErr: reqErr(ReasonInvalidBatch, "")},
	{name: "batch/null_element", body: `[null]`, wantErr: reqErr(ReasonInvalidBatch, "")},
	{
		name: "batch/initialize_and_tools_call",
		body: `[{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}},` + toolCall(`"danger"`) + `]`,
		want: Body{Batch: true, Messages: []Message{
			{Kind: KindRequest, ID: id("0"), Method: "initialize"},
			{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "danger", Name: "danger"},
		}},
	},
	{name: "batch/second_element_invalid_carries_its_id",
		body:    `[` + toolCall(`"ok"`) + `,{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"no space"}}]`,
		wantErr: toolErr(`"b"`)},
	{name: "batch/parse_error_after_semantic_error",
		body:    `[{"jsonrpc":"1.0","id":1,"method":"ping"},{"a":1,"A":2}]`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{
		name: "notification/tools_call_without_id",
		body: `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"danger"}}`,
		want: one(Message{Kind: KindNotification, Method: "tools/call", Tool: "danger", Name: "danger"}),
	},
	{name: "id/string", body: `{"jsonrpc":"2.0","id":"abc","method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id(`"abc"`), Method: "ping"})},
	{name: "id/escaped_string_verbatim", body: `{"jsonrpc":"2.0","id":"a\u0062c","method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id(`"a\u0062c"`), Method: "ping"})},
	{name: "id/int", body: `{"jsonrpc":"2.0","id":42,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("42"), Method: "ping"})},
	{name: "id/negative_zero", body: `{"jsonrpc":"2.0","id":-0,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("-0"), Method: "ping"})},
	{name: "id/2pow63_beyond_2pow53", body: `{"jsonrpc":"2.0","id":9223372036854775808,"method":"ping"}`,
		wantErr: reqErr(ReasonInvalidID, "")},
	// Numbers that are integers in value are ids, whatever their spelling
	// (zod's z.number().int() and the Go SDK accept them); the raw text is
	// kept for echoing.
	{name: "id/integral_1.0", body: `{"jsonrpc":"2.0","id":1.0,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("1.0"), Method: "ping"})},
	{name: "id/integral_1e0", body: `{"jsonrpc":"2.0","id":1e0,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("1e0"), Method: "ping"})},
	{name: "id/integral_1E2", body: `{"jsonrpc":"2.0","id":1E2,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("1E2"), Method: "ping"})},
	{name: "id/integral_1.5e1", body: `{"jsonrpc":"2.0","id":1.5e1,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("1.5e1"), Method: "ping"})},
	{name: "id/integral_12340e-1", body: `{"jsonrpc":"2.0","id":12340e-1,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("12340e-1"), Method: "ping"})},
	{name: "id/integral_negative_zero_fraction", body: `{"jsonrpc":"2.0","id":-0.0e+5,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("-0.0e+5"), Method: "ping"})},
	{name: "id/integral_2pow53", body: `{"jsonrpc":"2.0","id":9007199254740992,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("9007199254740992"), Method: "ping"})},
	{name: "id/integral_minus_2pow53", body: `{"jsonrpc":"2.0","id":-9007199254740992,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("-9007199254740992"), Method: "ping"})},
	{name: "id/integral_2pow53_exponent", body: `{"jsonrpc":"2.0","id":9.007199254740992e15,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("9.007199254740992e15"), Method: "ping"})},
	{name: "id/fractional", body: `{"jsonrpc":"2.0","id":1.5,"method":"ping"}`, wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/fractional_exponent", body: `{"jsonrpc":"2.0","id":12345e-1,"method":"ping"}`, wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/fractional_tiny", body: `{"jsonrpc":"2.0","id":1e-7,"method":"ping"}`, wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/huge_2pow53_plus_1", body: `{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}`,
		wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/huge_rounds_to_2pow53_as_float", body: `{"jsonrpc":"2.0","id":9007199254740993.0,"method":"ping"}`,
		wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/huge_1e300", body: `{"jsonrpc":"2.0","id":1e300,"method":"ping"}`, wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/huge_exponent_digits", body: `{"jsonrpc":"2.0","id":1e0000000000000000000000016,"method":"ping"}`,
		wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/null", body: `{"jsonrpc":"2.0","id":null,"method":"ping"}`, wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/object", body: `{"jsonrpc":"2.0","id":{},"method":"ping"}`, wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/true", body: `{"jsonrpc":"2.0","id":true,"method":"ping"}`, wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/array", body: `{"jsonrpc":"2.0","id":[1],"method":"ping"}`, wantErr: reqErr(ReasonInvalidID, "")},
	{name: "id/leading_zero", body: `{"jsonrpc":"2.0","id":01,"method":"ping"}`, wantErr: parseErr(ReasonInvalidJSON)},
	{name: "id/null_in_response", body: `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`,
		wantErr: reqErr(ReasonInvalidID, "")},
	{name: "jsonrpc_version/missing", body: `{"id":1,"method":"ping"}`, wantErr: reqErr(ReasonInvalidJSONRPC, "1")},
	{name: "jsonrpc_version/1.0", body: `{"jsonrpc":"1.0","id":1,"method":"ping"}`, wantErr: reqErr(ReasonInvalidJSONRPC, "1")},
	{name: "jsonrpc_version/number", body: `{"jsonrpc":2,"id":1,"method":"ping"}`, wantErr: reqErr(ReasonInvalidJSONRPC, "1")},
	{name: "jsonrpc_version/2.0_trailing_space", body: `{"jsonrpc":"2.0 ","id":1,"method":"ping"}`, wantErr: reqErr(ReasonInvalidJSONRPC, "1")},
	{name: "jsonrpc_version/escaped_ok", body: `{"jsonrpc":"\u0032.0","id":1,"method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "ping"})},
	{name: "params_shape/array", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["danger"]}`, wantErr: paramsErr("1")},
	{name: "params_shape/null", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}`, wantErr: paramsErr("1")},
	{name: "params_shape/string", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"danger"}`, wantErr: paramsErr("1")},
	{name: "params_shape/array_other_method", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[]}`, wantErr: paramsErr("1")},
	{name: "params_shape/missing", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`, wantErr: paramsErr("1")},
	{name: "params_shape/arguments_array", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[1]}}`,
		wantErr: paramsErr("1")},
	{name: "params_shape/arguments_null", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":null}}`,
		wantErr: paramsErr("1")},
	{name: "tool_name/missing", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`, wantErr: toolErr("1")},
	{name: "tool_name/number", body: toolCall(`1`), wantErr: toolErr("1")},
	{name: "tool_name/object", body: toolCall(`{"a":1}`), wantErr: toolErr("1")},
	{name: "tool_name/array", body: toolCall(`["danger"]`), wantErr: toolErr("1")},
	{name: "tool_name/null", body: toolCall(`null`), wantErr: toolErr("1")},
	{name: "tool_name/empty", body: toolCall(`""`), wantErr: toolErr("1")},
	{name: "tool_name/129_chars", body: toolCall(`"` + strings.Repeat("a", 129) + `"`), wantErr: toolErr("1")},
	{
		name: "tool_name/128_chars_ok",
		body: toolCall(`"` + strings.Repeat("a", 128) + `"`),
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: strings.Repeat("a", 128), Name: strings.Repeat("a", 128)}),
	},
	{
		name: "tool_name/all_allowed_chars",
		body: toolCall(`"Az09_.-"`),
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "Az09_.-", Name: "Az09_.-"}),
	},
	{name: "tool_name/slash", body: toolCall(`"a/b"`), wantErr: toolErr("1")},
	{name: "tool_name/fullwidth_homoglyph", body: toolCall(`"ｄanger"`), wantErr: toolErr("1")},
	{name: "tool_name/cyrillic_homoglyph", body: toolCall(`"dаnger"`), wantErr: toolErr("1")},
	{name: "tool_name/rtl_override", body: toolCall(`"\u202edanger"`), wantErr: toolErr("1")},
	{name: "tool_name/leading_space", body: toolCall(`" danger"`), wantErr: toolErr("1")},
	{name: "tool_name/trailing_space", body: toolCall(`"danger "`), wantErr: toolErr("1")},
	{name: "tool_name/escaped_nul", body: toolCall(`"danger\u0000"`), wantErr: toolErr("1")},
	{
		name: "resource_uri/read",
		body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"File:///srv/Docs/%7euser/../secret.txt"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "resources/read",
			Name: "File:///srv/Docs/%7euser/../secret.txt", ResourceURI: "file:///srv/Docs/secret.txt"}),
	},
	{
		name: "resource_uri/subscribe",
		body: `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"HTTPS://Example.com/a"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "resources/subscribe", Name: "HTTPS://Example.com/a", ResourceURI: "https://example.com/a"}),
	},
	{
		name: "resource_uri/unsubscribe",
		body: `{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe","params":{"uri":"mem://x"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "resources/unsubscribe", Name: "mem://x", ResourceURI: "mem://x"}),
	},
	{name: "resource_uri/read_missing", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}`, wantErr: paramsErr("1")},
	{name: "resource_uri/read_no_params", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read"}`, wantErr: paramsErr("1")},
	{name: "resource_uri/read_empty", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":""}}`, wantErr: paramsErr("1")},
	{name: "resource_uri/read_number", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":1}}`, wantErr: paramsErr("1")},
	{name: "resource_uri/read_space", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a b"}}`, wantErr: uriErr(ReasonInvalidResourceURI, "1")},
	{name: "resource_uri/read_nbsp", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a\u00a0b"}}`, wantErr: uriErr(ReasonInvalidResourceURI, "1")},
	{name: "resource_uri/read_control", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a\u0000"}}`, wantErr: uriErr(ReasonInvalidResourceURI, "1")},
	{name: "resource_uri/read_c1_control", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a\u0085"}}`, wantErr: uriErr(ReasonInvalidResourceURI, "1")},
	// Every method that carries a resource URI normalises it, and rejects
	// one that cannot be normalised unambiguously.
	{name: "resource_uri/read_backslash_traversal", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///srv/data/..\\..\\etc\\passwd"}}`,
		wantErr: uriErr(ReasonAmbiguousResourceURI, "1")},
	{name: "resource_uri/read_malformed_escape_not_matched_raw", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///srv/data/%zz/../../../etc/passwd"}}`,
		wantErr: uriErr(ReasonInvalidResourceURI, "1")},
	{name: "resource_uri/read_relative", body: `{"jsonrpc":"2.0","id":"r","method":"resources/read","params":{"uri":"../etc/passwd"}}`,
		wantErr: uriErr(ReasonInvalidResourceURI, `"r"`)},
	{name: "resource_uri/subscribe_encoded_slash", body: `{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"file:///srv/data/..%2F..%2Fetc"}}`,
		wantErr: uriErr(ReasonAmbiguousResourceURI, "2")},
	{name: "resource_uri/unsubscribe_fragment_traversal", body: `{"jsonrpc":"2.0","id":3,"method":"resources/unsubscribe","params":{"uri":"file:///srv/data/x#/../../etc"}}`,
		wantErr: uriErr(ReasonAmbiguousResourceURI, "3")},
	{name: "resource_uri/completion_ref_backslash", body: `{"jsonrpc":"2.0","id":4,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///srv/data\\..\\{x}"}}}`,
		wantErr: uriErr(ReasonAmbiguousResourceURI, "4")},
	{name: "resource_uri/completion_ref_empty", body: `{"jsonrpc":"2.0","id":4,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":""}}}`,
		wantErr: paramsErr("4")},
	{name: "resource_uri/subscriptions_listen_ambiguous", body: `{"jsonrpc":"2.0","id":5,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///ok","file:///srv/%2e%2e%2fetc"]}}}`,
		wantErr: uriErr(ReasonAmbiguousResourceURI, "5")},
	{
		name: "resource_uri/read_encoded_dots_resolved",
		body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///srv/data/%2e%2e/secret"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "resources/read",
			Name: "file:///srv/data/%2e%2e/secret", ResourceURI: "file:///srv/secret"}),
	},
	{
		name: "prompts_get/ok",
		body: `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"Code Review ✓","arguments":{"lang":"go"}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "prompts/get", Prompt: "Code Review ✓", Name: "Code Review ✓",
			Arguments: id(`{"lang":"go"}`)}),
	},
	{name: "prompts_get/name_missing", body: `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{}}`, wantErr: paramsErr("1")},
	{name: "prompts_get/name_empty", body: `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":""}}`, wantErr: paramsErr("1")},
	{name: "prompts_get/name_control", body: `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"a\nb"}}`, wantErr: paramsErr("1")},
	{name: "prompts_get/arguments_string", body: `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":"x"}}`, wantErr: paramsErr("1")},
	{
		name: "completion/ref_prompt",
		body: `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"review"},"argument":{"name":"lang","value":"g"}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "completion/complete", Prompt: "review"}),
	},
	{
		name: "completion/ref_resource",
		body: `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"uri":"FILE:///a/./b/{x}","type":"ref/resource"},"argument":{"name":"x","value":""}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "completion/complete", ResourceURI: "file:///a/b/{x}"}),
	},
	{name: "completion/ref_other_type", body: `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"x"}}}`,
		wantErr: paramsErr("1")},
	{name: "completion/ref_missing", body: `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}`, wantErr: paramsErr("1")},
	{name: "completion/ref_string", body: `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":"ref/prompt"}}`,
		wantErr: paramsErr("1")},
	{name: "completion/ref_prompt_no_name", body: `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt"}}}`,
		wantErr: paramsErr("1")},
	{
		name: "subscriptions_listen/ok",
		body: `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,` +
			`"resourceSubscriptions":["HTTP://A.example/x","file:///b/../c"]},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "subscriptions/listen",
			ResourceURIs: []string{"http://a.example/x", "file:///c"}, MetaProtocolVersion: "2026-07-28"}),
	},
	{
		name: "subscriptions_listen/no_resources",
		body: `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "subscriptions/listen"}),
	},
	{name: "subscriptions_listen/non_string", body: `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["a:b",1]}}}`,
		wantErr: paramsErr("1")},
	{name: "subscriptions_listen/not_array", body: `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":"a:b"}}}`,
		wantErr: paramsErr("1")},
	{name: "subscriptions_listen/notifications_array", body: `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":[]}}`,
		wantErr: paramsErr("1")},
	{name: "subscriptions_listen/uri_space", body: `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["a b"]}}}`,
		wantErr: uriErr(ReasonInvalidResourceURI, "1")},
	{
		name: "tasks/get",
		body: `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t-123"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tasks/get", TaskID: "t-123", Name: "t-123"}),
	},
	{
		name: "tasks/cancel",
		body: `{"jsonrpc":"2.0","id":1,"method":"tasks/cancel","params":{"taskId":"t-9"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tasks/cancel", TaskID: "t-9", Name: "t-9"}),
	},
	{
		name: "tasks/update_without_task_id",
		body: `{"jsonrpc":"2.0","id":1,"method":"tasks/update","params":{}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tasks/update"}),
	},
	{name: "tasks/result_task_id_number", body: `{"jsonrpc":"2.0","id":1,"method":"tasks/result","params":{"taskId":5}}`,
		wantErr: paramsErr("1")},
	{
		name: "logging_set_level",
		body: `{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"debug"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "logging/setLevel"}),
	},
	{
		name: "name_not_extracted_for_other_methods",
		body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"danger","uri":"file:///x","taskId":"t"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/list"}),
	},
	{name: "lifecycle_method/initialize", body: `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "initialize"})},
	{name: "lifecycle_method/notifications_initialized", body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		want: one(Message{Kind: KindNotification, Method: "notifications/initialized"})},
	{name: "lifecycle_method/ping", body: `{"jsonrpc":"2.0","id":"p","method":"ping"}`,
		want: one(Message{Kind: KindRequest, ID: id(`"p"`), Method: "ping"})},
	{name: "lifecycle_method/tools_list", body: `{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}`,
		want: one(Message{Kind: KindRequest, ID: id("3"), Method: "tools/list"})},
	{name: "ambiguous_message/request_and_result", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"},"result":{}}`,
		wantErr: reqErr(ReasonInvalidMessage, "1")},
	{name: "ambiguous_message/request_and_error", body: `{"jsonrpc":"2.0","id":1,"method":"ping","error":{"code":1,"message":"m"}}`,
		wantErr: reqErr(ReasonInvalidMessage, "1")},
	{name: "ambiguous_message/result_and_error", body: `{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}`,
		wantErr: reqErr(ReasonInvalidMessage, "1")},
	{name: "ambiguous_message/response_without_id", body: `{"jsonrpc":"2.0","result":{}}`, wantErr: reqErr(ReasonInvalidMessage, "")},
	{name: "ambiguous_message/id_only", body: `{"jsonrpc":"2.0","id":1}`, wantErr: reqErr(ReasonInvalidMessage, "1")},
	{name: "ambiguous_message/empty_object", body: `{}`, wantErr: reqErr(ReasonInvalidJSONRPC, "")},
	{name: "invalid_method/number", body: `{"jsonrpc":"2.0","id":1,"method":1}`, wantErr: reqErr(ReasonInvalidMethod, "1")},
	{name: "invalid_method/null", body: `{"jsonrpc":"2.0","id":1,"method":null}`, wantErr: reqErr(ReasonInvalidMethod, "1")},
	{name: "invalid_method/empty", body: `{"jsonrpc":"2.0","id":1,"method":""}`, wantErr: reqErr(ReasonInvalidMethod, "1")},
	{
		name: "control/2026_resources_read_with_meta",
		body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "resources/read", Name: "file:///x", ResourceURI: "file:///x",
			MetaProtocolVersion: "2026-07-28"}),
	},
	{name: "meta_protocol_version/number", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":20260728}}}`,
		wantErr: paramsErr("1")},
	{name: "meta_protocol_version/empty", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":""}}}`,
		wantErr: paramsErr("1")},
	{name: "meta_protocol_version/meta_not_object", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":"2026-07-28"}}`,
		wantErr: paramsErr("1")},
	{name: "case_variant_member/meta_protocol_version", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/protocolversion":"2025-03-26"}}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{
		name: "meta_protocol_version/unknown_value_kept",
		body: `{"jsonrpc":"2.0","method":"notifications/progress","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01"}}}`,
		want: one(Message{Kind: KindNotification, Method: "notifications/progress", MetaProtocolVersion: "2099-01-01"}),
	},
	{
		name: "identity_hints_in_body_ignored",
		body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"as_user":"admin"},"_meta":{"user":"admin"}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "t", Name: "t", Arguments: id(`{"as_user":"admin"}`)}),
	},

	// Empty bodies.
	{name: "empty_body/empty", body: ``, wantErr: parseErr(ReasonEmptyBody)},
	{name: "empty_body/whitespace_only", body: " \r\n\t", wantErr: parseErr(ReasonEmptyBody)},

	// Further structural rules.
	{name: "top_level_string", body: `"tools/call"`, wantErr: reqErr(ReasonInvalidMessage, "")},
	{name: "top_level_number", body: `1`, wantErr: reqErr(ReasonInvalidMessage, "")},
	{name: "top_level_null", body: `null`, wantErr: reqErr(ReasonInvalidMessage, "")},
	{name: "truncated_object", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}`, wantErr: parseErr(ReasonInvalidJSON)},
	{name: "truncated_batch", body: `[` + toolCall(`"x"`), wantErr: parseErr(ReasonInvalidJSON)},
	{name: "semantic_error_then_syntax_error", body: `{"jsonrpc":"1.0","id":1,"method":"ping","x":[1,]}`, wantErr: parseErr(ReasonInvalidJSON)},
	{name: "semantic_error_then_trailing_data", body: `{"jsonrpc":"1.0","id":1,"method":"ping"} x`, wantErr: parseErr(ReasonTrailingData)},
	{name: "duplicate_key_deep_in_arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":[{"b":{"c":1,"C":2}}]}}}`,
		wantErr: parseErr(ReasonDuplicateKey)},
	{name: "duplicate_key_in_large_object", body: largeObjectCall(40, `"K39"`), wantErr: parseErr(ReasonDuplicateKey)},
	{name: "duplicate_key_in_large_object_kelvin", body: largeObjectCall(40, "\"\u212a5\""), wantErr: parseErr(ReasonDuplicateKey)},
	{
		name: "large_object_no_duplicate",
		body: largeObjectCall(40, `"z"`),
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "t", Name: "t",
			Arguments: id(largeObjectArgs(40, `"z"`))}),
	},
	{
		name: "same_name_in_sibling_objects_ok",
		body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":{"name":1},"b":{"Name":2},"Name":3}}}`,
		want: one(Message{Kind: KindRequest, ID: id("1"), Method: "tools/call", Tool: "t", Name: "t",
			Arguments: id(`{"a":{"name":1},"b":{"Name":2},"Name":3}`)}),
	},
	{name: "del_in_name", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"a\x7f\":1}", wantErr: parseErr(ReasonInvalidKey)},
	{name: "control_in_method", body: `{"jsonrpc":"2.0","id":1,"method":"ping\t"}`, wantErr: reqErr(ReasonInvalidMethod, "1")},
}

func repeatMsg(m Message, n int) []Message {
	out := make([]Message, n)
	for i := range out {
		out[i] = m
	}
	return out
}

func largeObjectArgs(n int, lastName string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		b.WriteString(`"k` + itoa(i) + `":` + itoa(i) + `,`)
	}
	b.WriteString(lastName + `:0}`)
	return b.String()
}

func largeObjectCall(n int, lastName string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":` + largeObjectArgs(n, lastName) + `}}`
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

func utf16LE(s string) string {
	b := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		b = append(b, s[i], 0)
	}
	return string(b)
}

func TestParse(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range parseCases {
		if seen[tc.name] {
			t.Fatalf("duplicate row name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.body), tc.opts)
			if tc.wantErr != nil {
				checkErr(t, err, tc.wantErr)
				if len(got.Messages) != 0 || got.Batch {
					t.Errorf("Parse() = %+v with error, want zero Body", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() error = %v, want nil", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// checkErr asserts that err is an *Error with the Reason, Code and ID of
// want, and that the Code is the one documented for the Reason.
func checkErr(t *testing.T, err error, want *Error) {
	t.Helper()
	if err == nil {
		t.Fatalf("error = nil, want reason %s", want.Reason)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %T %v, want *Error", err, err)
	}
	if e.Reason != want.Reason || e.Code != want.Code || string(e.ID) != string(want.ID) {
		t.Errorf("error = {Reason:%s Code:%d ID:%s} (%v), want {Reason:%s Code:%d ID:%s}",
			e.Reason, e.Code, e.ID, e, want.Reason, want.Code, want.ID)
	}
	if code, ok := reasonCodes[e.Reason]; !ok || code != e.Code {
		t.Errorf("reason %s has code %d, documented %d", e.Reason, e.Code, code)
	}
	if e.Message == "" {
		t.Errorf("error %s has an empty Message", e.Reason)
	}
}

// reasonCodes is the documented Reason → Code table (package doc).
var reasonCodes = map[string]int{
	ReasonEmptyBody: CodeParseError, ReasonInvalidJSON: CodeParseError, ReasonInvalidUTF8: CodeParseError,
	ReasonTrailingData: CodeParseError, ReasonDuplicateKey: CodeParseError, ReasonInvalidKey: CodeParseError,
	ReasonTooDeep: CodeParseError, ReasonInvalidNumber: CodeParseError,
	ReasonInvalidBatch: CodeInvalidRequest, ReasonBatchTooLarge: CodeInvalidRequest, ReasonInvalidMessage: CodeInvalidRequest,
	ReasonInvalidJSONRPC: CodeInvalidRequest, ReasonInvalidID: CodeInvalidRequest, ReasonInvalidMethod: CodeInvalidRequest,
	ReasonInvalidParams: CodeInvalidParams, ReasonInvalidToolName: CodeInvalidParams,
	ReasonInvalidResourceURI: CodeInvalidParams, ReasonAmbiguousResourceURI: CodeInvalidParams,
	ReasonContentType:   CodeInvalidRequest,
	ReasonInvalidHeader: CodeHeaderMismatch, ReasonHeaderMismatch: CodeHeaderMismatch,
}

func TestReasonsClosedSet(t *testing.T) {
	got := Reasons()
	if len(got) != len(reasonCodes) {
		t.Errorf("Reasons() has %d entries, reasonCodes %d", len(got), len(reasonCodes))
	}
	for _, r := range got {
		if _, ok := reasonCodes[r]; !ok {
			t.Errorf("Reasons() has %q, not in the documented table", r)
		}
	}
}

// TestParseAliasesBody pins the documented aliasing: ID and Arguments are
// slices of the body, and cannot be grown into it.
func TestParseAliasesBody(t *testing.T) {
	body := []byte(`{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"t","arguments":{"a":1}}}`)
	b, err := Parse(body, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := b.Messages[0]
	if cap(m.ID) != len(m.ID) || cap(m.Arguments) != len(m.Arguments) {
		t.Errorf("raw values have spare capacity: cap(ID)=%d len=%d, cap(Arguments)=%d len=%d",
			cap(m.ID), len(m.ID), cap(m.Arguments), len(m.Arguments))
	}
	body[len(`{"jsonrpc":"2.0","id":`)] = '9'
	if string(m.ID) != "92" {
		t.Errorf("ID = %s after modifying body, want 92 (aliasing)", m.ID)
	}
}

// TestParseConcurrent exercises the parser pool under -race.
func TestParseConcurrent(t *testing.T) {
	bodies := []string{parseCases[1].body, `[` + toolCall(`"a"`) + `,` + toolCall(`"b"`) + `]`, largeObjectCall(40, `"K3"`), `{"a":1}`}
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				body := bodies[(g+i)%len(bodies)]
				b1, err1 := Parse([]byte(body), Options{})
				b2, err2 := Parse([]byte(body), Options{})
				if (err1 == nil) != (err2 == nil) || !cmp.Equal(b1, b2) {
					t.Errorf("Parse(%q) not deterministic: %v %v", body, err1, err2)
					return
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
}

func TestParseAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	body := []byte(smallToolsCall)
	Parse(body, Options{}) // warm the pool
	// One allocation for Body.Messages and one for the tool name.
	if n := testing.AllocsPerRun(100, func() { Parse(body, Options{}) }); n > 2 {
		t.Errorf("Parse(small tools/call) allocates %v times, want <= 2", n)
	}
}
