package jwtauth

import (
	"crypto/sha256"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// tokenKey is the SHA-256 of a token. Caches and the introspection
// single-flight map are keyed by it: a token itself is never kept beyond
// its request.
type tokenKey [sha256.Size]byte

func keyOf(token string) tokenKey { return sha256.Sum256([]byte(token)) }

// maxNanoTime is the last instant UnixNano can represent (year 2262).
var maxNanoTime = time.Unix(0, math.MaxInt64)

// unixNano is t.UnixNano, saturated for times after year 2262 (exp may
// be as late as year 9999).
func unixNano(t time.Time) int64 {
	if t.After(maxNanoTime) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

// cacheEntry is one verified token in the verified-token cache. It is
// immutable once inserted.
type cacheEntry struct {
	id    *Identity
	is    *issuer
	times tokenTimes
	// kid is the kid of the key that verified the token ("" for a key
	// without kid) and keyed is true when that key came from the issuer's
	// key set (not an HMAC secret, not introspection): the entry is
	// purged when a new set no longer has that key, so a key removed from the
	// JWKS stops verifying cached tokens too.
	kid   string
	keyed bool
}

// size estimates the bytes an entry holds besides its slot: the entry,
// its Identity and everything the Identity references (the issuer is
// shared).
func (e *cacheEntry) size() int {
	id := e.id
	n := int(unsafe.Sizeof(*e)+unsafe.Sizeof(*id)) + allocSize(len(e.kid)) +
		allocSize(len(id.Issuer)) + allocSize(len(id.Subject)) + allocSize(len(id.ClientID)) +
		allocSize(len(id.JTI)) + allocSize(len(id.Azp)) + allocSize(len(id.MayAct)) + allocSize(len(id.Claims))
	for _, ss := range [][]string{id.Audience, id.Scopes} {
		n += allocSize(16 * len(ss))
		for _, s := range ss {
			n += allocSize(len(s))
		}
	}
	n += allocSize(int(unsafe.Sizeof(Actor{})) * len(id.Actors))
	for _, a := range id.Actors {
		n += allocSize(len(a.Subject)) + allocSize(len(a.Issuer)) + allocSize(len(a.ClientID))
	}
	return n
}

// allocSize rounds n up as the allocator's small size classes do (to 16
// bytes up to 256, to 64 above): close enough for a budget.
func allocSize(n int) int {
	switch {
	case n == 0:
		return 0
	case n <= 256:
		return (n + 15) &^ 15
	}
	return (n + 63) &^ 63
}

// identity re-checks the time claims against now (the clock may have
// moved; a cache hit decides exactly as a full verification would) and
// returns a copy of the cached identity.
func (e *cacheEntry) identity(now time.Time) (*Identity, error) {
	if err := e.is.checkTimes(e.times, now); err != nil {
		return nil, err
	}
	id := *e.id
	return &id, nil
}

// rejectedTTL is how long a rejected JWT is remembered.
const rejectedTTL = 30 * time.Second

// rejection is a JWT that was rejected after its signature was checked
// (a bad signature, or an authentic token failing a claim check), kept so
// that the same token sent again costs a hash and a lookup instead of a
// signature verification. Only the hash of the token is kept, in a cache
// of its own: invalid tokens never evict verified ones.
type rejection struct {
	err error
	is  *issuer
	// ks is the key set the token was checked against; nil for HMAC. The
	// rejection stands only while the issuer still has that set: a new
	// set may hold the key (a reused kid) that verifies it.
	ks *keySet
}

// size estimates the bytes a rejection holds: the rejection and its error
// (the issuer and the key set are shared).
func (r *rejection) size() int { return int(unsafe.Sizeof(*r)) + 96 }

func (r *rejection) valid() bool { return r.ks == nil || r.is.keys.Load() == r.ks }

// reject remembers err for the token whose hash is key for rejectedTTL,
// unless time alone could turn it into an acceptance (nbf, iat in the
// future, or max_lifetime measured from now).
func (v *Verifier) reject(key tokenKey, is *issuer, ks *keySet, err error) {
	if v.rejected == nil || errors.Is(err, ErrNotYetValid) || errors.Is(err, ErrIssuedInFuture) || errors.Is(err, ErrLifetime) {
		return
	}
	now := v.now().UnixNano()
	v.rejected.add(key, &rejection{err: err, is: is, ks: ks}, now+int64(rejectedTTL), now, nil)
}

// clockCache is a fixed-capacity map from token hashes to values that
// expire, with CLOCK (second-chance) eviction: an entry read since the
// hand last passed survives one more pass; expired entries are reclaimed
// first. It is split into shards by the first byte of the key (uniform:
// keys are SHA-256 outputs) so that concurrent requests rarely share a
// lock. A hit takes a shard's read lock and sets the entry's reference bit
// atomically; only inserts, purges and expired hits take the write lock.
// It is safe for concurrent use; a nil *clockCache is an empty cache that
// stores nothing.
//
// Besides its entries, a cache may be bounded by the bytes its values hold
// (as sizeOf estimates them, plus slotBytes per entry): an insertion then
// evicts, by the same CLOCK order, until it fits. Entries evicted before
// their expiry are counted (evictions).
type clockCache[V any] struct {
	shards    []cacheShard[V]
	sizeOf    func(V) int // nil: bounded by entries only
	evictions atomic.Uint64
}

type cacheShard[V any] struct {
	mu       sync.RWMutex
	index    map[tokenKey]int
	slots    []cacheSlot[V]
	free     []int // emptied slots, reused before the hand evicts
	hand     int
	cap      int
	bytes    int // held by the entries, with sizeOf
	maxBytes int // 0: unbounded
}

type cacheSlot[V any] struct {
	key   tokenKey
	val   V
	until int64  // Unix nanoseconds: the entry is not served at or after it
	ref   uint32 // CLOCK reference bit, accessed atomically
	size  int32
	used  bool
}

// slotBytes is what an entry costs besides its value's allocations: its
// slot (key, value, expiry, reference bit, size) and its index entry.
const slotBytes = 112

// newClockCache returns a cache of exactly capacity entries, or nil when
// capacity is not positive.
func newClockCache[V any](capacity int) *clockCache[V] {
	return newClockCacheBytes[V](capacity, 0, nil)
}

// newClockCacheBytes returns a cache of capacity entries holding at most
// maxBytes (counting slotBytes plus sizeOf of each value; maxBytes 0 or a
// nil sizeOf: no byte bound), or nil when capacity is not positive.
func newClockCacheBytes[V any](capacity, maxBytes int, sizeOf func(V) int) *clockCache[V] {
	if capacity <= 0 {
		return nil
	}
	n := 1
	if capacity >= 1024 {
		n = 16
	}
	if maxBytes <= 0 {
		sizeOf = nil
	}
	c := &clockCache[V]{shards: make([]cacheShard[V], n), sizeOf: sizeOf}
	for i := range c.shards {
		s := &c.shards[i]
		s.cap = capacity / n
		if i < capacity%n {
			s.cap++
		}
		if sizeOf != nil {
			s.maxBytes = max(maxBytes/n, 1)
		}
		s.index = make(map[tokenKey]int)
	}
	return c
}

func (c *clockCache[V]) shard(k tokenKey) *cacheShard[V] {
	return &c.shards[int(k[0])%len(c.shards)]
}

// get returns the value stored for k if it has not expired at now (Unix
// nanoseconds).
func (c *clockCache[V]) get(k tokenKey, now int64) (V, bool) {
	var zero V
	if c == nil {
		return zero, false
	}
	s := c.shard(k)
	s.mu.RLock()
	i, ok := s.index[k]
	if !ok {
		s.mu.RUnlock()
		return zero, false
	}
	e := &s.slots[i]
	if e.until <= now {
		s.mu.RUnlock()
		s.mu.Lock()
		if i, ok := s.index[k]; ok && s.slots[i].until <= now {
			s.removeLocked(i)
		}
		s.mu.Unlock()
		return zero, false
	}
	if atomic.LoadUint32(&e.ref) == 0 {
		atomic.StoreUint32(&e.ref, 1)
	}
	v := e.val
	s.mu.RUnlock()
	return v, true
}

// add stores v for k until the Unix nanosecond until, evicting an entry
// if the shard is full. Nothing is stored when until is not after now, or
// when admit (called under the shard's lock) returns false.
func (c *clockCache[V]) add(k tokenKey, v V, until, now int64, admit func() bool) {
	if c == nil || until <= now {
		return
	}
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if admit != nil && !admit() {
		return
	}
	size := 0
	if c.sizeOf != nil {
		size = slotBytes + c.sizeOf(v)
		if size > s.maxBytes {
			return // larger than the shard's whole budget
		}
	}
	i, update := s.index[k]
	if update {
		s.removeLocked(i)
	}
	for s.maxBytes > 0 && s.bytes+size > s.maxBytes {
		i := s.evictLocked(now, &c.evictions)
		s.free = append(s.free, i)
	}
	switch {
	case len(s.free) > 0:
		i = s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
	case len(s.slots) < s.cap:
		s.slots = append(s.slots, cacheSlot[V]{})
		i = len(s.slots) - 1
	default:
		i = s.evictLocked(now, &c.evictions)
	}
	e := &s.slots[i]
	e.key, e.val, e.until, e.size, e.used = k, v, until, int32(size), true
	ref := uint32(0)
	if update {
		ref = 1 // a replaced entry is as recently used as a read one
	}
	atomic.StoreUint32(&e.ref, ref)
	s.index[k] = i
	s.bytes += size
}

// evictLocked empties and returns a slot of a shard with at least one
// entry: the first one from the hand that has expired or has not been
// read since the hand last passed it; one not expired counts in
// evictions. It ends within two turns: readers cannot set reference bits
// while the write lock is held.
func (s *cacheShard[V]) evictLocked(now int64, evictions *atomic.Uint64) int {
	for {
		i := s.hand
		s.hand = (s.hand + 1) % len(s.slots)
		e := &s.slots[i]
		if !e.used {
			continue // in the free list
		}
		if e.until <= now || atomic.LoadUint32(&e.ref) == 0 {
			if e.until > now {
				evictions.Add(1)
			}
			s.clearLocked(i)
			return i
		}
		atomic.StoreUint32(&e.ref, 0)
	}
}

// clearLocked empties slot i without freeing it.
func (s *cacheShard[V]) clearLocked(i int) {
	var zero V
	e := &s.slots[i]
	delete(s.index, e.key)
	s.bytes -= int(e.size)
	e.key, e.val, e.until, e.size, e.used = tokenKey{}, zero, 0, 0, false
}

// removeLocked empties slot i and frees it.
func (s *cacheShard[V]) removeLocked(i int) {
	s.clearLocked(i)
	s.free = append(s.free, i)
}

// removeIf removes every entry whose value satisfies pred and returns how
// many it removed.
func (c *clockCache[V]) removeIf(pred func(V) bool) int {
	if c == nil {
		return 0
	}
	n := 0
	for si := range c.shards {
		s := &c.shards[si]
		s.mu.Lock()
		for _, i := range s.index {
			if pred(s.slots[i].val) {
				s.removeLocked(i)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// len returns the number of entries, expired ones not yet reclaimed
// included.
func (c *clockCache[V]) len() int {
	if c == nil {
		return 0
	}
	n := 0
	for si := range c.shards {
		s := &c.shards[si]
		s.mu.RLock()
		n += len(s.index)
		s.mu.RUnlock()
	}
	return n
}

// stats returns the entries, the bytes they hold (0 without a byte bound)
// and the evictions so far.
func (c *clockCache[V]) stats() CacheStats {
	if c == nil {
		return CacheStats{}
	}
	st := CacheStats{Evictions: c.evictions.Load()}
	for si := range c.shards {
		s := &c.shards[si]
		s.mu.RLock()
		st.Entries += len(s.index)
		st.Bytes += s.bytes
		s.mu.RUnlock()
	}
	return st
}

// CacheStats describes one of the Verifier's caches.
type CacheStats struct {
	// Entries is the number of entries, expired ones not yet reclaimed
	// included; Bytes what they hold, as estimated when stored.
	Entries, Bytes int
	// Evictions counts the entries evicted before their expiry to make
	// room, since NewVerifier.
	Evictions uint64
}

// capacity returns the maximum number of entries.
func (c *clockCache[V]) capacity() int {
	if c == nil {
		return 0
	}
	n := 0
	for si := range c.shards {
		n += c.shards[si].cap
	}
	return n
}

// tokenBucket is a token-bucket rate limiter on an injected clock. It is
// not safe for concurrent use (the introspector guards it).
type tokenBucket struct {
	rate, burst float64 // tokens per second, capacity
	tokens      float64
	last        time.Time
}

func newTokenBucket(perSecond int) tokenBucket {
	return tokenBucket{rate: float64(perSecond), burst: float64(perSecond), tokens: float64(perSecond)}
}

// take removes a token if one is available at now.
func (b *tokenBucket) take(now time.Time) bool {
	if b.last.IsZero() {
		b.last = now
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}
