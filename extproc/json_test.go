package extproc

import (
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/types/known/structpb"
)

const prettyTools = `{
  "jsonrpc": "2.0",
  "id": 1,
  "result": {
    "tools": [
      {"name": "get_weather", "description": "Weather"},
      {"name": "delete_repo", "description": "Deletes"},
      {"name": "search", "description": "Search"}
    ],
    "nextCursor": "c2",
    "_meta": {"x": 1}
  }
}
`

// exchangeCase is one HTTP response through the processor.
type exchangeCase struct {
	name    string
	meta    *corev3.Metadata
	cfg     func(*envoyConfig)
	policy  *fakePolicy
	opts    func(*Options)
	up      upstream
	status  int
	body    string
	headers map[string]string // expected headers ("" = must be absent)
	local   string            // expected details of a local reply
	// outcomes recorded; nil skips the check.
	outcomes []Outcome
	// asked lists the item names (or URIs) the policy was asked about; nil
	// skips the check.
	asked [][]string
}

func (tc exchangeCase) config() envoyConfig {
	cfg := envoyConfig{metadata: tc.meta}
	if tc.cfg != nil {
		tc.cfg(&cfg)
	}
	return cfg
}

// check runs tc in memory and over gRPC, asserting the same result.
func (tc exchangeCase) check(t *testing.T) {
	t.Helper()
	for _, transport := range []string{"memory", "grpc"} {
		t.Run(transport, func(t *testing.T) {
			pol := tc.policy
			if pol == nil {
				pol = defaultPolicy()
			} else {
				pol = pol.fresh()
			}
			rec := &recorder{}
			srv := newTestServer(t, pol, rec, optsOrNil(tc.opts)...)
			var v *clientView
			if transport == "memory" {
				v = runMem(t, srv, tc.config(), tc.up)
			} else {
				v = startServer(t, srv).run(t, tc.config(), tc.up)
			}
			tc.verify(t, v, pol, rec)
		})
	}
}

func optsOrNil(f func(*Options)) []func(*Options) {
	if f == nil {
		return nil
	}
	return []func(*Options){f}
}

func (tc exchangeCase) verify(t *testing.T, v *clientView, pol *fakePolicy, rec *recorder) {
	t.Helper()
	if len(v.violations) > 0 {
		t.Errorf("protocol violations: %q", v.violations)
	}
	if v.failOpen || v.reset {
		t.Fatalf("failOpen=%v reset=%v", v.failOpen, v.reset)
	}
	status := tc.status
	if status == 0 {
		status = 200
	}
	if v.status != status {
		t.Errorf("status = %d, want %d", v.status, status)
	}
	if string(v.body) != tc.body {
		t.Errorf("body:\n got %s\nwant %s", v.body, tc.body)
	}
	if v.local != tc.local {
		t.Errorf("local reply details = %q, want %q", v.local, tc.local)
	}
	for name, want := range tc.headers {
		got, ok := v.header(name)
		if want == "" && ok {
			t.Errorf("header %s = %q, want absent", name, got)
		}
		if want != "" && got != want {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	if tc.outcomes != nil {
		if diff := cmp.Diff(tc.outcomes, rec.outcomes(), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("outcomes (-want +got):\n%s", diff)
		}
	}
	if tc.asked != nil {
		var got [][]string
		for _, l := range pol.calls() {
			var names []string
			for _, it := range l.Items {
				switch {
				case it.URITemplate != "":
					names = append(names, it.URIPrefix)
				case it.URI != "":
					names = append(names, it.URI)
				default:
					names = append(names, it.Name)
				}
			}
			got = append(got, names)
		}
		if diff := cmp.Diff(tc.asked, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("policy asked (-want +got):\n%s", diff)
		}
	}
}

func TestJSONFiltering(t *testing.T) {
	tools3 := toolsBody("1", "get_weather", "delete_repo", "search")
	tools1 := []ListRequest{req("tools/list", "1")}
	filtered := func(n, removed int) []Outcome {
		return []Outcome{{Method: "tools/list", Items: n, Removed: removed}}
	}
	tests := []exchangeCase{
		{
			name:     "compact_list_filtered",
			meta:     listMetadata(tools1...),
			up:       upstream{headers: jsonHeaders([2]string{"content-length", "999"}, [2]string{"mcp-session-id", "s1"}), chunks: []string{tools3}},
			body:     toolsBody("1", "get_weather", "search"),
			headers:  map[string]string{"content-length": "", "mcp-session-id": "s1", "content-type": "application/json"},
			outcomes: filtered(3, 1),
			asked:    [][]string{{"get_weather", "delete_repo", "search"}},
		},
		{
			name: "pretty_printed_kept_as_is",
			meta: listMetadata(tools1...),
			up:   upstream{headers: jsonHeaders(), chunks: []string{prettyTools}},
			body: strings.Replace(prettyTools, "      {\"name\": \"delete_repo\", \"description\": \"Deletes\"},\n", "", 1),
		},
		{
			name:   "last_item_removed_pretty",
			meta:   listMetadata(tools1...),
			policy: &fakePolicy{allow: map[string]bool{"get_weather": true, "delete_repo": true}},
			up:     upstream{headers: jsonHeaders(), chunks: []string{prettyTools}},
			body:   strings.Replace(prettyTools, ",\n      {\"name\": \"search\", \"description\": \"Search\"}", "", 1),
		},
		{
			name:     "all_removed",
			meta:     listMetadata(tools1...),
			policy:   &fakePolicy{},
			up:       upstream{headers: jsonHeaders(), chunks: []string{`{"result":{"tools":[ {"name":"a"} , {"name":"b"} ],"nextCursor":"x"},"id":1,"jsonrpc":"2.0"}`}},
			body:     `{"result":{"tools":[],"nextCursor":"x"},"id":1,"jsonrpc":"2.0"}`,
			outcomes: filtered(2, 2),
		},
		{
			name:     "none_removed_bytes_unchanged",
			meta:     listMetadata(tools1...),
			up:       upstream{headers: jsonHeaders(), chunks: split(toolsBody("1", "get_weather", "search"), 10, 50)},
			body:     toolsBody("1", "get_weather", "search"),
			outcomes: filtered(2, 0),
		},
		{
			name: "members_order_and_unknown_kept",
			meta: listMetadata(tools1...),
			up: upstream{headers: jsonHeaders(), chunks: []string{
				`{"id":1,"result":{"_meta":{"progress":1},"x-vendor":[1,{"a":null}],"tools":[{"inputSchema":{"type":"object"},"name":"delete_repo"},{"name":"search","annotations":{"title":"S"}}],"nextCursor":"abc=="},"jsonrpc":"2.0"}`}},
			body: `{"id":1,"result":{"_meta":{"progress":1},"x-vendor":[1,{"a":null}],"tools":[{"name":"search","annotations":{"title":"S"}}],"nextCursor":"abc=="},"jsonrpc":"2.0"}`,
		},
		{
			name:     "unusable_names_removed_without_asking",
			meta:     listMetadata(tools1...),
			policy:   &fakePolicy{allow: map[string]bool{"get_weather": true, "bad name": true, "": true}},
			up:       upstream{headers: jsonHeaders(), chunks: []string{toolsBody("1", "bad name", "get_weather", "", "tool\u200b", strings.Repeat("x", 129))}},
			body:     toolsBody("1", "get_weather"),
			asked:    [][]string{{"get_weather"}},
			outcomes: filtered(5, 4),
		},
		{
			name:  "prompts",
			meta:  listMetadata(req("prompts/list", `"p"`)),
			up:    upstream{headers: jsonHeaders(), chunks: []string{`{"jsonrpc":"2.0","id":"p","result":{"prompts":[{"name":"greeting","arguments":[]},{"name":"secret_prompt"},{"name":"bad\u0007"}]}}`}},
			body:  `{"jsonrpc":"2.0","id":"p","result":{"prompts":[{"name":"greeting","arguments":[]}]}}`,
			asked: [][]string{{"greeting", "secret_prompt"}},
		},
		{
			name: "resources_by_normalised_uri",
			meta: listMetadata(req("resources/list", "3")),
			up: upstream{headers: jsonHeaders(), chunks: []string{`{"jsonrpc":"2.0","id":3,"result":{"resources":[` +
				`{"uri":"file:///public/a.txt","name":"a"},{"uri":"FILE:///public/../secret/b.txt","name":"b"},` +
				`{"uri":"file:///public/%2E%2E/secret/c","name":"c"},{"uri":"file:///public/with space","name":"d"},{"name":"x","uri":"db://REPORTS/q1"}]}}`}},
			body:  `{"jsonrpc":"2.0","id":3,"result":{"resources":[{"uri":"file:///public/a.txt","name":"a"},{"name":"x","uri":"db://REPORTS/q1"}]}}`,
			asked: [][]string{{"file:///public/a.txt", "file:///secret/b.txt", "file:///secret/c", "db://reports/q1"}},
		},
		{
			name: "templates_by_prefix",
			meta: listMetadata(req("resources/templates/list", "4")),
			up: upstream{headers: jsonHeaders(), chunks: []string{`{"jsonrpc":"2.0","id":4,"result":{"resourceTemplates":[` +
				`{"uriTemplate":"file:///public/{path}","name":"pub"},{"uriTemplate":"file:///{path}","name":"all"},{"uriTemplate":"db://reports/{id}"}]}}`}},
			body:  `{"jsonrpc":"2.0","id":4,"result":{"resourceTemplates":[{"uriTemplate":"file:///public/{path}","name":"pub"},{"uriTemplate":"db://reports/{id}"}]}}`,
			asked: [][]string{{"file:///public/", "file:///", "db://reports/"}},
		},
		{
			name: "escaped_string_id_matches",
			meta: listMetadata(req("tools/list", `"\u0061bc"`)),
			up:   upstream{headers: jsonHeaders(), chunks: []string{toolsBody(`"abc"`, "delete_repo", "search")}},
			body: toolsBody(`"abc"`, "search"),
		},
		{
			name: "big_integer_id_reencoded_by_a_javascript_server",
			meta: listMetadata(req("tools/list", "12345678901234567890")),
			up:   upstream{headers: jsonHeaders(), chunks: []string{toolsBody("12345678901234567000", "delete_repo", "search")}},
			body: toolsBody("12345678901234567000", "search"),
		},
		{
			name: "negative_zero_id",
			meta: listMetadata(req("tools/list", "-0")),
			up:   upstream{headers: jsonHeaders(), chunks: []string{toolsBody("0", "delete_repo", "search")}},
			body: toolsBody("0", "search"),
		},
		{
			name:     "unmatched_id_with_a_list_member_filtered_anyway",
			meta:     listMetadata(tools1...),
			up:       upstream{headers: jsonHeaders(), chunks: []string{toolsBody(`"1"`, "delete_repo", "search")}},
			body:     toolsBody(`"1"`, "search"),
			outcomes: filtered(2, 1),
		},
		{
			name:     "forged_ids_in_metadata_list_filtered_anyway",
			meta:     listMetadata(req("tools/list", "99"), req("prompts/list", `"x"`)),
			up:       upstream{headers: jsonHeaders(), chunks: []string{toolsBody("1", "delete_repo", "search")}},
			body:     toolsBody("1", "search"),
			outcomes: filtered(2, 1),
		},
		{
			name: "unmatched_non_list_result_unchanged",
			meta: listMetadata(tools1...),
			up:   upstream{headers: jsonHeaders(), chunks: []string{`{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"tools"}]}}`}},
			body: `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"tools"}]}}`,
		},
		{
			name:     "error_response_untouched",
			meta:     listMetadata(tools1...),
			up:       upstream{headers: jsonHeaders(), chunks: []string{`{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found","data":{"tools":[]}}}`}},
			body:     `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found","data":{"tools":[]}}}`,
			outcomes: []Outcome{},
		},
		{
			name: "batch_filters_only_list_elements",
			meta: listMetadata(req("tools/list", "1"), req("prompts/list", `"p"`)),
			up: upstream{headers: jsonHeaders(), chunks: []string{`[` +
				`{"jsonrpc":"2.0","id":2,"result":{"content":[],"isError":false}},` +
				`{"jsonrpc":"2.0","id":"p","result":{"prompts":[{"name":"secret_prompt"},{"name":"greeting"}]}},` +
				toolsBody("1", "delete_repo", "get_weather") + `]`}},
			body: `[` +
				`{"jsonrpc":"2.0","id":2,"result":{"content":[],"isError":false}},` +
				`{"jsonrpc":"2.0","id":"p","result":{"prompts":[{"name":"greeting"}]}},` +
				toolsBody("1", "get_weather") + `]`,
			outcomes: []Outcome{{Method: "prompts/list", Items: 2, Removed: 1}, {Method: "tools/list", Items: 2, Removed: 1}},
		},
		{
			name: "batch_one_list_refused",
			meta: listMetadata(req("tools/list", "1"), req("prompts/list", "2")),
			up: upstream{headers: jsonHeaders(), chunks: []string{`[` + toolsBody("1", "search") +
				`,{"jsonrpc":"2.0","id":2,"result":{"prompts":{"name":"x"}}}]`}},
			body:     `[` + toolsBody("1", "search") + `,` + errorBody("2") + `]`,
			outcomes: []Outcome{{Method: "tools/list", Items: 1}, {Method: "prompts/list", Reason: ReasonBadBody}},
		},
		{
			name:     "pagination_cursor_kept",
			meta:     listMetadata(req("tools/list", "9")),
			up:       upstream{headers: jsonHeaders(), chunks: []string{`{"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"delete_repo"}],"nextCursor":"eyJvIjoxMDB9"}}`}},
			body:     `{"jsonrpc":"2.0","id":9,"result":{"tools":[],"nextCursor":"eyJvIjoxMDB9"}}`,
			outcomes: filtered(1, 1),
		},
		{
			name: "trailers",
			meta: listMetadata(tools1...),
			up:   upstream{headers: jsonHeaders(), chunks: split(tools3, 30), trailers: [][2]string{{"grpc-status", "0"}}},
			body: toolsBody("1", "get_weather", "search"),
		},
		{
			name: "empty_final_chunk",
			meta: listMetadata(tools1...),
			up:   upstream{headers: jsonHeaders(), chunks: []string{tools3, ""}},
			body: toolsBody("1", "get_weather", "search"),
		},
		{
			name: "duplicated_final_chunk",
			meta: listMetadata(tools1...),
			cfg:  func(c *envoyConfig) { c.duplicateFinal = true },
			up:   upstream{headers: jsonHeaders(), chunks: split(tools3, 40)},
			body: toolsBody("1", "get_weather", "search"),
		},
		{
			name:    "content_length_removed_when_envoy_keeps_it",
			meta:    listMetadata(tools1...),
			cfg:     func(c *envoyConfig) { c.allowContentLength = true },
			up:      upstream{headers: jsonHeaders([2]string{"content-length", "300"}), chunks: []string{tools3}},
			body:    toolsBody("1", "get_weather", "search"),
			headers: map[string]string{"content-length": ""},
		},
		{
			name:    "headers_only",
			meta:    listMetadata(tools1...),
			up:      upstream{headers: jsonHeaders()},
			body:    "",
			headers: map[string]string{"content-type": "application/json"},
		},
		{
			name: "charset_parameter",
			meta: listMetadata(tools1...),
			up:   upstream{headers: [][2]string{{":status", "200"}, {"content-type", "Application/JSON; charset=UTF-8"}}, chunks: []string{tools3}},
			body: toolsBody("1", "get_weather", "search"),
		},
		{
			name: "large_item_kept",
			meta: listMetadata(tools1...),
			up:   upstream{headers: jsonHeaders(), chunks: []string{`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_repo"},{"name":"search",` + manyMembers(40) + `}]}}`}},
			body: `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search",` + manyMembers(40) + `}]}}`,
		},
		{
			name: "header_keys_not_lower_case",
			meta: listMetadata(tools1...),
			up:   upstream{headers: [][2]string{{":status", "200"}, {"Content-Type", "application/json"}}, chunks: []string{tools3}},
			body: toolsBody("1", "get_weather", "search"),
		},
		{
			name: "many_chunks",
			meta: listMetadata(tools1...),
			opts: func(o *Options) { o.MaxChunkBytes = 7 },
			up:   upstream{headers: jsonHeaders(), chunks: bytewise(tools3)},
			body: toolsBody("1", "get_weather", "search"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

// TestPassThrough covers responses that need no filtering: they arrive
// unchanged, Content-Length included, and the policy is never asked.
func TestPassThrough(t *testing.T) {
	tools := toolsBody("1", "delete_repo")
	withCL := func(c *envoyConfig) { c.allowContentLength = true }
	tests := []exchangeCase{
		{
			name:    "not_a_list_request",
			meta:    authzOnlyMetadata(),
			cfg:     withCL,
			up:      upstream{headers: jsonHeaders([2]string{"content-length", "28"}), chunks: split(tools, 5)},
			body:    tools,
			headers: map[string]string{"content-length": "28"},
		},
		{
			name: "list_filter_false",
			meta: namespace(&structpb.Struct{Fields: map[string]*structpb.Value{KeyListFilter: structpb.NewBoolValue(false)}}),
			up:   upstream{headers: jsonHeaders(), chunks: []string{tools}},
			body: tools,
		},
		{
			name:   "not_2xx",
			meta:   listMetadata(req("tools/list", "1")),
			up:     upstream{headers: [][2]string{{":status", "500"}, {"content-type", "application/json"}}, chunks: []string{tools}},
			status: 500,
			body:   tools,
		},
		{
			name: "other_content_type",
			meta: listMetadata(req("tools/list", "1")),
			up:   upstream{headers: [][2]string{{":status", "200"}, {"content-type", "text/plain"}}, chunks: []string{tools}},
			body: tools,
		},
		{
			name:   "no_content_type",
			meta:   listMetadata(req("tools/list", "1")),
			up:     upstream{headers: [][2]string{{":status", "202"}}},
			status: 202,
		},
		{
			name: "trailers",
			meta: authzOnlyMetadata(),
			up:   upstream{headers: jsonHeaders(), chunks: []string{"ab", "", "c"}, trailers: [][2]string{{"x-t", "1"}}},
			body: "abc",
		},
		{
			name: "sse_not_a_list_request",
			meta: authzOnlyMetadata(),
			up:   upstream{headers: sseHeaders(), chunks: []string{"data: " + tools + "\n", "\n"}},
			body: "data: " + tools + "\n\n",
		},
	}
	for _, tc := range tests {
		tc.policy = &fakePolicy{err: errPolicy} // must not be asked
		tc.asked = [][]string{}
		tc.outcomes = []Outcome{}
		t.Run(tc.name, tc.check)
	}
}

// TestFailClosed covers every way a list cannot be filtered: the client
// gets a JSON-RPC error, never the list, never a hang.
func TestFailClosed(t *testing.T) {
	meta := listMetadata(req("tools/list", "1"))
	tools := toolsBody("1", "get_weather", "delete_repo")
	refusedBody := errorBody("1")
	bad := func(name, body string) exchangeCase {
		return exchangeCase{
			name: name, meta: meta,
			up:       upstream{headers: jsonHeaders(), chunks: []string{body}},
			body:     refusedBody,
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonBadBody}},
		}
	}
	tests := []exchangeCase{
		bad("not_json", `<html>tools</html>`),
		bad("empty_body", ``),
		bad("truncated", tools[:len(tools)-2]),
		bad("trailing_data", tools+`{}`),
		bad("two_values", tools+` `+tools),
		bad("bom", "\ufeff"+tools),
		bad("invalid_utf8", strings.Replace(tools, "get_weather", "get_\xffweather", 1)),
		bad("duplicate_member", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search"}],"tools":[{"name":"delete_repo"}]}}`),
		bad("duplicate_deep", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search","inputSchema":{"a":1,"a":2}}]}}`),
		bad("case_variant_result_member", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search"}],"Tools":[{"name":"delete_repo"}]}}`),
		bad("case_variant_alone", `{"jsonrpc":"2.0","id":1,"result":{"TOOLS":[{"name":"delete_repo"}]}}`),
		bad("long_s_variant", `{"jsonrpc":"2.0","id":1,"result":{"toolſ":[{"name":"delete_repo"}],"tools":[]}}`),
		bad("case_variant_item_name", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search","Name":"delete_repo"}]}}`),
		bad("case_variant_item_name_alone", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"NAME":"delete_repo"}]}}`),
		bad("kelvin_sign_fold_duplicate", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search","\u212aey":1,"key":2}]}}`),
		bad("case_variant_message_member", `{"jsonrpc":"2.0","id":1,"Result":{"tools":[]},"result":{"tools":[]}}`),
		bad("fold_duplicate_in_large_item", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search",`+manyMembers(40)+`,"M39":1}]}}`),
		bad("tools_not_array", `{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"delete_repo"}}}`),
		bad("tools_missing", `{"jsonrpc":"2.0","id":1,"result":{"items":[{"name":"delete_repo"}]}}`),
		bad("result_not_object", `{"jsonrpc":"2.0","id":1,"result":[{"name":"delete_repo"}]}`),
		bad("item_not_object", `{"jsonrpc":"2.0","id":1,"result":{"tools":["delete_repo"]}}`),
		bad("item_without_name", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"description":"x"}]}}`),
		bad("name_not_string", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":["delete_repo"]}]}}`),
		bad("jsonrpc_missing", `{"id":1,"result":{"tools":[]}}`),
		bad("jsonrpc_wrong", `{"jsonrpc":"1.0","id":1,"result":{"tools":[]}}`),
		bad("method_with_result", `{"jsonrpc":"2.0","id":1,"method":"x","result":{"tools":[]}}`),
		bad("result_and_error", `{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"error":{"code":1,"message":"x"}}`),
		bad("scalar", `"tools"`),
		{
			name:     "missing_metadata_refuses_each_result_by_its_id",
			meta:     nil,
			up:       upstream{headers: jsonHeaders(), chunks: []string{`[` + toolsBody("7", "search") + `,{"jsonrpc":"2.0","id":8,"error":{"code":1,"message":"m"}}]`}},
			body:     `[` + errorBody("7") + `,{"jsonrpc":"2.0","id":8,"error":{"code":1,"message":"m"}}]`,
			outcomes: []Outcome{{Reason: ReasonMissingMetadata}},
			asked:    [][]string{},
		},
		{
			name:     "missing_metadata_unreadable_body",
			meta:     &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.other": {}}},
			up:       upstream{headers: jsonHeaders(), chunks: []string{"nope"}},
			body:     errorBody("null"),
			outcomes: []Outcome{{Reason: ReasonBadBody}},
		},
		{
			name: "wrong_metadata_version",
			meta: func() *corev3.Metadata {
				md := listMetadata(req("tools/list", "1"))
				md.FilterMetadata[MetadataNamespace].Fields[KeyList].GetStructValue().Fields["v"] = structpb.NewNumberValue(2)
				return md
			}(),
			up:       upstream{headers: jsonHeaders(), chunks: []string{tools}},
			body:     refusedBody,
			outcomes: []Outcome{{Reason: ReasonBadMetadata}},
			asked:    [][]string{},
		},
		{
			name:     "ambiguous_ids",
			meta:     listMetadata(req("tools/list", "1"), req("prompts/list", "1")),
			up:       upstream{headers: jsonHeaders(), chunks: []string{tools}},
			body:     refusedBody,
			outcomes: []Outcome{{Reason: ReasonBadMetadata}},
			asked:    [][]string{},
		},
		{
			name:     "two_list_members_unmatched",
			meta:     meta,
			up:       upstream{headers: jsonHeaders(), chunks: []string{`{"jsonrpc":"2.0","id":5,"result":{"tools":[],"prompts":[]}}`}},
			body:     errorBody("5"),
			outcomes: []Outcome{{Reason: ReasonBadBody}},
		},
		{
			name:     "empty_batch",
			meta:     meta,
			up:       upstream{headers: jsonHeaders(), chunks: []string{`[]`}},
			body:     "[" + refusedBody + "]",
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonBadBody}},
		},
		{
			name:     "policy_error",
			meta:     meta,
			policy:   &fakePolicy{err: errPolicy},
			up:       upstream{headers: jsonHeaders(), chunks: []string{tools}},
			body:     refusedBody,
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonPolicyError, Items: 2}},
		},
		{
			name:     "policy_timeout",
			meta:     meta,
			policy:   &fakePolicy{block: true},
			opts:     func(o *Options) { o.PolicyTimeout = 20 * time.Millisecond },
			up:       upstream{headers: jsonHeaders(), chunks: []string{tools}},
			body:     refusedBody,
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonTimeout, Items: 2}},
		},
		{
			name:     "policy_panic",
			meta:     meta,
			policy:   &fakePolicy{panic: true},
			up:       upstream{headers: jsonHeaders(), chunks: []string{tools}},
			body:     refusedBody,
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonPolicyError, Items: 2}},
		},
		{
			name:     "policy_wrong_length",
			meta:     meta,
			policy:   &fakePolicy{short: true, allow: map[string]bool{"get_weather": true}},
			up:       upstream{headers: jsonHeaders(), chunks: []string{tools}},
			body:     refusedBody,
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonPolicyError, Items: 2}},
		},
		{
			name:     "too_large",
			meta:     meta,
			opts:     func(o *Options) { o.MaxBufferedBytes = 64 },
			up:       upstream{headers: jsonHeaders(), chunks: split(tools, 40, 80)},
			body:     refusedBody,
			local:    "mcpauthz_list_filter_too_large",
			headers:  map[string]string{"content-type": "application/json"},
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonTooLarge}},
		},
		{
			name:     "gzip",
			meta:     meta,
			up:       upstream{headers: jsonHeaders([2]string{"content-encoding", "gzip"}), chunks: []string{"\x1f\x8b\x08\x00"}},
			body:     refusedBody,
			local:    "mcpauthz_list_filter_content_encoding",
			headers:  map[string]string{"content-type": "application/json", "content-encoding": ""},
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonContentEncoding}},
		},
		{
			name:     "ambiguous_content_type",
			meta:     meta,
			up:       upstream{headers: [][2]string{{":status", "200"}, {"content-type", "application/json, text/event-stream"}}, chunks: []string{tools}},
			body:     refusedBody,
			local:    "mcpauthz_list_filter_bad_body",
			outcomes: []Outcome{{Method: "tools/list", Reason: ReasonBadBody}},
		},
		{
			name:  "json_like_content_type",
			meta:  meta,
			up:    upstream{headers: [][2]string{{":status", "200"}, {"content-type", "application/json-seq"}}, chunks: []string{tools}},
			body:  refusedBody,
			local: "mcpauthz_list_filter_bad_body",
		},
		{
			name:  "two_content_types",
			meta:  listMetadata(req("tools/list", "1"), req("prompts/list", "2")),
			up:    upstream{headers: [][2]string{{":status", "200"}, {"content-type", "text/plain"}, {"content-type", "application/json"}}, chunks: []string{tools}},
			body:  `[` + errorBody("1") + `,` + errorBody("2") + `]`,
			local: "mcpauthz_list_filter_bad_body",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

// TestClientHeadersAreNotMetadata sends client-controlled headers named like
// the metadata keys: only Envoy's metadata_context counts.
func TestClientHeadersAreNotMetadata(t *testing.T) {
	tools := toolsBody("1", "delete_repo", "search")
	forged := [][2]string{
		{"list_filter", "false"},
		{"mcpauthz_list", `{"v":1,"requests":[]}`},
		{"x-envoy-ext-authz", `{"list_filter":false}`},
		{"envoy.filters.http.ext_authz", "list_filter=false"},
	}
	tests := []exchangeCase{
		{
			name: "list_response_still_filtered",
			meta: listMetadata(req("tools/list", "1")),
			up:   upstream{headers: jsonHeaders(forged...), chunks: []string{tools}},
			body: toolsBody("1", "search"),
		},
		{
			name: "missing_metadata_still_refused",
			up:   upstream{headers: jsonHeaders(forged...), chunks: []string{tools}},
			body: errorBody("1"),
		},
		{
			name: "non_list_response_still_passes",
			meta: authzOnlyMetadata(),
			up:   upstream{headers: jsonHeaders([2]string{"list_filter", "true"}, [2]string{"mcpauthz_list", `{"v":1}`}), chunks: []string{tools}},
			body: tools,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

// manyMembers returns n members "m0":0,... (enough for nameSet's map mode).
func manyMembers(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"m` + strconv.Itoa(i) + `":0`)
	}
	return b.String()
}
