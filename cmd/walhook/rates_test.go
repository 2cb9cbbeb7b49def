package main

import (
	"math"
	"testing"
	"time"
)

func TestDeliveryRates(t *testing.T) {
	t.Parallel()
	d := newDeliveryRates()
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for _, tt := range []struct {
		at   float64
		n    uint64
		want float64
		what string
	}{
		{0, 100, 0, "one sample says nothing"},
		{5, 150, 10, "50 in 5 s"},
		{30, 400, 10, "300 in 30 s"},
		{60, 700, 10, "600 in the minute"},
		// Past a minute the oldest sample kept is the newest one at least a
		// minute old: the rate covers the last minute, not since the start.
		{90, 700, 5, "300 in 60 s (the samples at 30 and 90 s)"},
		{150, 700, 0, "nothing in the last minute"},
		{155, 50, 0, "the counter went back: a new sink"},
		{160, 100, 10, "50 in 5 s after the restart"},
		{400, 100, 0, "no sample for minutes: start afresh"},
	} {
		if got := d.observe("s", at(tt.at), tt.n); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("at %v s, %d delivered (%s): got %v/s, want %v/s", tt.at, tt.n, tt.what, got, tt.want)
		}
	}
	d.forget(map[string]bool{})
	if got := d.observe("s", at(401), 500); got != 0 {
		t.Errorf("after forget: got %v/s, want 0", got)
	}
}
