package asynclog_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mcpauthz/mcpauthz/internal/asynclog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is an underlying writer that records each Write, and can be
// blocked.
type recorder struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	gate   chan struct{} // when non-nil, each Write waits for it to close
	// entered, when non-nil, receives a value as a Write starts.
	entered chan struct{}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.entered != nil {
		select {
		case r.entered <- struct{}{}:
		default:
		}
	}
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	return r.buf.Write(p)
}

func (r *recorder) snapshot() (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String(), r.writes
}

func lines(n int, tag string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %d\n", tag, i)
	}
	return out
}

// TestOrderAndBatching: lines arrive whole and in order, in far fewer
// writes than lines.
func TestOrderAndBatching(t *testing.T) {
	rec := &recorder{}
	w := asynclog.New(rec, asynclog.Options{Interval: 50 * time.Millisecond})
	want := lines(1000, "line")
	for _, l := range want {
		if n, err := w.Write([]byte(l)); n != len(l) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, writes := rec.snapshot()
	if got != strings.Join(want, "") {
		t.Fatalf("output differs from the lines written, in order:\n%.300s", got)
	}
	if writes > 5 {
		t.Errorf("%d writes for 1000 lines within one interval, want a handful", writes)
	}
	if d := w.Dropped(); d != 0 {
		t.Errorf("Dropped = %d", d)
	}
}

// TestConcurrentWritersKeepLinesWhole: under concurrent writers every line
// is written once, whole, and each writer's lines keep their order.
func TestConcurrentWritersKeepLinesWhole(t *testing.T) {
	rec := &recorder{}
	w := asynclog.New(rec, asynclog.Options{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, l := range lines(500, "g"+strconv.Itoa(g)) {
				w.Write([]byte(l))
			}
		}()
	}
	wg.Wait()
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := rec.snapshot()
	next := map[string]int{}
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		tag, num, ok := strings.Cut(l, " ")
		i, err := strconv.Atoi(num)
		if !ok || err != nil || i != next[tag] {
			t.Fatalf("line %q out of order or torn (want %s %d)", l, tag, next[tag])
		}
		next[tag]++
	}
	for g := range 4 {
		if n := next["g"+strconv.Itoa(g)]; n != 500 {
			t.Errorf("writer %d: %d lines, want 500", g, n)
		}
	}
}

// TestDropsUnderBlockedWriter: with the underlying writer blocked, Write
// still returns at once; what does not fit is dropped and counted, and
// what fitted is written in order once the writer moves again.
func TestDropsUnderBlockedWriter(t *testing.T) {
	gate := make(chan struct{})
	rec := &recorder{gate: gate, entered: make(chan struct{}, 1)}
	w := asynclog.New(rec, asynclog.Options{MaxBuffered: 100, Interval: time.Millisecond})
	w.Write([]byte("first line\n"))
	select { // the first batch is out of the buffer, blocked in Write
	case <-rec.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first batch never reached the underlying writer")
	}
	start := time.Now()
	for range 100 {
		w.Write([]byte("0123456789\n")) // 11 bytes: 9 fit in 100
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("100 writes against a blocked writer took %v: Write must not wait", el)
	}
	if d := w.Dropped(); d != 91 {
		t.Errorf("Dropped = %d, want 91", d)
	}
	close(gate)
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "first line\n" + strings.Repeat("0123456789\n", 9)
	if got, _ := rec.snapshot(); got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
}

// TestFlushAndClose: Flush returns once what was written before it is
// out; Close writes the rest, and later lines are written synchronously.
func TestFlushAndClose(t *testing.T) {
	rec := &recorder{}
	w := asynclog.New(rec, asynclog.Options{Interval: time.Hour})
	w.Write([]byte("a\n"))
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := rec.snapshot(); got != "a\n" {
		t.Fatalf("after Flush: %q, want %q", got, "a\n")
	}
	w.Write([]byte("b\n"))
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := rec.snapshot(); got != "a\nb\n" {
		t.Fatalf("after Close: %q", got)
	}
	w.Write([]byte("c\n"))
	if got, _ := rec.snapshot(); got != "a\nb\nc\n" {
		t.Fatalf("a Write after Close is not written at once: %q", got)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestCloseDoesNotHangOnABlockedWriter: Close gives up when its context
// ends, counting what it could not write.
func TestCloseDoesNotHangOnABlockedWriter(t *testing.T) {
	gate := make(chan struct{})
	rec := &recorder{gate: gate}
	w := asynclog.New(rec, asynclog.Options{Interval: time.Millisecond})
	w.Write([]byte("stuck\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := w.Close(ctx); err == nil {
		t.Fatal("Close returned nil with the writer blocked")
	}
	if w.Dropped() != 1 {
		t.Errorf("Dropped = %d, want 1", w.Dropped())
	}
	close(gate) // the goroutine's write returns, and it exits (goleak)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, n := rec.snapshot(); n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSlogLines: under a JSON handler, the output is byte for byte what
// the handler writes to the underlying writer directly.
func TestSlogLines(t *testing.T) {
	var direct bytes.Buffer
	rec := &recorder{}
	w := asynclog.New(rec, asynclog.Options{})
	opts := &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	for _, l := range []*slog.Logger{slog.New(slog.NewJSONHandler(&direct, opts)), slog.New(slog.NewJSONHandler(w, opts))} {
		for i := range 50 {
			l.Info("decision", "request_id", strconv.Itoa(i), "decision", "allow", "status", 200)
			l.Warn("other", "n", i)
		}
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := rec.snapshot(); got != direct.String() {
		t.Errorf("asynchronous output differs:\n%s\nwant:\n%s", got, direct.String())
	}
}

// TestDropsReported: OnDrop hears of the lines a full buffer dropped.
func TestDropsReported(t *testing.T) {
	gate := make(chan struct{})
	rec := &recorder{gate: gate, entered: make(chan struct{}, 1)}
	reported := make(chan uint64, 4)
	w := asynclog.New(rec, asynclog.Options{MaxBuffered: 20, Interval: time.Millisecond, OnDrop: func(n uint64) { reported <- n }})
	w.Write([]byte("first line\n"))
	<-rec.entered
	for range 5 {
		w.Write([]byte("0123456789\n")) // one fits, four are dropped
	}
	close(gate)
	select {
	case n := <-reported:
		if n != 4 {
			t.Errorf("OnDrop(%d), want 4", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnDrop was not called")
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
