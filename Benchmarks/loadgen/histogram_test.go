package main

import (
	"math"
	"math/rand"
	"sort"
	"testing"
	"time"
)

func TestBucketIndexAndBoundsAgree(t *testing.T) {
	values := []uint64{0, 1, 255, 256, 257, 511, 512, 1000, 123456789, 1 << 40, math.MaxUint64}
	for _, v := range values {
		i := bucketIndex(v)
		if i < 0 || i >= bucketCount {
			t.Fatalf("bucketIndex(%d) = %d, out of range", v, i)
		}
		lo, hi := bucketBounds(i)
		if v < lo || (v >= hi && hi != 0) { // hi wraps to 0 for the very last bucket
			t.Errorf("value %d in bucket %d = [%d, %d)", v, i, lo, hi)
		}
	}
}

func TestQuantilesWithinOnePercent(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var h histogram
	samples := make([]float64, 100000)
	for i := range samples {
		d := time.Duration(rng.ExpFloat64()*200e3) + 20*time.Microsecond
		samples[i] = float64(d)
		h.record(d)
	}
	sort.Float64s(samples)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := samples[int(math.Ceil(q*float64(len(samples))))-1]
		got := h.quantileNs(q)
		if rel := math.Abs(got-exact) / exact; rel > 0.01 {
			t.Errorf("q=%v: got %.0f ns, exact %.0f ns (%.2f%% off)", q, got, exact, rel*100)
		}
	}
	if got, want := float64(h.maxNs), samples[len(samples)-1]; got != want {
		t.Errorf("max = %v, want %v", got, want)
	}
}

func TestMergeAddsUp(t *testing.T) {
	var a, b histogram
	a.record(time.Millisecond)
	b.record(3 * time.Millisecond)
	a.merge(&b)
	s := a.summary()
	if s.Count != 2 || s.Mean != 2000 || s.Max != 3000 {
		t.Errorf("merged summary = %+v", s)
	}
}
