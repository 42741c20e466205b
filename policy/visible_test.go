package policy

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/ast"
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
	const rule = "visible := _visible if not data.mcp.guard.deny\n"
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

// BenchmarkVisible filters tools lists of 50 and 1000 tools with the
// default policy's own visible rule against a token with a few specific
// tool scopes (the slow path: one lookup per item): "default" is the same
// caller listing again (the visibility cache), "uncached" evaluates every
// time (the first list of a caller).
func BenchmarkVisible(b *testing.B) {
	for _, n := range []int{50, 1000} {
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf("tool_%04d", i)
		}
		tok := testToken("tools:tool_0001", "tools:tool_0007", "tools:tool_0042")
		for name, opts := range map[string]Options{"default": {}, "uncached": {DecisionCacheSize: -1}} {
			e := newEngine(b, DefaultSource(), opts)
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

// TestVisibilityCache: a list is answered from the cache only for the same
// inputs the policy reads, kind, protocol version and items; a request
// header the policy does not read (the request id) does not split entries,
// a jti only splits them by whether it is revoked, and a reload starts an
// empty cache.
func TestVisibilityCache(t *testing.T) {
	dir := copyDefault(t)
	writeFile(t, filepath.Join(dir, "data.json"), `{"mcp":{"config":{"open_methods":[],"revoked":{"jti":["stolen"],"subjects":[]},"scopes":{"tools":{"weather:read":["get_*"]},"prompts":{},"resources":{}}}}}`)
	e := newEngine(t, Source{Paths: []string{dir}}, Options{})
	input := func(requestID, jti string, scopes ...string) []byte {
		t.Helper()
		req := &Request{Method: "POST", Path: "/mcp", Host: "h", Headers: map[string]string{"x-request-id": requestID}}
		tok := testToken(scopes...)
		tok.Claims = jsontext.Value(fmt.Sprintf(`{"sub":"alice","jti":%q}`, jti))
		b, err := InputJSON(req, tok)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	items := []string{"get_weather", "get_time", "delete_file"}
	tests := []struct {
		name    string
		q       ListQuery
		want    []bool
		entries int
	}{
		{"first", ListQuery{Input: input("r1", "a", "weather:read"), Kind: ListTools, Items: items}, []bool{true, true, false}, 1},
		{"another request id and jti", ListQuery{Input: input("r2", "b", "weather:read"), Kind: ListTools, Items: items}, []bool{true, true, false}, 1},
		{"other scopes", ListQuery{Input: input("r3", "c", "tools:delete_file"), Kind: ListTools, Items: items}, []bool{false, false, true}, 2},
		{"revoked jti", ListQuery{Input: input("r4", "stolen", "weather:read"), Kind: ListTools, Items: items}, []bool{false, false, false}, 3},
		{"other items", ListQuery{Input: input("r5", "d", "weather:read"), Kind: ListTools, Items: items[1:]}, []bool{true, false}, 4},
		{"other kind", ListQuery{Input: input("r6", "e", "weather:read"), Kind: ListPrompts, Items: items}, []bool{false, false, false}, 5},
		{"other protocol version", ListQuery{Input: input("r7", "f", "weather:read"), ProtocolVersion: "2025-06-18", Kind: ListTools, Items: items}, []bool{true, true, false}, 6},
		{"first again", ListQuery{Input: input("r8", "g", "weather:read"), Kind: ListTools, Items: items}, []bool{true, true, false}, 6},
	}
	for _, tt := range tests {
		got, err := e.Current().Visible(t.Context(), tt.q)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: Visible = %v, want %v", tt.name, got, tt.want)
		}
		if st := e.VisibilityCacheStats(); st.Entries != tt.entries {
			t.Errorf("%s: %d entries, want %d", tt.name, st.Entries, tt.entries)
		}
	}
	if err := e.Load(t.Context(), Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": "package mcp.authz\n\ndefault decision := {\"allow\": false}\n"})}}); err != nil {
		t.Fatal(err)
	}
	got, err := e.Current().Visible(t.Context(), tests[0].q)
	if err != nil || slices.Contains(got, true) {
		t.Errorf("after a reload to a policy that allows nothing: %v, %v", got, err)
	}
	if st := e.VisibilityCacheStats(); st.Entries != 1 {
		t.Errorf("after the reload: %d entries, want 1", st.Entries)
	}
}

// TestBoundedCacheBounds: the cache stays within its entries and its bytes,
// and counts what it drops.
func TestBoundedCacheBounds(t *testing.T) {
	var ev atomic.Uint64
	c := newBoundedCache[[]byte](100, 100*(entryOverhead+100), &ev)
	for i := range 1000 {
		c.put([2]uint64{uint64(i)}, make([]byte, 10), 0, 10)
	}
	if c.len() > 100 || ev.Load() < 900 {
		t.Errorf("entries bound: %d entries, %d evictions; want at most 100 and at least 900", c.len(), ev.Load())
	}
	ev.Store(0)
	for i := range 1000 {
		c.put([2]uint64{uint64(i), 1}, nil, 0, 1000)
	}
	if c.size() > 100*(entryOverhead+100) || c.len() > 10 || ev.Load() < 990 {
		t.Errorf("bytes bound: %d bytes in %d entries, %d evictions", c.size(), c.len(), ev.Load())
	}
	c.put([2]uint64{7, 7}, nil, 0, 1<<20)
	if _, ok := c.get([2]uint64{7, 7}, 0); ok {
		t.Error("a value larger than the bound was stored")
	}
}

// TestVisibleReducedInput: the input a list is evaluated with holds only
// the fields the policy reads, and that decides every list exactly as the
// whole input does, for policies reading headers, claims by name, claims
// as a whole, and none of them.
func TestVisibleReducedInput(t *testing.T) {
	policies := map[string]string{
		"default": "",
		"headers": `visible := {t | some t in input.list.items; startswith(t, input.request.headers["x-team"])}`,
		"claim":   `visible := {t | some t in input.list.items; t in input.token.claims.tools}`,
		"claims":  `visible := {t | some t in input.list.items; count(input.token.claims) > 2}`,
		"token":   `visible := {t | some t in input.list.items; input.token.subject == "alice"; input.token.claims.tid == "t"}`,
	}
	for name, rule := range policies {
		t.Run(name, func(t *testing.T) {
			src := DefaultSource()
			if rule != "" {
				src = Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": "package mcp.authz\n\ndefault decision := {\"allow\": false}\n\n" + rule + "\n"})}}
			}
			g := newEngine(t, src, Options{DecisionCacheSize: -1}).Current()
			if !g.plan.cacheable {
				t.Fatalf("plan not cacheable: %s", g.plan.why)
			}
			whole := *g
			whole.plan.cacheable = false // converts the input as a whole
			items := []string{"a_x", "b_y", "get_weather", "delete"}
			shown := 0
			for i, c := range []struct {
				claims string
				scopes []string
				team   string
			}{
				{`{"sub":"alice","tools":["a_x","delete"],"tid":"t"}`, []string{"tools:get_weather"}, "a_"},
				{`{"sub":"bob","tools":[],"tid":"u","x":1}`, []string{"tools:*"}, "b_"},
				{`{"sub":"alice"}`, nil, ""},
				{`{"sub":"alice","tools":"a_x","tid":"t"}`, []string{"tools:delete"}, "zz"},
			} {
				tok := testToken(c.scopes...)
				tok.Claims = jsontext.Value(c.claims)
				in, err := InputJSON(&Request{Method: "POST", Path: "/mcp", Headers: map[string]string{"x-team": c.team, "x-request-id": fmt.Sprint(i)}}, tok)
				if err != nil {
					t.Fatal(err)
				}
				q := ListQuery{Input: in, ProtocolVersion: "2025-11-25", Kind: ListTools, Items: items}
				got, gerr := g.Visible(t.Context(), q)
				want, werr := whole.Visible(t.Context(), q)
				if (gerr != nil) != (werr != nil) || !slices.Equal(got, want) {
					t.Errorf("case %d: reduced input %v, %v; whole input %v, %v", i, got, gerr, want, werr)
				}
				for _, v := range got {
					if v {
						shown++
					}
				}
			}
			if shown == 0 {
				t.Error("no case shows an item: the comparison proves nothing")
			}
		})
	}
}

// TestVisibleSources: the policy's own visible rule is evaluated when it is
// defined (as rules or as a data document); where it is undefined for an
// input, and for a policy without one, the derived visibility decides each
// item by the call decision (here: only tool "b" is allowed).
func TestVisibleSources(t *testing.T) {
	t.Parallel()
	const decision = "package mcp.authz\n\ndefault decision := {\"allow\": false}\n\ndecision := {\"allow\": true} if input.mcp.tool == \"b\"\n"
	items := []string{"a", "b", "c"}
	tests := []struct {
		name    string
		files   map[string]string
		subject string
		want    []bool
	}{
		{"no visible rule", map[string]string{"p.rego": decision}, "alice", []bool{false, true, false}},
		{"own rule", map[string]string{"p.rego": decision + "\nvisible := {\"a\", \"c\"}\n"}, "alice", []bool{true, false, true}},
		{"own rule undefined for this caller", map[string]string{"p.rego": decision + "\nvisible := {\"a\"} if input.token.subject == \"bob\"\n"}, "alice", []bool{false, true, false}},
		{"own rule defined for this caller", map[string]string{"p.rego": decision + "\nvisible := {\"a\"} if input.token.subject == \"bob\"\n"}, "bob", []bool{true, false, false}},
		{"data document", map[string]string{"p.rego": decision, "data.json": `{"mcp":{"authz":{"visible":["c"]}}}`}, "alice", []bool{false, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newEngine(t, Source{Paths: []string{writePolicy(t, tt.files)}}, Options{DecisionCacheSize: -1}).Current()
			tok := testToken()
			tok.Subject = tt.subject
			got, err := g.Visible(t.Context(), ListQuery{Input: listInput(t, tok), Kind: ListTools, Items: items})
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("Visible = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestItemSets: equal lists share one Rego set, the last sharedItemSets
// distinct lists are kept, and a list longer than maxSharedItems is built
// every time.
func TestItemSets(t *testing.T) {
	t.Parallel()
	var s itemSets
	list := func(n int, tag string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s_%d", tag, i)
		}
		return out
	}
	first := s.set(list(3, "a"))
	if again := s.set(list(3, "a")); again != first {
		t.Error("an equal list got a new set")
	}
	if first.Value.(ast.Set).Len() != 3 || !first.Value.(ast.Set).Contains(ast.StringTerm("a_2")) {
		t.Errorf("set = %v", first)
	}
	if other := s.set(list(4, "a")); other == first {
		t.Error("a longer list got the shorter list's set")
	}
	for i := range sharedItemSets {
		s.set(list(2, fmt.Sprint("x", i)))
	}
	if again := s.set(list(3, "a")); again == first {
		t.Errorf("the set outlived %d newer lists", sharedItemSets)
	}
	long := list(maxSharedItems+1, "l")
	if a, b := s.set(long), s.set(long); a == b || a.Value.(ast.Set).Len() != len(long) {
		t.Error("a list over maxSharedItems was shared or is incomplete")
	}
}

// TestItemSetsConcurrent: lists decided concurrently (some equal, some not)
// get the right answers; run with -race.
func TestItemSetsConcurrent(t *testing.T) {
	t.Parallel()
	g := newEngine(t, exampleMappings, Options{DecisionCacheSize: -1}).Current()
	in := listInput(t, testToken("tools:get_weather"))
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				items := []string{"get_weather", fmt.Sprintf("t_%d", (w*50+i)%12)}
				got, err := g.Visible(t.Context(), ListQuery{Input: in, Kind: ListTools, Items: items})
				if err != nil || !got[0] || got[1] {
					t.Errorf("Visible(%v) = %v, %v", items, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
