package main

import (
	"math"
	"math/bits"
	"time"
)

// histogram records durations in nanoseconds in log-linear buckets (the HDR
// histogram layout): values below subBucketCount have a bucket each, and
// every power-of-two range above is split into subBucketHalf equal buckets.
// A bucket is at most 1/128 of its lower bound wide and percentiles report its
// midpoint, so they are within 0.4 % of the true value. Recording is an index
// computation and an increment: no allocation, no lock (one histogram per
// goroutine, merged at the end).
type histogram struct {
	counts [bucketCount]uint64
	count  uint64
	sumNs  uint64
	maxNs  uint64
}

const (
	subBucketBits  = 8
	subBucketCount = 1 << subBucketBits // values below this are exact
	subBucketHalf  = subBucketCount / 2
	// Enough power-of-two ranges for any uint64.
	bucketCount = subBucketCount + (64-subBucketBits)*subBucketHalf
)

func (h *histogram) record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketIndex(v)]++
	h.count++
	h.sumNs += v
	if v > h.maxNs {
		h.maxNs = v
	}
}

func (h *histogram) merge(other *histogram) {
	for i, n := range other.counts {
		h.counts[i] += n
	}
	h.count += other.count
	h.sumNs += other.sumNs
	if other.maxNs > h.maxNs {
		h.maxNs = other.maxNs
	}
}

// bucketIndex returns the bucket of v: v itself below subBucketCount, else
// the range of v's highest bit (its exponent) and the next subBucketBits-1
// bits below it.
func bucketIndex(v uint64) int {
	if v < subBucketCount {
		return int(v)
	}
	exp := bits.Len64(v) - subBucketBits // >= 1
	top := v >> uint(exp)                // in [subBucketHalf, subBucketCount)
	return subBucketCount + (exp-1)*subBucketHalf + int(top-subBucketHalf)
}

// bucketBounds returns the values bucket i holds: [lo, hi).
func bucketBounds(i int) (lo, hi uint64) {
	if i < subBucketCount {
		return uint64(i), uint64(i) + 1
	}
	j := i - subBucketCount
	exp := uint(j/subBucketHalf + 1)
	top := uint64(j%subBucketHalf + subBucketHalf)
	return top << exp, (top + 1) << exp
}

// quantileNs returns the value at quantile q (0 < q <= 1): the midpoint of the
// bucket holding the ceil(q*count)-th smallest value, never above the exact
// maximum.
func (h *histogram) quantileNs(q float64) float64 {
	if h.count == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.count)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, n := range h.counts {
		seen += n
		if seen < rank {
			continue
		}
		lo, hi := bucketBounds(i)
		mid := float64(lo)
		if hi-lo > 1 {
			mid = (float64(lo) + float64(hi-1)) / 2
		}
		return math.Min(mid, float64(h.maxNs))
	}
	return float64(h.maxNs)
}

// latencySummary is the "latency_us" object of the report.
type latencySummary struct {
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
	Count uint64  `json:"count"`
}

// summary returns the percentiles in microseconds, or nil without samples.
func (h *histogram) summary() *latencySummary {
	if h.count == 0 {
		return nil
	}
	us := func(ns float64) float64 { return round(ns/1e3, 1) }
	return &latencySummary{
		P50:   us(h.quantileNs(0.50)),
		P90:   us(h.quantileNs(0.90)),
		P99:   us(h.quantileNs(0.99)),
		P999:  us(h.quantileNs(0.999)),
		Max:   us(float64(h.maxNs)),
		Mean:  us(float64(h.sumNs) / float64(h.count)),
		Count: h.count,
	}
}

// round rounds x to the given number of decimals.
func round(x float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(x*p) / p
}
