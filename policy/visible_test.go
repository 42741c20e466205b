package policy

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// listInput is the {"request", "token"} JSON of a list request, as the
// ext_authz side records it.
func listInput(t testing.TB, tok *Token) []byte {
	t.Helper()
	claims := map[string]any{}
	if len(tok.Claims) > 0 {
		if err := json.Unmarshal(tok.Claims, &claims); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(map[string]any{
		"request": map[string]any{"method": testRequest.Method, "path": testRequest.Path, "host": testRequest.Host, "headers": testRequest.Headers, "query": testRequest.Query},
		"token": map[string]any{"issuer": tok.Issuer, "subject": tok.Subject, "client_id": tok.ClientID, "audience": tok.Audience,
			"scopes": tok.Scopes, "claims": claims},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withoutVisible is the example-mapping policy with its visible rule
// removed, so the engine's derived default decides.
func withoutVisible(t *testing.T) Source {
	t.Helper()
	b, err := os.ReadFile("../rego/mcp/authz.rego")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	const rule = "visible := _visible if not _guards_present\n"
	if !strings.Contains(src, rule) {
		t.Fatal("no visible rule in authz.rego")
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "authz.rego"), strings.Replace(src, rule, "", 1))
	data, err := os.ReadFile("../rego/examples/scope-mappings/data.json")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "data.json"), string(data))
	return Source{Paths: []string{dir}}
}

// TestVisibleAgreesWithDecide: for random lists and tokens, Visible keeps
// exactly the items whose call Decide allows, with the default policy's own
// visible rule and with the engine's derived one (a policy without it).
func TestVisibleAgreesWithDecide(t *testing.T) {
	t.Parallel()
	engines := map[string]*Engine{
		"own visible rule": newEngine(t, exampleMappings, Options{DecisionCacheSize: -1}),
		"derived":          newEngine(t, withoutVisible(t), Options{DecisionCacheSize: -1}),
	}
	names := []string{"get_weather", "get_forecast", "write_file", "write_x", "code_review", "explain_diff", "summarise", "delete_repo", "read", ""}
	uris := []string{"file:///srv/data/a.csv", "file:///srv/database", "file:///srv/data/", "s3://x/y", ""}
	scopePool := []string{"weather:read", "files:write", "files:read", "prompts:code", "tools:*", "prompts:*", "resources:*", "tools:delete_repo", "prompts:summarise", "tools:read"}
	rng := rand.New(rand.NewPCG(1, 2))
	for name, e := range engines {
		g := e.Current()
		for round := range 60 {
			var scopes []string
			for _, s := range scopePool {
				if rng.IntN(4) == 0 {
					scopes = append(scopes, s)
				}
			}
			tok := testToken(scopes...)
			if round%10 == 0 {
				tok.Subject = "mallory" // not revoked by the example data: still a valid caller
			}
			for _, kind := range []string{ListTools, ListPrompts, ListResources, ListResourceTemplates} {
				var items []string
				for range rng.IntN(6) {
					if kind == ListTools || kind == ListPrompts {
						items = append(items, names[rng.IntN(len(names))])
					} else {
						items = append(items, uris[rng.IntN(len(uris))])
					}
				}
				got, err := g.Visible(t.Context(), ListQuery{Input: listInput(t, tok), ProtocolVersion: "2025-11-25", Kind: kind, Items: items})
				if err != nil {
					t.Fatalf("%s: Visible = %v", name, err)
				}
				for i, it := range items {
					m := MCP{Kind: "request", ProtocolVersion: "2025-11-25"}
					switch kind {
					case ListTools:
						m.Method, m.Tool = "tools/call", it
					case ListPrompts:
						m.Method, m.Prompt = "prompts/get", it
					default:
						m.Method, m.ResourceURI = "resources/read", it
					}
					ds, err := g.Decide(t.Context(), testRequest, tok, []MCP{m})
					if err != nil {
						t.Fatal(err)
					}
					if got[i] != ds[0].Allow {
						t.Errorf("%s: %s item %q with scopes %v: visible %v, call allowed %v", name, kind, it, scopes, got[i], ds[0].Allow)
					}
				}
			}
		}
	}
}

func TestVisibleFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEngine(t, DefaultSource(), Options{})
	g := e.Current()
	good := listInput(t, testToken("tools:*"))
	for name, q := range map[string]ListQuery{
		"not json":      {Input: []byte("{"), Kind: ListTools},
		"not an object": {Input: []byte("[]"), Kind: ListTools},
		"no token":      {Input: []byte(`{"request":{}}`), Kind: ListTools},
		"unknown kind":  {Input: good, Kind: "widgets"},
	} {
		if _, err := g.Visible(t.Context(), q); err == nil {
			t.Errorf("%s: Visible = nil error", name)
		}
	}
	// A policy whose visible rule is not a set of strings: refused when
	// every list gets it, an error of Visible when only the tests' caller
	// does (see faultyCaller).
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), "package mcp.authz\n\ndecision := {\"allow\": true}\n\nvisible := {true}\n")
	ae := refused(t, Source{Paths: []string{dir}})
	if p := ae.Problems[0]; len(ae.Problems) != 1 || p.Reason != RefusedInvalidVisibility || p.Check != `list "tools, scoped token" and 7 more` ||
		p.Message != "policy: invalid visibility: boolean is not a string" {
		t.Errorf("Load(visible := {true}) refused with %+v, want one invalid_visibility problem for all 8 lists", ae.Problems)
	}
	writeFile(t, filepath.Join(dir, "p.rego"), "package mcp.authz\n\ndecision := {\"allow\": true}\n\nvisible := {true} if "+faultyCaller+"\n")
	bad := newEngine(t, Source{Paths: []string{dir}}, Options{}).Current()
	_, err := bad.Visible(t.Context(), ListQuery{Input: good, Kind: ListTools, Items: []string{"a", "b"}})
	if err == nil || !strings.Contains(err.Error(), "boolean is not a string") {
		t.Errorf("Visible(set of booleans) = %v", err)
	}
	writeFile(t, filepath.Join(dir, "p.rego"), "package mcp.authz\n\ndecision := {\"allow\": true}\n\nvisible := true if "+faultyCaller+"\n")
	bad = newEngine(t, Source{Paths: []string{dir}}, Options{}).Current()
	if _, err := bad.Visible(t.Context(), ListQuery{Input: good, Kind: ListTools, Items: []string{"a"}}); err == nil || !strings.Contains(err.Error(), "visible is not a set") {
		t.Errorf("Visible(boolean) = %v", err)
	}
	// A visible rule the engine cannot read as a document (a function):
	// calls are decided, lists cannot be filtered at all.
	writeFile(t, filepath.Join(dir, "p.rego"), "package mcp.authz\n\ndecision := {\"allow\": true}\n\nvisible(x) := true\n")
	broken := newEngine(t, Source{Paths: []string{dir}}, Options{}).Current()
	if _, err := broken.Visible(t.Context(), ListQuery{Input: good, Kind: ListTools, Items: []string{"a"}}); err == nil || !strings.Contains(err.Error(), "list visibility cannot be decided") {
		t.Errorf("Visible with an unpreparable visibility = %v, want the preparation error", err)
	}
}

// BenchmarkVisible filters tools lists of 50 and 1000 tools with one
// evaluation each: the default policy's own visible rule against a token
// with a few specific tool scopes (the slow path: one lookup per item), and
// the derived rule of a policy without one (one decision per item).
func BenchmarkVisible(b *testing.B) {
	for _, n := range []int{50, 1000} {
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf("tool_%04d", i)
		}
		tok := testToken("tools:tool_0001", "tools:tool_0007", "tools:tool_0042")
		for name, src := range map[string]Source{"default": DefaultSource()} {
			e := newEngine(b, src, Options{})
			g := e.Current()
			q := ListQuery{Input: listInput(b, tok), ProtocolVersion: "2025-11-25", Kind: ListTools, Items: items}
			b.Run(fmt.Sprintf("%s/tools%d", name, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := g.Visible(b.Context(), q); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestInputJSONRoundTrip: the recorded input decides a list exactly like the
// call input it came from (claims with exact numbers, no credentials).
func TestInputJSONRoundTrip(t *testing.T) {
	t.Parallel()
	tok := testToken("tools:get_weather")
	tok.Claims = []byte(`{"sub":"alice","n":12345678901234567890,"roles":["a"]}`)
	req := &Request{Method: "POST", Path: "/mcp", Host: "h", Headers: map[string]string{"authorization": "Bearer x", "cookie": "c", "x-a": "1"}}
	b, err := InputJSON(req, tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"Bearer x", `"cookie"`} {
		if strings.Contains(string(b), secret) {
			t.Errorf("InputJSON carries %s: %s", secret, b)
		}
	}
	if !strings.Contains(string(b), `12345678901234567890`) {
		t.Errorf("InputJSON lost the exact claim number: %s", b)
	}
	g := newEngine(t, DefaultSource(), Options{}).Current()
	got, err := g.Visible(t.Context(), ListQuery{Input: b, Kind: ListTools, Items: []string{"get_weather", "delete_file"}})
	if err != nil || !got[0] || got[1] {
		t.Errorf("Visible(recorded input) = %v, %v; want [true false]", got, err)
	}
}
