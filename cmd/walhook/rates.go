package main

import (
	"sync"
	"time"
)

// rateWindow is how far back the delivery rate looks.
const rateWindow = time.Minute

// rateSampleEvery is how often runWithServer samples the delivered
// counters, so that the rate covers the last minute whether anyone asks
// for it or not.
const rateSampleEvery = 5 * time.Second

// deliveryRates keeps, per sink, samples of its delivered counter over
// the last minute, and answers the messages delivered per second over
// that minute.
type deliveryRates struct {
	mu      sync.Mutex
	samples map[string][]rateSample
}

type rateSample struct {
	at time.Time
	n  uint64
}

func newDeliveryRates() *deliveryRates {
	return &deliveryRates{samples: map[string][]rateSample{}}
}

// observe records that sink had delivered n messages at now, and returns
// its rate: the messages delivered since the oldest sample of the last
// minute, per second. With no earlier sample, the rate is 0. A counter
// that went back (the sink was removed and added again) starts afresh.
func (d *deliveryRates) observe(sink string, now time.Time, n uint64) float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.samples[sink]
	if len(s) > 0 && n < s[len(s)-1].n {
		s = nil
	}
	// Keep one sample at least a minute old, so the rate spans the whole
	// minute once there is one; drop what is older than that.
	cut := 0
	for cut+1 < len(s) && now.Sub(s[cut+1].at) >= rateWindow {
		cut++
	}
	s = append(s[cut:], rateSample{at: now, n: n})
	d.samples[sink] = s
	first := s[0]
	if now.Sub(first.at) > 2*rateWindow {
		// Nothing sampled for a while: the oldest sample says nothing
		// about the last minute.
		s = s[len(s)-1:]
		d.samples[sink] = s
		return 0
	}
	elapsed := now.Sub(first.at).Seconds()
	if elapsed <= 0 {
		return 0
	}
	return float64(n-first.n) / elapsed
}

// forget drops the sinks not in names.
func (d *deliveryRates) forget(names map[string]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name := range d.samples {
		if !names[name] {
			delete(d.samples, name)
		}
	}
}
