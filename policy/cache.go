package policy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
)

// The decision cache reuses a Decision when every input the policy reads is
// equal. Which inputs a policy reads is found once per generation by walking
// the compiled modules for references to input; the key of a request is a
// 128-bit seeded hash of exactly those values (plus whether input.mcp is
// present). Claims are keyed by name (all of them only when the policy
// reads input.token.claims as a whole), and a claim or token string field
// that the policy only tests (in a data document, is_string) is keyed by
// the tests' outcomes, not its value (see pred): fresh tokens that differ
// in jti, iat, exp or an unrevoked subject share decisions. The cache
// belongs to its generation, so any policy or data change starts an empty
// one. An entry never outlives the token it was computed for, and the
// cache is bounded by entries and bytes. Policies that call
// non-deterministic built-ins (time, HTTP, randomness, ...) or read the
// input in a way the analysis cannot pin down (input as a whole, a dynamic
// key) are never cached.

// DefaultDecisionCacheSize bounds the decision cache when
// Options.DecisionCacheSize is 0.
const DefaultDecisionCacheSize = 10000

// field is one input value a policy may read.
type field uint8

const (
	fReqMethod field = iota
	fReqPath
	fReqHost
	fReqHeaders
	fReqQuery
	fTokIssuer
	fTokSubject
	fTokClientID
	fTokAudience
	fTokScopes
	fTokClaims
	fTokAzp
	fTokAct
	fTokMayAct
	fMCPProtocolVersion
	fMCPSessionID
	fMCPKind
	fMCPID
	fMCPMethod
	fMCPTool
	fMCPPrompt
	fMCPArguments
	fMCPResourceURI
	fMCPResourceURIs
	fMCPTaskID
	numFields
)

// inputFields maps the documented input paths to fields; a reference to a
// prefix reads every field below it.
var inputFields = map[string]map[string]field{
	"request": {"method": fReqMethod, "path": fReqPath, "host": fReqHost, "headers": fReqHeaders, "query": fReqQuery},
	"token": {"issuer": fTokIssuer, "subject": fTokSubject, "client_id": fTokClientID, "audience": fTokAudience,
		"scopes": fTokScopes, "claims": fTokClaims, "azp": fTokAzp, "act": fTokAct, "may_act": fTokMayAct},
	"mcp": {"protocol_version": fMCPProtocolVersion, "session_id": fMCPSessionID, "kind": fMCPKind, "id": fMCPID,
		"method": fMCPMethod, "tool": fMCPTool, "prompt": fMCPPrompt, "arguments": fMCPArguments,
		"resource_uri": fMCPResourceURI, "resource_uris": fMCPResourceURIs, "task_id": fMCPTaskID},
}

// nondeterministic lists built-ins whose result depends on more than their
// arguments, beyond those OPA itself marks Nondeterministic.
var nondeterministic = map[string]bool{
	"time.now_ns": true, "http.send": true, "opa.runtime": true, "io.jwt.decode_verify": true,
	"net.lookup_ip_addr": true, "rand.intn": true, "uuid.rfc4122": true, "trace": true,
}

// cachePlan is the result of analysing a compiled policy.
type cachePlan struct {
	fields []field // sorted, unique; nil with cacheable false
	// cacheable is false when the policy may depend on something besides
	// the fields (a non-deterministic built-in, input read as a whole).
	cacheable bool
	why       string // why not cacheable
	// claimsWhole is true when the policy reads input.token.claims as a
	// whole (or with a computed key): the key holds every claim. Otherwise,
	// with fTokClaims among the fields, the key holds only the claims of
	// claims, sorted by name.
	claimsWhole bool
	claims      []claimRead
	// memo remembers, by a hash of the claims, what appendClaims appends
	// for them: a token sent again (the hot path) costs a hash instead of
	// a JSON scan. Nil without claims read by name.
	memo *boundedCache[[]byte]
	// preds, for a string field of input.token (issuer, subject,
	// client_id, azp), are the only tests the policy applies to it (see
	// pred); nil: its value goes into the key.
	preds [numFields][]pred
}

// claimRead is one member of input.token.claims that the policy reads by
// name.
type claimRead struct {
	name string
	// preds are the only tests the policy applies to the claim (see
	// pred); nil: its value goes into the key.
	preds []pred
}

// pred is a test whose outcome is all a policy learns of a value, when
// every reference the policy makes to the value is the operand of such a
// test: the left operand of "in" with a base data document (a revocation
// list of jti or subjects), or the argument of is_string. The key then
// holds the outcomes rather than the value: tokens that differ only in a
// jti or a subject that is not revoked share one decision.
type pred struct {
	in      ast.Ref         // nil: is_string
	members map[string]bool // the strings of in, read by resolvePreds
}

// outcome is the test's answer for a value: s, a string when isString.
func (p *pred) outcome(s string, isString bool) bool {
	if p.in == nil {
		return isString
	}
	return isString && p.members[s]
}

// predFields are the fields whose reads can be tests (string fields).
var predFields = map[string]field{"issuer": fTokIssuer, "subject": fTokSubject, "client_id": fTokClientID, "azp": fTokAzp}

var tokenClaimsRef = ast.MustParseRef("input.token.claims")
var tokenRef = ast.MustParseRef("input.token")

// target names what a reference reads that tests may stand for: "c:" and
// a claim name for input.token.claims.<name>…, "f:" and a field name for
// input.token.<predField>…; exact is true when ref is exactly that long.
func target(ref ast.Ref) (key string, exact bool) {
	switch {
	case len(ref) >= 4 && ref.HasPrefix(tokenClaimsRef):
		if name, ok := ref[3].Value.(ast.String); ok {
			return "c:" + string(name), len(ref) == 4
		}
	case len(ref) >= 3 && ref.HasPrefix(tokenRef):
		if name, ok := ref[2].Value.(ast.String); ok {
			if _, ok := predFields[string(name)]; ok {
				return "f:" + string(name), len(ref) == 3
			}
		}
	}
	return "", false
}

// planCache walks every compiled module for references to input and calls
// to non-deterministic built-ins.
func planCache(modules map[string]*ast.Module) cachePlan {
	seen := [numFields]bool{}
	p := cachePlan{cacheable: true}
	fail := func(why string) {
		if p.cacheable {
			p.cacheable, p.why = false, why
		}
	}
	// Per target (see target): how often the policy refers to it, and
	// which of those references are operands of tests (see testReads).
	refs := map[string]int{}
	tests := map[string][]pred{}
	tokenWhole := false
	var withTargets []ast.Ref
	for _, m := range modules {
		ast.WalkRefs(m, func(ref ast.Ref) bool {
			if !ref.HasPrefix(ast.InputRootRef) {
				return false
			}
			if len(ref) < 2 {
				fail("reads input as a whole")
				return false
			}
			top, ok := ref[1].Value.(ast.String)
			if ok && top == "list" {
				// input.list exists only when list visibility is decided,
				// which is never cached: in a call decision it is absent.
				return false
			}
			sub, known := inputFields[string(top)]
			if !ok || !known {
				fail("reads input with a dynamic or unknown key: " + ref.String())
				return false
			}
			if len(ref) < 3 {
				for _, f := range sub {
					seen[f] = true
				}
				if top == "token" {
					p.claimsWhole, tokenWhole = true, true
				}
				return false
			}
			name, ok := ref[2].Value.(ast.String)
			f, known := sub[string(name)]
			if !ok || !known {
				fail("reads input with a dynamic or unknown key: " + ref.String())
				return false
			}
			seen[f] = true
			if t, _ := target(ref); t != "" {
				refs[t]++
			} else if f == fTokClaims {
				p.claimsWhole = true // as a whole, or with a computed key
			}
			return false
		})
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if e.IsCall() {
				if name := e.Operator().String(); isNondeterministic(name) {
					fail("calls " + name)
				}
			}
			for _, w := range e.With {
				if r, ok := w.Target.Value.(ast.Ref); ok {
					withTargets = append(withTargets, r)
				}
			}
			return false
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if c, ok := t.Value.(ast.Call); ok && len(c) > 0 {
				if name := c[0].String(); isNondeterministic(name) {
					fail("calls " + name)
				}
			}
			return false
		})
		testReads(m, tests)
	}
	if !p.cacheable {
		return p
	}
	for f := field(0); f < numFields; f++ {
		if seen[f] {
			p.fields = append(p.fields, f)
		}
	}
	// Tests stand for a value only when every reference is an operand of
	// one, and no with replaces a document the membership is decided
	// against or the value itself.
	onlyTests := func(t string) []pred {
		ps := tests[t]
		if len(ps) == 0 || len(ps) != refs[t] {
			return nil
		}
		for _, pr := range ps {
			if pr.in != nil && slices.ContainsFunc(withTargets, func(w ast.Ref) bool { return w.HasPrefix(pr.in) || pr.in.HasPrefix(w) }) {
				return nil
			}
		}
		// The same test twice answers alike.
		var out []pred
		for _, pr := range ps {
			if !slices.ContainsFunc(out, func(o pred) bool { return o.in.Equal(pr.in) }) {
				out = append(out, pr)
			}
		}
		return out
	}
	if slices.ContainsFunc(withTargets, func(w ast.Ref) bool { return w.HasPrefix(ast.InputRootRef) }) {
		onlyTests = func(string) []pred { return nil }
	}
	if !tokenWhole {
		for name, f := range predFields {
			if seen[f] {
				p.preds[f] = onlyTests("f:" + name)
			}
		}
	}
	if !seen[fTokClaims] || p.claimsWhole {
		return p
	}
	for t := range refs {
		if name, ok := strings.CutPrefix(t, "c:"); ok {
			p.claims = append(p.claims, claimRead{name: name, preds: onlyTests(t)})
		}
	}
	slices.SortFunc(p.claims, func(a, b claimRead) int { return strings.Compare(a.name, b.name) })
	return p
}

// testReads adds to tests, per target (see target), the tests of module m
// whose operand is exactly that target: "<ref> in data.<doc>" and
// is_string(<ref>). The compiler rewrites the operands of such an
// expression into local variables bound in the same body
// (__local0__ = input.token.claims.jti; __local1__ = data.x;
// internal.member_2(__local0__, __local1__)): an operand counts only when
// its variable occurs nowhere else in the module.
func testReads(m *ast.Module, tests map[string][]pred) {
	uses := map[ast.Var]int{}
	ast.WalkVars(m, func(v ast.Var) bool {
		uses[v]++
		return false
	})
	isString := ast.IsString.Ref()
	ast.WalkBodies(m, func(body ast.Body) bool {
		bound := map[ast.Var]ast.Ref{}
		for _, e := range body {
			if len(e.With) > 0 || !e.IsEquality() && !e.IsAssignment() {
				continue
			}
			ops := e.Operands()
			if len(ops) != 2 {
				continue
			}
			v, vok := ops[0].Value.(ast.Var)
			r, rok := ops[1].Value.(ast.Ref)
			if !vok || !rok {
				v, vok = ops[1].Value.(ast.Var)
				r, rok = ops[0].Value.(ast.Ref)
			}
			if vok && rok && uses[v] == 2 {
				bound[v] = r
			}
		}
		operand := func(t *ast.Term) (ast.Ref, bool) {
			switch x := t.Value.(type) {
			case ast.Ref:
				return x, true
			case ast.Var:
				r, ok := bound[x]
				return r, ok
			}
			return nil, false
		}
		for _, e := range body {
			var call []*ast.Term // operator and operands
			switch {
			case e.IsCall():
				call = e.Terms.([]*ast.Term)
			case e.IsEquality() || e.IsAssignment():
				for _, t := range e.Operands() {
					if c, ok := t.Value.(ast.Call); ok {
						call = c
					}
				}
			}
			if len(call) == 0 {
				continue
			}
			switch op := call[0].Value; {
			case len(call) == 3 && op.Compare(ast.Member.Ref()) == 0:
				l, lok := operand(call[1])
				r, rok := operand(call[2])
				if !lok || !rok || !r.HasPrefix(ast.DefaultRootRef) || !r.IsGround() {
					continue
				}
				if t, exact := target(l); exact {
					tests[t] = append(tests[t], pred{in: r})
				}
			case len(call) == 2 && op.Compare(isString) == 0:
				if l, ok := operand(call[1]); ok {
					if t, exact := target(l); exact {
						tests[t] = append(tests[t], pred{})
					}
				}
			}
		}
		return false
	})
}

// resolvePreds reads the data documents of the plan's tests, once per
// generation: each must be a base document (no rule defines anything at or
// below it) holding an array or a set of strings, or be undefined (no
// member); otherwise the value itself goes into the key.
func (p *cachePlan) resolvePreds(ctx context.Context, c *ast.Compiler, store storage.Store) error {
	resolve := func(ps []pred) ([]pred, error) {
		for i := range ps {
			if ps[i].in == nil {
				continue
			}
			set, ok, err := stringSetAt(ctx, c, store, ps[i].in)
			if err != nil || !ok {
				return nil, err
			}
			ps[i].members = set
		}
		return ps, nil
	}
	var err error
	for i := range p.claims {
		if p.claims[i].preds, err = resolve(p.claims[i].preds); err != nil {
			return err
		}
	}
	for f := range p.preds {
		if p.preds[f], err = resolve(p.preds[f]); err != nil {
			return err
		}
	}
	return nil
}

// stringSetAt returns the strings of the base document at ref when it is
// an array or set of strings (or undefined: no strings); ok is false when
// a rule defines part of it or it holds anything else.
func stringSetAt(ctx context.Context, c *ast.Compiler, store storage.Store, ref ast.Ref) (map[string]bool, bool, error) {
	if len(c.GetRules(ref)) > 0 {
		return nil, false, nil
	}
	path, err := storage.NewPathForRef(ref)
	if err != nil {
		return nil, false, nil
	}
	doc, err := storage.ReadOne(ctx, store, path)
	if storage.IsNotFound(err) {
		return map[string]bool{}, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("policy: read %s: %w", ref, err)
	}
	v, ok := doc.(ast.Value)
	if !ok {
		if v, err = ast.InterfaceToValue(doc); err != nil {
			return nil, false, nil
		}
	}
	var coll func(func(*ast.Term) bool) bool
	switch x := v.(type) {
	case *ast.Array:
		coll = x.Until
	case ast.Set:
		coll = x.Until
	default:
		return nil, false, nil
	}
	set := map[string]bool{}
	other := coll(func(t *ast.Term) bool {
		s, ok := t.Value.(ast.String)
		set[string(s)] = true
		return !ok
	})
	if other {
		return nil, false, nil
	}
	return set, true, nil
}

func isNondeterministic(name string) bool {
	if nondeterministic[name] {
		return true
	}
	b, ok := ast.BuiltinMap[name]
	return ok && b.Nondeterministic
}

// DefaultDecisionCacheBytes bounds the memory of the decision cache (and,
// separately, of the list-visibility cache) when Options.DecisionCacheBytes
// is 0. An entry of a decision without headers takes about 250 bytes (see
// decisionSize), so the entry bound is reached first with the defaults.
const DefaultDecisionCacheBytes = 4 << 20

// boundedCache is a map with expiry bounded by entries and by the bytes
// its entries hold (as estimated by the caller). When an insertion would
// cross a bound, it drops a random eighth of its entries (Go map iteration
// order), and more while the bytes would still exceed, which keeps hot
// entries likely and costs nothing per hit. Dropped entries are counted in
// evictions, which outlives the cache (one per generation).
type boundedCache[V any] struct {
	seeds      [2]maphash.Seed
	maxEntries int
	maxBytes   int
	evictions  *atomic.Uint64

	mu    sync.RWMutex
	m     map[[2]uint64]cacheEntry[V]
	bytes int
}

type cacheEntry[V any] struct {
	v    V
	exp  int64 // Unix seconds; the token's exp, or 0: never expires
	size int
}

// decisionCache holds the decisions of one generation.
type decisionCache = boundedCache[Decision]

func newBoundedCache[V any](maxEntries, maxBytes int, evictions *atomic.Uint64) *boundedCache[V] {
	if evictions == nil {
		evictions = new(atomic.Uint64)
	}
	return &boundedCache[V]{
		seeds:      [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		maxEntries: maxEntries,
		maxBytes:   maxBytes,
		evictions:  evictions,
		m:          make(map[[2]uint64]cacheEntry[V], min(maxEntries, 1024)),
	}
}

func (c *boundedCache[V]) get(k [2]uint64, now int64) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || e.exp != 0 && now >= e.exp {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put stores v, which holds about size bytes, until exp (0: no expiry). A
// value larger than the whole byte bound is not stored.
func (c *boundedCache[V]) put(k [2]uint64, v V, exp int64, size int) {
	size += entryOverhead
	if size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[k]; ok {
		c.bytes -= old.size
		delete(c.m, k)
	}
	if len(c.m) >= c.maxEntries || c.bytes+size > c.maxBytes {
		drop := max(c.maxEntries/8, 1)
		dropped := 0
		for key, e := range c.m {
			if dropped >= drop && c.bytes+size <= c.maxBytes {
				break
			}
			delete(c.m, key)
			c.bytes -= e.size
			dropped++
		}
		c.evictions.Add(uint64(dropped))
	}
	c.m[k] = cacheEntry[V]{v: v, exp: exp, size: size}
	c.bytes += size
}

func (c *boundedCache[V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// size returns the bytes the entries hold, as estimated at insertion.
func (c *boundedCache[V]) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}

// entryOverhead is what one entry costs besides its value's own
// allocations: its share of the map's table (key, value header, expiry,
// size, control bytes, and the table's load factor).
const entryOverhead = 64

// decisionSize estimates the bytes a cached decision holds: the Decision
// itself in the map slot and the allocations it references.
func decisionSize(d *Decision) int {
	n := int(unsafe.Sizeof(*d)) + len(d.Reason) + len(d.UpstreamCredential)
	for _, s := range d.RequiredScopes {
		n += 16 + len(s)
	}
	for _, s := range d.UpstreamScopes {
		n += 16 + len(s)
	}
	if d.Headers != nil {
		n += 48 // the map header
		for k, v := range d.Headers {
			n += 48 + len(k) + len(v)
		}
	}
	return n
}

// key hashes the planned fields of one evaluation's input.
func (c *boundedCache[V]) key(plan *cachePlan, buf []byte, req *Request, tok *Token, m *MCP) ([2]uint64, []byte) {
	b := buf[:0]
	if m != nil {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	str := func(s string) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	raw := func(s []byte) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	strs := func(ss []string) {
		b = binary.AppendUvarint(b, uint64(len(ss)))
		for _, s := range ss {
			str(s)
		}
	}
	for _, f := range plan.fields {
		b = append(b, byte(f))
		switch {
		case f <= fReqQuery:
			if req == nil {
				b = append(b, 0)
				continue
			}
			switch f {
			case fReqMethod:
				str(req.Method)
			case fReqPath:
				str(req.Path)
			case fReqHost:
				str(req.Host)
			case fReqHeaders:
				keys := make([]string, 0, len(req.Headers))
				for k := range req.Headers {
					if !credentialHeader(k) {
						keys = append(keys, k)
					}
				}
				slices.Sort(keys)
				for _, k := range keys {
					str(k)
					str(req.Headers[k])
				}
			case fReqQuery:
				keys := make([]string, 0, len(req.Query))
				for k := range req.Query {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				for _, k := range keys {
					str(k)
					strs(req.Query[k])
				}
			}
		case f <= fTokMayAct:
			if tok == nil {
				b = append(b, 0)
				continue
			}
			switch f {
			case fTokIssuer, fTokSubject, fTokClientID, fTokAzp:
				v := tok.Azp
				switch f {
				case fTokIssuer:
					v = tok.Issuer
				case fTokSubject:
					v = tok.Subject
				case fTokClientID:
					v = tok.ClientID
				}
				if ps := plan.preds[f]; ps != nil {
					b = appendOutcomes(b, ps, v, true)
				} else {
					str(v)
				}
			case fTokAudience:
				strs(tok.Audience)
			case fTokScopes:
				strs(tok.Scopes)
			case fTokClaims:
				if plan.claimsWhole {
					raw(tok.Claims)
				} else {
					b = plan.appendClaims(b, tok.Claims)
				}
			case fTokAct:
				b = binary.AppendUvarint(b, uint64(len(tok.Actors)))
				for _, a := range tok.Actors {
					str(a.Subject)
					str(a.Issuer)
					str(a.ClientID)
				}
			case fTokMayAct:
				raw(tok.MayAct)
			}
		default:
			if m == nil {
				b = append(b, 0)
				continue
			}
			switch f {
			case fMCPProtocolVersion:
				str(m.ProtocolVersion)
			case fMCPSessionID:
				str(m.SessionID)
			case fMCPKind:
				str(m.Kind)
			case fMCPID:
				raw(m.ID)
			case fMCPMethod:
				str(m.Method)
			case fMCPTool:
				str(m.Tool)
			case fMCPPrompt:
				str(m.Prompt)
			case fMCPArguments:
				raw(m.Arguments)
			case fMCPResourceURI:
				str(m.ResourceURI)
			case fMCPResourceURIs:
				strs(m.ResourceURIs)
			case fMCPTaskID:
				str(m.TaskID)
			}
		}
	}
	return c.sum(b), b
}

// sum is the 128-bit key of b.
func (c *boundedCache[V]) sum(b []byte) [2]uint64 {
	return [2]uint64{maphash.Bytes(c.seeds[0], b), maphash.Bytes(c.seeds[1], b)}
}

// describe renders the plan for logs: the fields, the claims read by
// name, and the tests that stand for values.
func (p *cachePlan) describe() string {
	tests := func(ps []pred) string {
		var out []string
		for _, pr := range ps {
			if pr.in == nil {
				out = append(out, "is_string")
			} else {
				out = append(out, "in "+pr.in.String())
			}
		}
		return " (" + strings.Join(out, ", ") + ")"
	}
	names := make([]string, 0, len(p.fields))
	for _, f := range p.fields {
		n := fieldNames([]field{f})
		switch {
		case f == fTokClaims && !p.claimsWhole:
			var cs []string
			for _, c := range p.claims {
				c1 := "token.claims." + c.name
				if c.preds != nil {
					c1 += tests(c.preds)
				}
				cs = append(cs, c1)
			}
			n = strings.Join(cs, ",")
		case p.preds[f] != nil:
			n += tests(p.preds[f])
		}
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// fieldNames renders a plan for logs.
func fieldNames(fs []field) string {
	names := make([]string, 0, len(fs))
	for top, sub := range inputFields {
		for name, f := range sub {
			if slices.Contains(fs, f) {
				names = append(names, top+"."+name)
			}
		}
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// claimsMemoSize bounds the memo of cachePlan (entries of a few bytes).
const claimsMemoSize = 4096

// appendClaims is appendClaims of the plan's claims, through its memo.
func (p *cachePlan) appendClaims(b []byte, claims jsontext.Value) []byte {
	if p.memo == nil {
		return appendClaims(b, p.claims, claims)
	}
	h := p.memo.sum(claims)
	if part, ok := p.memo.get(h, 0); ok {
		return append(b, part...)
	}
	start := len(b)
	b = appendClaims(b, p.claims, claims)
	part := slices.Clone(b[start:])
	p.memo.put(h, part, 0, 24+len(part))
	return b
}

// appendClaims appends to the key what the policy reads of the claims: for
// each claim of reads, absent, or its raw JSON value, or whether that value
// is a member of each of its documents. Claims that cannot be read member by
// member (never for a verified token: it is a JSON object without
// duplicate names) go in whole.
func appendClaims(b []byte, reads []claimRead, claims jsontext.Value) []byte {
	var vals [8]jsontext.Value
	found := vals[:0]
	if len(reads) <= len(vals) {
		found = vals[:len(reads)]
	} else {
		found = make([]jsontext.Value, len(reads))
	}
	if !claimValues(claims, reads, found) {
		b = append(b, 0xff)
		b = binary.AppendUvarint(b, uint64(len(claims)))
		return append(b, claims...)
	}
	for i, r := range reads {
		v := found[i]
		switch {
		case v == nil:
			b = append(b, 0)
		case r.preds != nil:
			s, isString := claimString(v)
			b = appendOutcomes(b, r.preds, s, isString)
		default:
			b = append(b, 1)
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

// appendOutcomes appends the outcomes of the tests ps for a value (s, a
// string when isString).
func appendOutcomes(b []byte, ps []pred, s string, isString bool) []byte {
	b = append(b, 2)
	for i := range ps {
		if ps[i].outcome(s, isString) {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	return b
}

// claimValues finds the raw values of the claims of reads in the JSON
// object claims (out is parallel to reads; nil for an absent claim). It
// reports false when claims is not a JSON object it can read.
func claimValues(claims jsontext.Value, reads []claimRead, out []jsontext.Value) bool {
	if len(claims) == 0 {
		return true
	}
	d := getDecoder(claims)
	defer putDecoder(d)
	dec := d.dec
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return false
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadValue()
		if err != nil || name.Kind() != '"' {
			return false
		}
		i := claimIndex(reads, name)
		val, err := dec.ReadValue()
		if err != nil {
			return false
		}
		if i >= 0 {
			// val is only valid until the next read: keep the bytes of
			// claims it was read from.
			end := int(dec.InputOffset())
			out[i] = claims[end-len(val) : end]
		}
	}
	return true
}

// claimIndex returns the index in reads of the claim whose quoted JSON name
// is name, or -1. Escaped names are unquoted first.
func claimIndex(reads []claimRead, name jsontext.Value) int {
	raw := name[1 : len(name)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		u, err := jsontext.AppendUnquote(nil, name)
		if err != nil {
			return -1
		}
		raw = u
	}
	for i := range reads {
		if reads[i].name == string(raw) {
			return i
		}
	}
	return -1
}

// claimString returns the string a raw JSON value holds. A string
// without escapes costs no copy (its bytes are only looked up).
func claimString(v jsontext.Value) (string, bool) {
	if v.Kind() != '"' || len(v) < 2 {
		return "", false
	}
	if raw := v[1 : len(v)-1]; bytes.IndexByte(raw, '\\') < 0 {
		return unsafe.String(unsafe.SliceData(raw), len(raw)), true
	}
	u, err := jsontext.AppendUnquote(nil, v)
	if err != nil {
		return "", false
	}
	return string(u), true
}

// pooledDecoder is a JSON decoder with the buffer it reads, recycled by
// getDecoder and putDecoder: the key of every cached decision reads the
// claims, and a new decoder costs more than the rest of the key.
type pooledDecoder struct {
	dec *jsontext.Decoder
	buf bytes.Buffer
}

var decoders = sync.Pool{New: func() any {
	d := &pooledDecoder{}
	d.dec = jsontext.NewDecoder(&d.buf)
	return d
}}

// getDecoder returns a decoder of b (strict: duplicate names and invalid
// UTF-8 are errors, as they are to the conversion of the input).
func getDecoder(b []byte) *pooledDecoder {
	d := decoders.Get().(*pooledDecoder)
	d.buf = *bytes.NewBuffer(b)
	d.dec.Reset(&d.buf)
	return d
}

// putDecoder recycles d, keeping no reference to what it read.
func putDecoder(d *pooledDecoder) {
	d.buf = bytes.Buffer{}
	d.dec.Reset(&d.buf)
	decoders.Put(d)
}
