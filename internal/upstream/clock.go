package upstream

import "time"

// clock is the time source of the sources: cache expiry, refresh and poll
// scheduling. Tests replace it with a manual clock; deadlines of HTTP calls
// always use real time (context timeouts).
type clock interface {
	Now() time.Time
	NewTimer(d time.Duration) timer
}

type timer interface {
	C() <-chan time.Time
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

// sleep waits for d on c, or until done is closed; it reports whether the
// full time passed.
func sleep(c clock, d time.Duration, done <-chan struct{}) bool {
	t := c.NewTimer(d)
	select {
	case <-t.C():
		return true
	case <-done:
		t.Stop()
		return false
	}
}
