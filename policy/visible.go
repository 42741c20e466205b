package policy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
)

// The list-visibility entry points. A policy may define
// data.mcp.authz.visible itself (see rego/README.md); for one that does
// not, or whose rule is undefined for an input (the default policy with
// guards), the engine's own module derives visibility from
// data.mcp.authz.decision, so that every policy filters lists by the rules
// it calls with.
const (
	ownVisibleQuery = "data.mcp.authz.visible"
	derivedQuery    = "data.mcpauthz.internal.visibility.derived"
	visibleModule   = "mcpauthz/internal/visibility.rego"
	visibleSource   = `# Compiled by the mcpauthz policy engine with every policy.
package mcpauthz.internal.visibility

# derived is every item whose call decision allows it: one decision per
# item, for a policy without a visible rule of its own.
derived := {t |
	some t in input.list.items
	_allowed(t)
}

_allowed(t) if {
	d := data.mcp.authz.decision with input.mcp as object.union(_call, _target(t))
	d.allow == true
}

# _call is input.mcp of the call each item stands for.
_call := {
	"protocol_version": input.list.protocol_version,
	"session_id": "",
	"kind": "request",
	"id": null,
	"method": _methods[input.list.kind],
	"tool": "",
	"prompt": "",
	"arguments": null,
	"resource_uri": "",
	"resource_uris": [],
	"task_id": "",
}

_methods := {
	"tools": "tools/call",
	"prompts": "prompts/get",
	"resources": "resources/read",
	"resource_templates": "resources/read",
}

_target(t) := {"tool": t} if input.list.kind == "tools"

_target(t) := {"prompt": t} if input.list.kind == "prompts"

_target(t) := {"resource_uri": t} if input.list.kind in {"resources", "resource_templates"}
`
)

// The kinds of list items (input.list.kind).
const (
	ListTools             = "tools"
	ListPrompts           = "prompts"
	ListResources         = "resources"
	ListResourceTemplates = "resource_templates"
)

// ListQuery is one list to decide visibility for: input.request and
// input.token as the call policy saw them for the list request, and the
// items of the list result.
type ListQuery struct {
	// Input is the JSON object {"request": …, "token": …} of the list
	// request, exactly as the call decision saw them.
	Input []byte
	// ProtocolVersion and SessionID of the list request.
	ProtocolVersion string
	// Kind is ListTools, ListPrompts, ListResources or
	// ListResourceTemplates.
	Kind string
	// Items are the call targets of the list's items: tool or prompt names,
	// normalised resource URIs, or the normalised literal prefixes of
	// resource templates. Duplicates decide alike.
	Items []string
}

// ErrInvalidVisibility is wrapped by the error of Visible when the policy's
// answer is not a set (or array) of strings.
var ErrInvalidVisibility = errors.New("invalid visibility")

// Visible decides, in one evaluation, which items of a list the caller may
// see: for each item, whether the call it stands for (tools/call,
// prompts/get, resources/read) would be allowed. It evaluates
// data.mcp.authz.visible when the policy defines it, else the policy's
// decision for each item. The result is parallel to q.Items. Any error
// means the list must not be shown; one of an evaluation that ran out of
// time wraps ctx.Err(), as Decide's does.
func (g *Generation) Visible(ctx context.Context, q ListQuery) ([]bool, error) {
	return g.visibleWith(ctx, q)
}

// visibleWith is Visible with extra evaluation options (the activation
// check collects builtin errors).
func (g *Generation) visibleWith(ctx context.Context, q ListQuery, opts ...rego.EvalOption) ([]bool, error) {
	if g == nil {
		return nil, ErrNotReady
	}
	if g.visibleErr != nil {
		return nil, g.visibleErr
	}
	// With a policy whose reads are known (cacheable), the input is read
	// member by member: the cache key holds those members, and the
	// evaluation gets only them (a member the policy never reads cannot
	// change its answer, and converting every header and claim is most of
	// the cost of a small list).
	var li listFields
	known := g.plan.cacheable && li.read(q.Input)
	var key [2]uint64
	cache := g.visCache
	if len(opts) > 0 || !known {
		cache = nil // the activation check evaluates every time
	}
	if cache != nil {
		var buf []byte
		if bp := keyBufs.Get(); bp != nil {
			buf = (*bp.(*[]byte))[:0]
		}
		buf = li.appendKey(buf, &g.plan, q)
		key = cache.sum(buf)
		if cap(buf) <= 64<<10 {
			keyBufs.Put(&buf)
		}
		if bits, ok := cache.get(key, 0); ok {
			out := make([]bool, len(q.Items))
			for i := range out {
				out[i] = bits[i/8]&(1<<(i%8)) != 0
			}
			return out, nil
		}
	}
	var req, tok *ast.Term
	if known {
		var err error
		if req, tok, err = li.terms(&g.plan); err != nil {
			return nil, fmt.Errorf("policy: list input: %w", err)
		}
	} else {
		in, err := jsonValue(q.Input)
		if err != nil {
			return nil, fmt.Errorf("policy: list input: %w", err)
		}
		obj, ok := in.(ast.Object)
		if !ok {
			return nil, errors.New("policy: list input is not an object")
		}
		req, tok = obj.Get(keyRequest), obj.Get(keyToken)
	}
	if req == nil || tok == nil {
		return nil, errors.New("policy: list input lacks request or token")
	}
	items := g.itemSets.set(q.Items)
	method := map[string]string{ListTools: "tools/list", ListPrompts: "prompts/list", ListResources: "resources/list", ListResourceTemplates: "resources/templates/list"}[q.Kind]
	if method == "" {
		return nil, fmt.Errorf("policy: unknown list kind %q", q.Kind)
	}
	list := ast.NewObject(
		[2]*ast.Term{keyKind, ast.StringTerm(q.Kind)},
		[2]*ast.Term{keyProtocolVersion, stringTerm(q.ProtocolVersion)},
		[2]*ast.Term{keyItems, items},
	)
	// input.mcp is the list request itself, for policies that look at it.
	mcp, err := mcpValue(&MCP{ProtocolVersion: q.ProtocolVersion, Kind: "request", Method: method})
	if err != nil {
		return nil, err
	}
	input := ast.NewObject(
		[2]*ast.Term{keyRequest, req},
		[2]*ast.Term{keyToken, tok},
		[2]*ast.Term{keyMCP, ast.NewTerm(mcp)},
		[2]*ast.Term{keyList, ast.NewTerm(list)},
	)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("policy: evaluate visibility: %w", err)
	}
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	rs, err := safeEval(func() (rego.ResultSet, error) {
		return g.visible.eval(ctx, append([]rego.EvalOption{rego.EvalParsedInput(input)}, opts...))
	})
	if err = cutShort(ctx, err); err != nil {
		return nil, fmt.Errorf("policy: evaluate visibility: %w", err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, fmt.Errorf("policy: %w: visible is undefined", ErrInvalidVisibility)
	}
	var visible func(func(*ast.Term) bool) bool
	val, _ := rs[0].Expressions[0].Value.(ast.Value)
	switch v := val.(type) {
	case ast.Set:
		visible = func(f func(*ast.Term) bool) bool { return v.Until(f) }
	case *ast.Array:
		visible = func(f func(*ast.Term) bool) bool { return v.Until(f) }
	default:
		return nil, fmt.Errorf("policy: %w: visible is not a set, want a set of strings", ErrInvalidVisibility)
	}
	shown := make(map[string]bool, len(q.Items))
	var bad *ast.Term
	visible(func(t *ast.Term) bool {
		s, ok := t.Value.(ast.String)
		if !ok {
			bad = t
			return true
		}
		shown[string(s)] = true
		return false
	})
	if bad != nil {
		return nil, fmt.Errorf("policy: %w: %s is not a string", ErrInvalidVisibility, ast.ValueName(bad.Value))
	}
	out := make([]bool, len(q.Items))
	for i, it := range q.Items {
		out[i] = shown[it]
	}
	if cache != nil {
		bits := make([]byte, (len(out)+7)/8)
		for i, v := range out {
			if v {
				bits[i/8] |= 1 << (i % 8)
			}
		}
		cache.put(key, bits, 0, 24+len(bits))
	}
	return out, nil
}

// keyBufs recycles the buffers visibility keys are built in: a key holds
// every item of the list.
var keyBufs sync.Pool

// listFields is input.request and input.token of a list, read member by
// member from ListQuery.Input: vals[f] is the raw JSON of field f (slices
// of the input), present when seen[f].
type listFields struct {
	vals         [numFields]jsontext.Value
	seen         [numFields]bool
	request, tok bool // the members request and token are objects
}

// read reads in, a JSON object {"request": {...}, "token": {...}}, and
// reports whether it could (strictly: duplicate names, invalid UTF-8 and
// trailing data are refused); otherwise the input is converted as a whole.
func (li *listFields) read(in []byte) bool {
	d := getDecoder(in)
	defer putDecoder(d)
	dec := d.dec
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return false
	}
	for dec.PeekKind() != '}' {
		top, err := dec.ReadToken()
		if err != nil {
			return false
		}
		name := top.String()
		sub, known := inputFields[name]
		if !known || name == "mcp" || dec.PeekKind() != '{' {
			if dec.SkipValue() != nil {
				return false
			}
			continue
		}
		if name == "request" {
			li.request = true
		} else {
			li.tok = true
		}
		if _, err := dec.ReadToken(); err != nil {
			return false
		}
		for dec.PeekKind() != '}' {
			tok, err := dec.ReadToken()
			if err != nil {
				return false
			}
			f, known := sub[tok.String()]
			val, err := dec.ReadValue()
			if err != nil {
				return false
			}
			if known {
				// val is only valid until the next read: keep the bytes
				// of in it was read from.
				end := int(dec.InputOffset())
				li.vals[f], li.seen[f] = in[end-len(val):end], true
			}
		}
		if _, err := dec.ReadToken(); err != nil {
			return false
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return false
	}
	_, err := dec.ReadToken()
	return err == io.EOF
}

// appendKey appends what a visibility decision depends on: the fields of
// plan (input.request and input.token), the list's kind and protocol
// version (which make input.mcp and input.list with the items), and the
// items in order.
func (li *listFields) appendKey(b []byte, plan *cachePlan, q ListQuery) []byte {
	raw := func(v []byte) { b = binary.AppendUvarint(b, uint64(len(v))); b = append(b, v...) }
	if li.request {
		b = append(b, 1)
	}
	if li.tok {
		b = append(b, 2)
	}
	for _, f := range plan.fields {
		if f > fTokMayAct {
			continue // input.mcp: made from the kind and protocol version
		}
		b = append(b, byte(f))
		switch {
		case !li.seen[f]:
			b = append(b, 0)
		case f == fTokClaims && !plan.claimsWhole:
			b = append(b, 1)
			b = plan.appendClaims(b, li.vals[f])
		case plan.preds[f] != nil:
			b = append(b, 1)
			s, isString := claimString(li.vals[f])
			b = appendOutcomes(b, plan.preds[f], s, isString)
		default:
			b = append(b, 1)
			raw(li.vals[f])
		}
	}
	b = append(b, 0xfe)
	raw([]byte(q.Kind))
	raw([]byte(q.ProtocolVersion))
	b = binary.AppendUvarint(b, uint64(len(q.Items)))
	for _, it := range q.Items {
		raw([]byte(it))
	}
	return b
}

// terms returns input.request and input.token with only the fields of
// plan (of the claims, only those it reads by name, unless it reads them
// as a whole); nil for a member the input lacks.
func (li *listFields) terms(plan *cachePlan) (req, tok *ast.Term, err error) {
	var reqPairs, tokPairs [][2]*ast.Term
	for _, f := range plan.fields {
		if f > fTokMayAct || !li.seen[f] {
			continue
		}
		var v ast.Value
		if f == fTokClaims && !plan.claimsWhole {
			v, err = claimsValue(li.vals[f], plan.claims)
		} else {
			v, err = jsonValue(li.vals[f])
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", fieldNames([]field{f}), err)
		}
		pair := [2]*ast.Term{fieldKeys[f], ast.NewTerm(v)}
		if f <= fReqQuery {
			reqPairs = append(reqPairs, pair)
		} else {
			tokPairs = append(tokPairs, pair)
		}
	}
	if li.request {
		req = ast.NewTerm(ast.NewObject(reqPairs...))
	}
	if li.tok {
		tok = ast.NewTerm(ast.NewObject(tokPairs...))
	}
	return req, tok, nil
}

// claimsValue is the object of the claims of reads that claims holds.
func claimsValue(claims jsontext.Value, reads []claimRead) (ast.Value, error) {
	if jsontext.Value(claims).Kind() != '{' {
		return nil, errors.New("claims: not a JSON object")
	}
	found := make([]jsontext.Value, len(reads))
	if !claimValues(claims, reads, found) {
		return nil, errors.New("claims: invalid JSON")
	}
	pairs := make([][2]*ast.Term, 0, len(reads))
	for i, v := range found {
		if v == nil {
			continue
		}
		cv, err := jsonValue(v)
		if err != nil {
			return nil, fmt.Errorf("claims: %w", err)
		}
		pairs = append(pairs, [2]*ast.Term{ast.StringTerm(reads[i].name), ast.NewTerm(cv)})
	}
	return ast.NewObject(pairs...), nil
}

// fieldKeys are the member names of the fields of input.request and
// input.token.
var fieldKeys = func() [numFields]*ast.Term {
	var keys [numFields]*ast.Term
	for _, top := range []string{"request", "token"} {
		for name, f := range inputFields[top] {
			keys[f] = ast.StringTerm(name)
		}
	}
	return keys
}()

var (
	keyList  = ast.StringTerm("list")
	keyItems = ast.StringTerm("items")
)

// visibility is the prepared list-visibility queries of a generation.
type visibility struct {
	// own evaluates the policy's data.mcp.authz.visible; nil when the
	// policy defines none.
	own *rego.PreparedEvalQuery
	// derived evaluates the engine's derived visibility: for a policy
	// without a visible rule, and whenever its rule is undefined.
	derived rego.PreparedEvalQuery
}

// eval evaluates the policy's own visibility, or the derived one where
// that is undefined: the own rule is evaluated directly (not through a
// wrapper rule), which is a fixed cost of every first list.
func (v *visibility) eval(ctx context.Context, opts []rego.EvalOption) (rego.ResultSet, error) {
	if v.own != nil {
		rs, err := evalQuery(ctx, v.own, opts...)
		if err != nil || len(rs) > 0 {
			return rs, err
		}
	}
	return evalQuery(ctx, &v.derived, opts...)
}

// prepareVisible compiles the visibility module with the policy's modules
// (once, in a compiler of its own) and prepares both queries. The decision
// query's cache plan is made from the policy's own modules, so the
// module's with-overrides of input.mcp never turn the decision cache off.
// ownDefined reports whether data.mcp.authz.visible exists as rules or
// data.
func prepareVisible(ctx context.Context, modules map[string]*ast.Module, store storage.Store, ownDefined func(*ast.Compiler) bool, opts ...func(*rego.Rego)) (visibility, error) {
	mod, err := ast.ParseModuleWithOpts(visibleModule, visibleSource, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return visibility{}, fmt.Errorf("policy: visibility module: %w", err)
	}
	all := make(map[string]*ast.Module, len(modules)+1)
	maps.Copy(all, modules)
	all[visibleModule] = mod
	c, err := compile(ctx, store, all)
	if err != nil {
		return visibility{}, err
	}
	prepare := func(query string) (rego.PreparedEvalQuery, error) {
		return rego.New(append(opts, rego.Compiler(c), rego.Store(store), rego.ParsedQuery(ast.MustParseBody(query)))...).PrepareForEval(ctx)
	}
	var v visibility
	if v.derived, err = prepare(derivedQuery); err != nil {
		return visibility{}, err
	}
	if ownDefined(c) {
		own, err := prepare(ownVisibleQuery)
		if err != nil {
			return visibility{}, err
		}
		v.own = &own
	}
	return v, nil
}

// hasDocument reports whether the data documents hold a value at path.
func hasDocument(docs map[string]any, path ...string) bool {
	var v any = docs
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = m[p]; !ok {
			return false
		}
	}
	return true
}

// Bounds of itemSets: the sets of the last few distinct lists, each of at
// most maxSharedItems items, are kept.
const (
	sharedItemSets = 8
	maxSharedItems = 2048
)

// itemSets keeps input.list.items of the last few distinct lists as
// immutable Rego sets. The lists of one MCP server are the same for every
// caller, and building the set (a term and a hash per item) is a third of
// the fixed cost of evaluating a small list's visibility. OPA never
// modifies its input, so one set serves concurrent evaluations.
type itemSets struct {
	mu      sync.Mutex
	entries [sharedItemSets]itemSet
	next    int
}

type itemSet struct {
	items []string
	set   *ast.Term
}

// set returns the Rego set of items, shared when an equal list was seen
// recently.
func (s *itemSets) set(items []string) *ast.Term {
	s.mu.Lock()
	for i := range s.entries {
		if e := &s.entries[i]; e.set != nil && slices.Equal(e.items, items) {
			t := e.set
			s.mu.Unlock()
			return t
		}
	}
	s.mu.Unlock()
	set := ast.NewSet()
	for _, it := range items {
		set.Add(ast.StringTerm(it))
	}
	t := ast.NewTerm(set)
	if len(items) > maxSharedItems {
		return t
	}
	s.mu.Lock()
	s.entries[s.next] = itemSet{items: slices.Clone(items), set: t}
	s.next = (s.next + 1) % len(s.entries)
	s.mu.Unlock()
	return t
}

// InputJSON is the JSON object {"request": …, "token": …}: input.request
// and input.token exactly as Decide builds them for req and tok (credential
// headers dropped). It is what a list request's visibility is later decided
// with (ListQuery.Input). It holds token claims: never log it.
func InputJSON(req *Request, tok *Token) ([]byte, error) {
	tv, err := tokenValue(tok)
	if err != nil {
		return nil, fmt.Errorf("policy: input.token: %w", err)
	}
	in := ast.NewObject(
		[2]*ast.Term{keyRequest, ast.NewTerm(requestValue(req))},
		[2]*ast.Term{keyToken, ast.NewTerm(tv)},
	)
	v, err := ast.JSON(in)
	if err != nil {
		return nil, fmt.Errorf("policy: input: %w", err)
	}
	return json.Marshal(v)
}
