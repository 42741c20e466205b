package upstream

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPollInterval is how often a static secret file is re-read.
// Kubernetes takes up to a minute or more to project a changed Secret, so
// a few seconds add little.
const DefaultPollInterval = 5 * time.Second

// maxStaticSecret caps a static secret file.
const maxStaticSecret = 16 << 10

// StaticConfig configures a static source: a secret managed outside
// mcpauthz (an API key, a personal access token) read from a file,
// typically a Kubernetes Secret volume, never from the configuration.
type StaticConfig struct {
	// Name names the source in policies, errors, logs and metrics.
	Name string
	// File holds the secret; trailing CR and LF are trimmed.
	File string
	// Header and Scheme as in TokenExchangeConfig (default: Authorization:
	// Bearer <secret>; for x-api-key and other headers the raw secret).
	Header string
	Scheme string
	// PollInterval is how often File is re-read (default
	// DefaultPollInterval).
	PollInterval time.Duration
}

// Static serves a secret from a file and follows its changes: the file is
// re-read every PollInterval through its path, so the symlink swap with
// which Kubernetes updates a Secret volume (the ..data link is replaced
// atomically) is seen like any other change. The file must be readable
// and non-empty when the source is created. Afterwards, a file that
// disappears, cannot be read, is empty or holds an invalid value makes the
// credential unavailable at once (fail closed): the last good value is
// not kept, because removing or emptying the secret is how an operator
// revokes it, and Kubernetes' atomic swap never exposes a partial file.
// A writer that truncates and rewrites in place may cause a short outage;
// write a new file and rename it instead.
type Static struct {
	name     string
	file     string
	header   string
	vb       valueBuilder
	interval time.Duration
	clk      clock
	obs      Observer
	log      *slog.Logger

	state atomic.Pointer[staticState]

	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	bg   background
}

// staticState is the current value or failure; immutable once published.
type staticState struct {
	value string
	err   *Error
	sum   [sha256.Size]byte // of the file content, to skip unchanged reads
}

// NewStatic validates cfg, reads the file (an unreadable, empty or invalid
// file is an error) and starts the poller.
func NewStatic(cfg StaticConfig, opts Options) (*Static, error) {
	s, err := newStatic(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("upstream credential %q: %w", cfg.Name, err)
	}
	return s, nil
}

func newStatic(cfg StaticConfig, opts Options) (*Static, error) {
	if cfg.Name == "" {
		return nil, errors.New("name is required")
	}
	if cfg.File == "" {
		return nil, errors.New("file is required")
	}
	s := &Static{
		name:     cfg.Name,
		file:     cfg.File,
		header:   orDefault(cfg.Header, defaultHeader),
		interval: cfg.PollInterval,
		clk:      opts.clk(),
		obs:      opts.observer(),
		log:      opts.logger(),
		done:     make(chan struct{}),
	}
	if err := checkHeaderName(s.header); err != nil {
		return nil, err
	}
	var err error
	if s.vb, err = newValueBuilder(s.header, cfg.Scheme); err != nil {
		return nil, err
	}
	if s.interval == 0 {
		s.interval = DefaultPollInterval
	}
	if s.interval < 0 {
		return nil, errors.New("poll_interval must not be negative")
	}
	st := s.read()
	if st.err != nil {
		return nil, fmt.Errorf("file: %s", st.err.detail)
	}
	s.state.Store(st)
	s.bg.add(s.poll)
	return s, nil
}

// Start starts watching the file for changes.
func (s *Static) Start() { s.bg.start(nil, &s.wg) }

// Name returns the source's name.
func (s *Static) Name() string { return s.name }

// Header returns the (lowercase) header the credential goes into.
func (s *Static) Header() string { return s.header }

// Credential returns the secret in its header, or the error of the last
// read. sub is not used, except that a policy choice of scopes fails with
// ReasonScopeNotAllowed: a static secret has none.
func (s *Static) Credential(_ context.Context, sub SubjectToken) (Credential, error) {
	if sub.Scopes != nil {
		return Credential{}, newError(s.name, ReasonScopeNotAllowed, "a static credential has no scopes to choose")
	}
	st := s.state.Load()
	if st.err != nil {
		return Credential{}, st.err
	}
	return Credential{Header: s.header, Value: st.value}, nil
}

func (s *Static) poll() {
	for sleep(s.clk, s.interval, s.done) {
		old := s.state.Load()
		start := time.Now()
		st := s.read()
		if st.err == nil && old.err == nil && st.sum == old.sum {
			continue
		}
		s.state.Store(st)
		if st.err != nil {
			s.obs.ObserveFetch(s.name, string(st.err.Reason), time.Since(start))
			if old.err == nil || old.err.Reason != st.err.Reason {
				s.log.Warn("static credential unavailable", "source", s.name, "file", s.file, "reason", string(st.err.Reason), "error", st.err.Error())
			}
			continue
		}
		s.obs.ObserveFetch(s.name, ResultOK, time.Since(start))
		s.log.Info("static credential reloaded", "source", s.name, "file", s.file)
	}
}

// read reads and checks the file. Errors name the file and the cause,
// never its content.
func (s *Static) read() *staticState {
	b, err := readLimited(s.file, maxStaticSecret)
	switch {
	case errors.Is(err, errTooLarge):
		return &staticState{err: newError(s.name, ReasonFileInvalid, "%s is larger than %d bytes", s.file, maxStaticSecret)}
	case err != nil:
		e := newError(s.name, ReasonFileUnreadable, "cannot read %s: %v", s.file, pathErrorCause(err))
		return &staticState{err: e}
	}
	sum := sha256.Sum256(b)
	secret := strings.TrimRight(string(b), "\r\n")
	if secret == "" {
		return &staticState{sum: sum, err: newError(s.name, ReasonFileEmpty, "%s is empty", s.file)}
	}
	v, ok := s.vb.build(secret)
	if !ok {
		what := "a header value (control characters, non-ASCII bytes or surrounding whitespace)"
		if s.vb.scheme != "" {
			what = "a " + s.vb.scheme + " credential (token68 characters only)"
		}
		return &staticState{sum: sum, err: newError(s.name, ReasonFileInvalid, "%s does not hold %s", s.file, what)}
	}
	return &staticState{value: v, sum: sum}
}

// pathErrorCause drops the path of an *fs.PathError (the message names it
// already) and keeps the cause.
func pathErrorCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Close stops the poller. Credential keeps answering with the last state.
func (s *Static) Close() error {
	s.once.Do(func() { close(s.done) })
	s.wg.Wait()
	return nil
}
