package extproc

import (
	"bytes"
	"context"
)

// sseScanner finds the ends of server-sent events in a byte stream that
// arrives in arbitrary pieces. An event ends with an empty line; lines end
// with CRLF, LF or CR (the event-stream grammar). A CR that ends the input
// may be the first half of a CRLF, so an event whose blank line ends in CR
// is only complete once the next byte (or the end of the stream) is seen.
type sseScanner struct {
	lineStart  bool // at the start of a line
	afterCR    bool // the previous byte was a CR line end
	endPending bool // that CR ended the blank line that ends the event
}

func (s *sseScanner) reset() { *s = sseScanner{lineStart: true} }

// scan scans data[from:] and returns the offset just past the end of the
// current event, or -1 when the event continues beyond data. After an event
// end the scanner is ready for the next event, starting at that offset.
func (s *sseScanner) scan(data []byte, from int) int {
	for i := from; i < len(data); i++ {
		c := data[i]
		if s.afterCR {
			s.afterCR = false
			if s.endPending {
				s.reset()
				if c == '\n' {
					return i + 1
				}
				return i
			}
			if c == '\n' {
				continue // second half of a CRLF
			}
		}
		switch c {
		case '\r':
			s.afterCR = true
			s.endPending = s.lineStart
			s.lineStart = true
		case '\n':
			if s.lineStart {
				s.reset()
				return i + 1
			}
			s.lineStart = true
		default:
			s.lineStart = false
			// Skip to the line end: events are mostly one long data line.
			j := lineEnd(data[i+1:])
			if j < 0 {
				return -1
			}
			i += j
		}
	}
	return -1
}

// lineEnd returns the index of the first CR or LF in b, or -1.
func lineEnd(b []byte) int {
	n := bytes.IndexByte(b, '\n')
	seg := b
	if n >= 0 {
		seg = b[:n]
	}
	if r := bytes.IndexByte(seg, '\r'); r >= 0 {
		return r
	}
	return n
}

// sseLine is one line of an event: content ev[start:end], line end
// ev[end:next].
type sseLine struct{ start, end, next int }

var utf8BOM = []byte{0xef, 0xbb, 0xbf}

// sseStream filters an event stream. Every complete event is checked and
// emitted at once (unchanged, filtered, or replaced by an error event); only
// the bytes of the event being assembled are held, up to max.
type sseStream struct {
	f        *filter
	max      int
	sc       sseScanner
	pend     []byte // the incomplete event (empty while skipping)
	scanned  int    // bytes of pend the scanner has seen
	skipping bool   // the current event exceeded max: drop it to its end
	started  bool   // an event has been processed (a BOM only opens the stream)

	lines []sseLine
	data  []byte
}

// reset prepares the stream state for another stream (see exchange.reset).
func (s *sseStream) reset() {
	*s = sseStream{pend: trim(s.pend, 64<<10), lines: trim(s.lines, 256), data: trim(s.data, 64<<10)}
}

func (s *sseStream) init(f *filter, max int) {
	s.f, s.max = f, max
	s.sc.reset()
}

// write takes one body chunk and returns the bytes to send now. The result
// may alias chunk; it is never modified later.
func (s *sseStream) write(ctx context.Context, chunk []byte) []byte {
	data, fromChunk := chunk, true
	if len(s.pend) > 0 {
		s.pend = append(s.pend, chunk...)
		data, fromChunk = s.pend, false
	}
	// out is a new buffer each time: the bytes of a sent message must not
	// change afterwards (grpc-go may read them lazily).
	var out []byte
	plain := fromChunk // out is data[:start], not copied yet
	start, pos := 0, s.scanned
	if fromChunk {
		pos = 0
	}
	for {
		end := s.sc.scan(data, pos)
		if end < 0 {
			break
		}
		ev := data[start:end]
		var rep []byte
		var changed bool
		if s.skipping || len(ev) > s.max {
			// The limit is on the event, whichever chunks brought it.
			s.skipping = false
			rep, changed = s.tooLarge(ctx), true
		} else {
			rep, changed = s.event(ctx, ev)
		}
		if changed && plain {
			out = append(out, data[:start]...)
			plain = false
		}
		switch {
		case changed:
			out = append(out, rep...)
		case !plain:
			out = append(out, ev...)
		}
		start, pos = end, end
	}
	rest := data[start:]
	switch {
	case s.skipping:
		s.pend, s.scanned = s.pend[:0], 0
	case len(rest) > s.max:
		s.skipping = true
		s.pend, s.scanned = s.pend[:0], 0
	default:
		n := copy(s.pend[:cap(s.pend)], rest)
		if n < len(rest) {
			s.pend = append(s.pend[:n], rest[n:]...)
		} else {
			s.pend = s.pend[:n]
		}
		s.scanned = len(rest)
	}
	if plain {
		return data[:start]
	}
	return out
}

// finish ends the stream: a held event is processed as it is (an event
// that lacks its blank line is filtered too, although clients drop it).
func (s *sseStream) finish(ctx context.Context) []byte {
	switch {
	case s.skipping:
		s.skipping = false
		return s.tooLarge(ctx)
	case len(s.pend) == 0:
		return nil
	}
	ev := s.pend
	s.pend, s.scanned = nil, 0 // ev may be sent as it is: never reuse its array
	if len(ev) > s.max {
		return s.tooLarge(ctx)
	}
	rep, changed := s.event(ctx, ev)
	s.sc.reset()
	if changed {
		return rep
	}
	return ev
}

// tooLarge is the event that replaces one larger than max.
func (s *sseStream) tooLarge(ctx context.Context) []byte {
	s.started = true
	body := s.f.failPending(ctx, ReasonTooLarge, "SSE event larger than the buffer limit")
	out := []byte("data: ")
	out = append(out, body...)
	return append(out, "\n\n"...)
}

// event checks one event and returns its replacement when it changes.
func (s *sseStream) event(ctx context.Context, ev []byte) ([]byte, bool) {
	bom := 0
	if !s.started {
		s.started = true
		if bytes.HasPrefix(ev, utf8BOM) {
			bom = len(utf8BOM)
		}
	}
	s.lines = s.lines[:0]
	first, ndata := -1, 0
	for i := bom; i < len(ev); {
		l := sseLine{start: i}
		if j := lineEnd(ev[i:]); j >= 0 {
			i += j
		} else {
			i = len(ev)
		}
		l.end = i
		if i < len(ev) {
			if ev[i] == '\r' && i+1 < len(ev) && ev[i+1] == '\n' {
				i++
			}
			i++
		}
		l.next = i
		if isDataLine(ev[l.start:l.end]) {
			if first < 0 {
				first = len(s.lines)
			}
			ndata++
		}
		s.lines = append(s.lines, l)
	}
	if ndata == 0 {
		return nil, false
	}
	var data []byte
	if ndata == 1 {
		data = dataValue(ev, s.lines[first])
	} else {
		data = s.data[:0]
		n := 0
		for _, l := range s.lines {
			if isDataLine(ev[l.start:l.end]) {
				if n > 0 {
					data = append(data, '\n')
				}
				data = append(data, dataValue(ev, l)...)
				n++
			}
		}
		s.data = data
	}
	newData, changed := s.f.rewrite(ctx, data, true)
	if !changed {
		return nil, false
	}
	return rebuildEvent(ev[:bom], ev, s.lines, first, newData), true
}

func isDataLine(line []byte) bool {
	return bytes.HasPrefix(line, []byte("data")) && (len(line) == 4 || line[4] == ':')
}

func dataValue(ev []byte, l sseLine) []byte {
	v := ev[l.start+4 : l.end]
	if len(v) > 0 {
		v = v[1:] // the colon
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
	}
	return v
}

// rebuildEvent writes the event with its data lines replaced by data, at
// the place of the first one; every other line (id, event, retry, comments,
// the blank line) is kept as it was.
func rebuildEvent(bom, ev []byte, lines []sseLine, first int, data []byte) []byte {
	out := make([]byte, 0, len(bom)+len(data)+len(ev)/4+16)
	out = append(out, bom...)
	for i, l := range lines {
		line := ev[l.start:l.end]
		if !isDataLine(line) {
			out = append(out, ev[l.start:l.next]...)
			continue
		}
		if i != first {
			continue
		}
		eol := ev[l.end:l.next]
		last := len(eol) == 0 // the stream ended on this line
		if last {
			eol = []byte{'\n'}
		}
		for {
			part := data
			j := bytes.IndexByte(data, '\n')
			if j >= 0 {
				part, data = data[:j], data[j+1:]
			}
			out = append(out, "data: "...)
			out = append(out, part...)
			if j < 0 {
				if !last {
					out = append(out, eol...)
				}
				break
			}
			out = append(out, eol...)
		}
	}
	return out
}
