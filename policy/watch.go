package policy

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Watch polls the files of src every interval and loads them when their
// content changes, until ctx is done. A change that fails to load is logged
// (Warn, with every error; Error when it compiled but failed the activation
// check) and the last good policy keeps serving; the same broken content is
// not retried until it changes again. When the files return to the content
// of the current policy after a failed attempt, that is reported to
// OnReload as a success: what is on disk is what serves again.
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
	if g := e.gen.Load(); g != nil {
		tried = g.sum
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		snap, err := readSource(src, true)
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
		if snap.sum == tried {
			continue
		}
		tried = snap.sum
		// Content equal to the current policy's (a revert after a broken
		// edit) keeps the generation and reports success.
		if err := e.loadSnapshot(ctx, src, snap); err != nil {
			e.logRejected(ctx, "policy reload failed; keeping the last good policy", err, slog.String("rejected", snap.revision()))
		}
	}
}

// logRejected logs a policy that was not activated: at Warn when it could
// not be read or compiled, at Error when it compiled but failed its
// activation check (a policy someone meant to serve, which would have failed
// requests), with the revision that keeps serving.
func (e *Engine) logRejected(ctx context.Context, msg string, err error, attrs ...slog.Attr) {
	level := slog.LevelWarn
	var ae *ActivationError
	if errors.As(err, &ae) {
		level, msg = slog.LevelError, "policy refused by the activation check; keeping the last good policy"
		attrs = append(attrs, slog.String("reason", ae.Reason()))
	}
	attrs = append([]slog.Attr{slog.String("revision", e.Revision())}, attrs...)
	e.logger.LogAttrs(ctx, level, msg, append(attrs, slog.Any("error", err))...)
}
