package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and bounds of ClientCredentialsConfig.
const (
	// DefaultClientCredentialsTimeout bounds one token request. It runs in
	// the background, never on a request, so it can be generous.
	DefaultClientCredentialsTimeout = 10 * time.Second
	// missingLifetime is assumed for an answer without expires_in: the
	// token is used for at most that long and refreshed before.
	missingLifetime = time.Minute
	// Refresh retries back off from retryMin to retryMax.
	retryMin = time.Second
	retryMax = 30 * time.Second
)

// ClientCredentialsConfig configures a client_credentials source: a token
// for mcpauthz itself (RFC 6749 §4.4), the same for every request.
type ClientCredentialsConfig struct {
	// Name names the source in policies, errors, logs and metrics.
	Name string
	// TokenEndpoint, or Issuer for discovery, as in TokenExchangeConfig.
	TokenEndpoint string
	Issuer        string
	// Scopes, Audiences and Resources are sent as scope, audience (a
	// parameter of some servers, e.g. Auth0) and resource (RFC 8707).
	Scopes    []string
	Audiences []string
	Resources []string
	// Client is mcpauthz's client authentication.
	Client ClientAuth
	// CAFile, Header and Scheme as in TokenExchangeConfig.
	CAFile string
	Header string
	Scheme string
	// Timeout bounds one token request (default
	// DefaultClientCredentialsTimeout).
	Timeout time.Duration
}

// ClientCredentials keeps a client_credentials token and refreshes it in
// the background: one owner goroutine fetches the first token at once,
// refreshes it when three quarters of its lifetime have passed, and
// retries failures with backoff (1s doubling to 30s). Requests never wait
// for a refresh once a token exists; a token is served until its expiry
// less a margin (10% of its lifetime, at most a minute), and after that
// requests fail with the last refresh error until a refresh succeeds.
type ClientCredentials struct {
	name     string
	header   string
	form     url.Values
	rules    responseRules
	timeout  time.Duration
	endpoint *tokenEndpoint
	clk      clock
	log      *slog.Logger

	state     atomic.Pointer[ccState]
	firstOnce sync.Once
	first     chan struct{} // closed after the first attempt

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	bg     background
}

// ccState is the current token or the last failure; immutable once
// published.
type ccState struct {
	value string    // "" when no token has been obtained
	until time.Time // the token is served before until
	err   *Error    // the last refresh failure, nil after a success
}

// NewClientCredentials validates cfg and reads the client's secret or key;
// it contacts no server. Start starts the owner goroutine, which fetches
// the first token in the background (readiness does not wait for it).
func NewClientCredentials(cfg ClientCredentialsConfig, opts Options) (*ClientCredentials, error) {
	s, err := newClientCredentials(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("upstream credential %q: %w", cfg.Name, err)
	}
	return s, nil
}

func newClientCredentials(cfg ClientCredentialsConfig, opts Options) (*ClientCredentials, error) {
	if cfg.Name == "" {
		return nil, errors.New("name is required")
	}
	s := &ClientCredentials{
		name:    cfg.Name,
		header:  orDefault(cfg.Header, defaultHeader),
		timeout: cfg.Timeout,
		clk:     opts.clk(),
		log:     opts.logger(),
		first:   make(chan struct{}),
		form:    url.Values{"grant_type": {"client_credentials"}},
	}
	if err := checkHeaderName(s.header); err != nil {
		return nil, err
	}
	vb, err := newValueBuilder(s.header, cfg.Scheme)
	if err != nil {
		return nil, err
	}
	s.rules = responseRules{value: vb}
	if s.timeout == 0 {
		s.timeout = DefaultClientCredentialsTimeout
	}
	if s.timeout < 0 {
		return nil, errors.New("timeout must not be negative")
	}
	if err := checkScopes(cfg.Scopes); err != nil {
		return nil, err
	}
	if len(cfg.Scopes) > 0 {
		s.form.Set("scope", strings.Join(cfg.Scopes, " "))
	}
	for _, a := range cfg.Audiences {
		if a == "" {
			return nil, errors.New("audience must not contain empty values")
		}
		s.form.Add("audience", a)
	}
	for _, r := range cfg.Resources {
		if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(r, "#") {
			return nil, fmt.Errorf("resource %q is not an absolute URI without a fragment", r)
		}
		s.form.Add("resource", r)
	}
	auth, err := newClientAuth(cfg.Client, s.log)
	if err != nil {
		return nil, err
	}
	s.endpoint, err = newTokenEndpoint(s.name, endpointConfig{issuer: cfg.Issuer, tokenEndpoint: cfg.TokenEndpoint, caFile: cfg.CAFile}, auth, opts)
	if err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.endpoint.needsDiscovery() {
		s.bg.add(func() { s.endpoint.run(s.ctx) })
	}
	s.bg.add(s.run)
	return s, nil
}

// Start starts the owner goroutine (and discovery), which fetches the first
// token in the background. Nothing is fetched before Start.
func (s *ClientCredentials) Start() { s.bg.start(s.ctx, &s.wg) }

// Name returns the source's name.
func (s *ClientCredentials) Name() string { return s.name }

// Header returns the (lowercase) header the credential goes into.
func (s *ClientCredentials) Header() string { return s.header }

// Credential returns the current token. It waits only before the first
// attempt has ended (within ctx). sub is not used, except that a policy
// choice of scopes other than the configured ones fails with
// ReasonScopeNotAllowed: one token serves every request.
func (s *ClientCredentials) Credential(ctx context.Context, sub SubjectToken) (Credential, error) {
	if sub.Scopes != nil && !s.sameScopes(sub.Scopes) {
		return Credential{}, newError(s.name, ReasonScopeNotAllowed, "a client_credentials source cannot narrow its scopes per request")
	}
	st := s.state.Load()
	if st == nil {
		select {
		case <-s.first:
		case <-ctx.Done():
			return Credential{}, ctxError(ctx, s.name, "the first client_credentials token was obtained")
		}
		if st = s.state.Load(); st == nil {
			return Credential{}, newError(s.name, ReasonClosed, "source closed before its first token")
		}
	}
	if st.value != "" && s.clk.Now().Before(st.until) {
		return Credential{Header: s.header, Value: st.value}, nil
	}
	if st.err != nil {
		return Credential{}, st.err
	}
	return Credential{}, newError(s.name, ReasonExpired, "the client_credentials token expired before it could be refreshed")
}

func (s *ClientCredentials) sameScopes(chosen []string) bool {
	configured := strings.Fields(s.form.Get("scope"))
	if len(chosen) != len(configured) {
		return false
	}
	for _, c := range chosen {
		if !slices.Contains(configured, c) {
			return false
		}
	}
	return true
}

// run is the owner goroutine: fetch, publish, sleep until the next
// refresh or retry, until Close.
func (s *ClientCredentials) run() {
	retry := retryMin
	for {
		next, ok := s.refresh()
		s.firstOnce.Do(func() { close(s.first) })
		if ok {
			retry = retryMin
		} else {
			next = retry
			retry = min(2*retry, retryMax)
		}
		if !sleep(s.clk, next, s.ctx.Done()) {
			return
		}
	}
}

// refresh fetches a token and publishes the outcome; it returns when to
// refresh next after a success.
func (s *ClientCredentials) refresh() (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	sent := s.clk.Now()
	form := make(url.Values, len(s.form))
	for k, v := range s.form {
		form[k] = v
	}
	resp, err := s.endpoint.do(ctx, tokenRequest{form: form, rules: s.rules})
	if s.ctx.Err() != nil {
		return 0, false
	}
	old := s.state.Load()
	if err != nil {
		st := &ccState{err: err}
		if old != nil {
			st.value, st.until = old.value, old.until
		}
		s.state.Store(st)
		s.log.Warn("client_credentials token refresh failed", "source", s.name, "reason", string(err.Reason), "error", err.Error())
		return 0, false
	}
	lifetime := resp.expiresIn
	if !resp.hasExpiry {
		lifetime = missingLifetime
	}
	until := sent.Add(lifetime - min(lifetime/10, skewCap))
	s.state.Store(&ccState{value: resp.value, until: until})
	if old == nil || old.err != nil {
		s.log.Info("client_credentials token obtained", "source", s.name, "lifetime", lifetime.String())
	}
	return max(lifetime*3/4, retryMin), true
}

// Close stops the owner goroutine (cancelling a request in flight) and
// discovery. Requests after Close still get a token that is valid.
func (s *ClientCredentials) Close() error {
	s.cancel()
	s.wg.Wait()
	s.endpoint.transport.CloseIdleConnections()
	return nil
}
