package policy

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The decision cache reuses a Decision when every input the policy reads is
// equal. Which inputs a policy reads is found once per generation by walking
// the compiled modules for references to input; the key of a request is a
// 128-bit seeded hash of exactly those values (plus whether input.mcp is
// present). The cache belongs to its generation, so any policy or data
// change starts an empty one. An entry never outlives the token it was
// computed for, and the cache is bounded. Policies that call
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
				return false
			}
			name, ok := ref[2].Value.(ast.String)
			f, known := sub[string(name)]
			if !ok || !known {
				fail("reads input with a dynamic or unknown key: " + ref.String())
				return false
			}
			seen[f] = true
			return false
		})
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if e.IsCall() {
				if name := e.Operator().String(); isNondeterministic(name) {
					fail("calls " + name)
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
	}
	if !p.cacheable {
		return p
	}
	for f := field(0); f < numFields; f++ {
		if seen[f] {
			p.fields = append(p.fields, f)
		}
	}
	return p
}

func isNondeterministic(name string) bool {
	if nondeterministic[name] {
		return true
	}
	b, ok := ast.BuiltinMap[name]
	return ok && b.Nondeterministic
}

// decisionCache is a bounded map of decisions with expiry. When full, it
// drops a random eighth of its entries (Go map iteration order), which keeps
// hot entries likely and costs nothing per hit.
type decisionCache struct {
	seeds [2]maphash.Seed
	max   int

	mu sync.RWMutex
	m  map[[2]uint64]cacheEntry
}

type cacheEntry struct {
	d   Decision
	exp int64 // Unix seconds; the token's exp
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{
		seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		max:   max,
		m:     make(map[[2]uint64]cacheEntry, min(max, 1024)),
	}
}

func (c *decisionCache) get(k [2]uint64, now int64) (Decision, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || now >= e.exp {
		return Decision{}, false
	}
	return e.d, true
}

func (c *decisionCache) put(k [2]uint64, d Decision, exp int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		drop := max(c.max/8, 1)
		for key := range c.m {
			delete(c.m, key)
			if drop--; drop == 0 {
				break
			}
		}
	}
	c.m[k] = cacheEntry{d: d, exp: exp}
}

func (c *decisionCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// key hashes the planned fields of one evaluation's input.
func (c *decisionCache) key(fields []field, buf []byte, req *Request, tok *Token, m *MCP) ([2]uint64, []byte) {
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
	for _, f := range fields {
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
			case fTokIssuer:
				str(tok.Issuer)
			case fTokSubject:
				str(tok.Subject)
			case fTokClientID:
				str(tok.ClientID)
			case fTokAudience:
				strs(tok.Audience)
			case fTokScopes:
				strs(tok.Scopes)
			case fTokClaims:
				raw(tok.Claims)
			case fTokAzp:
				str(tok.Azp)
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
	return [2]uint64{maphash.Bytes(c.seeds[0], b), maphash.Bytes(c.seeds[1], b)}, b
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
