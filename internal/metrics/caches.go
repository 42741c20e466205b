package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/internal/jwtauth"
	"github.com/mcpauthz/mcpauthz/policy"
)

// The caches whose size and evictions are exported, the only values of the
// cache label.
const (
	CacheToken         = "token"          // verified tokens (jwtauth)
	CacheTokenRejected = "token_rejected" // JWTs rejected after their signature check
	CacheDecision      = "decision"       // policy decisions
	CacheVisibility    = "visibility"     // list visibility
	CacheAnswer        = "answer"         // answer parts per verified identity (extauthz)
	CacheListParse     = "list_parse"     // strict parses of list results (extproc)
)

// CacheStats is what a cache reports at every scrape.
type CacheStats struct {
	// Entries and Bytes (as the cache's byte bound counts them) now.
	Entries, Bytes int
	// Evictions counts entries dropped to stay within the bounds, since
	// the cache's owner was created.
	Evictions uint64
}

// cacheCollector reads the registered caches at every scrape: the caches
// count for themselves, so the request path pays nothing for the metrics.
type cacheCollector struct {
	entries, bytes, evictions *prometheus.Desc

	mu     sync.Mutex
	caches map[string]func() CacheStats
}

func newCacheCollector() *cacheCollector {
	label := []string{"cache"}
	return &cacheCollector{
		entries:   prometheus.NewDesc("mcpauthz_cache_entries", "Entries held by a cache (token, token_rejected, decision, visibility, answer, list_parse).", label, nil),
		bytes:     prometheus.NewDesc("mcpauthz_cache_bytes", "Bytes held by a cache's entries, as its byte bound counts them.", label, nil),
		evictions: prometheus.NewDesc("mcpauthz_cache_evictions_total", "Entries a cache dropped before their expiry to stay within its bounds (entries and bytes).", label, nil),
		caches:    map[string]func() CacheStats{},
	}
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.bytes
	ch <- c.evictions
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, stats := range c.caches {
		st := stats()
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(st.Entries), name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.Bytes), name)
		ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(st.Evictions), name)
	}
}

// SetCache exports the cache name (CacheToken, CacheTokenRejected,
// CacheDecision, CacheVisibility, CacheAnswer or CacheListParse; other
// names are ignored) as
// mcpauthz_cache_entries, mcpauthz_cache_bytes and
// mcpauthz_cache_evictions_total with cache=name, reading stats at every
// scrape; stats must be safe for concurrent use. A nil stats removes it.
func (m *Metrics) SetCache(name string, stats func() CacheStats) {
	switch name {
	case CacheToken, CacheTokenRejected, CacheDecision, CacheVisibility, CacheAnswer, CacheListParse:
	default:
		return
	}
	m.caches.mu.Lock()
	defer m.caches.mu.Unlock()
	if stats == nil {
		delete(m.caches.caches, name)
		return
	}
	m.caches.caches[name] = stats
}

// ObserveCaches exports the caches of v (token, token_rejected), e
// (decision, visibility) and s (answer); any may be nil.
func (m *Metrics) ObserveCaches(v *jwtauth.Verifier, e *policy.Engine, s *extauthz.Server) {
	if v != nil {
		m.SetCache(CacheToken, func() CacheStats { st, _ := v.CacheStats(); return CacheStats(st) })
		m.SetCache(CacheTokenRejected, func() CacheStats { _, st := v.CacheStats(); return CacheStats(st) })
	}
	if e != nil {
		m.SetCache(CacheDecision, func() CacheStats { return CacheStats(e.DecisionCacheStats()) })
		m.SetCache(CacheVisibility, func() CacheStats { return CacheStats(e.VisibilityCacheStats()) })
	}
	if s != nil {
		m.SetCache(CacheAnswer, func() CacheStats { return CacheStats(s.AnswerCacheStats()) })
	}
}
