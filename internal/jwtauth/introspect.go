package jwtauth

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"go.opentelemetry.io/otel/trace"
)

// maxIntrospectionBody caps the introspection answer read, so a hostile or
// broken endpoint cannot make mcpauthz buffer without bound.
const maxIntrospectionBody = 1 << 20

// looksLikeJWS reports whether token has the shape of a compact JWS: three
// dot-separated segments whose first decodes to a JSON object with an alg
// member. The check is deliberately lenient (padding, the standard
// alphabet, invalid UTF-8 and duplicate names are tolerated here, and
// refused later by parseJOSE) so that a JWT cannot be sent to the
// introspection endpoint by spelling it badly. Such tokens take the JWT
// path only; every other token is introspected when an issuer has
// introspection.
func looksLikeJWS(token string) bool {
	hseg, rest, ok := strings.Cut(token, ".")
	if !ok {
		return false
	}
	if _, sseg, ok := strings.Cut(rest, "."); !ok || strings.IndexByte(sseg, '.') >= 0 {
		return false
	}
	hseg = stdToURL.Replace(strings.TrimRight(hseg, "="))
	hdr, err := base64.RawURLEncoding.DecodeString(hseg)
	if err != nil {
		return false
	}
	d := jsontext.NewDecoder(bytes.NewReader(hdr), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if t, err := d.ReadToken(); err != nil || t.Kind() != '{' {
		return false
	}
	for d.PeekKind() == '"' {
		name, err := d.ReadToken()
		if err != nil {
			return false
		}
		if name.String() == "alg" {
			return true
		}
		if err := d.SkipValue(); err != nil {
			return false
		}
	}
	return false
}

var stdToURL = strings.NewReplacer("+", "-", "/", "_")

// introspector asks one issuer's introspection endpoint about opaque
// tokens (RFC 7662), with single-flight, a concurrency bound, a rate limit
// and a negative cache. Active answers go to the Verifier's cache.
type introspector struct {
	v      *Verifier
	is     *issuer
	cfg    *introspectionConfig
	client *http.Client
	authz  string // the Authorization header value
	// neg caches definitive rejections (inactive, wrong audience, ...)
	// for negative_cache_ttl; nil when caching is disabled.
	neg *clockCache[error]

	mu       sync.Mutex
	calls    map[tokenKey]*introCall // in flight, by token hash
	inflight int
	bucket   tokenBucket

	joined atomic.Int64 // requests that joined a call in flight (tests)
}

// introCall is one introspection call; id and err are set before done is
// closed.
type introCall struct {
	done chan struct{}
	id   *Identity
	err  error
}

func newIntrospector(v *Verifier, is *issuer, cacheSize int) *introspector {
	cfg := is.introspection
	client := *v.client
	// No redirects: the token is in the body and must go to the
	// configured endpoint only. A 3xx answer is a failure.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	// RFC 7662 §2.1 and RFC 6749 §2.3.1: both parts are form-urlencoded
	// before they are joined and base64-encoded.
	cred := url.QueryEscape(cfg.clientID) + ":" + url.QueryEscape(cfg.clientSecret)
	return &introspector{
		v:      v,
		is:     is,
		cfg:    cfg,
		client: &client,
		authz:  "Basic " + base64.StdEncoding.EncodeToString([]byte(cred)),
		neg:    newClockCache[error](cacheSize),
		calls:  make(map[tokenKey]*introCall),
		bucket: newTokenBucket(cfg.rateLimit),
	}
}

// verify answers for an opaque token whose hash is key, which the
// Verifier's cache did not have: from the negative cache, by joining a
// call in flight for the same token, or by a new call if the concurrency
// bound and the rate limit allow one (else ErrRateLimited).
func (in *introspector) verify(ctx context.Context, token string, key tokenKey) (*Identity, error) {
	if len(token) > in.is.maxTokenSize {
		return nil, invalid(ErrTooLarge, "token exceeds %d bytes", in.is.maxTokenSize)
	}
	now := in.v.now()
	if err, ok := in.neg.get(key, now.UnixNano()); ok {
		return nil, err
	}
	in.mu.Lock()
	c := in.calls[key]
	if c != nil {
		in.joined.Add(1)
	} else {
		// A call for this token may have ended since the caches were
		// consulted; its result is cached before it leaves calls.
		if e, ok := in.v.cache.get(key, now.UnixNano()); ok {
			in.mu.Unlock()
			return e.identity(now)
		}
		if err, ok := in.neg.get(key, now.UnixNano()); ok {
			in.mu.Unlock()
			return nil, err
		}
		if in.inflight >= in.cfg.maxConcurrent {
			in.mu.Unlock()
			return nil, fmt.Errorf("%w: %d calls in flight (max_concurrent)", ErrRateLimited, in.cfg.maxConcurrent)
		}
		if !in.bucket.take(now) {
			in.mu.Unlock()
			return nil, fmt.Errorf("%w: more than %d calls per second (rate_limit)", ErrRateLimited, in.cfg.rateLimit)
		}
		c = &introCall{done: make(chan struct{})}
		parent := trace.SpanFromContext(ctx)
		if !in.v.goBackground(func() { in.run(parent, c, key, token) }) {
			in.mu.Unlock()
			return nil, fmt.Errorf("%w: the verifier is not running", ErrUnavailable)
		}
		in.calls[key] = c
		in.inflight++
	}
	in.mu.Unlock()

	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: request ended before the introspection answer: %w", ErrUnavailable, ctx.Err())
	}
	if c.err != nil {
		return nil, c.err
	}
	id := *c.id
	return &id, nil
}

// run performs the call for c, detached from the requests waiting for it
// (bounded by the timeout and the Verifier's context), caches its result
// and releases the waiters. The call is traced below parent, the span of
// the request that started it.
func (in *introspector) run(parent trace.Span, c *introCall, key tokenKey, token string) {
	ctx, cancel := context.WithTimeout(trace.ContextWithSpan(in.v.ctx, parent), in.cfg.timeout)
	body, err := in.call(ctx, token)
	cancel()
	now := in.v.now()
	var id *Identity
	var times tokenTimes
	if err == nil {
		id, times, err = in.is.introspectionIdentity(body, now)
	}
	switch {
	case err == nil:
		until := now.Add(in.cfg.cacheTTL)
		if times.hasExp && times.exp.Before(until) {
			until = times.exp
		}
		in.v.cache.add(key, &cacheEntry{id: id, is: in.is, times: times}, unixNano(until), now.UnixNano(), nil)
	case errors.Is(err, ErrIntrospectionResponse):
		in.v.log.Warn("introspection answer is not a valid RFC 7662 response", "issuer", in.is.name, "endpoint", in.cfg.endpoint, "error", err.Error())
	case errors.Is(err, ErrInvalidToken):
		in.neg.add(key, err, now.Add(in.cfg.negativeTTL).UnixNano(), now.UnixNano(), nil)
	default:
		if in.v.ctx.Err() == nil {
			in.v.log.Warn("introspection failed", "issuer", in.is.name, "endpoint", in.cfg.endpoint, "error", err.Error())
		}
	}
	c.id, c.err = id, err
	in.mu.Lock()
	delete(in.calls, key)
	in.inflight--
	in.mu.Unlock()
	close(c.done)
}

// call POSTs the token to the endpoint and returns the body of a 200
// answer. Every failure wraps ErrUnavailable.
func (in *introspector) call(ctx context.Context, token string) ([]byte, error) {
	form := "token=" + url.QueryEscape(token) + "&token_type_hint=access_token"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.cfg.endpoint, strings.NewReader(form))
	if err != nil {
		return nil, fmt.Errorf("%w: invalid endpoint", ErrUnavailable)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", in.authz)
	res, err := in.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer res.Body.Close()
	switch {
	case res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("%w: endpoint answered status %d: it refused mcpauthz's client credentials (check client_id and the secret)", ErrUnavailable, res.StatusCode)
	case res.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: endpoint answered status %d", ErrUnavailable, res.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxIntrospectionBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the answer: %w", ErrUnavailable, err)
	}
	if len(body) > maxIntrospectionBody {
		return nil, fmt.Errorf("%w: answer larger than %d bytes", ErrUnavailable, maxIntrospectionBody)
	}
	return body, nil
}

// badAnswer returns an error wrapping ErrInvalidToken and
// ErrIntrospectionResponse.
func badAnswer(format string, args ...any) error {
	return invalid(ErrIntrospectionResponse, format, args...)
}

// introspectionIdentity checks an introspection answer (RFC 7662 §2.2) at
// now and builds the Identity. A body that is not a JSON object is a
// failure of the endpoint (ErrUnavailable); a JSON object is read strictly
// (duplicate names, invalid UTF-8 and deep nesting are
// ErrIntrospectionResponse), then:
//
//   - active must be a JSON boolean (ErrIntrospectionResponse); false is
//     ErrInactive;
//   - token_type, if present, must be "Bearer" or "access_token", and the
//     non-standard token_use (Ory Hydra), if present, "access_token",
//     compared case-insensitively (ErrType: refresh tokens, DPoP tokens);
//   - iss, if present, must equal the issuer (ErrIssuer);
//   - exp, nbf and iat, if present, are checked like a JWT's, leeway and
//     max_lifetime included; exp is optional;
//   - aud, if present (string or array), must contain an accepted
//     audience (ErrAudience); if absent, audience binding rests on the
//     authorization server;
//   - required_claims must be present (ErrMissingClaim); cnf is refused
//     (ErrType: sender-constrained token);
//   - scopes come from the issuer's scope claims (default scope, scp) and
//     claim_scopes, as for JWTs.
//
// Claims of the wrong type are ErrIntrospectionResponse.
func (is *issuer) introspectionIdentity(body []byte, now time.Time) (*Identity, tokenTimes, error) {
	var times tokenTimes
	v := jsontext.Value(body)
	if v.Kind() != '{' || !v.IsValid(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)) {
		return nil, times, fmt.Errorf("%w: answer is not a JSON object", ErrUnavailable)
	}
	c, err := decodeObject(body)
	if err != nil {
		return nil, times, badAnswer("%w", err)
	}
	switch c["active"].Kind() {
	case 't':
	case 'f':
		return nil, times, invalid(ErrInactive, "the authorization server reports the token inactive")
	case 0:
		return nil, times, badAnswer("active missing")
	default:
		return nil, times, badAnswer("active is not a boolean")
	}

	tt, ok, err := stringMember(c, "token_type")
	if err != nil {
		return nil, times, badAnswer("%w", err)
	}
	if ok && !strings.EqualFold(tt, "bearer") && !strings.EqualFold(tt, "access_token") {
		return nil, times, invalid(ErrType, "token_type is not an access token type")
	}
	tu, ok, err := stringMember(c, "token_use")
	if err != nil {
		return nil, times, badAnswer("%w", err)
	}
	if ok && !strings.EqualFold(tu, "access_token") {
		return nil, times, invalid(ErrType, "token_use is not access_token")
	}
	iss, ok, err := stringMember(c, "iss")
	if err != nil {
		return nil, times, badAnswer("%w", err)
	}
	if ok && iss != is.name {
		return nil, times, invalid(ErrIssuer, "iss does not match the issuer")
	}
	if times, err = readTimes(c); err != nil {
		return nil, times, badAnswer("%w", err)
	}
	if err := is.checkTimes(times, now); err != nil {
		return nil, times, err
	}
	aud, ok, err := stringsMember(c, "aud")
	if err != nil {
		return nil, times, badAnswer("%w", err)
	}
	if ok && !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(is.audiences, a) }) {
		return nil, times, invalid(ErrAudience, "no accepted audience in aud")
	}
	for _, name := range is.requiredClaims {
		if v, ok := c[name]; !ok || v.Kind() == 'n' {
			return nil, times, invalid(ErrMissingClaim, "required claim missing")
		}
	}
	if _, ok := c["cnf"]; ok {
		return nil, times, invalid(ErrType, "sender-constrained token (cnf) presented as a bearer token")
	}

	id := &Identity{
		Issuer:   is.name,
		Audience: aud,
		Claims:   bytes.TrimSpace(body),
	}
	if times.hasExp {
		id.Expiry = times.exp.Unix()
	}
	if id.Subject, _, err = stringMember(c, "sub"); err != nil {
		return nil, times, badAnswer("%w", err)
	}
	if id.Subject == "" && is.requireSubject {
		// RFC 7662 makes sub optional; required by default all the same,
		// for the same reasons as for JWTs (see Issuer.RequireSubject).
		return nil, times, invalid(ErrMissingSubject, "sub missing or empty")
	}
	if id.JTI, _, err = stringMember(c, "jti"); err != nil {
		return nil, times, badAnswer("%w", err)
	}
	for _, name := range []string{"client_id", "azp", "cid"} {
		s, _, err := stringMember(c, name)
		if err != nil {
			return nil, times, badAnswer("%w", err)
		}
		if id.ClientID == "" {
			id.ClientID = s
		}
	}
	if id.Scopes, err = is.scopes(c); err != nil {
		return nil, times, badAnswer("%w", err)
	}
	if id.Azp, id.Actors, id.MayAct, err = readDelegation(c); err != nil {
		return nil, times, badAnswer("%w", err)
	}
	return id, times, nil
}
