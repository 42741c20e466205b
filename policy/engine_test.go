package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/open-policy-agent/opa/v1/rego"
)

// writePolicy writes files (name → content) into a new temporary directory
// and returns it.
func writePolicy(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
	return dir
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write and rename, as editors and config management do, so that a
	// concurrent poll never sees a half-written file.
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// diskDefault is the default policy on disk, laid out as it is embedded
// (../rego without its examples).
func diskDefault(t testing.TB) Source { return Source{Paths: []string{copyDefault(t)}} }

// exampleMappings is the default policy with the example scope mappings of
// ../rego/examples/scope-mappings instead of its empty ones.
var exampleMappings = Source{Paths: []string{"../rego/mcp/authz.rego", "../rego/examples/scope-mappings/data.json"}}

// copyDefault copies the default policy (../rego/mcp and ../rego/data.json)
// into a temporary directory laid out like ../rego.
func copyDefault(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rego")
	if err := os.CopyFS(filepath.Join(dir, "mcp"), os.DirFS("../rego/mcp")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../rego/data.json")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "data.json"), b, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// newEngine returns an engine with src loaded. Unless a test sets its own,
// the evaluation timeout is generous: these tests are about decisions, and
// must not fail on a loaded machine or under the race detector.
func newEngine(t testing.TB, src Source, opts Options) *Engine {
	t.Helper()
	if opts.EvalTimeout == 0 {
		opts.EvalTimeout = 10 * time.Second
	}
	e := New(opts)
	if err := e.Load(context.Background(), src); err != nil {
		t.Fatalf("Load(%v) = %v", src.Paths, err)
	}
	return e
}

// Test fixtures.
var (
	testRequest = &Request{
		Method:  "POST",
		Path:    "/mcp",
		Host:    "mcp.example",
		Headers: map[string]string{"content-type": "application/json", "mcp-session-id": "s-1"},
		Query:   map[string][]string{"a": {"1", "2"}},
	}
)

func testToken(scopes ...string) *Token {
	return &Token{
		Issuer:   "https://as.example",
		Subject:  "alice",
		ClientID: "client-1",
		Audience: []string{"https://mcp.example/mcp"},
		Scopes:   scopes,
		Claims:   jsontext.Value(`{"iss":"https://as.example","sub":"alice","jti":"jti-1","tid":"tenant-7"}`),
	}
}

func call(tool string) MCP {
	return MCP{Kind: "request", ID: jsontext.Value(`1`), Method: "tools/call", Tool: tool, Arguments: jsontext.Value(`{}`)}
}

func req(method string) MCP {
	return MCP{Kind: "request", ID: jsontext.Value(`1`), Method: method}
}

func allow(reason string) Decision { return Decision{Allow: true, Reason: reason} }
func deny(reason string) Decision  { return Decision{Reason: reason} }
func need(scopes ...string) Decision {
	return Decision{Reason: "insufficient_scope", RequiredScopes: scopes}
}

// decisionOpts compares decisions ignoring the revision (checked separately)
// and treating nil and empty the same.
var decisionOpts = cmp.Options{
	cmpopts.IgnoreFields(Decision{}, "Revision"),
	cmpopts.EquateEmpty(),
}

func TestDecideDefaultPolicy(t *testing.T) {
	t.Parallel()
	// The shipped rego/data.json maps no scope: tools:<name>, tools:*,
	// prompts:<name>, prompts:* and resources:* are the only grants.
	tests := []struct {
		name   string
		scopes []string
		msg    MCP
		want   Decision
	}{
		{"initialize", nil, req("initialize"), allow("open_method")},
		{"ping", nil, req("ping"), allow("open_method")},
		{"tools/list", nil, req("tools/list"), allow("open_method")},
		{"tasks/get", nil, MCP{Kind: "request", Method: "tasks/get", TaskID: "t-1"}, allow("open_method")},
		{"notification", nil, MCP{Kind: "notification", Method: "notifications/initialized"}, allow("open_method")},
		{"notification naming tools/call", nil, MCP{Kind: "notification", Method: "tools/call", Tool: "delete_repo"}, need("tools:delete_repo")},
		{"response", nil, MCP{Kind: "response", ID: jsontext.Value(`"srv-1"`)}, allow("open_method")},
		{"stream", nil, MCP{Kind: "stream"}, allow("open_method")},
		{"session_end", nil, MCP{Kind: "session_end"}, allow("open_method")},
		{"tool via direct scope", []string{"tools:delete_repo"}, call("delete_repo"), allow("tool_scope")},
		{"tool via tools:*", []string{"tools:*"}, call("delete_repo"), allow("tool_scope")},
		{"no example mapping", []string{"weather:read", "files:write"}, call("get_weather"), need("tools:get_weather")},
		{"unmapped tool denied", []string{"tools:get_weather"}, call("delete_repo"), need("tools:delete_repo")},
		{"scopes are case-sensitive", []string{"Tools:*", "Tools:get_weather"}, call("get_weather"), need("tools:get_weather")},
		{"scope prefix never matches", []string{"tools:read"}, call("readx"), need("tools:readx")},
		{"tool without name", []string{"tools:*"}, call(""), deny("invalid_input")},
		{"prompt via direct scope", []string{"prompts:summarise"}, MCP{Kind: "request", Method: "prompts/get", Prompt: "summarise"}, allow("prompt_scope")},
		{"prompt denied", nil, MCP{Kind: "request", Method: "prompts/get", Prompt: "summarise"}, need("prompts:summarise")},
		{"resource via resources:*", []string{"resources:*"}, MCP{Kind: "request", Method: "resources/read", ResourceURI: "file:///srv/data/a.csv"}, allow("resource_scope")},
		{"resource denied", []string{"files:read"}, MCP{Kind: "request", Method: "resources/subscribe", ResourceURI: "file:///srv/data/a.csv"}, need("resources:*")},
		{"completion of a prompt", []string{"prompts:*"}, MCP{Kind: "request", Method: "completion/complete", Prompt: "code_review"}, allow("prompt_scope")},
		{"completion of a resource", nil, MCP{Kind: "request", Method: "completion/complete", ResourceURI: "file:///srv/data/{name}"}, need("resources:*")},
		{"subscriptions/listen", []string{"files:read"}, MCP{Kind: "request", Method: "subscriptions/listen", ResourceURIs: []string{"file:///srv/data/a", "file:///etc/x"}}, need("resources:*")},
		{"unknown method", []string{"tools:*", "prompts:*", "resources:*"}, req("sampling/createMessage"), deny("unknown_method")},
		{"unknown kind", nil, MCP{Kind: "batch"}, deny("invalid_input")},
	}
	for _, src := range []struct {
		name string
		src  Source
	}{
		{"disk", diskDefault(t)},
		{"embedded", DefaultSource()},
	} {
		e := newEngine(t, src.src, Options{})
		runDecideTable(t, e, src.name, tests)
	}
}

// TestDecideExampleMappings: the default policy with the example data of
// rego/examples/scope-mappings, which maps weather:read → get_weather,
// get_forecast; files:write → write_*; prompts:code → code_review,
// explain_*; files:read → file:///srv/data/.
func TestDecideExampleMappings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		scopes []string
		msg    MCP
		want   Decision
	}{
		{"tool via mapped scope", []string{"weather:read"}, call("get_forecast"), allow("tool_scope")},
		{"tool via direct scope", []string{"tools:delete_repo"}, call("delete_repo"), allow("tool_scope")},
		{"tool via glob mapping", []string{"files:write"}, call("write_file"), allow("tool_scope")},
		{"mapped tool denied", nil, call("get_weather"), need("weather:read")},
		{"glob-mapped tool denied", []string{"weather:read"}, call("write_file"), need("files:write")},
		{"unmapped tool denied", []string{"weather:read"}, call("delete_repo"), need("tools:delete_repo")},
		{"scopes are case-sensitive", []string{"Tools:*", "Weather:read"}, call("get_weather"), need("weather:read")},
		{"prompt via mapped glob", []string{"prompts:code"}, MCP{Kind: "request", Method: "prompts/get", Prompt: "explain_diff"}, allow("prompt_scope")},
		{"prompt denied", nil, MCP{Kind: "request", Method: "prompts/get", Prompt: "summarise"}, need("prompts:summarise")},
		{"resource via prefix", []string{"files:read"}, MCP{Kind: "request", Method: "resources/read", ResourceURI: "file:///srv/data/a.csv"}, allow("resource_scope")},
		{"resource denied, mapped", nil, MCP{Kind: "request", Method: "resources/subscribe", ResourceURI: "file:///srv/data/a.csv"}, need("files:read")},
		{"resource prefix is not a substring", []string{"files:read"}, MCP{Kind: "request", Method: "resources/read", ResourceURI: "file:///srv/database"}, need("resources:*")},
		{"completion of a prompt", []string{"prompts:code"}, MCP{Kind: "request", Method: "completion/complete", Prompt: "code_review"}, allow("prompt_scope")},
		{"completion of a resource", nil, MCP{Kind: "request", Method: "completion/complete", ResourceURI: "file:///srv/data/{name}"}, need("files:read")},
		{"subscriptions/listen", []string{"files:read"}, MCP{Kind: "request", Method: "subscriptions/listen", ResourceURIs: []string{"file:///srv/data/a", "file:///etc/x"}}, need("resources:*")},
	}
	runDecideTable(t, newEngine(t, exampleMappings, Options{}), "example", tests)
}

func runDecideTable(t *testing.T, e *Engine, prefix string, tests []struct {
	name   string
	scopes []string
	msg    MCP
	want   Decision
}) {
	for _, tt := range tests {
		t.Run(prefix+"/"+tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := e.Decide(t.Context(), testRequest, testToken(tt.scopes...), []MCP{tt.msg})
			if err != nil {
				t.Fatalf("Decide() error = %v", err)
			}
			if len(got) != 1 {
				t.Fatalf("Decide() returned %d decisions, want 1", len(got))
			}
			if diff := cmp.Diff(tt.want, got[0], decisionOpts); diff != "" {
				t.Errorf("Decide(%+v) mismatch (-want +got):\n%s", tt.msg, diff)
			}
			if got[0].Revision != e.Revision() {
				t.Errorf("Decision.Revision = %q, want %q", got[0].Revision, e.Revision())
			}
		})
	}
}

func TestDecideBatch(t *testing.T) {
	t.Parallel()
	e := newEngine(t, DefaultSource(), Options{})
	msgs := []MCP{
		call("get_weather"),
		call("delete_repo"),
		{Kind: "notification", Method: "notifications/progress"},
		req("tools/list"),
	}
	got, err := e.Decide(t.Context(), testRequest, testToken("tools:get_weather"), msgs)
	if err != nil {
		t.Fatal(err)
	}
	want := []Decision{allow("tool_scope"), need("tools:delete_repo"), allow("open_method"), allow("open_method")}
	if diff := cmp.Diff(want, got, decisionOpts); diff != "" {
		t.Errorf("Decide(batch) mismatch (-want +got):\n%s", diff)
	}
}

func TestDecideWithoutMCP(t *testing.T) {
	t.Parallel()
	e := newEngine(t, DefaultSource(), Options{})
	for _, msgs := range [][]MCP{nil, {}} {
		got, err := e.Decide(t.Context(), &Request{Method: "GET", Path: "/healthz"}, testToken("tools:*"), msgs)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]Decision{deny("not_mcp")}, got, decisionOpts); diff != "" {
			t.Errorf("Decide(no mcp) mismatch (-want +got):\n%s", diff)
		}
	}
}

func TestDecideRevoked(t *testing.T) {
	t.Parallel()
	dir := copyDefault(t)
	data, err := os.ReadFile(filepath.Join(dir, "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	patched := strings.Replace(string(data), `"jti": []`, `"jti": ["jti-1"]`, 1)
	patched = strings.Replace(patched, `"subjects": []`, `"subjects": ["mallory"]`, 1)
	if patched == string(data) {
		t.Fatal("could not patch data.json")
	}
	writeFile(t, filepath.Join(dir, "data.json"), patched)
	e := newEngine(t, Source{Paths: []string{dir}}, Options{})

	tok := testToken("tools:*") // claims.jti is jti-1
	got, err := e.Decide(t.Context(), testRequest, tok, []MCP{req("initialize"), call("x")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Decision{deny("revoked"), deny("revoked")}, got, decisionOpts); diff != "" {
		t.Errorf("revoked jti mismatch (-want +got):\n%s", diff)
	}

	tok = testToken("tools:*")
	tok.Claims = jsontext.Value(`{"jti":"jti-2"}`)
	tok.Subject = "mallory"
	got, err = e.Decide(t.Context(), testRequest, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Decision{deny("revoked")}, got, decisionOpts); diff != "" {
		t.Errorf("revoked subject mismatch (-want +got):\n%s", diff)
	}

	tok.Subject = "bob"
	got, err = e.Decide(t.Context(), testRequest, tok, []MCP{call("x")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Decision{allow("tool_scope")}, got, decisionOpts); diff != "" {
		t.Errorf("not revoked mismatch (-want +got):\n%s", diff)
	}
}

// echoPolicy returns parts of its input in decision.headers.
const echoPolicy = `package mcp.authz

decision := {
	"allow": _allow,
	"reason": "echo",
	"required_scopes": ["b", "a"],
	"headers": _echo,
} if input.mcp

decision := {"allow": false, "reason": "no mcp", "headers": {"keys": json.marshal(object.keys(input))}} if not input.mcp

default _allow := false

_allow if input.mcp.arguments.path == "/etc/hosts"

_echo["tid"] := input.token.claims.tid

_echo["nested"] := json.marshal(input.token.claims.nested)

_echo["path"] := input.mcp.arguments.path

_echo["big"] := json.marshal(input.mcp.arguments.big)

_echo["big-exact"] := sprintf("%v", [input.mcp.arguments.big == 12345678901234567890123])

_echo["id"] := json.marshal(input.mcp.id)

_echo["arguments-null"] := sprintf("%v", [input.mcp.arguments == null])

_echo["request"] := json.marshal(input.request)

_echo["token"] := json.marshal(object.remove(input.token, ["claims"]))

_echo["mcp"] := json.marshal(object.remove(input.mcp, ["arguments", "id"]))

_echo["keys"] := json.marshal(object.keys(input))
`

func TestDecideInputReachesPolicy(t *testing.T) {
	t.Parallel()
	dir := writePolicy(t, map[string]string{"echo.rego": echoPolicy})
	e := newEngine(t, Source{Paths: []string{dir}}, Options{})

	tok := testToken("s1")
	tok.Claims = jsontext.Value(`{"tid":"tenant-7","nested":{"list":[1,"two",{"three":3.50}],"t":true,"n":null}}`)
	tok.Azp = "web-app"
	tok.Actors = []Actor{{Subject: "agent-1", ClientID: "agent-app", Issuer: "https://as.example"}, {Subject: "orchestrator"}}
	tok.MayAct = jsontext.Value(`{"sub":"agent-1"}`)
	msgs := []MCP{
		{
			ProtocolVersion: "2025-11-25", SessionID: "s-1", Kind: "request",
			ID: jsontext.Value(`"req-\u00e9"`), Method: "tools/call", Tool: "read_file",
			Arguments:    jsontext.Value(`{"path":"/etc/hosts","big":12345678901234567890123}`),
			ResourceURIs: nil, TaskID: "",
		},
		{Kind: "notification", Method: "notifications/progress"},
	}
	got, err := e.Decide(t.Context(), testRequest, tok, msgs)
	if err != nil {
		t.Fatal(err)
	}
	want := []Decision{
		{
			Allow: true, Reason: "echo", RequiredScopes: []string{"b", "a"},
			Headers: map[string]string{
				"tid":            "tenant-7",
				"nested":         `{"list":[1,"two",{"three":3.50}],"n":null,"t":true}`,
				"path":           "/etc/hosts",
				"big":            "12345678901234567890123",
				"big-exact":      "true",
				"id":             `"req-é"`,
				"arguments-null": "false",
				"request":        `{"headers":{"content-type":"application/json","mcp-session-id":"s-1"},"host":"mcp.example","method":"POST","path":"/mcp","query":{"a":["1","2"]}}`,
				"token":          `{"act":[{"client_id":"agent-app","iss":"https://as.example","sub":"agent-1"},{"client_id":"","iss":"","sub":"orchestrator"}],"audience":["https://mcp.example/mcp"],"azp":"web-app","client_id":"client-1","issuer":"https://as.example","may_act":{"sub":"agent-1"},"scopes":["s1"],"subject":"alice"}`,
				"mcp":            `{"kind":"request","method":"tools/call","prompt":"","protocol_version":"2025-11-25","resource_uri":"","resource_uris":[],"session_id":"s-1","task_id":"","tool":"read_file"}`,
				"keys":           `["mcp","request","token"]`,
			},
		},
		{
			Allow: false, Reason: "echo", RequiredScopes: []string{"b", "a"},
			Headers: map[string]string{
				"tid":            "tenant-7",
				"nested":         `{"list":[1,"two",{"three":3.50}],"n":null,"t":true}`,
				"id":             "null",
				"arguments-null": "true",
				"request":        `{"headers":{"content-type":"application/json","mcp-session-id":"s-1"},"host":"mcp.example","method":"POST","path":"/mcp","query":{"a":["1","2"]}}`,
				"token":          `{"act":[{"client_id":"agent-app","iss":"https://as.example","sub":"agent-1"},{"client_id":"","iss":"","sub":"orchestrator"}],"audience":["https://mcp.example/mcp"],"azp":"web-app","client_id":"client-1","issuer":"https://as.example","may_act":{"sub":"agent-1"},"scopes":["s1"],"subject":"alice"}`,
				"mcp":            `{"kind":"notification","method":"notifications/progress","prompt":"","protocol_version":"","resource_uri":"","resource_uris":[],"session_id":"","task_id":"","tool":""}`,
				"keys":           `["mcp","request","token"]`,
			},
		},
	}
	if diff := cmp.Diff(want, got, decisionOpts); diff != "" {
		t.Errorf("Decide(echo) mismatch (-want +got):\n%s", diff)
	}

	// Without messages, input.mcp is absent; nil req and tok leave their
	// documents out.
	got, err = e.Decide(t.Context(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Decision{{Reason: "no mcp", Headers: map[string]string{"keys": "[]"}}}, got, decisionOpts); diff != "" {
		t.Errorf("Decide(nil, nil, nil) mismatch (-want +got):\n%s", diff)
	}
}

func TestDecideMalformedRawJSON(t *testing.T) {
	t.Parallel()
	e := newEngine(t, DefaultSource(), Options{})
	tests := []struct {
		name string
		tok  *Token
		msg  MCP
	}{
		{"claims truncated", &Token{Claims: jsontext.Value(`{"a":`)}, req("ping")},
		{"claims not an object", &Token{Claims: jsontext.Value(`["a"]`)}, req("ping")},
		{"claims duplicate names", &Token{Claims: jsontext.Value(`{"a":1,"a":2}`)}, req("ping")},
		{"claims trailing data", &Token{Claims: jsontext.Value(`{} {}`)}, req("ping")},
		{"arguments invalid", testToken(), MCP{Kind: "request", Method: "tools/call", Tool: "t", Arguments: jsontext.Value(`[1,]`)}},
		{"id invalid UTF-8", testToken(), MCP{Kind: "request", Method: "ping", ID: jsontext.Value("\"\xff\"")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Decide(t.Context(), testRequest, tt.tok, []MCP{tt.msg})
			if err == nil {
				t.Fatalf("Decide() = %+v, want error", got)
			}
		})
	}
}

func TestDecideNotReady(t *testing.T) {
	t.Parallel()
	e := New(Options{})
	if e.Ready() || e.Revision() != "" || e.ScopesSupported() != nil || e.ScopePrefixes() != nil {
		t.Errorf("new engine: Ready=%v Revision=%q ScopesSupported=%v ScopePrefixes=%v, want false, empty",
			e.Ready(), e.Revision(), e.ScopesSupported(), e.ScopePrefixes())
	}
	if _, err := e.Decide(t.Context(), testRequest, testToken(), nil); !errors.Is(err, ErrNotReady) {
		t.Errorf("Decide() error = %v, want ErrNotReady", err)
	}
}

// faultyCaller is a condition only the tests' own caller (testToken's
// subject) meets, never a smoke input of the activation check: a fault
// behind it passes the check and fails at request time, the case the check
// cannot catch and Decide must still fail closed on.
const faultyCaller = `input.token.subject == "alice"`

// slowPolicy takes far longer than any timeout used in the tests, for the
// tests' caller.
const slowPolicy = `package mcp.authz

default decision := {"allow": false, "reason": "fast"}

decision := {"allow": n > 0, "reason": "slow"} if {
	` + faultyCaller + `
	n := count([1 | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); i != j])
}
`

func TestDecideTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	dir := writePolicy(t, map[string]string{"slow.rego": slowPolicy})

	t.Run("EvalTimeout", func(t *testing.T) {
		t.Parallel()
		e := newEngine(t, Source{Paths: []string{dir}}, Options{EvalTimeout: 20 * time.Millisecond})
		start := time.Now()
		_, err := e.Decide(t.Context(), testRequest, testToken(), []MCP{req("ping")})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Decide() error = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Decide() took %v, want about 20ms", d)
		}
	})
	t.Run("ctx deadline", func(t *testing.T) {
		t.Parallel()
		e := newEngine(t, Source{Paths: []string{dir}}, Options{EvalTimeout: -1})
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		if _, err := e.Decide(ctx, testRequest, testToken(), nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Decide() error = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("ctx cancelled", func(t *testing.T) {
		t.Parallel()
		e := newEngine(t, DefaultSource(), Options{})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := e.Decide(ctx, testRequest, testToken(), []MCP{req("ping")}); !errors.Is(err, context.Canceled) {
			t.Errorf("Decide() error = %v, want context.Canceled", err)
		}
	})
}

// TestDecideInvalidDecision: a decision that is not a decision document is
// refused by the activation check when every request gets it, and an error
// of Decide when only some do.
func TestDecideInvalidDecision(t *testing.T) {
	t.Parallel()
	tests := map[string]struct{ body, problem string }{
		"undefined":               {`decision := {"allow": true, "reason": "x"} if input.nothing`, "data.mcp.authz.decision is undefined"},
		"not an object":           {`decision := true`, "decision is boolean, want an object"},
		"allow missing":           {`decision := {"reason": "x"}`, "decision.allow: missing"},
		"allow not a bool":        {`decision := {"allow": "true", "reason": "x"}`, "decision.allow: want a boolean"},
		"reason not a string":     {`decision := {"allow": false, "reason": 1}`, "decision.reason: want a string"},
		"required_scopes string":  {`decision := {"allow": false, "reason": "x", "required_scopes": "tools:a"}`, "decision.required_scopes: got string, want an array of strings"},
		"required_scopes numbers": {`decision := {"allow": false, "reason": "x", "required_scopes": [1]}`, "decision.required_scopes: element 0 is number, want a string"},
		"headers not an object":   {`decision := {"allow": true, "reason": "x", "headers": ["a"]}`, "decision.headers: want an object"},
		"header value not string": {`decision := {"allow": true, "reason": "x", "headers": {"a": 1}}`, "decision.headers: want string names and values"},
		"shadow not a bool":       {`decision := {"allow": false, "reason": "x", "shadow": "yes"}`, "decision.shadow: want a boolean"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := writePolicy(t, map[string]string{"p.rego": "package mcp.authz\n\n" + tt.body + "\n"})
			ae := refused(t, Source{Paths: []string{dir}})
			if p := ae.Problems[0]; p.Reason != RefusedInvalidDecision || p.Message != tt.problem || len(ae.Problems) != 1 {
				t.Errorf("Load() refused with %+v, want one %s problem %q for every input", ae.Problems, RefusedInvalidDecision, tt.problem)
			}

			// The same decision for the tests' caller only.
			rule, _ := strings.CutPrefix(tt.body, "decision := ")
			rule, cond, found := strings.Cut(rule, " if ")
			if !found {
				cond = "true"
			}
			guarded := "package mcp.authz\n\ndefault decision := {\"allow\": false}\n\ndecision := " + rule + " if {\n\t" + faultyCaller + "\n\t" + cond + "\n}\n"
			if name == "undefined" {
				guarded = "package mcp.authz\n\ndecision := {\"allow\": true} if not " + faultyCaller + "\n"
			}
			e := newEngine(t, Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": guarded})}}, Options{})
			got, err := e.Decide(t.Context(), testRequest, testToken(), []MCP{req("ping")})
			if !errors.Is(err, ErrInvalidDecision) {
				t.Errorf("Decide() = %+v, %v; want ErrInvalidDecision", got, err)
			}
		})
	}
}

// refused loads src into a new engine and returns the activation error it
// must fail with.
func refused(t *testing.T, src Source) *ActivationError {
	t.Helper()
	e := New(Options{})
	err := e.Load(t.Context(), src)
	var ae *ActivationError
	if !errors.As(err, &ae) {
		t.Fatalf("Load(%v) = %v, want an *ActivationError", src.Paths, err)
	}
	if e.Ready() || e.Current() != nil {
		t.Fatalf("Load(%v) refused, but the engine is Ready with revision %q", src.Paths, e.Revision())
	}
	return ae
}

func TestDecideEvalError(t *testing.T) {
	t.Parallel()
	// Two complete definitions with different values: a conflict error at
	// evaluation time, refused by the activation check.
	conflict := `package mcp.authz

default decision := {"allow": false, "reason": "default"}

decision := {"allow": true, "reason": "a"} if input.mcp.method == "ping"
decision := {"allow": false, "reason": "b"} if input.mcp.kind == "request"
`
	ae := refused(t, Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": conflict})}})
	if p := ae.Problems[0]; p.Reason != RefusedEvalError || !strings.HasSuffix(p.Location, "p.rego:6") ||
		!strings.HasPrefix(p.Message, "eval_conflict_error: ") || p.Check != `input "ping, scoped token" and 4 more` {
		t.Errorf("refused with %+v, want the conflict at p.rego:6 for the four ping inputs and the batch", ae.Problems)
	}

	// The same conflict for the tests' caller only passes the check and
	// fails at request time.
	guarded := strings.Replace(conflict, `if input.mcp.kind == "request"`, `if { input.mcp.kind == "request"; `+faultyCaller+` }`, 1)
	e := newEngine(t, Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": guarded})}}, Options{})
	got, err := e.Decide(t.Context(), testRequest, testToken(), []MCP{req("ping")})
	if err == nil || errors.Is(err, ErrInvalidDecision) || !strings.Contains(err.Error(), "eval_conflict_error") {
		t.Errorf("Decide() = %+v, %v; want an evaluation error", got, err)
	}
}

func TestDecideOptionalFields(t *testing.T) {
	t.Parallel()
	dir := writePolicy(t, map[string]string{"p.rego": `package mcp.authz

decision := {"allow": false, "reason": "shadowed", "shadow": true, "required_scopes": {"b", "a"}, "extra": [1]}
`})
	e := newEngine(t, Source{Paths: []string{dir}}, Options{})
	got, err := e.Decide(t.Context(), testRequest, testToken(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Decision{{Reason: "shadowed", Shadow: true, RequiredScopes: []string{"a", "b"}, Revision: e.Revision()}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Decide() mismatch (-want +got):\n%s", diff)
	}
	if e.ScopesSupported() != nil || e.ScopePrefixes() != nil {
		t.Errorf("policy without metadata rules: ScopesSupported=%v ScopePrefixes=%v, want nil", e.ScopesSupported(), e.ScopePrefixes())
	}
}

func TestSafeEvalRecoversPanic(t *testing.T) {
	t.Parallel()
	_, err := safeEval(func() (rego.ResultSet, error) { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("safeEval(panic) error = %v, want one mentioning the panic", err)
	}
}

func TestMetadata(t *testing.T) {
	t.Parallel()
	if got := newEngine(t, DefaultSource(), Options{}).ScopesSupported(); len(got) != 0 {
		t.Errorf("ScopesSupported() of the default policy = %v, want none: it maps no scope", got)
	}
	e := newEngine(t, exampleMappings, Options{})
	if got, want := e.ScopesSupported(), []string{"files:read", "files:write", "prompts:code", "weather:read"}; !cmp.Equal(got, want) {
		t.Errorf("ScopesSupported() = %v, want %v", got, want)
	}
	if got, want := e.ScopePrefixes(), []string{"tools:", "prompts:", "resources:"}; !cmp.Equal(got, want) {
		t.Errorf("ScopePrefixes() = %v, want %v", got, want)
	}
	// The caller owns the slices.
	e.ScopesSupported()[0] = "mutated"
	if e.ScopesSupported()[0] == "mutated" {
		t.Error("ScopesSupported() returned the generation's slice")
	}
	if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(e.Revision()) {
		t.Errorf("Revision() = %q, want 12 hex digits", e.Revision())
	}
}

func TestRevisionSameForEmbeddedAndDisk(t *testing.T) {
	t.Parallel()
	embedded := newEngine(t, DefaultSource(), Options{}).Revision()
	disk := newEngine(t, diskDefault(t), Options{}).Revision()
	copied := newEngine(t, Source{Paths: []string{copyDefault(t)}}, Options{}).Revision()
	if embedded != disk || disk != copied {
		t.Errorf("revisions: embedded %q, ../rego %q, copy %q; want equal", embedded, disk, copied)
	}
}

func TestLoadErrorsKeepPreviousPolicy(t *testing.T) {
	t.Parallel()
	var reloads []string
	e := New(Options{OnReload: func(rev string, err error) { reloads = append(reloads, fmt.Sprintf("%s %v", rev, err != nil)) }})
	if err := e.Load(t.Context(), DefaultSource()); err != nil {
		t.Fatal(err)
	}
	good := e.Revision()

	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error, each must appear
	}{
		{
			name: "parse errors in two files",
			files: map[string]string{
				"a.rego": "package mcp.authz\n\ndecision := {\n",
				"b.rego": "package mcp.other\n\nx := 1\n\ny := := 2\n",
			},
			want: []string{"a.rego:4", "b.rego:5", "rego_parse_error"},
		},
		{
			name: "several compile errors in one file",
			files: map[string]string{"p.rego": `package mcp.authz

decision := {"allow": x, "reason": "r"}

other := y
`},
			want: []string{"p.rego:3", "p.rego:5", "var x is unsafe", "var y is unsafe"},
		},
		{
			name:  "no decision rule",
			files: map[string]string{"p.rego": "package mcp.authz\n\nallow := true\n"},
			want:  []string{"no rule defines data.mcp.authz.decision"},
		},
		{
			name:  "bad data file",
			files: map[string]string{"p.rego": "package mcp.authz\n\ndecision := {\"allow\": true}\n", "data.json": `{"mcp": `},
			want:  []string{"data.json"},
		},
		{
			name: "rule conflicts with data",
			files: map[string]string{
				"p.rego":    "package mcp.authz\n\ndecision := {\"allow\": true}\n",
				"data.json": `{"mcp": {"authz": {"decision": 1}}}`,
			},
			want: []string{"p.rego:3", "conflict"},
		},
		{
			name: "scopes_supported not strings",
			files: map[string]string{"p.rego": `package mcp.authz

decision := {"allow": true}

scopes_supported := [1]
`},
			want: []string{"scopes_supported", "want a string"},
		},
		{
			name: "scope_prefixes not an array",
			files: map[string]string{"p.rego": `package mcp.authz

decision := {"allow": true}

scope_prefixes := "tools:"
`},
			want: []string{"scope_prefixes", "want an array"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writePolicy(t, tt.files)
			err := e.Load(t.Context(), Source{Paths: []string{dir}})
			if err == nil {
				t.Fatal("Load() = nil, want error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load() error = %q, want it to contain %q", err, w)
				}
			}
			if cerr := Compile(t.Context(), Source{Paths: []string{dir}}); cerr == nil || cerr.Error() != err.Error() {
				t.Errorf("Compile() = %v, want the Load error %v", cerr, err)
			}
			if e.Revision() != good {
				t.Errorf("Revision() = %q after a failed Load, want %q", e.Revision(), good)
			}
			got, err := e.Decide(t.Context(), testRequest, testToken(), []MCP{req("initialize")})
			if err != nil || !got[0].Allow || got[0].Revision != good {
				t.Errorf("Decide() after a failed Load = %+v, %v; want the old policy's allow", got, err)
			}
		})
	}
	if len(reloads) != len(tests)+1 || reloads[0] != good+" false" {
		t.Errorf("OnReload calls = %q, want %d with the first %q", reloads, len(tests)+1, good+" false")
	}
}

func TestLoadMissingPath(t *testing.T) {
	t.Parallel()
	var got []string
	e := New(Options{OnReload: func(rev string, err error) { got = append(got, fmt.Sprintf("%q %v", rev, err != nil)) }})
	err := e.Load(t.Context(), Source{Paths: []string{filepath.Join(t.TempDir(), "nope")}})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Load(missing) = %v, want an error naming the path", err)
	}
	if err := e.Load(t.Context(), Source{}); err == nil {
		t.Error("Load(no paths) = nil, want error")
	}
	if e.Ready() {
		t.Error("Ready() = true after failed loads")
	}
	if want := []string{`"" true`, `"" true`}; !cmp.Equal(got, want) {
		t.Errorf("OnReload calls = %q, want %q", got, want)
	}
}

func TestLoadSameContentKeepsGeneration(t *testing.T) {
	t.Parallel()
	e := newEngine(t, DefaultSource(), Options{})
	g := e.gen.Load()
	if err := e.Load(t.Context(), diskDefault(t)); err != nil {
		t.Fatal(err)
	}
	if e.gen.Load() != g {
		t.Error("Load of identical files replaced the compiled generation")
	}
}

func TestLoadSkipsNonPolicyFiles(t *testing.T) {
	t.Parallel()
	dir := copyDefault(t)
	broken := "package mcp.authz\n\ndecision := {\n"
	for name, content := range map[string]string{
		"README.md":                   "not rego",
		"notes.txt":                   broken,
		"mcp/authz.rego~":             broken,
		"mcp/.authz.rego.swp":         broken,
		".git/config.json":            "{",
		"..2026_01_01/mcp/authz.rego": broken,
	} {
		writeFile(t, filepath.Join(dir, name), content)
	}
	e := newEngine(t, Source{Paths: []string{dir}}, Options{})
	if want := newEngine(t, DefaultSource(), Options{}).Revision(); e.Revision() != want {
		t.Errorf("Revision() = %q, want %q: skipped files must not count", e.Revision(), want)
	}
}

func TestLoadSingleFiles(t *testing.T) {
	t.Parallel()
	// Files named directly are mounted at the data root, as with
	// "opa eval -d policy.rego -d data.json".
	e := newEngine(t, Source{Paths: []string{"../rego/mcp/authz.rego", "../rego/data.json"}}, Options{})
	got, err := e.Decide(t.Context(), testRequest, testToken("tools:get_weather"), []MCP{call("get_weather")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Decision{allow("tool_scope")}, got, decisionOpts); diff != "" {
		t.Errorf("Decide() mismatch (-want +got):\n%s", diff)
	}
}

func TestConcurrentDecideDuringReload(t *testing.T) {
	t.Parallel()
	policy := func(allow bool) string {
		return fmt.Sprintf("package mcp.authz\n\ndecision := {\"allow\": %v, \"reason\": \"fixed\"}\n", allow)
	}
	srcAllow := Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": policy(true)})}}
	srcDeny := Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": policy(false)})}}
	e := newEngine(t, srcAllow, Options{})
	revAllow := e.Revision()
	if err := Compile(t.Context(), srcDeny); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg        sync.WaitGroup
		decisions atomic.Int64
	)
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				ds, err := e.Decide(ctx, testRequest, testToken(), []MCP{req("ping"), req("ping")})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("Decide() error = %v", err)
					}
					return
				}
				// Every message of a batch sees the same generation, and
				// every decision matches the revision that made it.
				if !cmp.Equal(ds[0], ds[1]) || ds[0].Allow != (ds[0].Revision == revAllow) {
					t.Errorf("inconsistent decisions %+v (allow revision %s)", ds, revAllow)
					return
				}
				decisions.Add(1)
			}
		})
	}
	for i := range 40 {
		src := srcAllow
		if i%2 == 0 {
			src = srcDeny
		}
		if err := e.Load(ctx, src); err != nil {
			t.Error(err)
		}
		if i%10 == 0 {
			// A broken load in between changes nothing.
			if err := e.Load(ctx, Source{Paths: []string{"/nonexistent"}}); err == nil {
				t.Error("Load(/nonexistent) = nil")
			}
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	if decisions.Load() == 0 {
		t.Error("no decisions were made during the reloads")
	}
}
