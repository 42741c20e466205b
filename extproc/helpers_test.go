package extproc

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/go-json-experiment/json/jsontext"
	"google.golang.org/protobuf/types/known/structpb"
)

// testInput is the call policy input the ext_authz side forwards.
const testInput = `{"request":{"method":"POST","path":"/mcp","host":"mcp.example.com"},"token":{"iss":"https://idp.example.com","sub":"alice","client_id":"client-1","scopes":["tools:read"]}}`

// fakePolicy allows tools and prompts by name and resources and templates
// by URI prefix.
type fakePolicy struct {
	allow    map[string]bool
	prefixes []string
	err      error
	block    bool // wait for ctx to end (a policy that is too slow)
	panic    bool
	short    bool // answer for one item fewer

	mu    sync.Mutex
	lists []List
	lcs   []ListContext
}

func (p *fakePolicy) Visible(ctx context.Context, lc ListContext, list List) (Visibility, error) {
	p.mu.Lock()
	list.Items = append([]Item(nil), list.Items...) // the processor reuses the slice
	p.lists = append(p.lists, list)
	p.lcs = append(p.lcs, lc)
	p.mu.Unlock()
	switch {
	case p.block:
		<-ctx.Done()
		return Visibility{}, ctx.Err()
	case p.panic:
		panic("policy bug")
	case p.err != nil:
		return Visibility{}, p.err
	}
	keep := make([]bool, len(list.Items))
	for i, it := range list.Items {
		switch list.Kind {
		case KindTools, KindPrompts:
			keep[i] = p.allow[it.Name]
		case KindResources:
			keep[i] = hasAnyPrefix(it.URI, p.prefixes)
		case KindResourceTemplates:
			keep[i] = hasAnyPrefix(it.URIPrefix, p.prefixes)
		}
	}
	if p.short && len(keep) > 0 {
		keep = keep[1:]
	}
	return Visibility{Keep: keep}, nil
}

// fresh returns a policy with p's behaviour and no recorded calls.
func (p *fakePolicy) fresh() *fakePolicy {
	return &fakePolicy{allow: p.allow, prefixes: p.prefixes, err: p.err, block: p.block, panic: p.panic, short: p.short}
}

func (p *fakePolicy) calls() []List {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]List(nil), p.lists...)
}

func hasAnyPrefix(s string, ps []string) bool {
	for _, p := range ps {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

var errPolicy = errors.New("rego: eval_conflict_error")

func defaultPolicy() *fakePolicy {
	return &fakePolicy{
		allow:    map[string]bool{"get_weather": true, "search": true, "greeting": true},
		prefixes: []string{"file:///public/", "db://reports/"},
	}
}

// recorder collects outcomes.
type recorder struct {
	mu  sync.Mutex
	out []Outcome
}

func (r *recorder) Record(_ context.Context, o Outcome) {
	r.mu.Lock()
	o.Duration = 0 // not deterministic
	r.out = append(r.out, o)
	r.mu.Unlock()
}

func (r *recorder) outcomes() []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Outcome(nil), r.out...)
}

func newTestServer(t testing.TB, p Policy, rec *recorder, mod ...func(*Options)) *Server {
	t.Helper()
	opts := Options{Policy: p, Logger: slog.New(slog.DiscardHandler), PolicyTimeout: 5 * time.Second}
	if rec != nil {
		opts.Recorder = rec
	}
	for _, m := range mod {
		m(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// req builds one list request of the metadata.
func req(method, id string) ListRequest { return ListRequest{Method: method, ID: jsontext.Value(id)} }

// listMetadata is what Envoy forwards for an allowed list request: the
// ext_authz namespace with the usual keys plus the list keys.
func listMetadata(reqs ...ListRequest) *corev3.Metadata {
	st := EncodeListMetadata(ListContext{
		ProtocolVersion: "2025-06-18",
		PolicyRevision:  "rev-1",
		Requests:        reqs,
		Input:           jsontext.Value(testInput),
	})
	st.Fields["decision"] = structpb.NewStringValue("allow")
	st.Fields["reason"] = structpb.NewStringValue("policy_allow")
	st.Fields["mcp_method"] = structpb.NewStringValue(reqs[0].Method)
	st.Fields["subject"] = structpb.NewStringValue("alice")
	return namespace(st)
}

// authzOnlyMetadata is the ext_authz namespace of a request that is not a
// list request.
func authzOnlyMetadata() *corev3.Metadata {
	return namespace(&structpb.Struct{Fields: map[string]*structpb.Value{
		"decision":   structpb.NewStringValue("allow"),
		"reason":     structpb.NewStringValue("policy_allow"),
		"mcp_method": structpb.NewStringValue("tools/call"),
		"tool":       structpb.NewStringValue("get_weather"),
	}})
}

func namespace(st *structpb.Struct) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataNamespace: st}}
}

func jsonHeaders(extra ...[2]string) [][2]string {
	return append([][2]string{{":status", "200"}, {"content-type", "application/json"}}, extra...)
}

func sseHeaders(extra ...[2]string) [][2]string {
	return append([][2]string{{":status", "200"}, {"content-type", "text/event-stream"}, {"cache-control", "no-cache"}}, extra...)
}

// toolsBody is a tools/list response with the given tool names, compact.
func toolsBody(id string, names ...string) string {
	var b strings.Builder
	b.WriteString(`{"jsonrpc":"2.0","id":` + id + `,"result":{"tools":[`)
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(toolJSON(n))
	}
	b.WriteString(`]}}`)
	return b.String()
}

func toolJSON(name string) string {
	return `{"name":` + strconv.Quote(name) + `,"description":"Tool ` + name + `","inputSchema":{"type":"object","properties":{"q":{"type":"string"}}}}`
}

// manyTools returns a tools/list body of n tools of about 330 bytes each,
// of which every third is allowed by defaultPolicy-like policies that allow
// the names it returns.
func manyTools(n int) (body string, allowed map[string]bool) {
	allowed = map[string]bool{}
	var b strings.Builder
	b.WriteString(`{"jsonrpc":"2.0","id":7,"result":{"tools":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		name := "tool_" + strconv.Itoa(i)
		if i%3 == 0 {
			allowed[name] = true
		}
		b.WriteString(`{"name":"` + name + `","title":"Tool number ` + strconv.Itoa(i) + `",` +
			`"description":"Looks things up in system ` + strconv.Itoa(i) + ` and returns a summary of what it found.",` +
			`"inputSchema":{"type":"object","properties":{"query":{"type":"string","description":"what to look for"},` +
			`"limit":{"type":"integer","minimum":1,"maximum":100}},"required":["query"]},` +
			`"annotations":{"readOnlyHint":true,"openWorldHint":false}}`)
	}
	b.WriteString(`],"nextCursor":"page-2"}}`)
	return b.String(), allowed
}

// split cuts s at the given offsets (sorted, deduplicated, within s).
func split(s string, cuts ...int) []string {
	var out []string
	last := 0
	for _, c := range cuts {
		if c <= last || c >= len(s) {
			continue
		}
		out = append(out, s[last:c])
		last = c
	}
	return append(out, s[last:])
}

// bytewise splits s into one-byte chunks.
func bytewise(s string) []string {
	out := make([]string, len(s))
	for i := 0; i < len(s); i++ { // bytes, not runes
		out[i] = s[i : i+1]
	}
	return out
}

func errorBody(id string) string {
	return `{"jsonrpc":"2.0","id":` + id + `,"error":{"code":-32603,"message":"Internal error"}}`
}
