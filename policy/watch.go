package policy

import (
	"context"
	"log/slog"
	"time"
)

// Watch polls the files of src every interval and loads them when their
// content changes, until ctx is done. A change that fails to load is logged
// (Warn, with every error) and the last good policy keeps serving; the same
// broken content is not retried until it changes again.
//
// Watch is for sources on the OS file system: it returns at once when src.FS
// is set (embedded policies never change) or interval is not positive.
func (e *Engine) Watch(ctx context.Context, src Source, interval time.Duration) {
	if src.FS != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var (
		tried   [32]byte // content last handed to Load, good or bad
		lastErr string   // last read error, to log it once
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		snap, err := readSource(src, false)
		if err != nil {
			// Typically a file in the middle of being replaced; the next
			// poll will see the result.
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				e.logger.LogAttrs(ctx, slog.LevelWarn, "policy files unreadable; keeping the current policy",
					slog.String("revision", e.Revision()), slog.Any("error", err))
			}
			continue
		}
		lastErr = ""
		if g := e.gen.Load(); g != nil && g.sum == snap.sum {
			tried = snap.sum
			continue
		}
		if snap.sum == tried {
			continue
		}
		tried = snap.sum
		if err := e.loadSnapshot(ctx, src, snap); err != nil {
			e.logger.LogAttrs(ctx, slog.LevelWarn, "policy reload failed; keeping the last good policy",
				slog.String("revision", e.Revision()), slog.String("rejected", snap.revision()), slog.Any("error", err))
		}
	}
}
