package upstream

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchToken is the size of a typical JWT access token (about 1 KB).
var benchToken = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0." + strings.Repeat("eyJzdWIiOiJhbGljZSJ9", 45) + ".c2lnbmF0dXJl"

// BenchmarkCredentialWarm is the allow path with a cached exchange: one
// SHA-256 over the key material and one LRU lookup.
func BenchmarkCredentialWarm(b *testing.B) {
	as := newFakeAS(b, false, nil)
	s := mustExchange(b, baseExchangeConfig(b, as), Options{})
	sub := testSubject(benchToken)
	sub.Expiry = sub.Expiry.AddDate(1, 0, 0)
	ctx := context.Background()
	if _, err := s.Credential(ctx, sub); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Credential(ctx, sub); err != nil {
			b.Fatal(err)
		}
	}
	if n := as.calls.Load(); n != 1 {
		b.Fatalf("%d exchanges, want 1", n)
	}
}

// BenchmarkCredentialWarmParallel is the warm path under contention for
// the cache's lock.
func BenchmarkCredentialWarmParallel(b *testing.B) {
	as := newFakeAS(b, false, nil)
	s := mustExchange(b, baseExchangeConfig(b, as), Options{})
	subs := make([]SubjectToken, 64)
	for i := range subs {
		subs[i] = testSubject(fmt.Sprintf("%s%d", benchToken, i))
		subs[i].Expiry = subs[i].Expiry.AddDate(1, 0, 0)
		if _, err := s.Credential(context.Background(), subs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Credential(context.Background(), subs[i%len(subs)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkCredentialCold makes one exchange per iteration (a new token
// each time) against a token endpoint on 127.0.0.1: the round trip, the
// form, the strict answer parsing and the cache insert.
func BenchmarkCredentialCold(b *testing.B) {
	as := newFakeAS(b, false, nil)
	cfg := baseExchangeConfig(b, as)
	cfg.CacheSize = 1024
	// The machine running benchmarks is shared: a stall must not fail
	// the measurement.
	cfg.Timeout = 5 * time.Second
	s := mustExchange(b, cfg, Options{})
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	var worst time.Duration
	for b.Loop() {
		i++
		sub := testSubject(fmt.Sprintf("%s%d", benchToken, i))
		start := time.Now()
		if _, err := s.Credential(ctx, sub); err != nil {
			b.Fatal(err)
		}
		worst = max(worst, time.Since(start))
	}
	b.ReportMetric(float64(worst.Microseconds()), "max-µs")
}
