package jwtauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// How the key sets are kept. This follows from reading httprc v1.0.6,
// which jwx v2's jwk.Cache is built on:
//
//   - jwk.Cache (httprc v1) runs the periodic refresh of each remote set.
//     Every call to (*jwk.Cache).Refresh (or the first Get) starts a new,
//     independent refresh chain in httprc v1, so exactly one such call is
//     made per issuer, right after Register. All other fetches (startup
//     retries, unknown-kid refetches) go through fetchDirect, which shares
//     the HTTP client, parsing and filtering with the cache's path.
//   - httprc derives the next refresh from Cache-Control max-age (or
//     Expires), never below WithMinRefreshInterval, but has no upper bound,
//     and WithRefreshInterval would ignore Cache-Control altogether. The
//     HTTP client therefore rewrites the response's caching headers to
//     max-age=clamp(max-age, min_refresh, max_refresh) before httprc sees
//     them.
//   - httprc keeps the previously stored object when a fetch, the status
//     check, parsing or the PostFetcher fails, and schedules the next try
//     after min_refresh. The PostFetcher publishes the filtered set to the
//     issuer's atomic.Pointer and fails on an empty set, so neither path
//     ever replaces a usable set with an empty or unparsable one.
//   - httprc checks for due refreshes once per "refresh window" (default
//     15 minutes; values under 1s silently become the default), so a
//     refresh happens at the first tick after it is due. The window is
//     min(min_refresh, 1m), at least 1s.
//   - httprc v1 calls HTTPClient.Get(url) without a context (the default
//     client, http.DefaultClient, has no timeout and follows redirects to
//     http), and jwx reads the body without a limit and does not close it
//     on a non-200 answer. fetchClient adds the fetch timeout and the
//     Verifier's context, reads at most 1 MiB, closes the body itself, and
//     refuses redirects away from https (or loopback http).

// Backoff of the startup fetch loop, until the first usable set.
const (
	initialRetry = 250 * time.Millisecond
	maxRetry     = 30 * time.Second
)

// remoteKeys fetches an issuer's key set over HTTP.
type remoteKeys struct {
	v      *Verifier
	iss    *issuer
	client *fetchClient
	cache  *jwk.Cache

	mu         sync.Mutex
	jwksURL    string        // configured or discovered; "" until discovered
	registered bool          // jwksURL is registered with cache
	inflight   chan struct{} // closed when the running fetch ends
	lastDemand time.Time     // last request-triggered fetch, by v.now
	// current is true while the last fetch that ended (request-triggered,
	// startup or periodic) published a usable set: a kid missing from it
	// is missing at the issuer.
	current bool
}

func newRemoteKeys(v *Verifier, is *issuer) *remoteKeys {
	return &remoteKeys{
		v:       v,
		iss:     is,
		jwksURL: is.jwksURI,
		client: &fetchClient{
			ctx:        v.ctx,
			client:     v.client,
			timeout:    is.fetchTimeout,
			minRefresh: is.minRefresh,
			maxRefresh: is.maxRefresh,
		},
	}
}

// start creates the jwk.Cache, whose goroutines run until the Verifier's
// context ends. Until then no fetch can start.
func (r *remoteKeys) start() {
	// httprc checks due refreshes once per window; the default window
	// (15 minutes) is longer than min_refresh, and windows under a second
	// are silently replaced by the default.
	window := max(time.Second, min(r.iss.minRefresh, time.Minute))
	c := jwk.NewCache(r.v.ctx, jwk.WithRefreshWindow(window), jwk.WithErrSink(errSink(r.failed)))
	r.mu.Lock()
	r.cache = c
	r.mu.Unlock()
}

// run fetches until the issuer has a usable key set, backing off between
// attempts; afterwards the jwk.Cache refresh chain keeps it fresh.
func (r *remoteKeys) run() {
	backoff := initialRetry
	maxBackoff := min(maxRetry, r.iss.minRefresh)
	for {
		r.mu.Lock()
		ch := r.inflight
		if ch == nil {
			ch = r.startLocked()
		}
		r.mu.Unlock()
		if ch == nil {
			return // closed
		}
		select {
		case <-ch:
		case <-r.v.ctx.Done():
			return
		}
		if r.iss.keys.Load() != nil {
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-r.v.ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// refresh runs a refetch for a request that found no key (unknown kid, or
// no keys yet) and waits for it, at most the issuer's unknown_kid_wait
// and never past ctx; the fetch itself goes on in the background. A
// running fetch is joined; if what it brought does not satisfy found (it
// may have started before the key was published), one more fetch is
// attempted. A new fetch starts only if the last request-triggered one is
// at least unknown_kid_interval old: otherwise refresh returns at once.
//
// It reports whether the set is known to be current: the wait did not end
// before the fetch, and the last fetch that ended succeeded.
func (r *remoteKeys) refresh(ctx context.Context, found func() bool) bool {
	// Both waits share one bound, so a request never waits longer in
	// total; the timer starts with the first wait (a rate-limited request
	// waits for nothing and needs none).
	var timer <-chan time.Time
	timeout := func() <-chan time.Time {
		if timer == nil {
			timer = r.v.after(r.iss.unknownKIDWait)
		}
		return timer
	}
	waited, joined := r.demand(ctx, timeout)
	if waited && joined && !found() {
		waited, _ = r.demand(ctx, timeout)
	}
	if !waited {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

// demand joins the running fetch or starts one (rate-limited), and waits
// for it, for timeout or for ctx. waited is false when the wait ended
// before the fetch, or when no fetch can run (before Start, after Close);
// a rate-limited demand waits for nothing and reports true. joined
// reports that it waited for a fetch it did not start.
func (r *remoteKeys) demand(ctx context.Context, timeout func() <-chan time.Time) (waited, joined bool) {
	r.mu.Lock()
	ch := r.inflight
	joined = ch != nil
	if ch == nil {
		now := r.v.now()
		if !r.lastDemand.IsZero() && now.Sub(r.lastDemand) < r.iss.unknownKIDInterval {
			r.mu.Unlock()
			return true, false
		}
		r.lastDemand = now
		ch = r.startLocked()
	}
	r.mu.Unlock()
	if ch == nil {
		return false, false // not started, or closed: no fetch can help
	}
	select {
	case <-ch:
		return true, joined
	case <-timeout():
	case <-ctx.Done():
	}
	return false, joined
}

// startLocked starts a fetch and returns the channel closed when it ends,
// or nil when the Verifier is not started or closed; r.mu must be held.
func (r *remoteKeys) startLocked() chan struct{} {
	if r.cache == nil {
		return nil
	}
	ch := make(chan struct{})
	ok := r.v.goBackground(func() {
		if err := r.fetch(r.v.ctx); err != nil {
			r.failed(err)
		}
		r.mu.Lock()
		r.inflight = nil
		r.mu.Unlock()
		close(ch)
	})
	if !ok {
		return nil
	}
	r.inflight = ch
	return ch
}

// fetch discovers the JWKS URL if needed, then fetches the set: through
// the cache the first time (which starts its refresh chain), directly
// afterwards. Only one fetch runs at a time per issuer.
func (r *remoteKeys) fetch(ctx context.Context) error {
	r.mu.Lock()
	u, registered, cache := r.jwksURL, r.registered, r.cache
	r.mu.Unlock()
	if u == "" {
		var err error
		if u, err = r.discover(ctx); err != nil {
			return err
		}
		r.mu.Lock()
		r.jwksURL = u
		r.mu.Unlock()
	}
	if !registered {
		err := cache.Register(u,
			jwk.WithHTTPClient(r.client),
			jwk.WithFetchWhitelist(jwk.WhitelistFunc(func(u string) bool { return checkFetchURL(u) == nil })),
			jwk.WithMinRefreshInterval(r.iss.minRefresh),
			jwk.WithIgnoreParseError(true),
			jwk.WithPostFetcher(jwk.PostFetchFunc(r.postFetch)),
		)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.registered = true
		r.mu.Unlock()
		_, err = cache.Refresh(ctx, u)
		return err
	}
	return r.fetchDirect(u)
}

// fetchDirect does what the cache does on a refresh, without scheduling
// another refresh.
func (r *remoteKeys) fetchDirect(u string) error {
	res, err := r.client.Get(u)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching %s: status %s", u, res.Status)
	}
	body, _ := io.ReadAll(res.Body) // an in-memory reader by now
	set, err := jwk.Parse(body, jwk.WithIgnoreParseError(true))
	if err != nil {
		return fmt.Errorf("fetching %s: not a JWK set", u)
	}
	_, err = r.postFetch(u, set)
	return err
}

var errNoUsableKeys = errors.New("key set has no usable keys")

// postFetch filters a fetched set and publishes it. It fails when no key
// is usable, which makes jwk.Cache keep its previous content too.
func (r *remoteKeys) postFetch(u string, set jwk.Set) (jwk.Set, error) {
	ks, st, err := buildKeySet(set, r.iss.algs)
	if err == nil && st.usable == 0 {
		err = errNoUsableKeys
	}
	if err != nil {
		r.v.log.Warn("jwks rejected", append([]any{"issuer", r.iss.name, "jwks_uri", u, "error", err.Error()}, st.logAttrs()...)...)
		return nil, err
	}
	old := r.iss.keys.Swap(ks)
	r.setCurrent(true)
	r.v.purgeRemovedKeys(r.iss, old, ks)
	r.v.log.Info("jwks loaded", append([]any{"issuer", r.iss.name, "jwks_uri", u}, st.logAttrs()...)...)
	if r.v.onRefresh != nil {
		r.v.onRefresh(r.iss.name, st.usable, nil)
	}
	r.v.checkReady()
	return set, nil
}

func (r *remoteKeys) setCurrent(ok bool) {
	r.mu.Lock()
	r.current = ok
	r.mu.Unlock()
}

// failed reports a failed fetch; the last good set stays in use.
func (r *remoteKeys) failed(err error) {
	r.setCurrent(false)
	inUse := 0
	if ks := r.iss.keys.Load(); ks != nil {
		inUse = len(ks.keys)
	}
	if r.v.ctx.Err() != nil {
		return // shutting down
	}
	r.v.log.Warn("jwks refresh failed, keeping the last good key set", "issuer", r.iss.name, "keys_in_use", inUse, "error", err.Error())
	if r.v.onRefresh != nil {
		r.v.onRefresh(r.iss.name, inUse, err)
	}
}

// errSink adapts a function to jwk.ErrSink (httprc.ErrSink).
type errSink func(error)

func (f errSink) Error(err error) { f(err) }

// metadata is the part of RFC 8414 / OpenID Connect Discovery metadata
// that the verifier uses.
type metadata struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// discover finds the JWKS URL in the issuer's metadata: RFC 8414 first
// (path insertion), then OpenID Connect Discovery (path appending). The
// metadata's issuer must equal the configured issuer exactly (RFC 8414
// §3.3) and its jwks_uri must pass checkFetchURL.
func (r *remoteKeys) discover(ctx context.Context) (string, error) {
	var errs []error
	for _, mu := range metadataURLs(r.iss.name) {
		u, err := r.tryMetadata(ctx, mu)
		if err == nil {
			r.v.log.Info("jwks_uri discovered", "issuer", r.iss.name, "metadata", mu, "jwks_uri", u)
			return u, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("discovery: %w", errors.Join(errs...))
}

func (r *remoteKeys) tryMetadata(ctx context.Context, mu string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.iss.fetchTimeout)
	defer cancel()
	res, body, err := r.client.get(ctx, mu, "application/json")
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: status %s", mu, res.Status)
	}
	var md metadata
	if err := json.Unmarshal(body, &md); err != nil {
		return "", fmt.Errorf("%s: invalid metadata document", mu)
	}
	if md.Issuer != r.iss.name {
		return "", fmt.Errorf("%s: metadata issuer does not match the configured issuer", mu)
	}
	if md.JWKSURI == "" {
		return "", fmt.Errorf("%s: metadata has no jwks_uri", mu)
	}
	if err := checkFetchURL(md.JWKSURI); err != nil {
		return "", fmt.Errorf("%s: jwks_uri: %w", mu, err)
	}
	return md.JWKSURI, nil
}

// metadataURLs returns the RFC 8414 §3.1 URL (well-known part inserted
// between host and path) and the OpenID Connect Discovery 1.0 §4 URL
// (appended to the issuer) for issuer.
func metadataURLs(issuer string) []string {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil
	}
	path := strings.TrimSuffix(u.Path, "/")
	oauth := url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/.well-known/oauth-authorization-server" + path}
	oidc := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	return []string{oauth.String(), oidc}
}

// fetchClient is the HTTP client of the key fetches. It implements
// jwk.HTTPClient (httprc v1 calls Get without a context).
type fetchClient struct {
	ctx                    context.Context
	client                 *http.Client
	timeout                time.Duration
	minRefresh, maxRefresh time.Duration
}

// Get fetches u within the fetch timeout and the Verifier's lifetime,
// reads at most maxJWKSBodyLen bytes of body and closes the connection's
// body; the returned response carries the body in memory and a
// Cache-Control of max-age=clamp(max-age, min_refresh, max_refresh).
func (c *fetchClient) Get(u string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	defer cancel()
	res, body, err := c.get(ctx, u, "application/jwk-set+json, application/json")
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	res.ContentLength = int64(len(body))
	d := refreshAfter(res.Header, time.Now(), c.minRefresh, c.maxRefresh)
	res.Header = res.Header.Clone()
	res.Header.Set("Cache-Control", "max-age="+strconv.FormatInt(int64(d/time.Second), 10))
	res.Header.Del("Expires")
	return res, nil
}

var errBodyTooLarge = errors.New("response body too large")

// get performs a GET and returns the response with its body read (at most
// maxJWKSBodyLen bytes) and closed.
func (c *fetchClient) get(ctx context.Context, u, accept string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("fetching %s: invalid URL", u)
	}
	req.Header.Set("Accept", accept)
	res, err := c.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBodyLen+1))
	if err != nil {
		return nil, nil, fmt.Errorf("fetching %s: reading body: %w", u, err)
	}
	if len(body) > maxJWKSBodyLen {
		return nil, nil, fmt.Errorf("fetching %s: %w (more than %d bytes)", u, errBodyTooLarge, maxJWKSBodyLen)
	}
	return res, body, nil
}

// refreshAfter returns when to refresh a response: its Cache-Control
// max-age, else its Expires, else min; clamped to [min, max]. no-store and
// no-cache mean min.
func refreshAfter(h http.Header, now time.Time, lo, hi time.Duration) time.Duration {
	d := lo
	found := false
	for _, cc := range h.Values("Cache-Control") {
		for _, dir := range strings.Split(cc, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return lo
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
				if err == nil && n >= 0 && !found {
					// Cap before converting: max-age may overflow a Duration.
					n = min(n, int64(hi/time.Second)+1)
					d, found = time.Duration(n)*time.Second, true
				}
			}
		}
	}
	if !found {
		if exp := h.Get("Expires"); exp != "" {
			if t, err := http.ParseTime(exp); err == nil {
				d = t.Sub(now)
			}
		}
	}
	return max(lo, min(d, hi))
}

// newHTTPClient returns a copy of base (or a new client) whose redirects
// must stay on https (or loopback http), at most 5 of them.
func newHTTPClient(base *http.Client) *http.Client {
	c := &http.Client{}
	if base != nil {
		*c = *base
	}
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		target := *req.URL
		target.Fragment, target.RawFragment = "", ""
		if err := checkFetchURL(target.String()); err != nil {
			return fmt.Errorf("redirect refused: %w", err)
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
	return c
}

// loadKeyFile reads a static key set (jwks_file).
func loadKeyFile(path string, algs map[string]bool) (*keySet, filterStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, filterStats{}, err
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, maxJWKSBodyLen+1))
	if err != nil {
		return nil, filterStats{}, err
	}
	if len(body) > maxJWKSBodyLen {
		return nil, filterStats{}, errBodyTooLarge
	}
	set, err := jwk.Parse(body, jwk.WithIgnoreParseError(true))
	if err != nil {
		return nil, filterStats{}, errors.New("not a JWK set")
	}
	ks, st, err := buildKeySet(set, algs)
	if err == nil && st.usable == 0 {
		err = errNoUsableKeys
	}
	return ks, st, err
}

// checkFetchURL accepts the URLs keys and metadata may be fetched from
// (see oauth.ParseEndpointURL).
func checkFetchURL(raw string) error {
	_, err := oauth.ParseEndpointURL(raw)
	return err
}
