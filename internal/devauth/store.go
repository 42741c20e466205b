package devauth

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/pkce"
)

// Bounds of the in-memory storage: a script looping on registration or
// token requests evicts the oldest entries instead of exhausting memory.
const (
	maxDynamicClients = 1000
	maxDocClients     = 100
	maxPending        = 1000
	maxCodes          = 10000
	maxTokens         = 10000
	// codeRetention keeps used and expired codes a while past their expiry,
	// so that a replayed code is still recognised (and its tokens revoked)
	// rather than reported unknown.
	codeRetention = 10 * time.Minute
	// docClientTTL is how long a client ID metadata document is cached.
	docClientTTL = 5 * time.Minute
)

// boundedMap is an insertion-ordered map with a capacity and an expiry per
// entry. Entries of one map share one lifetime, so insertion order is expiry
// order: expired entries are swept from the front on insert, and the oldest
// entry is evicted when the map is full. It is not safe for concurrent use.
type boundedMap[V any] struct {
	max   int
	items map[string]*list.Element
	order *list.List
}

type boundedEntry[V any] struct {
	key     string
	val     V
	expires time.Time // zero: never
}

func newBoundedMap[V any](max int) *boundedMap[V] {
	return &boundedMap[V]{max: max, items: make(map[string]*list.Element), order: list.New()}
}

func (b *boundedMap[V]) put(now time.Time, key string, v V, expires time.Time) {
	b.sweep(now)
	b.remove(key)
	for len(b.items) >= b.max {
		b.removeElement(b.order.Front())
	}
	b.items[key] = b.order.PushBack(&boundedEntry[V]{key: key, val: v, expires: expires})
}

func (b *boundedMap[V]) get(now time.Time, key string) (V, bool) {
	el, ok := b.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	e := el.Value.(*boundedEntry[V])
	if !e.expires.IsZero() && !now.Before(e.expires) {
		b.removeElement(el)
		var zero V
		return zero, false
	}
	return e.val, true
}

// set replaces the value of an existing entry, keeping its place and
// expiry.
func (b *boundedMap[V]) set(key string, v V) {
	if el, ok := b.items[key]; ok {
		el.Value.(*boundedEntry[V]).val = v
	}
}

func (b *boundedMap[V]) remove(key string) {
	if el, ok := b.items[key]; ok {
		b.removeElement(el)
	}
}

// removeIf removes the entries for which pred holds.
func (b *boundedMap[V]) removeIf(pred func(V) bool) {
	for el := b.order.Front(); el != nil; {
		next := el.Next()
		if pred(el.Value.(*boundedEntry[V]).val) {
			b.removeElement(el)
		}
		el = next
	}
}

// each calls f for every entry, oldest first.
func (b *boundedMap[V]) each(f func(key string, v V)) {
	for el := b.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*boundedEntry[V])
		f(e.key, e.val)
	}
}

func (b *boundedMap[V]) sweep(now time.Time) {
	for el := b.order.Front(); el != nil; el = b.order.Front() {
		e := el.Value.(*boundedEntry[V])
		if e.expires.IsZero() || now.Before(e.expires) {
			return
		}
		b.removeElement(el)
	}
}

func (b *boundedMap[V]) removeElement(el *list.Element) {
	delete(b.items, el.Value.(*boundedEntry[V]).key)
	b.order.Remove(el)
}

func (b *boundedMap[V]) len() int { return len(b.items) }

type codeEntry struct {
	req    fosite.Requester
	active bool
}

type refreshEntry struct {
	req    fosite.Requester
	active bool
}

// store is the in-memory storage fosite works on: clients, authorization
// codes, PKCE challenges, access and refresh tokens, all keyed by their
// signatures (never by the tokens themselves). One mutex guards it all.
//
// Token families: fosite keeps the request ID of the authorization through
// every refresh, so "revoke by request ID" revokes a whole family.
type store struct {
	now        func() time.Time
	static     map[string]*oauthClient
	fetchDoc   func(ctx context.Context, id string) (*oauthClient, error)
	refreshTTL time.Duration
	tokenTTL   time.Duration

	mu      sync.Mutex
	dynamic *boundedMap[*oauthClient]
	docs    *boundedMap[*oauthClient]
	codes   *boundedMap[*codeEntry]
	pkce    *boundedMap[fosite.Requester]
	access  *boundedMap[fosite.Requester]
	refresh *boundedMap[*refreshEntry]
}

var (
	_ fosite.Storage                = (*store)(nil)
	_ oauth2.CoreStorage            = (*store)(nil)
	_ oauth2.TokenRevocationStorage = (*store)(nil)
	_ pkce.PKCERequestStorage       = (*store)(nil)
)

func newStore(static map[string]*oauthClient, tokenTTL, refreshTTL time.Duration) *store {
	return &store{
		now:        time.Now,
		static:     static,
		tokenTTL:   tokenTTL,
		refreshTTL: refreshTTL,
		dynamic:    newBoundedMap[*oauthClient](maxDynamicClients),
		docs:       newBoundedMap[*oauthClient](maxDocClients),
		codes:      newBoundedMap[*codeEntry](maxCodes),
		pkce:       newBoundedMap[fosite.Requester](maxCodes),
		access:     newBoundedMap[fosite.Requester](maxTokens),
		refresh:    newBoundedMap[*refreshEntry](maxTokens),
	}
}

type redirectKey struct{}

// withApprovedRedirect marks ctx with a redirect URI that the authorization
// endpoint has matched against the client with redirectMatches; GetClient
// then hands fosite a client that lists it.
func withApprovedRedirect(ctx context.Context, redirect string) context.Context {
	return context.WithValue(ctx, redirectKey{}, redirect)
}

// GetClient returns a pre-registered, dynamically registered or metadata
// document client. A URL-shaped ID that is not cached is fetched (outside
// the lock).
func (s *store) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	c, err := s.client(ctx, id)
	if err != nil {
		return nil, err
	}
	if r, ok := ctx.Value(redirectKey{}).(string); ok {
		return c.withRedirect(r), nil
	}
	return c, nil
}

func (s *store) client(ctx context.Context, id string) (*oauthClient, error) {
	if c, ok := s.static[id]; ok {
		return c, nil
	}
	s.mu.Lock()
	c, ok := s.dynamic.get(s.now(), id)
	if !ok {
		c, ok = s.docs.get(s.now(), id)
	}
	s.mu.Unlock()
	switch {
	case ok:
		return c, nil
	case !looksLikeURL(id) || s.fetchDoc == nil:
		return nil, fosite.ErrNotFound
	}
	c, err := s.fetchDoc(ctx, id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.docs.put(now, id, c, now.Add(docClientTTL))
	return c, nil
}

func (s *store) addClient(c *oauthClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dynamic.put(s.now(), c.ID, c, time.Time{})
}

// ClientAssertionJWTValid and SetClientAssertionJWT serve private_key_jwt
// client authentication, which this server does not offer.
func (s *store) ClientAssertionJWTValid(context.Context, string) error { return nil }

func (s *store) SetClientAssertionJWT(context.Context, string, time.Time) error {
	return fosite.ErrNotFound
}

func expiry(req fosite.Requester, tt fosite.TokenType, now time.Time, def time.Duration) time.Time {
	if exp := req.GetSession().GetExpiresAt(tt); !exp.IsZero() {
		return exp
	}
	return now.Add(def)
}

func (s *store) CreateAuthorizeCodeSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.codes.put(now, sig, &codeEntry{req: req, active: true}, expiry(req, fosite.AuthorizeCode, now, 0).Add(codeRetention))
	return nil
}

func (s *store) GetAuthorizeCodeSession(_ context.Context, sig string, into fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.codes.get(s.now(), sig)
	switch {
	case !ok:
		return nil, fosite.ErrNotFound
	case !e.active:
		return e.req, fosite.ErrInvalidatedAuthorizeCode
	}
	hydrate(into, e.req)
	return e.req, nil
}

// hydrate copies the stored session of req into the session the caller
// passed, as fosite expects of storage: it validates a code's expiry on the
// session of the token request.
func hydrate(into fosite.Session, req fosite.Requester) {
	dst, ok := into.(*fosite.DefaultSession)
	if !ok || dst == nil {
		return
	}
	if src, ok := req.GetSession().Clone().(*fosite.DefaultSession); ok && src != nil {
		*dst = *src
	}
}

func (s *store) InvalidateAuthorizeCodeSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.codes.get(s.now(), sig)
	if !ok {
		return fosite.ErrNotFound
	}
	s.codes.set(sig, &codeEntry{req: e.req, active: false})
	return nil
}

func (s *store) CreatePKCERequestSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.pkce.put(now, sig, req, expiry(req, fosite.AuthorizeCode, now, 0).Add(codeRetention))
	return nil
}

func (s *store) GetPKCERequestSession(_ context.Context, sig string, into fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.pkce.get(s.now(), sig); ok {
		hydrate(into, r)
		return r, nil
	}
	return nil, fosite.ErrNotFound
}

func (s *store) DeletePKCERequestSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkce.remove(sig)
	return nil
}

func (s *store) CreateAccessTokenSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.access.put(now, sig, req, expiry(req, fosite.AccessToken, now, s.tokenTTL))
	return nil
}

func (s *store) GetAccessTokenSession(_ context.Context, sig string, into fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.access.get(s.now(), sig); ok {
		hydrate(into, r)
		return r, nil
	}
	return nil, fosite.ErrNotFound
}

func (s *store) DeleteAccessTokenSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access.remove(sig)
	return nil
}

func (s *store) CreateRefreshTokenSession(_ context.Context, sig, _ string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.refresh.put(now, sig, &refreshEntry{req: req, active: true}, expiry(req, fosite.RefreshToken, now, s.refreshTTL))
	return nil
}

func (s *store) GetRefreshTokenSession(_ context.Context, sig string, into fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.refresh.get(s.now(), sig)
	switch {
	case !ok:
		return nil, fosite.ErrNotFound
	case !e.active:
		return e.req, fosite.ErrInactiveToken
	}
	hydrate(into, e.req)
	return e.req, nil
}

func (s *store) DeleteRefreshTokenSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh.remove(sig)
	return nil
}

// RotateRefreshToken retires the refresh token being used and the access
// token issued with it: a family has one live pair at a time.
func (s *store) RotateRefreshToken(ctx context.Context, requestID, _ string) error {
	if err := s.RevokeRefreshToken(ctx, requestID); err != nil {
		return err
	}
	return s.RevokeAccessToken(ctx, requestID)
}

// RevokeRefreshToken marks every refresh token of the family inactive. They
// are kept until they expire, so that presenting one again is recognised as
// reuse.
func (s *store) RevokeRefreshToken(_ context.Context, requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh.each(func(_ string, e *refreshEntry) {
		if e.req.GetID() == requestID {
			e.active = false
		}
	})
	return nil
}

// RevokeAccessToken forgets every access token of the family: they are no
// longer active at introspection.
func (s *store) RevokeAccessToken(_ context.Context, requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access.removeIf(func(r fosite.Requester) bool { return r.GetID() == requestID })
	return nil
}
