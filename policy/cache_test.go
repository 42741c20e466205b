package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
)

func TestCachePlan(t *testing.T) {
	tests := []struct {
		name      string
		rego      string
		cacheable bool
		fields    string
	}{
		{
			name:      "fields read",
			rego:      "decision := {\"allow\": true} if { input.mcp.tool == \"a\"; input.token.scopes[_] == \"x\" }",
			cacheable: true,
			fields:    "mcp.tool,token.scopes",
		},
		{
			name:      "prefix reads every field below it",
			rego:      `decision := {"allow": count(input.request) > 0}`,
			cacheable: true,
			fields:    "request.headers,request.host,request.method,request.path,request.query",
		},
		{
			name:      "dynamic header name is fine",
			rego:      "decision := {\"allow\": true} if { some k; input.request.headers[k] == \"x\" }",
			cacheable: true,
			fields:    "request.headers",
		},
		{name: "input as a whole", rego: `decision := {"allow": count(input) > 0}`},
		{name: "dynamic top-level key", rego: "decision := {\"allow\": true} if { some k; input[k].tool == \"a\" }"},
		{name: "unknown field", rego: `decision := {"allow": input.token.expiry > 0}`},
		{name: "time", rego: `decision := {"allow": time.now_ns() > 0}`},
		{name: "http.send", rego: `decision := {"allow": http.send({"method": "GET", "url": "http://127.0.0.1:1"}).status_code == 200}`},
		{name: "random", rego: `decision := {"allow": rand.intn("x", 2) == 1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := loadModule(t, tt.rego)
			g := e.gen.Load()
			if g.plan.cacheable != tt.cacheable || fieldNames(g.plan.fields) != tt.fields {
				t.Errorf("plan = cacheable %v fields %q (%s), want %v %q", g.plan.cacheable, fieldNames(g.plan.fields), g.plan.why, tt.cacheable, tt.fields)
			}
			if (g.cache != nil) != tt.cacheable {
				t.Errorf("cache present = %v, want %v", g.cache != nil, tt.cacheable)
			}
		})
	}
}

// TestDefaultPolicyIsCacheable pins the inputs the shipped policy reads: the
// request id and the HTTP request must not be among them, or every request
// would miss the cache.
func TestDefaultPolicyIsCacheable(t *testing.T) {
	e := New(Options{})
	if err := e.Load(context.Background(), diskDefault(t)); err != nil {
		t.Fatal(err)
	}
	g := e.gen.Load()
	want := "mcp.kind,mcp.method,mcp.prompt,mcp.resource_uri,mcp.resource_uris,mcp.tool,token.claims,token.scopes,token.subject"
	if !g.plan.cacheable || fieldNames(g.plan.fields) != want {
		t.Errorf("default policy plan = %v %q (%s), want cacheable %q", g.plan.cacheable, fieldNames(g.plan.fields), g.plan.why, want)
	}
	// Of the claims, only whether jti is revoked, and of the subject
	// whether it is revoked (and a string): tokens that differ in subject,
	// jti, iat or exp share their decisions.
	wantDesc := "mcp.kind,mcp.method,mcp.prompt,mcp.resource_uri,mcp.resource_uris,mcp.tool,token.claims.jti (in data.mcp.config.revoked.jti),token.scopes,token.subject (in data.mcp.config.revoked.subjects, is_string)"
	if got := g.plan.describe(); got != wantDesc {
		t.Errorf("default policy plan reads %q, want %q", got, wantDesc)
	}
}

// loadModule loads a policy of body and a default denial, so that the
// decision is defined for every input of the activation check.
func loadModule(t *testing.T, body string) *Engine {
	t.Helper()
	dir := t.TempDir()
	src := "package mcp.authz\n\ndefault decision := {\"allow\": false}\n\n" + body + "\n"
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	e := New(Options{})
	if err := e.Load(context.Background(), Source{Paths: []string{dir}}); err != nil {
		t.Fatalf("Load(%s): %v", body, err)
	}
	return e
}

func TestDecisionCache(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	e := New(Options{Now: func() time.Time { return now }, DecisionCacheSize: 64, EvalTimeout: 30 * time.Second})
	if err := e.Load(context.Background(), diskDefault(t)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok := func(scopes ...string) *Token {
		return &Token{Issuer: "i", Subject: "alice", Scopes: scopes, Claims: []byte(`{"jti":"j1"}`), Expiry: now.Unix() + 60}
	}
	call := func(tool string, id string) []MCP {
		return []MCP{{Kind: "request", Method: "tools/call", Tool: tool, ID: []byte(id)}}
	}
	decide := func(tk *Token, msgs []MCP) Decision {
		t.Helper()
		ds, err := e.Decide(ctx, &Request{Method: "POST", Path: "/mcp", Headers: map[string]string{"x-request-id": fmt.Sprint(time.Now().UnixNano())}}, tk, msgs)
		if err != nil {
			t.Fatal(err)
		}
		return ds[0]
	}
	cache := e.gen.Load().cache

	weather := tok("tools:get_weather")
	first := decide(weather, call("get_weather", "1"))
	if !first.Allow || cache.len() != 1 {
		t.Fatalf("first decision %+v, cache len %d; want allow and one entry", first, cache.len())
	}
	// Another request id and request header: the same entry serves it.
	if second := decide(weather, call("get_weather", "2")); cache.len() != 1 || !cmp.Equal(first, second) {
		t.Errorf("repeat: cache len %d, decision %+v; want the cached %+v", cache.len(), second, first)
	}
	// No cache poisoning across tools: a denial for tool A never answers
	// tool B, and scopes are part of the key.
	if d := decide(weather, call("delete_file", "3")); d.Allow {
		t.Errorf("delete_file with tools:get_weather allowed: %+v", d)
	}
	if d := decide(tok("tools:delete_file"), call("delete_file", "4")); !d.Allow {
		t.Errorf("delete_file with tools:delete_file denied: %+v", d)
	}
	if d := decide(tok("tools:delete_file"), call("get_weather", "5")); d.Allow {
		t.Errorf("get_weather with tools:delete_file allowed: %+v", d)
	}
	// Tokens without exp, or expired, are never cached.
	n := cache.len()
	decide(&Token{Subject: "bob", Scopes: []string{"tools:*"}}, call("x", "6"))
	expired := tok("tools:*")
	expired.Expiry = now.Unix()
	decide(expired, call("x", "7"))
	if cache.len() != n {
		t.Errorf("cache grew from %d to %d for tokens without a future exp", n, cache.len())
	}
	// An entry expires with its token.
	now = now.Add(2 * time.Minute)
	if _, ok := cache.get(mustKey(cache, e, weather, call("get_weather", "1")), now.Unix()); ok {
		t.Error("entry outlived its token")
	}
	// Bounded.
	later := tok("tools:*")
	later.Expiry = now.Unix() + 60
	for i := 0; i < 500; i++ {
		decide(later, call(fmt.Sprintf("t%d", i), "1"))
	}
	if got := cache.len(); got > 64 {
		t.Errorf("cache len %d, want at most 64", got)
	}
	// A reload starts a new, empty cache.
	dir := t.TempDir()
	for _, f := range []string{"mcp/authz.rego", "data.json"} {
		b, _ := os.ReadFile(filepath.Join("../rego", f))
		os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
		os.WriteFile(filepath.Join(dir, f), append(b, '\n'), 0o644)
	}
	if err := e.Load(ctx, Source{Paths: []string{dir}}); err != nil {
		t.Fatal(err)
	}
	if c := e.gen.Load().cache; c == cache || c.len() != 0 {
		t.Errorf("reload kept the old cache")
	}
}

func mustKey(c *decisionCache, e *Engine, tok *Token, msgs []MCP) [2]uint64 {
	k, _ := c.key(&e.gen.Load().plan, nil, &Request{}, tok, &msgs[0])
	return k
}

func TestDecisionCacheConcurrent(t *testing.T) {
	e := New(Options{DecisionCacheSize: 16, EvalTimeout: 30 * time.Second}) // -race on a busy machine
	if err := e.Load(context.Background(), diskDefault(t)); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				tool := fmt.Sprintf("t%d", i%40)
				tok := &Token{Subject: "a", Scopes: []string{"tools:" + tool}, Expiry: exp}
				ds, err := e.Decide(context.Background(), nil, tok, []MCP{{Kind: "request", Method: "tools/call", Tool: tool}})
				if err != nil || !ds[0].Allow {
					t.Errorf("Decide(%s) = %+v, %v", tool, ds, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestPolicyNeverSeesCredentials: whatever the caller passes, input.request
// carries no credential headers.
func TestPolicyNeverSeesCredentials(t *testing.T) {
	e := loadModule(t, `decision := {"allow": true, "reason": concat(",", sort(object.keys(input.request.headers)))}`)
	ds, err := e.Decide(context.Background(), &Request{Headers: map[string]string{
		"authorization": "Bearer t", "cookie": "s=1", "proxy-authorization": "Basic x", "x-a": "1",
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := ds[0].Reason; got != "x-a" {
		t.Errorf("headers policy saw: %q, want only x-a", got)
	}
}

// TestCacheKeysDelegation: a policy that decides on the delegation chain is
// cached per chain, azp and may_act: a decision for one chain is never
// served for another.
func TestCacheKeysDelegation(t *testing.T) {
	dir := writePolicy(t, map[string]string{"p.rego": `package mcp.authz

default decision := {"allow": false, "reason": "default"}

decision := {"allow": count(input.token.act) < 2, "reason": concat("/", [input.token.azp, json.marshal(input.token.may_act)])}
`})
	e := newEngine(t, Source{Paths: []string{dir}}, Options{DecisionCacheSize: 64})
	decide := func(tok *Token) Decision {
		t.Helper()
		tok.Expiry = time.Now().Add(time.Hour).Unix()
		ds, err := e.Decide(t.Context(), testRequest, tok, []MCP{call("x")})
		if err != nil {
			t.Fatal(err)
		}
		return ds[0]
	}
	one, two := testToken(), testToken()
	one.Actors = []Actor{{Subject: "a"}}
	two.Actors = []Actor{{Subject: "b"}, {Subject: "a"}}
	if d := decide(one); !d.Allow {
		t.Fatalf("one actor: %+v", d)
	}
	if d := decide(two); d.Allow {
		t.Fatalf("two actors answered from the cache of one: %+v", d)
	}
	three := testToken()
	three.Azp, three.MayAct = "w", []byte(`{"sub":"x"}`)
	if d := decide(three); d.Reason != `w/{"sub":"x"}` {
		t.Fatalf("azp/may_act: %+v", d)
	}
}

// TestCacheKeysClaims: the key holds what the policy reads of the claims.
// Under the default policy, tokens that differ only in jti, iat or exp
// share one entry (only whether jti is revoked matters), and a revoked jti
// is denied however many entries the others made; a policy that reads a
// claim's value keys on it; one that reads the claims as a whole keys on
// all of them.
func TestCacheKeysClaims(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tokenWith := func(claims string) *Token {
		tok := testToken("tools:get_weather")
		tok.Claims, tok.Expiry = jsontext.Value(claims), now.Unix()+600
		return tok
	}
	defaultDir := copyDefault(t)
	writeFile(t, filepath.Join(defaultDir, "data.json"), `{"mcp":{"config":{"open_methods":[],"revoked":{"jti":["stolen"],"subjects":["mallory"]},"scopes":{"tools":{},"prompts":{},"resources":{}}}}}`)
	tests := []struct {
		name string
		src  Source
		// claims of the tokens sent in order, each with the tool call;
		// want the reason of each decision and the cache size after all.
		claims   []string
		subjects []string // of the tokens; alice when nil
		reasons  []string
		entries  int
	}{
		{
			name: "default policy: jti, iat and exp do not split entries",
			src:  Source{Paths: []string{defaultDir}},
			claims: []string{
				`{"sub":"alice","jti":"a1","iat":1799999990,"exp":1800000600}`,
				`{"sub":"alice","jti":"a2","iat":1799999991,"exp":1800000601}`,
				`{"exp":1800000602,"sub":"alice","iat":1799999992,"jti":"a3"}`,
				`{"sub":"alice","iat":1799999993}`,
			},
			reasons: []string{"tool_scope", "tool_scope", "tool_scope", "tool_scope"},
			entries: 2, // with a jti that is not revoked, and without jti
		},
		{
			name: "default policy: a revoked jti is denied after cached allows",
			src:  Source{Paths: []string{defaultDir}},
			claims: []string{
				`{"sub":"alice","jti":"a1"}`,
				`{"sub":"alice","jti":"stolen"}`,
				`{"sub":"alice","jti":"st\u006flen"}`,
				`{"sub":"alice","jti":"a2"}`,
				`{"sub":"alice","jti":7}`,
			},
			reasons: []string{"tool_scope", "revoked", "revoked", "tool_scope", "tool_scope"},
			entries: 2,
		},
		{
			name: "default policy: subjects do not split entries, a revoked one is denied",
			src:  Source{Paths: []string{defaultDir}},
			claims: []string{
				`{"sub":"alice","jti":"a1"}`, `{"sub":"bob","jti":"a2"}`, `{"sub":"carol","jti":"a3"}`,
			},
			subjects: []string{"alice", "bob", "mallory"},
			reasons:  []string{"tool_scope", "tool_scope", "revoked"},
			entries:  2,
		},
		{
			name: "a claim read by value keys on its value",
			src: Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": `package mcp.authz

default decision := {"allow": false, "reason": "default"}

decision := {"allow": true, "reason": "tid"} if input.token.claims.tid == "t1"
`})}},
			claims:  []string{`{"tid":"t1","jti":"a"}`, `{"tid":"t1","jti":"b"}`, `{"tid":"t2","jti":"c"}`, `{"jti":"d"}`},
			reasons: []string{"tid", "tid", "default", "default"},
			entries: 3,
		},
		{
			name: "a claim read by value and in a membership keys on its value",
			src: Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": `package mcp.authz

default decision := {"allow": false, "reason": "default"}

decision := {"allow": true, "reason": "revoked"} if {
	input.token.claims.jti in data.revoked
} else := {"allow": true, "reason": input.token.claims.jti}
`, "data.json": `{"revoked":["x"]}`})}},
			claims:  []string{`{"jti":"a"}`, `{"jti":"b"}`, `{"jti":"x"}`},
			reasons: []string{"a", "b", "revoked"},
			entries: 3,
		},
		{
			name: "a membership in a rule keys on the value",
			src: Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": `package mcp.authz

default decision := {"allow": false, "reason": "default"}

revoked contains j if some j in ["x"]

decision := {"allow": false, "reason": "revoked"} if {
	input.token.claims.jti in revoked
} else := {"allow": true, "reason": "ok"}
`})}},
			claims:  []string{`{"jti":"a"}`, `{"jti":"b"}`, `{"jti":"x"}`},
			reasons: []string{"ok", "ok", "revoked"},
			entries: 3,
		},
		{
			name: "claims read as a whole key on every claim",
			src: Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": `package mcp.authz

default decision := {"allow": false, "reason": "default"}

decision := {"allow": true, "reason": "n"} if count(input.token.claims) > 0
`})}},
			claims:  []string{`{"jti":"a"}`, `{"jti":"b"}`, `{"jti":"b"}`},
			reasons: []string{"n", "n", "n"},
			entries: 2,
		},
		{
			name: "claims read with a computed key key on every claim",
			src: Source{Paths: []string{writePolicy(t, map[string]string{"p.rego": `package mcp.authz

default decision := {"allow": false, "reason": "default"}

decision := {"allow": true, "reason": "k"} if {
	some k
	input.token.claims[k] == "x"
}
`})}},
			claims:  []string{`{"jti":"x"}`, `{"jti":"x","iat":1}`},
			reasons: []string{"k", "k"},
			entries: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, tt.src, Options{Now: func() time.Time { return now }, DecisionCacheSize: 64})
			for i, c := range tt.claims {
				tok := tokenWith(c)
				if tt.subjects != nil {
					tok.Subject = tt.subjects[i]
				}
				ds, err := e.Decide(t.Context(), testRequest, tok, []MCP{call("get_weather")})
				if err != nil {
					t.Fatalf("Decide(%s): %v", c, err)
				}
				if ds[0].Reason != tt.reasons[i] {
					t.Errorf("Decide(%s) reason %q, want %q", c, ds[0].Reason, tt.reasons[i])
				}
			}
			if got := e.Current().cache.len(); got != tt.entries {
				t.Errorf("%d cache entries, want %d (plan %s)", got, tt.entries, e.Current().plan.describe())
			}
		})
	}
}

// TestCacheAgreesWithEvaluation: over many requests whose claims, scopes,
// subjects and tools vary (jtis revoked or not, spelled with escapes, of
// other types, absent), an engine with the decision and visibility caches
// answers exactly as one that evaluates every time.
func TestCacheAgreesWithEvaluation(t *testing.T) {
	dir := copyDefault(t)
	writeFile(t, filepath.Join(dir, "data.json"), `{"mcp":{"config":{"open_methods":["ping"],"revoked":{"jti":["r1","r2"],"subjects":["mallory"]},"scopes":{"tools":{"ops":["deploy","get_*"]},"prompts":{},"resources":{}}}}}`)
	src := Source{Paths: []string{dir}}
	now := time.Unix(1_800_000_000, 0)
	cached := newEngine(t, src, Options{Now: func() time.Time { return now }, DecisionCacheSize: 16})
	plain := newEngine(t, src, Options{Now: func() time.Time { return now }, DecisionCacheSize: -1})
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	tools := []string{"deploy", "get_weather", "get_time", "delete", "x"}
	for i := range 400 {
		jti := pick(`"r1"`, `"r2"`, `"r\u0031"`, `"a"`, `"b"`, `7`, `null`, `["r1"]`, ``)
		claims := `{"sub":"s"`
		if jti != "" {
			claims += `,"jti":` + jti
		}
		claims += fmt.Sprintf(`,"iat":%d}`, i)
		tok := &Token{Subject: pick("alice", "bob", "mallory"), Scopes: []string{pick("ops", "tools:deploy", "tools:*", "other")}, Claims: jsontext.Value(claims), Expiry: now.Unix() + 60}
		msg := []MCP{{Kind: "request", Method: pick("tools/call", "ping"), Tool: pick(tools...)}}
		a, aerr := cached.Decide(t.Context(), testRequest, tok, msg)
		b, berr := plain.Decide(t.Context(), testRequest, tok, msg)
		if (aerr != nil) != (berr != nil) || aerr == nil && !cmp.Equal(a, b) {
			t.Fatalf("request %d (claims %s, token %+v, %+v): cached %+v, %v; evaluated %+v, %v", i, claims, tok, msg[0], a, aerr, b, berr)
		}
		in, err := InputJSON(&Request{Method: "POST", Path: "/mcp", Headers: map[string]string{"x-request-id": fmt.Sprint(i)}}, tok)
		if err != nil {
			t.Fatal(err)
		}
		q := ListQuery{Input: in, Kind: ListTools, Items: tools[:1+rng.IntN(len(tools))]}
		va, aerr := cached.Current().Visible(t.Context(), q)
		vb, berr := plain.Current().Visible(t.Context(), q)
		if (aerr != nil) != (berr != nil) || !slices.Equal(va, vb) {
			t.Fatalf("list %d (claims %s, token %+v, items %v): cached %v, %v; evaluated %v, %v", i, claims, tok, q.Items, va, aerr, vb, berr)
		}
	}
	if st := cached.DecisionCacheStats(); st.Evictions == 0 {
		t.Errorf("decision cache %+v: the test should have filled it", st)
	}
}
