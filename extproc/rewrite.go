package extproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"slices"
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
	lists          [4]list // the exact list members of an object result, by kindIndex
}

// list is one list member of a result, read during the scan: its value,
// its elements (f.elems[elems[0]:elems[1]]) and the items the policy is
// asked about (f.items[items[0]:items[1]], at element f.usable[...]).
type list struct {
	val          span
	elems, items [2]int
	closing      int  // offset of the array's ']'
	bad          bool // an element that is not an item of the kind
	read         time.Duration
}

var listKinds = [4]Kind{KindTools, KindPrompts, KindResources, KindResourceTemplates}

// messageMembers are the message members the processor or a client reads;
// resultMembers the result members. A case variant of one of them is
// rejected even without the exact name: a case-insensitive client would
// read it as that member.
var (
	messageMembers = memberNames("jsonrpc", "id", "method", "params", "result", "error")
	resultMembers  = memberNames("tools", "prompts", "resources", "resourceTemplates", "nextCursor")
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

	dec                           jsontext.Decoder
	buf                           bytes.Buffer
	msgNames, resNames, itemNames nameSet
	msgs                          []message
	elems                         []element
	usable                        []int // element index (within its list) of each item
	items                         []Item
	keep                          []bool
	unq                           []byte
	masked                        []byte // the envelope of a body with a remembered result
}

// element is one array element of a list: text[lead:end] is the element
// with the white space after the preceding '[' or ','.
type element struct{ lead, end int }

// afterComma returns the offset after the ',' that follows end (the
// decoder has validated the array).
func afterComma(b []byte, end int) int { return skipSpace(b, end) + 1 }

func (f *filter) init(srv *Server, lc ListContext, fail Reason) {
	f.srv, f.lc, f.fail = srv, lc, fail
	if f.ids == nil {
		f.ids = make(map[string]int, len(lc.Requests))
	}
	n := len(lc.Requests)
	f.answered, f.primary = slices.Grow(f.answered[:0], n)[:n], slices.Grow(f.primary[:0], n)[:n]
	clear(f.answered)
	clear(f.primary)
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

// reset prepares the filter for another stream (see exchange.reset).
func (f *filter) reset() {
	f.lc, f.fail = ListContext{}, ""
	if len(f.ids) > 64 {
		f.ids = nil
	} else {
		clear(f.ids)
	}
	f.answered, f.primary = trim(f.answered, 64), trim(f.primary, 64)
	f.msgs, f.keep, f.usable = trim(f.msgs, 1024), trim(f.keep, 4096), trim(f.usable, 4096)
	f.elems = trim(f.elems, 4096)
	clear(f.items[:cap(f.items)])
	f.items = trim(f.items, 4096)
	f.unq = trim(f.unq, 4096)
	f.masked = trim(f.masked, 4096)
	f.msgNames.trim()
	f.resNames.trim()
	f.itemNames.trim()
}

// rewrite returns the text with every list result filtered, or with the
// messages that cannot be filtered replaced by JSON-RPC errors. It returns
// changed false (and out nil) when the text stays as it is. In an SSE event
// (sse), data that does not look like JSON at all passes unchanged; in a
// JSON body it is an error. out is a new buffer, never modified later.
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
	last := 0
	for mi := range f.msgs {
		m := &f.msgs[mi]
		if !m.result.present() {
			continue
		}
		l, keep, refused := f.respond(ctx, text, m)
		if l == nil && !refused {
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(text))
		}
		if refused {
			out = append(out, text[last:m.start]...)
			out = appendError(out, text[m.id.start:m.id.end])
			last = m.end
			continue
		}
		out = append(out, text[last:l.val.start]...)
		out = f.appendKept(out, text, l, keep)
		last = l.val.end
	}
	if out == nil {
		return nil, false
	}
	return append(out, text[last:]...), true
}

// respond decides one result response: keep it (nil, false), refuse it
// (refused), or cut the items not kept out of list l.
func (f *filter) respond(ctx context.Context, text []byte, m *message) (l *list, keep []bool, refused bool) {
	if f.fail != "" {
		f.record(ctx, Outcome{Reason: f.fail}, "metadata unusable: list response refused")
		return nil, nil, true
	}
	kind, method, reason := f.kindOf(text, m)
	switch {
	case reason != "":
		f.record(ctx, Outcome{Method: method, Reason: reason}, "list response refused")
		return nil, nil, true
	case kind == "":
		return nil, nil, false
	}
	l = &m.lists[kindIndex(kind)]
	if l.val.kind != '[' || l.bad {
		f.record(ctx, Outcome{Method: method, Reason: ReasonBadBody}, "list result is not an array of "+string(kind)+" items")
		return nil, nil, true
	}
	start := time.Now()
	o := Outcome{Method: method, Items: l.elems[1] - l.elems[0]}
	keep = f.keep[:0]
	for range o.Items {
		keep = append(keep, false)
	}
	f.keep = keep
	if items := f.items[l.items[0]:l.items[1]]; len(items) > 0 {
		vis, reason := f.visible(ctx, List{Kind: kind, ID: jsontext.Value(text[m.id.start:m.id.end]), Items: items})
		if reason != "" {
			o.Reason = reason
			o.Duration = l.read + time.Since(start)
			f.record(ctx, o, "list response refused")
			return nil, nil, true
		}
		for i, k := range vis.Keep {
			keep[f.usable[l.items[0]+i]] = k
		}
	}
	for _, k := range keep {
		if !k {
			o.Removed++
		}
	}
	o.Duration = l.read + time.Since(start)
	f.record(ctx, o, "")
	if o.Removed == 0 {
		return nil, nil, false
	}
	return l, keep, false
}

// appendKept appends list l with only the kept elements. Each kept element
// keeps its bytes and the white space before it; the white space before
// the closing bracket stays too, so pretty-printed lists stay so.
func (f *filter) appendKept(out, text []byte, l *list, keep []bool) []byte {
	elems := f.elems[l.elems[0]:l.elems[1]]
	out = append(out, '[')
	n := 0
	for i, e := range elems {
		if !keep[i] {
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, text[e.lead:e.end]...)
		n++
	}
	if n > 0 {
		out = append(out, text[elems[len(elems)-1].end:l.closing]...)
	}
	return append(out, ']')
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
		if !l.val.present() {
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
// (too large, encoded, of an ambiguous type).
func (f *filter) failPending(ctx context.Context, reason Reason, detail string) []byte {
	return f.failText(ctx, nil, reason, detail)
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
// JSON-RPC shape of every message. A result parsed before is not parsed
// again (see parseMemo).
func (f *filter) scan(text []byte) *badText {
	if f.srv.memo == nil {
		return f.scanWhole(text)
	}
	if f.scanMemo(text) {
		return nil
	}
	b := f.scanWhole(text)
	if b == nil {
		f.remember(text)
	}
	return b
}

// scanWhole is scan without the parse memo.
func (f *filter) scanWhole(text []byte) *badText {
	f.msgs, f.elems, f.usable, f.items = f.msgs[:0], f.elems[:0], f.usable[:0], f.items[:0]
	d := &f.dec
	f.buf = *bytes.NewBuffer(text)
	d.Reset(&f.buf)
	defer func() {
		f.buf = bytes.Buffer{} // drop the reference to text
		d.Reset(&f.buf)
	}()
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
			if b := f.scanMessage(d, text); b != nil {
				return b
			}
		}
		if _, err := d.ReadToken(); err != nil {
			return syntaxError(err)
		}
		if len(f.msgs) == 0 {
			return &badText{"empty batch"}
		}
	} else if b := f.scanMessage(d, text); b != nil {
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
		fold, dup := f.msgNames.addKey(name)
		if dup {
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
				b = f.scanResult(d, text, &m)
			} else {
				m.result, b = valueSpan(d)
			}
		default:
			if isCaseVariant(name, fold, messageMembers) {
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

func (f *filter) scanResult(d *jsontext.Decoder, text []byte, m *message) *badText {
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
		fold, dup := f.resNames.addKey(name)
		if dup {
			return &badText{"result member names equal under case folding"}
		}
		k := -1
		for i, lk := range listKinds {
			if string(name) == lk.member() {
				k = i
			}
		}
		if k < 0 && string(name) != "nextCursor" && isCaseVariant(name, fold, resultMembers) {
			return &badText{"result member is a case variant of a list member"}
		}
		if k >= 0 && d.PeekKind() == '[' {
			if b := f.scanList(d, text, &m.lists[k], listKinds[k]); b != nil {
				return b
			}
			continue
		}
		s, b := valueSpan(d)
		if b != nil {
			return b
		}
		if k >= 0 {
			m.lists[k].val = s
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return syntaxError(err)
	}
	m.result = span{start: start, end: int(d.InputOffset()), kind: '{'}
	return nil
}

// isCaseVariant reports whether name (with folding key fold) equals one of
// known under case folding without being exactly it.
func isCaseVariant(name, fold []byte, known []memberName) bool {
	for _, k := range known {
		if string(fold) == k.fold && string(name) != k.exact {
			return true
		}
	}
	return false
}

// memberName is a member name and its folding key.
type memberName struct{ exact, fold string }

func memberNames(names ...string) []memberName {
	out := make([]memberName, len(names))
	for i, n := range names {
		out[i] = memberName{n, string(appendFoldKey(nil, []byte(n)))}
	}
	return out
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

// scanList reads the array of a list member: every element must be an
// object with the kind's string key member and no member names equal under
// case folding; otherwise the list is bad (and refused if it is the list
// the response answers with). Items the call path would refuse are not
// offered to the policy.
func (f *filter) scanList(d *jsontext.Decoder, text []byte, l *list, kind Kind) *badText {
	start := time.Now()
	if _, err := d.ReadToken(); err != nil {
		return syntaxError(err)
	}
	l.val = span{start: int(d.InputOffset()) - 1, kind: '['}
	l.elems[0], l.items[0] = len(f.elems), len(f.items)
	lead := int(d.InputOffset())
	for {
		k := d.PeekKind()
		if k == ']' {
			break
		}
		if n := len(f.elems); n > l.elems[0] {
			lead = afterComma(text, f.elems[n-1].end)
		}
		if k != '{' {
			v, b := valueSpan(d)
			if b != nil {
				return b
			}
			l.bad = true
			f.elems = append(f.elems, element{lead: lead, end: v.end})
			continue
		}
		item, usable, ok, b := f.scanItem(d, kind)
		if b != nil {
			return b
		}
		if !ok {
			l.bad = true
		}
		if usable && ok {
			f.usable = append(f.usable, len(f.elems)-l.elems[0])
			f.items = append(f.items, item)
		}
		f.elems = append(f.elems, element{lead: lead, end: int(d.InputOffset())})
	}
	if _, err := d.ReadToken(); err != nil {
		return syntaxError(err)
	}
	l.val.end = int(d.InputOffset())
	l.closing = l.val.end - 1
	l.elems[1], l.items[1] = len(f.elems), len(f.items)
	l.read = time.Since(start)
	return nil
}

// scanItem reads one list item object. ok is false for an item that is not
// one of the kind: names equal under case folding, a case variant of the
// key member or of "name" (a case-insensitive client would read it), or a
// key member that is missing or not a string. usable is false for an item
// the call path would refuse anyway. Only a syntax error stops the scan.
func (f *filter) scanItem(d *jsontext.Decoder, kind Kind) (item Item, usable, ok bool, bad *badText) {
	if _, err := d.ReadToken(); err != nil {
		return Item{}, false, false, syntaxError(err)
	}
	f.itemNames.reset()
	key, keyFold := "name", "NAME"
	switch kind {
	case KindResources:
		key, keyFold = "uri", "URI"
	case KindResourceTemplates:
		key, keyFold = "uriTemplate", "URITEMPLATE"
	}
	var keyVal, nameVal jsontext.Value
	ok = true
	for d.PeekKind() != '}' {
		name, b := f.name(d)
		if b != nil {
			return Item{}, false, false, b
		}
		fold, dup := f.itemNames.addKey(name)
		if dup {
			ok = false
		}
		isKey, isName := string(name) == key, string(name) == "name"
		if !isKey && string(fold) == keyFold || !isName && string(fold) == "NAME" {
			ok = false
		}
		v, err := d.ReadValue()
		if err != nil {
			return Item{}, false, false, syntaxError(err)
		}
		switch {
		case isKey:
			if v.Kind() != '"' {
				ok = false
			}
			keyVal = v
		case isName && v.Kind() == '"':
			nameVal = v
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return Item{}, false, false, syntaxError(err)
	}
	if !ok || keyVal == nil {
		return Item{}, false, false, nil
	}
	s := unquoteString(keyVal)
	switch kind {
	case KindTools:
		return Item{Name: s}, usableToolName(s), true, nil
	case KindPrompts:
		return Item{Name: s}, usablePromptName(s), true, nil
	case KindResources:
		uri, normal := normalizeURI(s)
		it := Item{URI: uri}
		if nameVal != nil {
			it.Name = unquoteString(nameVal)
		}
		return it, normal && usableURI(s), true, nil
	default:
		prefix, normal := normalizeTemplatePrefix(s)
		it := Item{URITemplate: s, URIPrefix: prefix}
		if nameVal != nil {
			it.Name = unquoteString(nameVal)
		}
		return it, normal && usableURI(s), true, nil
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
	case err != nil && (ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded)):
		// Out of time: PolicyTimeout, or the policy's own evaluation
		// bound (policy.eval_timeout), which may be the shorter.
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
