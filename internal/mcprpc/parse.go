package mcprpc

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

const (
	defaultMaxDepth = 64
	defaultMaxBatch = 100
	// maxDepthLimit is jsontext's own nesting limit; a larger MaxDepth would
	// surface as invalid_json instead of too_deep.
	maxDepthLimit = 10000
)

var utf8BOM = []byte{0xef, 0xbb, 0xbf}

var parserPool = sync.Pool{New: func() any { return new(parser) }}

// Parse parses the POST body of an MCP Streamable HTTP request: one JSON-RPC
// message or a batch of them. See the package documentation for the rules.
//
// Message.ID and Message.Arguments alias body: the caller must not modify
// body while the result is in use. Every error is an *Error.
func Parse(body []byte, opts Options) (Body, error) {
	if len(body) == 0 {
		return Body{}, newError(ReasonEmptyBody, CodeParseError, nil, "Parse error: empty body")
	}
	if bytes.HasPrefix(body, utf8BOM) {
		return Body{}, newError(ReasonInvalidJSON, CodeParseError, nil, "Parse error: body starts with a byte order mark")
	}
	p := parserPool.Get().(*parser)
	p.init(body, opts)
	b, err := p.parse()
	p.release()
	parserPool.Put(p)
	if err != nil {
		return Body{}, err
	}
	return b, nil
}

// span locates one JSON value in the body. kind is 0 when the value is absent.
type span struct {
	start, end int
	kind       jsontext.Kind
}

func (s span) present() bool { return s.kind != 0 }

// msgState collects, in one pass and in any member order, the members of one
// message that policy may need. Which ones are used, and how they are
// validated, is decided by the method once the message has been read.
type msgState struct {
	jsonrpc, id, method, params span
	hasResult, hasError         bool

	// Members of params.
	name, uri, arguments, taskID span
	meta, metaVersion            span // _meta and its protocolVersion
	ref, refType, refName        span
	refURI                       span
	notifications, subscriptions span // notifications.resourceSubscriptions
	subsStart, subsEnd           int  // string elements of subscriptions in parser.subs
	subsBad                      bool // a non-string element
}

// nameEntry is one object member name, case-folded, in parser.arena.
type nameEntry struct {
	off, n int
	hash   uint64
	prev   int // previous entry with the same hash, or -1 (map mode only)
}

// level is the set of member names of one open object.
type level struct {
	start, arenaStart int // into parser.names and parser.arena
	m                 map[uint64]int
	mapped            bool
}

// linearNames is the number of names per object checked by linear search
// before switching to a hash map.
const linearNames = 16

type parser struct {
	dec      jsontext.Decoder
	bb       bytes.Buffer
	body     []byte
	maxDepth int
	maxBatch int

	// Case-folded duplicate detection, one level per open object.
	arena   []byte
	names   []nameEntry
	levels  []level
	nlevels int

	scratch []byte // unquoted object names
	vals    []byte // unquoted values
	subs    []span

	semErr *Error // first semantic (non-parse) error
}

func (p *parser) init(body []byte, opts Options) {
	p.body = body
	p.bb = *bytes.NewBuffer(body)
	p.dec.Reset(&p.bb)
	p.maxDepth = opts.MaxDepth
	if p.maxDepth <= 0 {
		p.maxDepth = defaultMaxDepth
	}
	p.maxDepth = min(p.maxDepth, maxDepthLimit)
	p.maxBatch = opts.MaxBatch
	if p.maxBatch <= 0 {
		p.maxBatch = defaultMaxBatch
	}
	p.semErr = nil
}

// release drops every reference to the body and trims buffers that grew for
// an unusually large body, so that the pool does not pin them.
func (p *parser) release() {
	p.body = nil
	p.bb = bytes.Buffer{}
	p.dec.Reset(&p.bb)
	for i := range p.levels {
		p.resetLevel(&p.levels[i])
	}
	p.nlevels = 0
	const keep = 64 << 10
	if cap(p.arena) > keep {
		p.arena = nil
	}
	if cap(p.names) > keep/32 {
		p.names = nil
	}
	if cap(p.scratch) > keep {
		p.scratch = nil
	}
	if cap(p.vals) > keep {
		p.vals = nil
	}
	if cap(p.subs) > keep/32 {
		p.subs = nil
	}
	p.arena, p.names, p.scratch, p.vals, p.subs = p.arena[:0], p.names[:0], p.scratch[:0], p.vals[:0], p.subs[:0]
	p.semErr = nil
}

func (p *parser) resetLevel(lv *level) {
	if lv.mapped {
		if len(lv.m) > 1024 {
			lv.m = nil
		} else {
			clear(lv.m)
		}
		lv.mapped = false
	}
}

func (p *parser) parse() (Body, *Error) {
	var b Body
	switch k := p.dec.PeekKind(); k {
	case '{':
		m, err := p.message()
		if err != nil {
			return Body{}, err
		}
		if p.semErr == nil {
			b.Messages = []Message{m}
		}
	case '[':
		b.Batch = true
		if err := p.batch(&b); err != nil {
			return Body{}, err
		}
	default:
		if _, err := p.value(); err != nil {
			return Body{}, err
		}
		p.semantic(ReasonInvalidMessage, CodeInvalidRequest, nil, "Invalid Request: body must be a JSON object or array")
	}
	if _, err := p.dec.ReadToken(); err != io.EOF {
		return Body{}, newError(ReasonTrailingData, CodeParseError, nil,
			"Parse error: unexpected data after the JSON value at byte offset "+strconv.FormatInt(p.dec.InputOffset(), 10))
	}
	if p.semErr != nil {
		return Body{}, p.semErr
	}
	return b, nil
}

// semantic records the first error that is not a parse error. Parsing goes
// on so that a parse error later in the body still takes precedence.
func (p *parser) semantic(reason string, code int, id jsontext.Value, msg string) {
	if p.semErr == nil {
		p.semErr = newError(reason, code, id, msg)
	}
}

// syntax converts a jsontext error into a parse error.
func (p *parser) syntax(err error) *Error {
	switch {
	case err == io.EOF:
		return newError(ReasonEmptyBody, CodeParseError, nil, "Parse error: empty body")
	case errors.Is(err, jsontext.ErrDuplicateName):
		return newError(ReasonDuplicateKey, CodeParseError, nil, "Parse error: duplicate object member name"+atOffset(err))
	case !utf8.Valid(p.body):
		return newError(ReasonInvalidUTF8, CodeParseError, nil, "Parse error: invalid UTF-8"+atOffset(err))
	}
	return newError(ReasonInvalidJSON, CodeParseError, nil, "Parse error: invalid JSON"+atOffset(err))
}

func atOffset(err error) string {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		return " at byte offset " + strconv.FormatInt(se.ByteOffset, 10)
	}
	return ""
}

// message reads one JSON-RPC message object. A semantic problem is recorded
// with p.semantic and the returned Message is then meaningless.
func (p *parser) message() (Message, *Error) {
	var ms msgState
	ms.subsStart = len(p.subs)
	_, err := p.object(func(name []byte) *Error {
		var err *Error
		switch string(name) {
		case "jsonrpc":
			ms.jsonrpc, err = p.value()
		case "id":
			ms.id, err = p.value()
		case "method":
			ms.method, err = p.value()
		case "params":
			ms.params, err = p.params(&ms)
		case "result":
			ms.hasResult = true
			_, err = p.value()
		case "error":
			ms.hasError = true
			_, err = p.value()
		default:
			err = p.unknownMember(name, messageMembers)
		}
		return err
	})
	if err != nil {
		return Message{}, err
	}
	ms.subsEnd = len(p.subs)
	if p.semErr != nil {
		return Message{}, nil
	}
	m, serr := p.build(&ms)
	if serr != nil {
		p.semErr = serr
	}
	p.subs = p.subs[:ms.subsStart]
	return m, nil
}

func (p *parser) params(ms *msgState) (span, *Error) {
	if p.dec.PeekKind() != '{' {
		return p.value()
	}
	return p.object(func(name []byte) *Error {
		var err *Error
		switch string(name) {
		case "name":
			ms.name, err = p.value()
		case "uri":
			ms.uri, err = p.value()
		case "arguments":
			ms.arguments, err = p.value()
		case "taskId":
			ms.taskID, err = p.value()
		case "_meta":
			if p.dec.PeekKind() != '{' {
				ms.meta, err = p.value()
				break
			}
			ms.meta, err = p.object(func(name []byte) *Error {
				var err *Error
				if string(name) == metaProtocolVersion {
					ms.metaVersion, err = p.value()
				} else {
					err = p.unknownMember(name, metaMembers)
				}
				return err
			})
		case "ref":
			if p.dec.PeekKind() != '{' {
				ms.ref, err = p.value()
				break
			}
			ms.ref, err = p.object(func(name []byte) *Error {
				var err *Error
				switch string(name) {
				case "type":
					ms.refType, err = p.value()
				case "name":
					ms.refName, err = p.value()
				case "uri":
					ms.refURI, err = p.value()
				default:
					err = p.unknownMember(name, refMembers)
				}
				return err
			})
		case "notifications":
			if p.dec.PeekKind() != '{' {
				ms.notifications, err = p.value()
				break
			}
			ms.notifications, err = p.object(func(name []byte) *Error {
				if string(name) == "resourceSubscriptions" {
					var err *Error
					ms.subscriptions, err = p.stringArray(&ms.subsBad)
					return err
				}
				return p.unknownMember(name, notificationsMembers)
			})
		default:
			err = p.unknownMember(name, paramsMembers)
		}
		return err
	})
}

// The member names Parse interprets, per object. A member whose name is a
// case variant of one of them ("PARAMS", "Arguments", "paramſ") is rejected
// even when the exact name is absent: Go encoding/json v1 would decode it
// into the field Parse considers absent.
var (
	messageMembers       = []string{"jsonrpc", "id", "method", "params", "result", "error"}
	paramsMembers        = []string{"name", "uri", "arguments", "taskId", "_meta", "ref", "notifications"}
	metaMembers          = []string{metaProtocolVersion}
	refMembers           = []string{"type", "name", "uri"}
	notificationsMembers = []string{"resourceSubscriptions"}
)

const metaProtocolVersion = "io.modelcontextprotocol/protocolVersion"

// unknownMember consumes the value of a member that is not one of known, and
// rejects the member when its name is a case variant of one of them.
func (p *parser) unknownMember(name []byte, known []string) *Error {
	for _, k := range known {
		if foldEqualASCII(name, k) {
			return newError(ReasonInvalidKey, CodeParseError, nil,
				"Parse error: object member name is a case variant of "+strconv.Quote(k))
		}
	}
	_, err := p.value()
	return err
}

// stringArray reads any value; when it is an array, the spans of its string
// elements are appended to p.subs and *bad is set if any element is not a
// string.
func (p *parser) stringArray(bad *bool) (span, *Error) {
	if p.dec.PeekKind() != '[' {
		return p.value()
	}
	start, err := p.begin()
	if err != nil {
		return span{}, err
	}
	for p.dec.PeekKind() != ']' {
		s, err := p.value()
		if err != nil {
			return span{}, err
		}
		if s.kind == '"' {
			p.subs = append(p.subs, s)
		} else {
			*bad = true
		}
	}
	if _, err := p.dec.ReadToken(); err != nil {
		return span{}, p.syntax(err)
	}
	return span{start: start, end: int(p.dec.InputOffset()), kind: '['}, nil
}

func (p *parser) batch(b *Body) *Error {
	if _, err := p.begin(); err != nil {
		return err
	}
	n := 0
	for {
		k := p.dec.PeekKind()
		if k == ']' {
			break
		}
		n++
		if k == '{' && n <= p.maxBatch && p.semErr == nil {
			m, err := p.message()
			if err != nil {
				return err
			}
			if p.semErr == nil {
				b.Messages = append(b.Messages, m)
			}
			continue
		}
		if _, err := p.value(); err != nil {
			return err
		}
		switch {
		case n > p.maxBatch:
			p.semantic(ReasonBatchTooLarge, CodeInvalidRequest, nil,
				"Invalid Request: batch has more than "+strconv.Itoa(p.maxBatch)+" elements")
		case k == '[':
			p.semantic(ReasonInvalidBatch, CodeInvalidRequest, nil, "Invalid Request: nested array in batch")
		case k != '{':
			p.semantic(ReasonInvalidBatch, CodeInvalidRequest, nil, "Invalid Request: batch element is not an object")
		}
	}
	if _, err := p.dec.ReadToken(); err != nil {
		return p.syntax(err)
	}
	if n == 0 {
		p.semantic(ReasonInvalidBatch, CodeInvalidRequest, nil, "Invalid Request: empty batch")
	}
	return nil
}

// begin reads '{' or '[' and enforces MaxDepth. It returns the offset of the
// delimiter.
func (p *parser) begin() (int, *Error) {
	if _, err := p.dec.ReadToken(); err != nil {
		return 0, p.syntax(err)
	}
	if p.dec.StackDepth() > p.maxDepth {
		return 0, newError(ReasonTooDeep, CodeParseError, nil,
			"Parse error: nesting deeper than "+strconv.Itoa(p.maxDepth)+" levels")
	}
	return int(p.dec.InputOffset()) - 1, nil
}

// object reads an object. For each member, after the name has been checked,
// member is called and must consume the value.
func (p *parser) object(member func(name []byte) *Error) (span, *Error) {
	start, err := p.begin()
	if err != nil {
		return span{}, err
	}
	if p.nlevels == len(p.levels) {
		p.levels = append(p.levels, level{})
	}
	lv := &p.levels[p.nlevels]
	lv.start, lv.arenaStart = len(p.names), len(p.arena)
	p.nlevels++
	for p.dec.PeekKind() != '}' {
		name, err := p.name()
		if err != nil {
			return span{}, err
		}
		if err := member(name); err != nil {
			return span{}, err
		}
	}
	if _, err := p.dec.ReadToken(); err != nil {
		return span{}, p.syntax(err)
	}
	p.nlevels--
	lv = &p.levels[p.nlevels]
	p.names, p.arena = p.names[:lv.start], p.arena[:lv.arenaStart]
	p.resetLevel(lv)
	return span{start: start, end: int(p.dec.InputOffset()), kind: '{'}, nil
}

// skipMember is an object member callback that consumes any value.
func (p *parser) skipMember([]byte) *Error {
	_, err := p.value()
	return err
}

// value reads any JSON value, applying every strictness rule inside it.
func (p *parser) value() (span, *Error) {
	switch p.dec.PeekKind() {
	case '{':
		return p.object(p.skipMember)
	case '[':
		start, err := p.begin()
		if err != nil {
			return span{}, err
		}
		for p.dec.PeekKind() != ']' {
			if _, err := p.value(); err != nil {
				return span{}, err
			}
		}
		if _, err := p.dec.ReadToken(); err != nil {
			return span{}, p.syntax(err)
		}
		return span{start: start, end: int(p.dec.InputOffset()), kind: '['}, nil
	}
	v, err := p.dec.ReadValue()
	if err != nil {
		return span{}, p.syntax(err)
	}
	k := v.Kind()
	if k == '0' && numberOverflows(v) {
		return span{}, newError(ReasonInvalidNumber, CodeParseError, nil,
			"Parse error: number out of range at byte offset "+strconv.FormatInt(p.dec.InputOffset()-int64(len(v)), 10))
	}
	end := int(p.dec.InputOffset())
	return span{start: end - len(v), end: end, kind: k}, nil
}

// numberOverflows reports whether a JSON number is outside the float64 range,
// which Go's encoding/json v2 rejects when decoding into any while JavaScript
// and Python turn it into Infinity.
func numberOverflows(v []byte) bool {
	if len(v) <= 300 && !hasExponent(v) {
		return false // at most 300 digits before any fraction: < 1e301
	}
	f, _ := strconv.ParseFloat(string(v), 64)
	return math.IsInf(f, 0)
}

// name reads an object member name and checks it against the names already
// seen in the same object. The returned slice is valid until the next call.
func (p *parser) name() ([]byte, *Error) {
	v, err := p.dec.ReadValue()
	if err != nil {
		return nil, p.syntax(err)
	}
	name := v[1 : len(v)-1]
	if bytes.IndexByte(name, '\\') >= 0 {
		p.scratch, err = jsontext.AppendUnquote(p.scratch[:0], v)
		if err != nil {
			return nil, p.syntax(err)
		}
		name = p.scratch
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return nil, newError(ReasonInvalidKey, CodeParseError, nil,
				"Parse error: object member name contains a control character at byte offset "+
					strconv.FormatInt(p.dec.InputOffset()-int64(len(v)), 10))
		}
	}
	if p.foldDuplicate(name) {
		return nil, newError(ReasonDuplicateKey, CodeParseError, nil,
			"Parse error: object member names differ only in case at byte offset "+
				strconv.FormatInt(p.dec.InputOffset()-int64(len(v)), 10))
	}
	return name, nil
}

// unquote returns the decoded content of a string span, valid until the next
// call.
func (p *parser) unquote(s span) []byte {
	raw := p.body[s.start:s.end]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1]
	}
	// The string was validated by jsontext, so this cannot fail.
	p.vals, _ = jsontext.AppendUnquote(p.vals[:0], raw)
	return p.vals
}

// raw returns the bytes of a span, aliasing the body.
func (p *parser) raw(s span) jsontext.Value {
	return jsontext.Value(p.body[s.start:s.end:s.end])
}

func hasExponent(v []byte) bool {
	for _, c := range v {
		if c == 'e' || c == 'E' {
			return true
		}
	}
	return false
}

// maxSafeID is 2^53: every integer up to it in magnitude is exact in a
// float64, so JavaScript, Python and Go servers all read (and echo) the
// same id.
const maxSafeID = 1 << 53

// integralID reports whether the valid JSON number v is an integer in value
// ("1", "1.0", "1e0", "1.5e1", "-0") no larger than 2^53 in magnitude. The
// test is exact on the decimal text: no float rounding, so
// "9007199254740993.0" is rejected like "9007199254740993".
func integralID(v []byte) bool {
	if len(v) > 0 && v[0] == '-' {
		v = v[1:]
	}
	intPart, frac, exp := v, []byte(nil), 0
	if i := bytes.IndexAny(v, "eE"); i >= 0 {
		e := v[i+1:]
		neg := len(e) > 0 && e[0] == '-'
		if len(e) > 0 && (e[0] == '-' || e[0] == '+') {
			e = e[1:]
		}
		for _, c := range bytes.TrimLeft(e, "0") {
			if exp > 1000 {
				break // far beyond any id; the digit checks below decide
			}
			exp = exp*10 + int(c-'0')
		}
		if neg {
			exp = -exp
		}
		intPart = v[:i]
	}
	if i := bytes.IndexByte(intPart, '.'); i >= 0 {
		intPart, frac = intPart[:i], intPart[i+1:]
	}
	// value = D × 10^(exp − len(frac)) for the digit string D = intPart ++
	// frac, read in place (v aliases the body, so nothing is appended to it).
	nd := len(intPart) + len(frac)
	digit := func(k int) byte {
		if k < len(intPart) {
			return intPart[k]
		}
		return frac[k-len(intPart)]
	}
	first, last := 0, nd-1
	for first < nd && digit(first) == '0' {
		first++
	}
	if first == nd {
		return true // zero, however written
	}
	for digit(last) == '0' {
		last--
	}
	// Significant digits D[first..last], scaled by 10^scale.
	scale := exp - len(frac) + (nd - 1 - last)
	if scale < 0 || last-first+1+scale > 16 { // fractional, or at least 10^16 > 2^53
		return false
	}
	var n uint64
	for k := first; k <= last; k++ {
		n = n*10 + uint64(digit(k)-'0')
	}
	for range scale {
		n *= 10
	}
	return n <= maxSafeID
}

// build turns the members of one message into a Message, or the semantic
// error that makes it unacceptable. The checks run in a fixed order so the
// error does not depend on member order.
func (p *parser) build(ms *msgState) (Message, *Error) {
	var m Message
	idOK := ms.id.kind == '"' || (ms.id.kind == '0' && integralID(p.raw(ms.id)))
	if idOK {
		m.ID = p.raw(ms.id)
	}
	if ms.jsonrpc.kind != '"' || string(p.unquote(ms.jsonrpc)) != "2.0" {
		return m, newError(ReasonInvalidJSONRPC, CodeInvalidRequest, m.ID, `Invalid Request: "jsonrpc" must be "2.0"`)
	}
	if ms.id.present() && !idOK {
		return m, newError(ReasonInvalidID, CodeInvalidRequest, nil, `Invalid Request: "id" must be a string or an integer of at most 2^53 in magnitude`)
	}
	if !ms.method.present() {
		if !ms.id.present() || ms.hasResult == ms.hasError {
			return m, newError(ReasonInvalidMessage, CodeInvalidRequest, m.ID,
				"Invalid Request: not a request, notification or response")
		}
		m.Kind = KindResponse
		return m, nil
	}
	if ms.hasResult || ms.hasError {
		return m, newError(ReasonInvalidMessage, CodeInvalidRequest, m.ID,
			`Invalid Request: "method" together with "result" or "error"`)
	}
	if ms.method.kind != '"' {
		return m, newError(ReasonInvalidMethod, CodeInvalidRequest, m.ID, `Invalid Request: "method" must be a string`)
	}
	method := p.unquote(ms.method)
	if len(method) == 0 || hasControl(method) {
		return m, newError(ReasonInvalidMethod, CodeInvalidRequest, m.ID,
			`Invalid Request: "method" must be a non-empty string without control characters`)
	}
	m.Method = internMethod(method)
	m.Kind = KindNotification
	if ms.id.present() {
		m.Kind = KindRequest
	}
	return m, p.extract(&m, ms)
}

// extract validates params for m.Method and fills the policy fields.
func (p *parser) extract(m *Message, ms *msgState) *Error {
	invalid := func(msg string) *Error {
		return newError(ReasonInvalidParams, CodeInvalidParams, m.ID, "Invalid params: "+msg)
	}
	if ms.params.present() && ms.params.kind != '{' {
		return invalid("params must be an object")
	}
	if ms.meta.present() {
		if ms.meta.kind != '{' {
			return invalid("_meta must be an object")
		}
		if ms.metaVersion.present() {
			if ms.metaVersion.kind != '"' {
				return invalid("_meta protocolVersion must be a string")
			}
			v := p.unquote(ms.metaVersion)
			if len(v) == 0 || hasControl(v) {
				return invalid("_meta protocolVersion must be a non-empty string")
			}
			m.MetaProtocolVersion = internVersion(v)
		}
	}
	switch m.Method {
	case "tools/call":
		if !ms.params.present() {
			return invalid("tools/call requires params")
		}
		if ms.name.kind != '"' || !validToolName(p.unquote(ms.name)) {
			return newError(ReasonInvalidToolName, CodeInvalidParams, m.ID,
				"Invalid params: tool name must be 1 to 128 characters of A-Z a-z 0-9 _ - .")
		}
		m.Tool = string(p.unquote(ms.name))
		m.Name = m.Tool
		if ms.arguments.present() {
			if ms.arguments.kind != '{' {
				return invalid("arguments must be an object")
			}
			m.Arguments = p.raw(ms.arguments)
		}
	case "prompts/get":
		if !ms.params.present() {
			return invalid("prompts/get requires params")
		}
		name, ok := p.text(ms.name)
		if !ok {
			return invalid("prompt name must be a non-empty string without control characters")
		}
		m.Prompt, m.Name = name, name
		if ms.arguments.present() {
			if ms.arguments.kind != '{' {
				return invalid("arguments must be an object")
			}
			m.Arguments = p.raw(ms.arguments)
		}
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		if !ms.params.present() {
			return invalid(m.Method + " requires params")
		}
		uri, ok := p.nonEmpty(ms.uri)
		if !ok {
			return invalid("uri must be a non-empty string")
		}
		norm, prob := normalizeURI(uri, false)
		if prob != nil {
			return prob.err(m.ID)
		}
		m.Name, m.ResourceURI = uri, norm
	case "completion/complete":
		if ms.ref.kind != '{' {
			return invalid("completion/complete requires a ref object")
		}
		if ms.refType.kind != '"' {
			return invalid("ref.type must be a string")
		}
		switch string(p.unquote(ms.refType)) {
		case "ref/prompt":
			name, ok := p.text(ms.refName)
			if !ok {
				return invalid("ref.name must be a non-empty string without control characters")
			}
			m.Prompt = name
		case "ref/resource":
			uri, ok := p.nonEmpty(ms.refURI)
			if !ok {
				return invalid("ref.uri must be a non-empty string")
			}
			norm, prob := normalizeURI(uri, true)
			if prob != nil {
				return prob.err(m.ID)
			}
			m.ResourceURI = norm
		default:
			return invalid(`ref.type must be "ref/prompt" or "ref/resource"`)
		}
	case "subscriptions/listen":
		if !ms.notifications.present() {
			break
		}
		if ms.notifications.kind != '{' {
			return invalid("notifications must be an object")
		}
		if !ms.subscriptions.present() {
			break
		}
		if ms.subscriptions.kind != '[' || ms.subsBad {
			return invalid("resourceSubscriptions must be an array of strings")
		}
		if ms.subsEnd > ms.subsStart {
			m.ResourceURIs = make([]string, 0, ms.subsEnd-ms.subsStart)
		}
		for _, s := range p.subs[ms.subsStart:ms.subsEnd] {
			uri, ok := p.nonEmpty(s)
			if !ok {
				return invalid("resourceSubscriptions must hold non-empty strings")
			}
			norm, prob := normalizeURI(uri, false)
			if prob != nil {
				return prob.err(m.ID)
			}
			m.ResourceURIs = append(m.ResourceURIs, norm)
		}
	case "tasks/get", "tasks/result", "tasks/cancel", "tasks/update":
		if !ms.taskID.present() {
			break
		}
		if ms.taskID.kind != '"' {
			return invalid("taskId must be a string")
		}
		m.TaskID = string(p.unquote(ms.taskID))
		m.Name = m.TaskID
	}
	return nil
}

// text decodes a string span that must be non-empty and free of control
// characters.
func (p *parser) text(s span) (string, bool) {
	if s.kind != '"' {
		return "", false
	}
	v := p.unquote(s)
	if len(v) == 0 || hasControl(v) {
		return "", false
	}
	return string(v), true
}

// nonEmpty decodes a string span that must be non-empty; what else the
// string must be is checked by its consumer (normalizeURI for URIs).
func (p *parser) nonEmpty(s span) (string, bool) {
	if s.kind != '"' {
		return "", false
	}
	v := p.unquote(s)
	return string(v), len(v) > 0
}

// validToolName reports whether name is 1 to 128 characters of
// [A-Za-z0-9_.-].
func validToolName(name []byte) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	for _, c := range name {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// internMethod returns well-known method names without allocating.
func internMethod(b []byte) string {
	switch string(b) {
	case "initialize":
		return "initialize"
	case "notifications/initialized":
		return "notifications/initialized"
	case "ping":
		return "ping"
	case "server/discover":
		return "server/discover"
	case "tools/list":
		return "tools/list"
	case "tools/call":
		return "tools/call"
	case "resources/list":
		return "resources/list"
	case "resources/templates/list":
		return "resources/templates/list"
	case "resources/read":
		return "resources/read"
	case "resources/subscribe":
		return "resources/subscribe"
	case "resources/unsubscribe":
		return "resources/unsubscribe"
	case "subscriptions/listen":
		return "subscriptions/listen"
	case "prompts/list":
		return "prompts/list"
	case "prompts/get":
		return "prompts/get"
	case "completion/complete":
		return "completion/complete"
	case "logging/setLevel":
		return "logging/setLevel"
	case "tasks/get":
		return "tasks/get"
	case "tasks/result":
		return "tasks/result"
	case "tasks/cancel":
		return "tasks/cancel"
	case "tasks/update":
		return "tasks/update"
	case "tasks/list":
		return "tasks/list"
	case "notifications/cancelled":
		return "notifications/cancelled"
	case "notifications/progress":
		return "notifications/progress"
	case "notifications/roots/list_changed":
		return "notifications/roots/list_changed"
	}
	return string(b)
}

// internVersion returns known protocol versions without allocating.
func internVersion(b []byte) string {
	for _, v := range knownVersions {
		if string(b) == v {
			return v
		}
	}
	return string(b)
}
