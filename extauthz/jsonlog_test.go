package extauthz

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// viaSlog is the line slog's own JSON handler writes for the record.
func viaSlog(t testing.TB, now time.Time, level slog.Level, msg string, attrs []slog.Attr) []byte {
	var buf bytes.Buffer
	r := slog.NewRecord(now, level, msg, 0)
	r.AddAttrs(attrs...)
	if err := slog.NewJSONHandler(&buf, nil).Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// viaLine is the line writeJSONLine writes, and whether it wrote one.
func viaLine(now time.Time, level slog.Level, msg string, attrs []slog.Attr) ([]byte, bool) {
	var buf bytes.Buffer
	h := NewJSONHandler(&buf, nil).(JSONLineHandler)
	ok := writeJSONLine(h, now, level, msg, attrs)
	return buf.Bytes(), ok
}

// awkward holds every class of character JSON string encoding treats
// apart.
var awkward = []string{
	"", "plain", `quote " and backslash \`, "newline\n return\r tab\t", "nul \x00 bell \a backspace \b formfeed \f esc \x1b unit \x1f del \x7f",
	"html <script>&amp;</script>", "ünïcödé 日本 🙂", "invalid \xff\xfe utf-8 \xc3", "separators \u2028 and \u2029", "surrogate \xed\xa0\x80",
}

// TestJSONLineIsSlogs: for every attribute kind the decision log uses and
// every awkward string, the line is byte for byte the one slog's
// JSONHandler writes.
func TestJSONLineIsSlogs(t *testing.T) {
	now := time.Date(2026, 12, 3, 22, 58, 1, 123456789, time.FixedZone("CET", 3600))
	for _, s := range awkward {
		attrs := []slog.Attr{
			slog.String("request_id", s), slog.String(s, "as key"), slog.Int("status", 403), slog.Int("negative", -7),
			slog.Any("required_scopes", []string{s, "tools:get_weather", s}), slog.Any("empty", []string{}),
			slog.Duration("latency", 1234567*time.Nanosecond),
		}
		for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug, slog.LevelWarn} {
			want := viaSlog(t, now, level, "decision "+s, attrs)
			got, ok := viaLine(now, level, "decision "+s, attrs)
			if !ok || !bytes.Equal(got, want) {
				t.Errorf("%q at %v:\n got %s (written %v)\nwant %s", s, level, got, ok, want)
			}
		}
	}
}

// TestJSONLineDeclines: an attribute kind writeJSONLine does not encode
// makes it write nothing, and logLine hands the record to slog.
func TestJSONLineDeclines(t *testing.T) {
	now := time.Now()
	for name, a := range map[string]slog.Attr{
		"bool":      slog.Bool("b", true),
		"float":     slog.Float64("f", 1.5),
		"group":     slog.Group("g", slog.String("k", "v")),
		"nil slice": slog.Any("s", []string(nil)),
		"map":       slog.Any("m", map[string]int{"a": 1}),
	} {
		if got, ok := viaLine(now, slog.LevelInfo, "m", []slog.Attr{slog.String("a", "1"), a}); ok || len(got) != 0 {
			t.Errorf("%s: written %v: %q", name, ok, got)
		}
		var buf bytes.Buffer
		logLine(context.Background(), slog.New(NewJSONHandler(&buf, nil)), slog.LevelInfo, "m", []slog.Attr{a})
		if !strings.Contains(buf.String(), `"msg":"m"`) || strings.Count(buf.String(), "\n") != 1 {
			t.Errorf("%s: slog did not write the line: %q", name, buf.String())
		}
	}
}

// TestNewJSONHandlerLineCapability: only a handler whose format the
// decision log reproduces takes lines.
func TestNewJSONHandlerLineCapability(t *testing.T) {
	var buf bytes.Buffer
	for name, tc := range map[string]struct {
		h    slog.Handler
		want bool
	}{
		"default":      {NewJSONHandler(&buf, nil), true},
		"level":        {NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}), true},
		"replace attr": {NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr { return a }}), false},
		"add source":   {NewJSONHandler(&buf, &slog.HandlerOptions{AddSource: true}), false},
		"with attrs":   {NewJSONHandler(&buf, nil).WithAttrs([]slog.Attr{slog.String("component", "x")}), false},
		"with group":   {NewJSONHandler(&buf, nil).WithGroup("g"), false},
	} {
		if _, got := tc.h.(JSONLineHandler); got != tc.want {
			t.Errorf("%s: JSONLineHandler %v, want %v", name, got, tc.want)
		}
	}
}

// TestJSONLinesDoNotInterleave: lines from writeJSONLine and from slog,
// written at once from many goroutines, arrive whole.
func TestJSONLinesDoNotInterleave(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(NewJSONHandler(&buf, nil))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if g%2 == 0 {
					logLine(context.Background(), logger, slog.LevelInfo, "decision", []slog.Attr{slog.String("k", strings.Repeat("x", 300))})
				} else {
					logger.Info("other", "b", true)
				}
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1600 {
		t.Fatalf("%d lines, want 1600", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"time":"`) || !strings.HasSuffix(l, "}") || strings.Count(l, `"time"`) != 1 {
			t.Fatalf("interleaved line: %.200q", l)
		}
	}
}

// FuzzJSONLineIsSlogs: any key, message and values encode as slog's
// handler encodes them.
func FuzzJSONLineIsSlogs(f *testing.F) {
	for _, s := range awkward {
		f.Add(s, s, s, int64(len(s)))
	}
	f.Fuzz(func(t *testing.T, key, msg, value string, n int64) {
		now := time.Unix(0, n).UTC()
		if y := now.Year(); y < 0 || y >= 10000 {
			return // slog writes an error text there; the decision log's times are now
		}
		attrs := []slog.Attr{slog.String(key, value), slog.Int64("n", n), slog.Any("scopes", []string{value, key}), slog.Duration("latency", time.Duration(n))}
		want := viaSlog(t, now, slog.LevelInfo, msg, attrs)
		if got, ok := viaLine(now, slog.LevelInfo, msg, attrs); !ok || !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}

// BenchmarkDecisionLogLine: one allowed decision's line through slog's
// JSON handler and through writeJSONLine.
func BenchmarkDecisionLogLine(b *testing.B) {
	attrs := []slog.Attr{
		slog.String("request_id", "7c9e6679-7425-40de-944b-e07fc1f90ae7"), slog.String("decision", "allow"), slog.Int("status", 200),
		slog.String("reason", "policy_allow"), slog.String("http_method", "POST"), slog.String("path", "/mcp"),
		slog.String("mcp_method", "tools/call"), slog.String("tool", "get_weather"), slog.String("issuer", "https://issuer.example.com"),
		slog.String("subject", "alice"), slog.String("client_id", "client-1"), slog.String("policy_reason", "tool_scope"),
		slog.String("policy_revision", "sha256:0123456789abcdef"), slog.Duration("latency", 21*time.Microsecond),
	}
	for name, logger := range map[string]*slog.Logger{
		"slog": slog.New(slog.NewJSONHandler(discard{}, nil)),
		"line": slog.New(NewJSONHandler(discard{}, nil)),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				logLine(context.Background(), logger, slog.LevelInfo, "decision", attrs)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
