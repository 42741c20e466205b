package extproc

import (
	"bytes"
	"slices"
	"sync"
	"sync/atomic"
)

// The parse memo's default bounds (Options.ParseMemoSize and
// ParseMemoBytes).
const (
	DefaultParseMemoSize  = 16
	DefaultParseMemoBytes = 2 << 20
)

// parseMemo keeps the strict parses of recent list results. A server
// answers every caller's tools/list with the same result, and only the
// JSON-RPC id around it differs; the strict parse of the result (every
// depth, duplicate names, UTF-8) is most of the cost of filtering it. For
// a body whose result is byte for byte one seen before, the filter parses
// only the envelope: the body with the result replaced by {}, which must
// put the placeholder exactly where the result member's value is. A valid
// JSON value substituted for another at a value's place leaves the text
// valid, so the body is checked as strictly as by a whole parse; the
// result is compared in full, never by a hash. Entries are immutable; the
// oldest goes first when a bound is passed, counted as an eviction.
type parseMemo struct {
	maxEntries, maxBytes int

	mu      sync.RWMutex
	entries []*parsedResult // oldest first
	bytes   int

	evictions atomic.Uint64
}

// parsedResult is the scan of one result object (text), with every offset
// relative to its start.
type parsedResult struct {
	text   []byte
	lists  [4]list
	elems  []element
	usable []int
	items  []Item
	size   int
}

func newParseMemo(maxEntries, maxBytes int) *parseMemo {
	if maxEntries < 0 {
		return nil
	}
	return &parseMemo{maxEntries: maxEntries, maxBytes: maxBytes}
}

// find returns the entry whose result text starts text, or nil.
func (c *parseMemo) find(text []byte) *parsedResult {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, e := range c.entries {
		if bytes.HasPrefix(text, e.text) {
			return e
		}
	}
	return nil
}

// add keeps e unless it is too large for the byte bound or an equal result
// is kept already, dropping the oldest entries while a bound is passed.
func (c *parseMemo) add(e *parsedResult) {
	if e.size > c.maxBytes/2 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, old := range c.entries {
		if bytes.Equal(old.text, e.text) {
			return
		}
	}
	c.entries = append(c.entries, e)
	c.bytes += e.size
	for len(c.entries) > c.maxEntries || c.bytes > c.maxBytes {
		c.bytes -= c.entries[0].size
		c.entries[0] = nil
		c.entries = c.entries[1:]
		c.evictions.Add(1)
	}
}

// MemoStats is what the parse memo holds and has dropped.
type MemoStats struct {
	Entries, Bytes int
	Evictions      uint64
}

// ParseMemoStats reports the parse memo: the list results whose parse is
// kept, the bytes they are counted at, and those dropped for the bounds.
func (s *Server) ParseMemoStats() MemoStats {
	c := s.memo
	if c == nil {
		return MemoStats{}
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return MemoStats{Entries: len(c.entries), Bytes: c.bytes, Evictions: c.evictions.Load()}
}

// resultValue returns the offset of the value of the first "result" member
// name in a text that is one JSON object, if that value is an object; -1
// otherwise. It is only a guess (the name may be inside a string): the
// envelope parse confirms it.
func resultValue(text []byte) int {
	if i := skipSpace(text, 0); i == len(text) || text[i] != '{' {
		return -1
	}
	i := bytes.Index(text, []byte(`"result"`))
	if i < 0 {
		return -1
	}
	j := skipSpace(text, i+len(`"result"`))
	if j == len(text) || text[j] != ':' {
		return -1
	}
	k := skipSpace(text, j+1)
	if k == len(text) || text[k] != '{' {
		return -1
	}
	return k
}

// scanMemo scans text with a remembered result parse: ok is false when no
// entry applies or the envelope does not confirm it (scan then parses the
// whole text). On ok the filter's state is exactly what a whole scan
// would have produced.
func (f *filter) scanMemo(text []byte) (ok bool) {
	p := resultValue(text)
	if p < 0 {
		return false
	}
	e := f.srv.memo.find(text[p:])
	if e == nil {
		return false
	}
	end := p + len(e.text)
	masked := append(append(append(f.masked[:0], text[:p]...), '{', '}'), text[end:]...)
	f.masked = masked
	if b := f.scanWhole(masked); b != nil || len(f.msgs) != 1 {
		return false
	}
	m := &f.msgs[0]
	if m.result != (span{start: p, end: p + 2, kind: '{'}) {
		return false
	}
	shift := len(e.text) - 2
	for _, s := range []*span{&m.jsonrpc, &m.id, &m.method} {
		if s.present() && s.start > p {
			s.start += shift
			s.end += shift
		}
	}
	m.end += shift
	m.result = span{start: p, end: end, kind: '{'}
	for k, l := range e.lists {
		if l.val.present() {
			l.val.start += p
			l.val.end += p
			l.closing += p
		}
		l.read = 0 // nothing was read
		m.lists[k] = l
	}
	f.elems = f.elems[:0]
	for _, el := range e.elems {
		f.elems = append(f.elems, element{lead: el.lead + p, end: el.end + p})
	}
	f.usable = append(f.usable[:0], e.usable...)
	f.items = append(f.items[:0], e.items...)
	return true
}

// remember keeps the parse of the one message's result that scan has just
// read from text, when it is an object with a list.
func (f *filter) remember(text []byte) {
	if len(f.msgs) != 1 {
		return
	}
	m := &f.msgs[0]
	if m.result.kind != '{' {
		return
	}
	p := m.result.start
	e := &parsedResult{text: bytes.Clone(text[p:m.result.end])}
	hasList := false
	for k, l := range m.lists {
		if l.val.present() {
			hasList = true
			l.val.start -= p
			l.val.end -= p
			l.closing -= p
		}
		e.lists[k] = l
	}
	if !hasList {
		return
	}
	e.elems = make([]element, len(f.elems))
	for i, el := range f.elems {
		e.elems[i] = element{lead: el.lead - p, end: el.end - p}
	}
	e.usable = slices.Clone(f.usable)
	e.items = slices.Clone(f.items)
	e.size = len(e.text) + 16*len(e.elems) + 8*len(e.usable) + 256
	for _, it := range e.items {
		e.size += 64 + len(it.Name) + len(it.URI) + len(it.URITemplate) + len(it.URIPrefix)
	}
	f.srv.memo.add(e)
}
