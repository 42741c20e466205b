package extproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// span is a JSON value in a text: text[start:end], kind 0 when absent.
type span struct {
	start, end int
	kind       jsontext.Kind
}

func (s span) present() bool { return s.kind != 0 }

// message is one JSON-RPC message object of a text (a body, or the data of
// one SSE event).
type message struct {
	start, end     int
	jsonrpc, id    span
	method, result span
	hasError       bool
	lists          [4]span // the exact list members of an object result, by kindIndex
}

var listKinds = [4]Kind{KindTools, KindPrompts, KindResources, KindResourceTemplates}

// messageMembers are the message members the processor or a client reads;
// resultMembers the result members. A case variant of one of them is
// rejected even without the exact name: a case-insensitive client would
// read it as that member.
var (
	messageMembers = []string{"jsonrpc", "id", "method", "params", "result", "error"}
	resultMembers  = []string{"tools", "prompts", "resources", "resourceTemplates", "nextCursor"}
)

// badText is a text that is not strict JSON-RPC.
type badText struct{ detail string }

// filter is the list-filtering state of one response (one ext_proc
// stream), shared by the JSON and the SSE path.
type filter struct {
	srv *Server
	lc  ListContext
	// fail, when set, is why the metadata cannot be used: every result
	// response is then answered with an error.
	fail Reason
	// ids maps the idKey of each list request to its index in lc.Requests,
	// or to -1 when two list requests of different methods share the id.
	ids      map[string]int
	answered []bool // by request index; duplicates of an id share the first index
	primary  []bool // false for a request whose id an earlier request has

	msgNames, resNames, itemNames nameSet
	msgs                          []message
	elems                         []element
	usable                        []int
	items                         []Item
	unq                           []byte
	out                           []byte
}

// element is one array element of a list: text[lead:end] is the element
// with the white space after the preceding '[' or ','.
type element struct {
	lead, start, end int
}

func (f *filter) init(srv *Server, lc ListContext, fail Reason) {
	f.srv, f.lc, f.fail = srv, lc, fail
	f.ids = make(map[string]int, len(lc.Requests))
	f.answered = make([]bool, len(lc.Requests))
	f.primary = make([]bool, len(lc.Requests))
	for i, r := range lc.Requests {
		key, _ := idKey(r.ID) // validated by ParseMetadata
		j, dup := f.ids[key]
		switch {
		case !dup:
			f.ids[key] = i
			f.primary[i] = true
		case j >= 0 && lc.Requests[j].Method != r.Method:
			f.ids[key] = -1
		}
	}
}

// rewrite returns the text with every list result filtered, or with the
// messages that cannot be filtered replaced by JSON-RPC errors. It returns
// changed false (and out nil) when the text stays as it is. In an SSE event
// (sse), data that does not look like JSON at all passes unchanged; in a
// JSON body it is an error.
func (f *filter) rewrite(ctx context.Context, text []byte, sse bool) (out []byte, changed bool) {
	i := skipSpace(text, 0)
	if i == len(text) || text[i] != '{' && text[i] != '[' {
		if sse {
			return nil, false
		}
		return f.failText(ctx, text, ReasonBadBody, "body is not a JSON object or array"), true
	}
	if b := f.scan(text); b != nil {
		return f.failText(ctx, text, ReasonBadBody, b.detail), true
	}
	out = f.out[:0]
	last := 0
	for mi := range f.msgs {
		m := &f.msgs[mi]
		if !m.result.present() {
			continue
		}
		rep, from, to := f.respond(ctx, text, m)
		if rep == nil {
			continue
		}
		out = append(out, text[last:from]...)
		out = append(out, rep...)
		last = to
		changed = true
	}
	if !changed {
		f.out = out
		return nil, false
	}
	out = append(out, text[last:]...)
	f.out = out
	return out, true
}

// respond decides one result response. It returns the replacement for
// text[from:to], or nil to keep the message.
func (f *filter) respond(ctx context.Context, text []byte, m *message) (rep []byte, from, to int) {
	id := text[m.id.start:m.id.end]
	if f.fail != "" {
		f.record(ctx, Outcome{Reason: f.fail}, "metadata unusable: list response refused")
		return appendError(nil, id), m.start, m.end
	}
	kind, method, reason := f.kindOf(text, m)
	switch {
	case reason != "":
		f.record(ctx, Outcome{Method: method, Reason: reason}, "list response refused")
		return appendError(nil, id), m.start, m.end
	case kind == "":
		return nil, 0, 0
	}
	start := time.Now()
	arr := m.lists[kindIndex(kind)]
	if !arr.present() || arr.kind != '[' {
		f.record(ctx, Outcome{Method: method, Reason: ReasonBadBody}, "list result lacks its array")
		return appendError(nil, id), m.start, m.end
	}
	newArr, o := f.filterList(ctx, text, arr, kind, id)
	o.Method = method
	o.Duration = time.Since(start)
	if o.Reason != "" {
		f.record(ctx, o, "list response refused")
		return appendError(nil, id), m.start, m.end
	}
	f.record(ctx, o, "")
	if newArr == nil {
		return nil, 0, 0
	}
	return newArr, arr.start, arr.end
}

// kindOf tells whether a result response is a list response and of which
// kind: by its id, or (for a response whose id matches no list request) by
// a list member in its result, so that a server that re-encodes ids in an
// unforeseen way cannot make a list pass unfiltered.
func (f *filter) kindOf(text []byte, m *message) (kind Kind, method string, reason Reason) {
	if key, ok := idKey(text[m.id.start:m.id.end]); ok {
		if idx, found := f.ids[key]; found {
			if idx < 0 {
				return "", "", ReasonBadMetadata
			}
			f.answered[idx] = true
			method = f.lc.Requests[idx].Method
			return KindOf(method), method, ""
		}
	}
	for i, l := range m.lists {
		if !l.present() {
			continue
		}
		if kind != "" {
			return "", "", ReasonBadBody
		}
		kind = listKinds[i]
	}
	return kind, kind.Method(), ""
}

func kindIndex(k Kind) int {
	for i, lk := range listKinds {
		if lk == k {
			return i
		}
	}
	return -1
}

// failText answers a text that cannot be read: one error for every list
// request not answered yet (an array when there are several or the text
// was an array), or a single error with a null id when there is none.
func (f *filter) failText(ctx context.Context, text []byte, reason Reason, detail string) []byte {
	var ids [][]byte
	for i, r := range f.lc.Requests {
		if f.primary[i] && !f.answered[i] {
			f.answered[i] = true
			ids = append(ids, r.ID)
			f.record(ctx, Outcome{Method: r.Method, Reason: reason}, "unreadable response: "+detail)
		}
	}
	if len(ids) == 0 {
		f.record(ctx, Outcome{Reason: reason}, "unreadable response: "+detail)
		return appendError(nil, nil)
	}
	batch := len(ids) > 1
	if i := skipSpace(text, 0); i < len(text) && text[i] == '[' {
		batch = true
	}
	var out []byte
	if batch {
		out = append(out, '[')
	}
	for i, id := range ids {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendError(out, id)
	}
	if batch {
		out = append(out, ']')
	}
	return out
}

// failPending is failText for a response that cannot be read at all
// (too large, encoded).
func (f *filter) failPending(ctx context.Context, reason Reason, detail string, batch bool) []byte {
	text := []byte(nil)
	if batch {
		text = []byte{'['}
	}
	return f.failText(ctx, text, reason, detail)
}

// appendError appends the JSON-RPC error response the client gets instead
// of a list it may not see unfiltered. The message is generic; the reason
// goes to the log and the metrics.
func appendError(dst, id []byte) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	if len(id) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, id...)
	}
	return append(dst, `,"error":{"code":-32603,"message":"Internal error"}}`...)
}

func (f *filter) record(ctx context.Context, o Outcome, msg string) {
	if o.Reason != "" {
		f.srv.log.WarnContext(ctx, "list filter failed closed", "reason", string(o.Reason), "mcp_method", o.Method, "detail", msg)
	}
	if f.srv.rec != nil {
		f.srv.rec.Record(ctx, o)
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scan reads the whole text as one JSON-RPC message or a batch of them into
// f.msgs, and checks it: strict JSON (jsontext: no duplicate names, valid
// UTF-8, nothing after the value), names equal under case folding in the
// objects the processor or a client interprets (message, result), and the
// JSON-RPC shape of every message.
func (f *filter) scan(text []byte) *badText {
	f.msgs = f.msgs[:0]
	var d jsontext.Decoder
	d.Reset(bytes.NewBuffer(text))
	if d.PeekKind() == '[' {
		if _, err := d.ReadToken(); err != nil {
			return syntaxError(err)
		}
		for d.PeekKind() != ']' {
			if d.PeekKind() != '{' {
				if _, err := d.ReadValue(); err != nil {
					return syntaxError(err)
				}
				return &badText{"batch element is not an object"}
			}
			if b := f.scanMessage(&d, text); b != nil {
				return b
			}
		}
		if _, err := d.ReadToken(); err != nil {
			return syntaxError(err)
		}
		if len(f.msgs) == 0 {
			return &badText{"empty batch"}
		}
	} else if b := f.scanMessage(&d, text); b != nil {
		return b
	}
	if _, err := d.ReadToken(); err != io.EOF {
		return &badText{"data after the JSON value"}
	}
	for i := range f.msgs {
		if b := checkShape(text, &f.msgs[i]); b != nil {
			return b
		}
	}
	return nil
}

// syntaxError describes a jsontext error by its offset only: the message of
// the error quotes body content.
func syntaxError(err error) *badText {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		return &badText{"invalid JSON at byte offset " + strconv.FormatInt(se.ByteOffset, 10)}
	}
	return &badText{"invalid JSON"}
}

func valueSpan(d *jsontext.Decoder) (span, *badText) {
	v, err := d.ReadValue()
	if err != nil {
		return span{}, syntaxError(err)
	}
	end := int(d.InputOffset())
	return span{start: end - len(v), end: end, kind: v.Kind()}, nil
}

// name reads a member name, unquoted (valid until the next call).
func (f *filter) name(d *jsontext.Decoder) ([]byte, *badText) {
	v, err := d.ReadValue()
	if err != nil {
		return nil, syntaxError(err)
	}
	raw := v[1 : len(v)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw, nil
	}
	f.unq, err = jsontext.AppendUnquote(f.unq[:0], v)
	if err != nil {
		return nil, syntaxError(err)
	}
	return f.unq, nil
}

func (f *filter) scanMessage(d *jsontext.Decoder, text []byte) *badText {
	if _, err := d.ReadToken(); err != nil {
		return syntaxError(err)
	}
	m := message{start: int(d.InputOffset()) - 1}
	f.msgNames.reset()
	for d.PeekKind() != '}' {
		name, b := f.name(d)
		if b != nil {
			return b
		}
		if f.msgNames.add(name) {
			return &badText{"message member names equal under case folding"}
		}
		switch string(name) {
		case "jsonrpc":
			m.jsonrpc, b = valueSpan(d)
		case "id":
			m.id, b = valueSpan(d)
		case "method":
			m.method, b = valueSpan(d)
		case "error":
			m.hasError = true
			_, b = valueSpan(d)
		case "result":
			if d.PeekKind() == '{' {
				b = f.scanResult(d, &m)
			} else {
				m.result, b = valueSpan(d)
			}
		default:
			if isCaseVariant(name, messageMembers) {
				return &badText{"message member is a case variant of a JSON-RPC member"}
			}
			_, b = valueSpan(d)
		}
		if b != nil {
			return b
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return syntaxError(err)
	}
	m.end = int(d.InputOffset())
	f.msgs = append(f.msgs, m)
	return nil
}

func (f *filter) scanResult(d *jsontext.Decoder, m *message) *badText {
	if _, err := d.ReadToken(); err != nil {
		return syntaxError(err)
	}
	start := int(d.InputOffset()) - 1
	f.resNames.reset()
	for d.PeekKind() != '}' {
		name, b := f.name(d)
		if b != nil {
			return b
		}
		if f.resNames.add(name) {
			return &badText{"result member names equal under case folding"}
		}
		k := -1
		for i, lk := range listKinds {
			if string(name) == lk.member() {
				k = i
			}
		}
		if k < 0 && string(name) != "nextCursor" && isCaseVariant(name, resultMembers) {
			return &badText{"result member is a case variant of a list member"}
		}
		s, b := valueSpan(d)
		if b != nil {
			return b
		}
		if k >= 0 {
			m.lists[k] = s
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return syntaxError(err)
	}
	m.result = span{start: start, end: int(d.InputOffset()), kind: '{'}
	return nil
}

// isCaseVariant reports whether name equals one of known under case folding
// without being exactly it.
func isCaseVariant(name []byte, known []string) bool {
	for _, k := range known {
		if string(name) != k && foldEqualString(name, k) {
			return true
		}
	}
	return false
}

// checkShape accepts a request (method and id), a notification (method, no
// id) or a response (id, exactly one of result and error, no method), with
// jsonrpc "2.0"; a result response needs a string or number id.
func checkShape(text []byte, m *message) *badText {
	if m.jsonrpc.kind != '"' || !stringEquals(text[m.jsonrpc.start:m.jsonrpc.end], "2.0") {
		return &badText{`"jsonrpc" is not "2.0"`}
	}
	if m.method.present() {
		if m.method.kind != '"' || m.result.present() || m.hasError {
			return &badText{"not a request or notification"}
		}
		return nil
	}
	if !m.id.present() || m.result.present() == m.hasError {
		return &badText{"not a response"}
	}
	if m.result.present() && m.id.kind != '"' && m.id.kind != '0' {
		return &badText{"result response without a string or number id"}
	}
	return nil
}

// stringEquals compares a JSON string with s after unquoting.
func stringEquals(raw []byte, s string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1:len(raw)-1]) == s
	}
	u, err := jsontext.AppendUnquote(nil, raw)
	return err == nil && string(u) == s
}

// filterList filters the array text[arr.start:arr.end] of one list. It
// returns the new array, or nil when every item is kept; o.Reason is set
// when the list cannot be filtered.
func (f *filter) filterList(ctx context.Context, text []byte, arr span, kind Kind, id []byte) (newArr []byte, o Outcome) {
	body := text[arr.start:arr.end]
	var d jsontext.Decoder
	d.Reset(bytes.NewBuffer(body))
	if _, err := d.ReadToken(); err != nil {
		return nil, Outcome{Reason: ReasonBadBody}
	}
	f.elems, f.usable, f.items = f.elems[:0], f.usable[:0], f.items[:0]
	lead := int(d.InputOffset())
	for d.PeekKind() != ']' {
		if d.PeekKind() != '{' {
			return nil, Outcome{Reason: ReasonBadBody}
		}
		if len(f.elems) > 0 {
			lead = afterComma(body, f.elems[len(f.elems)-1].end)
		}
		item, usable, ok := f.scanItem(&d, kind)
		if !ok {
			return nil, Outcome{Reason: ReasonBadBody}
		}
		end := int(d.InputOffset())
		f.elems = append(f.elems, element{lead: lead, start: lastOpen(body, lead), end: end})
		if usable {
			f.usable = append(f.usable, len(f.elems)-1)
			f.items = append(f.items, item)
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return nil, Outcome{Reason: ReasonBadBody}
	}
	closing := int(d.InputOffset()) - 1 // the ']'
	o.Items = len(f.elems)
	keep := make([]bool, len(f.elems))
	if len(f.items) > 0 {
		vis, reason := f.visible(ctx, List{Kind: kind, ID: jsontext.Value(id), Items: f.items})
		if reason != "" {
			return nil, Outcome{Items: o.Items, Reason: reason}
		}
		for i, k := range vis.Keep {
			keep[f.usable[i]] = k
		}
	}
	for _, k := range keep {
		if !k {
			o.Removed++
		}
	}
	if o.Removed == 0 {
		return nil, o
	}
	out := make([]byte, 0, len(body))
	out = append(out, '[')
	n := 0
	for i, e := range f.elems {
		if !keep[i] {
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, body[e.lead:e.end]...)
		n++
	}
	if n > 0 {
		out = append(out, body[f.elems[len(f.elems)-1].end:closing]...)
	}
	return append(out, ']'), o
}

// afterComma returns the offset after the ',' that follows end.
func afterComma(b []byte, end int) int {
	i := skipSpace(b, end)
	return i + 1 // b[i] is ',': the decoder has validated the array
}

// lastOpen returns the offset of the '{' that starts the element whose
// leading white space begins at lead.
func lastOpen(b []byte, lead int) int { return skipSpace(b, lead) }

// scanItem reads one list item object: names equal under case folding and
// case variants of the item's key member are rejected (ok false), as is a
// key member that is missing or not a string. usable is false for an item
// the call path would refuse anyway.
func (f *filter) scanItem(d *jsontext.Decoder, kind Kind) (item Item, usable, ok bool) {
	if _, err := d.ReadToken(); err != nil {
		return Item{}, false, false
	}
	f.itemNames.reset()
	key := "name"
	switch kind {
	case KindResources:
		key = "uri"
	case KindResourceTemplates:
		key = "uriTemplate"
	}
	var keyVal, nameVal jsontext.Value
	var hasKey bool
	for d.PeekKind() != '}' {
		name, b := f.name(d)
		if b != nil {
			return Item{}, false, false
		}
		if f.itemNames.add(name) {
			return Item{}, false, false
		}
		isKey, isName := string(name) == key, string(name) == "name"
		if !isKey && foldEqualString(name, key) || !isName && foldEqualString(name, "name") {
			return Item{}, false, false
		}
		v, err := d.ReadValue()
		if err != nil {
			return Item{}, false, false
		}
		switch {
		case isKey:
			if v.Kind() != '"' {
				return Item{}, false, false
			}
			keyVal, hasKey = v, true
		case isName && v.Kind() == '"':
			nameVal = v
		}
	}
	if _, err := d.ReadToken(); err != nil || !hasKey {
		return Item{}, false, false
	}
	s := unquoteString(keyVal)
	switch kind {
	case KindTools:
		return Item{Name: s}, usableToolName(s), true
	case KindPrompts:
		return Item{Name: s}, usablePromptName(s), true
	case KindResources:
		it := Item{URI: normalizeURI(s)}
		if nameVal != nil {
			it.Name = unquoteString(nameVal)
		}
		return it, usableURI(s), true
	default:
		it := Item{URITemplate: s, URIPrefix: normalizeURI(templatePrefix(s))}
		if nameVal != nil {
			it.Name = unquoteString(nameVal)
		}
		return it, usableURI(s), true
	}
}

// unquoteString decodes a JSON string validated by the decoder.
func unquoteString(v jsontext.Value) string {
	raw := v[1 : len(v)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	u, _ := jsontext.AppendUnquote(nil, v)
	return string(u)
}

// visible asks the policy, bounded by PolicyTimeout; a panic is a policy
// error.
func (f *filter) visible(ctx context.Context, list List) (vis Visibility, reason Reason) {
	ctx, cancel := context.WithTimeout(ctx, f.srv.policyTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			f.srv.log.ErrorContext(ctx, "panic in list policy", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			vis, reason = Visibility{}, ReasonPolicyError
		}
	}()
	vis, err := f.srv.policy.Visible(ctx, f.lc, list)
	switch {
	case err != nil && ctx.Err() != nil:
		f.srv.log.WarnContext(ctx, "list policy timed out", "mcp_method", list.Kind.Method(), slog.Int("items", len(list.Items)))
		return Visibility{}, ReasonTimeout
	case err != nil:
		f.srv.log.WarnContext(ctx, "list policy failed", "mcp_method", list.Kind.Method(), "error", err.Error())
		return Visibility{}, ReasonPolicyError
	case len(vis.Keep) != len(list.Items):
		f.srv.log.WarnContext(ctx, "list policy answered for the wrong number of items",
			"mcp_method", list.Kind.Method(), slog.Int("items", len(list.Items)), slog.Int("answers", len(vis.Keep)))
		return Visibility{}, ReasonPolicyError
	}
	return vis, ""
}
