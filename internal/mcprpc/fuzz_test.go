package mcprpc

import (
	"bytes"
	jsonv1 "encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora under testdata/fuzz from the test tables")

// parseSeeds are the FuzzParse seeds: every TestParse row with default
// options and a body of at most 4 KiB, plus a few shapes that exercise the
// differential check.
func parseSeeds() map[string][]byte {
	seeds := make(map[string][]byte, len(parseCases)+8)
	for _, tc := range parseCases {
		if tc.opts != (Options{}) || len(tc.body) > 4<<10 {
			continue // default options only; large seeds slow the fuzzer down
		}
		seeds[tc.name] = []byte(tc.body)
	}
	extra := map[string]string{
		"extra/prompts_get":    `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"a":"b"}}}`,
		"extra/tasks_update":   `{"jsonrpc":"2.0","id":"x","method":"tasks/update","params":{"taskId":"t\u00e9"}}`,
		"extra/batch_response": `[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"m"}}]`,
		"extra/unicode_names":  `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"ß":1,"ẞ":2,"σ":3,"ς":4,"Σ":5}}}`,
	}
	for k, v := range extra {
		seeds[k] = []byte(v)
	}
	return seeds
}

// FuzzParse is a differential fuzz test of Parse against two other JSON
// readers, for single messages and for every batch element. Whenever Parse
// accepts a body:
//   - encoding/json v1 json.Valid accepts it;
//   - go-json-experiment json.Unmarshal with its strict defaults decodes it,
//     and sees the same method, params.name, params.uri and params.taskId as
//     Parse, for a single object and for every batch element;
//   - no object along those paths has a case-folded variant of a member
//     name (what Go v1 struct decoding would pick up);
//   - every batch element parsed on its own yields the same Message.
//
// Whenever Parse rejects a body, the error is an *Error from the closed
// reason set with the documented code, and parse errors carry no id.
func FuzzParse(f *testing.F) {
	for _, s := range parseSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Parse(data, Options{})
		if err != nil {
			checkFuzzErr(t, err)
			if got.Batch || got.Messages != nil {
				t.Fatalf("Parse returned %+v together with an error", got)
			}
			return
		}
		if !jsonv1.Valid(data) {
			t.Fatalf("Parse accepted %q, encoding/json v1 Valid = false", data)
		}
		if len(got.Messages) == 0 || (!got.Batch && len(got.Messages) != 1) {
			t.Fatalf("Parse(%q) = %d messages, batch=%v", data, len(got.Messages), got.Batch)
		}
		if !got.Batch {
			var obj map[string]any
			if err := jsonv2.Unmarshal(data, &obj); err != nil {
				t.Fatalf("Parse accepted %q, json v2 Unmarshal: %v", data, err)
			}
			checkView(t, got.Messages[0], obj)
			return
		}
		var arr []map[string]any
		if err := jsonv2.Unmarshal(data, &arr); err != nil {
			t.Fatalf("Parse accepted batch %q, json v2 Unmarshal: %v", data, err)
		}
		if len(arr) != len(got.Messages) {
			t.Fatalf("Parse(%q) = %d messages, json v2 sees %d", data, len(got.Messages), len(arr))
		}
		for i, elem := range batchElements(t, data) {
			checkView(t, got.Messages[i], arr[i])
			alone, err := Parse(elem, Options{})
			if err != nil {
				t.Fatalf("batch element %d %q accepted in the batch, rejected alone: %v", i, elem, err)
			}
			if alone.Batch || len(alone.Messages) != 1 {
				t.Fatalf("batch element %d parsed alone = %+v", i, alone)
			}
			if diff := cmp.Diff(got.Messages[i], alone.Messages[0]); diff != "" {
				t.Fatalf("batch element %d differs when parsed alone (-batch +alone):\n%s", i, diff)
			}
		}
	})
}

func checkFuzzErr(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v is not *Error", err, err)
	}
	code, ok := reasonCodes[e.Reason]
	if !ok || code != e.Code {
		t.Fatalf("error reason %q code %d not in the documented table", e.Reason, e.Code)
	}
	if e.Code == CodeParseError && e.ID != nil {
		t.Fatalf("parse error %v carries id %s", e, e.ID)
	}
	if e.ID != nil {
		if k := e.ID.Kind(); (k != '"' && k != '0') || !e.ID.IsValid() {
			t.Fatalf("error id %q is not a JSON string or number", e.ID)
		}
	}
}

// batchElements returns the raw bytes of the elements of a JSON array.
func batchElements(t *testing.T, data []byte) [][]byte {
	t.Helper()
	dec := jsontext.NewDecoder(bytes.NewReader(data))
	if _, err := dec.ReadToken(); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for dec.PeekKind() != ']' {
		v, err := dec.ReadValue()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(v))
	}
	return out
}

// checkView compares what Parse extracted with what a strict v2 map decode
// (which is also what a case-sensitive, last-wins JS parser sees once
// duplicates are excluded) sees.
func checkView(t *testing.T, m Message, obj map[string]any) {
	t.Helper()
	noFoldVariants(t, obj, "jsonrpc", "id", "method", "params", "result", "error")
	if obj["jsonrpc"] != "2.0" {
		t.Fatalf("accepted message has jsonrpc %#v", obj["jsonrpc"])
	}
	method, hasMethod := obj["method"].(string)
	if m.Method != method {
		t.Fatalf("Parse method %q, json v2 %q", m.Method, method)
	}
	_, hasID := obj["id"]
	switch m.Kind {
	case KindRequest:
		if !hasMethod || !hasID || m.ID == nil {
			t.Fatalf("request without method or id: %+v", m)
		}
	case KindNotification:
		if !hasMethod || hasID || m.ID != nil {
			t.Fatalf("notification with id or without method: %+v", m)
		}
	case KindResponse:
		_, hasResult := obj["result"]
		_, hasError := obj["error"]
		if hasMethod || !hasID || hasResult == hasError {
			t.Fatalf("malformed response accepted: %+v %v", m, obj)
		}
		return
	default:
		t.Fatalf("Kind %q", m.Kind)
	}
	if k := m.ID.Kind(); m.ID != nil && k != '"' && k != '0' {
		t.Fatalf("ID %q is neither a string nor a number", m.ID)
	}
	params, _ := obj["params"].(map[string]any)
	if _, ok := obj["params"]; ok && params == nil {
		t.Fatalf("accepted params %#v that is not an object", obj["params"])
	}
	noFoldVariants(t, params, "name", "uri", "arguments", "taskId", "_meta", "ref")
	str := func(k string) string { s, _ := params[k].(string); return s }
	switch m.Method {
	case "tools/call":
		if m.Tool != str("name") || m.Name != m.Tool || !validToolName([]byte(m.Tool)) {
			t.Fatalf("tools/call: Tool %q Name %q, json v2 name %#v", m.Tool, m.Name, params["name"])
		}
	case "prompts/get":
		if m.Prompt != str("name") || m.Name != m.Prompt || m.Prompt == "" {
			t.Fatalf("prompts/get: Prompt %q, json v2 name %#v", m.Prompt, params["name"])
		}
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		if norm, err := NormalizeURI(str("uri")); m.Name != str("uri") || err != nil || m.ResourceURI != norm || m.Name == "" {
			t.Fatalf("%s: Name %q ResourceURI %q, json v2 uri %#v", m.Method, m.Name, m.ResourceURI, params["uri"])
		}
	case "tasks/get", "tasks/result", "tasks/cancel", "tasks/update":
		if m.TaskID != str("taskId") || m.Name != m.TaskID {
			t.Fatalf("%s: TaskID %q, json v2 taskId %#v", m.Method, m.TaskID, params["taskId"])
		}
	default:
		if m.Tool != "" || m.Name != "" || m.TaskID != "" {
			t.Fatalf("method %q has extracted fields: %+v", m.Method, m)
		}
	}
	if m.Arguments != nil {
		if m.Arguments.Kind() != '{' || !m.Arguments.IsValid() {
			t.Fatalf("Arguments %q is not a valid object", m.Arguments)
		}
		want, _ := jsonv2.Marshal(params["arguments"], jsonv2.Deterministic(true))
		var gotArgs map[string]any
		if err := jsonv2.Unmarshal(m.Arguments, &gotArgs); err != nil {
			t.Fatalf("Arguments %q: %v", m.Arguments, err)
		}
		have, _ := jsonv2.Marshal(gotArgs, jsonv2.Deterministic(true))
		if !bytes.Equal(want, have) {
			t.Fatalf("Arguments %s, json v2 arguments %s", have, want)
		}
	}
	if meta, ok := params["_meta"].(map[string]any); ok {
		if v, _ := meta["io.modelcontextprotocol/protocolVersion"].(string); v != m.MetaProtocolVersion {
			t.Fatalf("MetaProtocolVersion %q, json v2 %q", m.MetaProtocolVersion, v)
		}
	}
}

// noFoldVariants fails if obj has a member whose name equals one of names
// under case folding without being equal to it.
func noFoldVariants(t *testing.T, obj map[string]any, names ...string) {
	t.Helper()
	for k := range obj {
		for _, n := range names {
			if k != n && strings.EqualFold(k, n) {
				t.Fatalf("accepted object has %q next to the known name %q", k, n)
			}
		}
	}
}

// FuzzDecodeHeaderValue checks that DecodeHeaderValue never panics and that
// whatever it accepts is either printable ASCII passed through, or the
// canonical =?base64?…?= encoding of valid UTF-8 without control characters.
func FuzzDecodeHeaderValue(f *testing.F) {
	for _, s := range headerSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, err := DecodeHeaderValue(v)
		if err != nil {
			checkFuzzErr(t, err)
			if e := err.(*Error); e.Reason != ReasonInvalidHeader {
				t.Fatalf("reason %q, want %q", e.Reason, ReasonInvalidHeader)
			}
			return
		}
		if !utf8.ValidString(got) || hasControl(got) {
			t.Fatalf("DecodeHeaderValue(%q) = %q: invalid UTF-8 or control characters", v, got)
		}
		if strings.HasPrefix(v, base64Prefix) {
			if b64(got) != v {
				t.Fatalf("DecodeHeaderValue(%q) = %q, which does not re-encode to the input", v, got)
			}
			return
		}
		if got != v {
			t.Fatalf("DecodeHeaderValue(%q) = %q, want the plain value unchanged", v, got)
		}
		for i := 0; i < len(got); i++ {
			if got[i] < 0x20 || got[i] > 0x7e {
				t.Fatalf("DecodeHeaderValue(%q) passed a non-printable byte", v)
			}
		}
	})
}

func headerSeeds() map[string]string {
	return map[string]string{
		"plain":          "tools/call",
		"base64":         b64("get_weather"),
		"base64_unicode": b64("café ✓"),
		"base64_empty":   "=?base64??=",
		"bad_base64":     "=?base64?!!!!?=",
		"bad_padding":    "=?base64?YWI?=",
		"newline":        "=?base64?YW\nJj?=",
		"invalid_utf8":   "=?base64?//4=?=",
		"upper_prefix":   "=?BASE64?YWJj?=",
		"control":        "a\x00b",
		"non_ascii":      "café",
	}
}

// FuzzNormalizeURI checks the invariants of NormalizeURI and
// NormalizeURITemplate on any input: no panic; a rejection is an *Error
// with one of the two URI reasons; an accepted URI normalises to itself
// again (idempotence), keeps its scheme (lower-cased), and contains no "."
// or ".." path segment, no backslash and no encoded slash or backslash.
func FuzzNormalizeURI(f *testing.F) {
	for _, s := range uriSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, template := range []bool{false, true} {
			got, p := normalizeURI(s, template)
			if p != nil {
				checkFuzzErr(t, p.err(nil))
				if r := p.reason; r != ReasonInvalidResourceURI && r != ReasonAmbiguousResourceURI {
					t.Fatalf("normalizeURI(%q) reason %q", s, r)
				}
				continue
			}
			again, p := normalizeURI(got, template)
			if p != nil || again != got {
				t.Fatalf("normalizeURI(%q, %v) = %q, but normalising that gives %q, %v", s, template, got, again, p)
			}
			checkNormalURI(t, s, got, template)
		}
	})
}

// checkNormalURI asserts the properties every normalised URI has.
func checkNormalURI(t *testing.T, in, out string, template bool) {
	t.Helper()
	i := schemeEnd(in)
	if i <= 0 || !strings.HasPrefix(out, strings.ToLower(in[:i+1])) {
		t.Fatalf("normalizeURI(%q) = %q: scheme changed", in, out)
	}
	if strings.ContainsRune(out, '\\') {
		t.Fatalf("normalizeURI(%q) = %q contains a backslash", in, out)
	}
	if u := strings.ToUpper(out); strings.Contains(u, "%2F") || strings.Contains(u, "%5C") || strings.Contains(u, "%2E") {
		t.Fatalf("normalizeURI(%q) = %q contains an encoded slash, backslash or dot", in, out)
	}
	rest := out[i+1:]
	if strings.HasPrefix(rest, "//") {
		rest = rest[2:]
		if j := indexAny(rest, "/?#", template); j >= 0 {
			rest = rest[j:]
		} else {
			rest = ""
		}
	}
	// No piece of path, query or fragment split at "/" (outside template
	// expressions) is a dot segment.
	path, query, fragment, _, _ := splitTail(rest, template)
	for _, part := range []string{path, query, fragment} {
		for {
			j := indexAny(part, "/", template)
			piece := part
			if j >= 0 {
				piece = part[:j]
			}
			if piece == "." || piece == ".." {
				t.Fatalf("normalizeURI(%q) = %q has a dot segment", in, out)
			}
			if j < 0 {
				break
			}
			part = part[j+1:]
		}
	}
}

func uriSeeds() map[string]string {
	seeds := map[string]string{
		"http":          "HTTPS://Example.COM/a/./b/../c?q=%7e#f",
		"file":          "file:///srv/public/%2e%2E/secret",
		"userinfo":      "http://User@Host:80/%41",
		"relative":      "a/../b",
		"authority":     "file:/..//evil.example/x",
		"scheme":        "x/../javascript:alert",
		"malformed":     "http://h/%zz",
		"urn":           "URN:ISBN:0451450523",
		"template":      "file:///{path}",
		"empty_path":    "http://h",
		"backslash":     "file:///srv/data/..\\..\\etc/passwd",
		"encoded_slash": "file:///srv/data/..%2F..%2Fetc/passwd",
		"ipv6":          "http://[::FFFF:1.2.3.4]:8080/x",
		"ipv4_hex":      "http://0x7f.1/",
		"punycode":      "https://XN--CAF-DMA.example/",
		"drive":         "file:///C:/data/x",
		"query_dots":    "file:///srv/data/x#/../../etc/passwd",
	}
	for _, tc := range uriCases {
		seeds["case_"+tc.name] = tc.in
	}
	return seeds
}

// TestWriteFuzzCorpus writes the seeds as files under testdata/fuzz, so that
// `go test` runs them as regular tests even without the f.Add calls, and so
// that `go test -fuzz` starts from them. Run with -update-corpus after
// changing the tables.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite testdata/fuzz")
	}
	write := func(target, name, value string) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		file := strings.Map(func(r rune) rune {
			if r == '/' || r == ' ' || r == '.' {
				return '_'
			}
			return r
		}, name)
		if err := os.WriteFile(filepath.Join(dir, "seed_"+file), []byte("go test fuzz v1\n"+value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range parseSeeds() {
		write("FuzzParse", name, fmt.Sprintf("[]byte(%s)", strconv.Quote(string(body))))
	}
	for name, v := range headerSeeds() {
		write("FuzzDecodeHeaderValue", name, fmt.Sprintf("string(%s)", strconv.Quote(v)))
	}
	for name, v := range uriSeeds() {
		write("FuzzNormalizeURI", name, fmt.Sprintf("string(%s)", strconv.Quote(v)))
	}
	for _, tc := range contentTypeCases {
		write("FuzzCheckContentType", tc.name, fmt.Sprintf("string(%s)", strconv.Quote(tc.ct)))
	}
}
