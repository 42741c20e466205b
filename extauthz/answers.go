package extauthz

import (
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/mcpauthz/mcpauthz/internal/grpcopts"
)

// The answer cache's default bounds (Options.AnswerCacheSize and
// AnswerCacheBytes). An identity with a shared allow and a shared 403 is
// counted at about 6.4 KB: the bytes bound comes first.
const (
	DefaultAnswerCacheSize  = 4096
	DefaultAnswerCacheBytes = 2 << 20
)

// answerCache holds the answer parts of verified identities (identity):
// their headers, and the allows and denials they share. It is bounded by
// identities and by the bytes their parts hold, estimated as each part is
// added; when either bound is passed it drops a random eighth of the
// identities (Go's map order), at least enough to be within the byte bound
// again, and counts them. An identity dropped while a check still uses it
// stays valid: it is only no longer found, and takes no new parts into the
// count.
type answerCache struct {
	maxEntries, maxBytes int // maxEntries < 0: nothing is kept

	mu sync.RWMutex
	m  map[string]*identity

	entries, bytes atomic.Int64 // read without mu by trim
	evictions      atomic.Uint64
}

func newAnswerCache(maxEntries, maxBytes int) *answerCache {
	return &answerCache{maxEntries: maxEntries, maxBytes: maxBytes, m: map[string]*identity{}}
}

func (c *answerCache) get(key string) (*identity, bool) {
	c.mu.RLock()
	p, ok := c.m[key]
	c.mu.RUnlock()
	return p, ok
}

// add keeps p, whose parts so far are p.size bytes, under key, and returns
// it; or the identity another check kept under key first.
func (c *answerCache) add(key string, p *identity) *identity {
	if c.maxEntries < 0 {
		p.evicted = true // kept nowhere: its parts are not counted
		return p
	}
	c.mu.Lock()
	if first, ok := c.m[key]; ok {
		c.mu.Unlock()
		return first
	}
	c.m[key] = p
	c.entries.Add(1)
	c.bytes.Add(int64(p.size))
	c.mu.Unlock()
	c.trim()
	return p
}

// share stores v, a part of the answers of identity p whose messages are
// msgs, under key in parts (one of p's maps, at most max entries), and
// has the codec remember the messages' encoding. It does nothing once p
// has left the cache, or when another check stored key first: v is then
// answered once, marshalled as usual.
func share[V any](c *answerCache, p *identity, parts *map[string]V, max int, key string, v V, msgs ...proto.Message) {
	grpcopts.Remember(msgs...)
	p.mu.Lock()
	_, dup := (*parts)[key]
	stored := !p.evicted && !dup && len(*parts) < max
	if stored {
		if *parts == nil {
			*parts = map[string]V{}
		}
		(*parts)[key] = v
		p.remembered = append(p.remembered, msgs...)
		c.grow(p, partBytes(len(key), msgs...))
	}
	p.mu.Unlock()
	if !stored {
		grpcopts.Forget(msgs...)
		return
	}
	c.trim()
}

// grow counts n more bytes of parts that p has just taken; the caller holds
// p.mu.
func (c *answerCache) grow(p *identity, n int) {
	if p.evicted {
		return
	}
	p.size += n
	c.bytes.Add(int64(n))
}

// over reports whether the cache is above one of its bounds.
func (c *answerCache) over() bool {
	return c.entries.Load() > int64(c.maxEntries) || c.bytes.Load() > int64(c.maxBytes)
}

// trim drops identities while the cache is above one of its bounds.
func (c *answerCache) trim() {
	if !c.over() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.over() {
		return
	}
	drop := max(len(c.m)/8, 1)
	for key, p := range c.m {
		if drop <= 0 && !c.over() {
			break
		}
		c.drop(key, p)
		drop--
	}
}

// drop removes p; the caller holds c.mu.
func (c *answerCache) drop(key string, p *identity) {
	delete(c.m, key)
	c.entries.Add(-1)
	p.mu.Lock()
	p.evicted = true
	c.bytes.Add(-int64(p.size))
	msgs := p.remembered
	p.remembered = nil
	p.mu.Unlock()
	grpcopts.Forget(msgs...)
	c.evictions.Add(1)
}

// CacheStats is what a cache holds and has dropped (see
// Server.AnswerCacheStats).
type CacheStats struct {
	Entries, Bytes int
	Evictions      uint64
}

// AnswerCacheStats reports the answer cache: the verified identities whose
// answer parts are kept, the bytes those parts are estimated at, and the
// identities dropped to stay within the bounds.
func (s *Server) AnswerCacheStats() CacheStats {
	c := s.answers
	return CacheStats{Entries: int(c.entries.Load()), Bytes: int(c.bytes.Load()), Evictions: c.evictions.Load()}
}

// partBytes estimates the memory of a shared part: its remembered encoding,
// and the generated structs behind it: four times the encoding plus a fixed
// cost per message, about 15 % above the heap BenchmarkAnswerCacheMemory
// measures.
func partBytes(keyLen int, msgs ...proto.Message) int {
	n := keyLen + 64
	for _, m := range msgs {
		n += 4*proto.Size(m) + 160
	}
	return n
}
