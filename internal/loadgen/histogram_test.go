package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	vals := []uint64{0, 1, 127, 128, 129, 255, 256, 257, 1000, 1 << 20, 1<<20 + 1, 123456789, 1 << 62, math.MaxInt64, math.MaxUint64}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		vals = append(vals, r.Uint64()>>r.IntN(64))
	}
	for _, v := range vals {
		i := bucketOf(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of [0, %d)", v, i, numBuckets)
		}
		lo, hi := bucketBounds(i)
		if v < lo || v > hi {
			t.Fatalf("bucketOf(%d) = %d holds [%d, %d]", v, i, lo, hi)
		}
		if v >= subCount {
			if w := float64(hi-lo+1) / float64(lo); w > 1.0/subCount+1e-12 {
				t.Fatalf("bucket %d [%d, %d] is %.4f of its lower bound wide", i, lo, hi, w)
			}
		}
	}
	// Adjacent buckets tile the value range.
	for i := 1; i < numBuckets; i++ {
		_, prevHi := bucketBounds(i - 1)
		lo, _ := bucketBounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, bucket %d ends at %d", i, lo, i-1, prevHi)
		}
	}
}

// exactQuantile is the nearest-rank quantile of sorted samples.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func TestQuantilesWithinOnePercent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	dists := map[string]func() time.Duration{
		// Latency-like: log-normal around 500µs with a long tail.
		"lognormal": func() time.Duration { return time.Duration(500e3 * math.Exp(r.NormFloat64())) },
		"uniform":   func() time.Duration { return time.Duration(r.Int64N(int64(10 * time.Millisecond))) },
		"bimodal": func() time.Duration {
			if r.IntN(100) == 0 {
				return 50*time.Millisecond + time.Duration(r.Int64N(1e6))
			}
			return 200*time.Microsecond + time.Duration(r.Int64N(1e5))
		},
		"small": func() time.Duration { return time.Duration(r.Int64N(300)) },
	}
	for name, gen := range dists {
		t.Run(name, func(t *testing.T) {
			var h Histogram
			samples := make([]time.Duration, 200000)
			for i := range samples {
				samples[i] = gen()
				h.Record(samples[i])
			}
			slices.Sort(samples)
			for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
				got, want := h.Quantile(q), exactQuantile(samples, q)
				if rel := math.Abs(float64(got-want)) / float64(want); want > 0 && rel > 0.01 {
					t.Errorf("q%.4f = %v, exact %v: error %.3f%% > 1%%", q, got, want, 100*rel)
				}
				if rel := math.Abs(float64(got-want)) / float64(max(want, 1)); rel > MaxRelativeError+1e-9 && want >= subCount {
					t.Errorf("q%.4f = %v, exact %v: error %.3f%% > the documented %.3f%%", q, got, want, 100*rel, 100*MaxRelativeError)
				}
			}
			if h.Count() != uint64(len(samples)) || h.Min() != samples[0] || h.Max() != samples[len(samples)-1] {
				t.Errorf("count/min/max = %d/%v/%v, want %d/%v/%v", h.Count(), h.Min(), h.Max(), len(samples), samples[0], samples[len(samples)-1])
			}
		})
	}
}

func TestHistogramMergeAndEdges(t *testing.T) {
	var empty Histogram
	if empty.Quantile(0.99) != 0 || empty.Mean() != 0 || empty.Count() != 0 {
		t.Error("an empty histogram must report zeros")
	}
	var a, b, all Histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	a.Merge(nil)
	a.Merge(&empty)
	for _, q := range []float64{0.5, 0.99, 0.999} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("merged q%v = %v, want %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Count() != 1000 || a.Min() != time.Microsecond || a.Max() != time.Millisecond || a.Mean() != all.Mean() {
		t.Errorf("merged count/min/max/mean = %d/%v/%v/%v", a.Count(), a.Min(), a.Max(), a.Mean())
	}
	var neg Histogram
	neg.Record(-time.Second)
	if neg.Quantile(1) != 0 || neg.Count() != 1 {
		t.Error("a negative duration must count as 0")
	}
	// One sample: every quantile is that sample (clamped to min/max).
	var one Histogram
	one.Record(1234567 * time.Nanosecond)
	if one.Quantile(0.5) != 1234567 || one.Quantile(0.999) != 1234567 {
		t.Errorf("single sample quantile = %v", one.Quantile(0.5))
	}
}
