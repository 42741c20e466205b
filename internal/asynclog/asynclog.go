// Package asynclog is a log output that never blocks the code that logs:
// an io.Writer to put under a slog handler (slog.NewJSONHandler(w, …)) in
// front of stderr or a file.
//
// # Flow
//
// Write copies the line into a bounded in-memory buffer and returns; one
// goroutine, started by New, writes what has gathered to the underlying
// writer in a single Write (one write(2) for many lines). A batch starts
// with the first line written into an empty buffer and is written after
// Options.Interval, or at once when the buffer passes a quarter of its
// limit or Flush asks. An idle Writer does not wake up.
//
// When the buffer is full (the underlying writer is slower than the lines
// arrive, or blocked), a line is dropped whole and counted (Dropped); it
// never waits. Flush waits for what was written before it; Close flushes,
// stops the goroutine, and from then on writes synchronously, so that the
// last lines of a process are not lost.
//
// # Order
//
// Lines reach the underlying writer in the order of the Write calls, and
// each Write is written whole: a slog handler writes one record per Write,
// so every line that shares a Writer (decision log and the rest) keeps its
// place relative to the others. Only drops leave gaps.
package asynclog

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultMaxBuffered = 1 << 20
	DefaultInterval    = 5 * time.Millisecond
)

// Options tune a Writer; the zero value selects the defaults.
type Options struct {
	// MaxBuffered bounds the bytes waiting to be written; a line that does
	// not fit is dropped. Default 1 MiB (about 2 500 decision lines).
	MaxBuffered int
	// Interval is how long a batch gathers lines before it is written.
	// Default 5ms.
	Interval time.Duration
	// OnDrop, when set, is told how many lines were dropped since its last
	// call, at most once per DropReportInterval, from the Writer's
	// goroutine (it may log through the Writer: Write never waits).
	OnDrop func(dropped uint64)
}

// DropReportInterval spaces the calls of Options.OnDrop.
const DropReportInterval = 10 * time.Second

// Writer is an asynchronous, batching, bounded io.Writer. Its methods are
// safe for concurrent use.
type Writer struct {
	out      io.Writer
	max      int
	interval time.Duration
	onDrop   func(uint64)
	// reported and lastReport belong to the goroutine (run).
	reported   uint64
	lastReport time.Time

	mu       sync.Mutex
	pending  []byte
	accepted uint64 // lines accepted into pending since New
	written  uint64 // lines handed to out
	waiters  []waiter
	closed   bool

	dropped atomic.Uint64
	wake    chan struct{} // a batch started
	now     chan struct{} // write the batch without waiting for Interval
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// waiter is a Flush waiting for the lines up to target.
type waiter struct {
	target uint64
	ch     chan struct{}
}

// New starts a Writer in front of out; Close stops it.
func New(out io.Writer, opts Options) *Writer {
	w := &Writer{
		out:      out,
		max:      opts.MaxBuffered,
		interval: opts.Interval,
		onDrop:   opts.OnDrop,
		wake:     make(chan struct{}, 1),
		now:      make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if w.max <= 0 {
		w.max = DefaultMaxBuffered
	}
	if w.interval <= 0 {
		w.interval = DefaultInterval
	}
	go w.run()
	return w
}

// Write queues a copy of p (one log line) and returns len(p), nil; when
// the buffer has no room for p, p is dropped and counted. After Close it
// writes to the underlying writer directly.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed {
		defer w.mu.Unlock()
		return w.out.Write(p)
	}
	if len(w.pending)+len(p) > w.max {
		w.mu.Unlock()
		w.dropped.Add(1)
		return len(p), nil
	}
	first := len(w.pending) == 0
	w.pending = append(w.pending, p...)
	w.accepted++
	full := len(w.pending) >= w.max/4
	w.mu.Unlock()
	if first {
		signal(w.wake)
	}
	if full {
		signal(w.now)
	}
	return len(p), nil
}

// Dropped is the number of lines dropped since New because the buffer was
// full.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Flush waits until every line written before it has been handed to the
// underlying writer, or ctx is done.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	if w.closed || w.written >= w.accepted {
		w.mu.Unlock()
		return nil
	}
	wt := waiter{target: w.accepted, ch: make(chan struct{})}
	w.waiters = append(w.waiters, wt)
	w.mu.Unlock()
	signal(w.now)
	select {
	case <-wt.ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes what is buffered, waiting for it until ctx is done, and
// stops the goroutine; later Writes go straight to the underlying writer.
// Lines still buffered when ctx ends are counted as dropped. Close is
// idempotent.
func (w *Writer) Close(ctx context.Context) error {
	err := w.Flush(ctx)
	w.once.Do(func() { close(w.stop) })
	if err != nil {
		// The underlying writer is stuck: do not wait for the goroutine,
		// which exits once its write returns.
		w.mu.Lock()
		if !w.closed {
			w.closed = true
			w.dropped.Add(w.accepted - w.written)
			w.pending = nil
		}
		w.mu.Unlock()
		return err
	}
	<-w.done
	return nil
}

func (w *Writer) run() {
	defer close(w.done)
	var spare []byte
	t := time.NewTimer(w.interval)
	t.Stop()
	for {
		urgent := false
		select {
		case <-w.wake:
		case <-w.now:
			// A Flush (or a full buffer) is waiting: no gathering. Its
			// token is used up here, so waiting for another would hang.
			urgent = true
		case <-w.stop:
			w.final(spare)
			return
		}
		if !urgent {
			// Let the batch gather, unless it becomes urgent.
			t.Reset(w.interval)
			select {
			case <-t.C:
			case <-w.now:
				t.Stop()
			case <-w.stop:
				t.Stop()
				w.final(spare)
				return
			}
		}
		spare = w.writeBatch(spare)
		w.reportDrops()
	}
}

// reportDrops tells OnDrop about new drops, at most once per
// DropReportInterval.
func (w *Writer) reportDrops() {
	d := w.dropped.Load()
	if w.onDrop == nil || d == w.reported || time.Since(w.lastReport) < DropReportInterval {
		return
	}
	n := d - w.reported
	w.reported, w.lastReport = d, time.Now()
	w.onDrop(n)
}

// writeBatch swaps the buffers, writes the batch and wakes the Flushes it
// satisfied; it returns the emptied buffer for the next swap.
func (w *Writer) writeBatch(spare []byte) []byte {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return spare
	}
	batch := w.pending
	w.pending = spare[:0]
	upTo := w.accepted
	w.mu.Unlock()
	if len(batch) > 0 {
		// A failed write loses its lines; slog ignores write errors too.
		_, _ = w.out.Write(batch)
	}
	w.mu.Lock()
	w.written = upTo
	kept := w.waiters[:0]
	for _, wt := range w.waiters {
		if wt.target <= upTo {
			close(wt.ch)
		} else {
			kept = append(kept, wt)
		}
	}
	w.waiters = kept
	w.mu.Unlock()
	return batch
}

// final writes what is left and switches to synchronous writes, under the
// lock, so that no line is written out of order.
func (w *Writer) final(spare []byte) {
	w.writeBatch(spare)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	if len(w.pending) > 0 {
		_, _ = w.out.Write(w.pending)
	}
	w.pending = nil
	w.written = w.accepted
	for _, wt := range w.waiters {
		close(wt.ch)
	}
	w.waiters = nil
	w.closed = true
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
