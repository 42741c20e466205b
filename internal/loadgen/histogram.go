package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// subBits is the number of sub-bucket bits of the histogram: every power of
// two is split into 2^subBits linear buckets, so a bucket is at most 1/128
// of its lower bound wide, and the midpoint the histogram reports is within
// 1/256 (0.39 %) of any value in the bucket.
const (
	subBits    = 7
	subCount   = 1 << subBits
	numBuckets = (64-subBits)*subCount + subCount
)

// MaxRelativeError bounds |reported - exact| / exact for any quantile the
// histogram reports (values below 128 are exact).
const MaxRelativeError = 1.0 / (2 * subCount)

// Histogram is a log-linear (HDR-style) histogram of non-negative durations
// in nanoseconds, from 1 ns to the full int64 range, with a relative error
// of at most MaxRelativeError. The zero value is empty and ready; it is not
// safe for concurrent use (give each goroutine its own and Merge them).
type Histogram struct {
	counts   []uint64
	n        uint64
	sum      float64
	min, max uint64
}

// bucketOf returns the index of the bucket holding v.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - 1 - subBits
	return (shift+1)<<subBits + int(v>>uint(shift)) - subCount
}

// bucketBounds returns the values [lo, hi] that bucket i holds.
func bucketBounds(i int) (lo, hi uint64) {
	if i < subCount {
		return uint64(i), uint64(i)
	}
	shift := uint(i>>subBits - 1)
	m := uint64(i&(subCount-1)) + subCount
	lo = m << shift
	return lo, lo + (1 << shift) - 1
}

// Record adds one duration (negative durations count as 0).
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	if h.counts == nil {
		h.counts = make([]uint64, numBuckets)
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, numBuckets)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Min and Max are the exact extremes (0 when empty).
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max is the largest sample.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the exact mean (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the nearest-rank q-quantile (0 < q <= 1): the smallest
// sample s such that at least q of the samples are <= s, within
// MaxRelativeError. It returns 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			lo, hi := bucketBounds(i)
			v := lo + (hi-lo)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
