package extauthz

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// JSONLineHandler is a slog.Handler that also takes whole log lines in its
// own format, that of slog.JSONHandler with no attributes, groups or
// ReplaceAttr. The decision log encodes its line itself for such a
// handler: through slog's generic path the line cost more than the rest of
// an allowed check's logging and metrics together.
type JSONLineHandler interface {
	slog.Handler
	// WriteJSONLine writes one complete line, newline included.
	WriteJSONLine(line []byte) error
}

// NewJSONHandler returns slog's JSON handler writing to w, which also
// implements JSONLineHandler when opts has no ReplaceAttr and no
// AddSource (the line would differ otherwise).
func NewJSONHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if opts != nil && (opts.ReplaceAttr != nil || opts.AddSource) {
		return slog.NewJSONHandler(w, opts)
	}
	lw := &lockedWriter{w: w}
	return jsonLineHandler{JSONHandler: slog.NewJSONHandler(lw, opts), w: lw}
}

// jsonLineHandler is a slog.JSONHandler whose writer is shared, under one
// lock, with WriteJSONLine. WithAttrs and WithGroup return plain slog
// handlers, which the decision log treats as any other.
type jsonLineHandler struct {
	*slog.JSONHandler
	w *lockedWriter
}

func (h jsonLineHandler) WriteJSONLine(line []byte) error {
	_, err := h.w.Write(line)
	return err
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var lineBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledLine keeps a rare huge line's buffer out of the pool.
const maxPooledLine = 16 << 10

// writeJSONLine encodes msg and attrs as slog.JSONHandler would, at time
// now, and writes the line to h. It reports false, having written nothing,
// for an attribute kind it does not encode (the caller then logs through
// slog).
func writeJSONLine(h JSONLineHandler, now time.Time, level slog.Level, msg string, attrs []slog.Attr) bool {
	bp := lineBuffers.Get().(*[]byte)
	b := append((*bp)[:0], `{"time":"`...)
	b = now.Round(0).AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":`...)
	b = appendJSONString(b, level.String(), false)
	b = append(b, `,"msg":`...)
	b = appendJSONString(b, msg, false)
	ok := true
attrs:
	for _, a := range attrs {
		b = append(b, ',')
		b = appendJSONString(b, a.Key, false)
		b = append(b, ':')
		switch v := a.Value; v.Kind() {
		case slog.KindString:
			b = appendJSONString(b, v.String(), false)
		case slog.KindInt64:
			b = strconv.AppendInt(b, v.Int64(), 10)
		case slog.KindDuration:
			b = strconv.AppendInt(b, int64(v.Duration()), 10) // as json.Marshal does
		case slog.KindAny:
			ss, isStrings := v.Any().([]string)
			if !isStrings || ss == nil {
				ok = false
				break attrs
			}
			b = append(b, '[')
			for i, s := range ss {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, s, true)
			}
			b = append(b, ']')
		default:
			ok = false
			break attrs
		}
	}
	if ok {
		b = append(b, "}\n"...)
		_ = h.WriteJSONLine(b) // a log write error is not the request's
	}
	if cap(b) <= maxPooledLine {
		*bp = b
		lineBuffers.Put(bp)
	}
	return ok
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted as slog's JSON handler writes a string
// (marshalled is false) or as encoding/json marshals one inside a value
// (true: \b and \f in short form). Both write invalid UTF-8 as \ufffd and
// escape U+2028 and U+2029; neither escapes HTML characters.
func appendJSONString(b []byte, s string, marshalled bool) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch {
			case c == '\\' || c == '"':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case marshalled && c == '\b':
				b = append(b, '\\', 'b')
			case marshalled && c == '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// logLine writes the line of msg and attrs through the logger's handler:
// encoded here when it is a JSONLineHandler, through slog otherwise.
func logLine(ctx context.Context, logger *slog.Logger, level slog.Level, msg string, attrs []slog.Attr) {
	if h, ok := logger.Handler().(JSONLineHandler); ok && writeJSONLine(h, time.Now(), level, msg, attrs) {
		return
	}
	logger.LogAttrs(ctx, level, msg, attrs...)
}
