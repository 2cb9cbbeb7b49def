package sink

import (
	"sync"
	"sync/atomic"
	"time"
)

// DurationBuckets are the upper bounds, in seconds, of the attempt
// duration histogram in Stats.
var DurationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Stats are a pipeline's counters since New.
type Stats struct {
	Pending        int    // submitted and not yet acknowledged
	InFlight       int    // batches being delivered, retries included
	Delivered      uint64 // messages acknowledged after delivery
	DeadLettered   uint64 // messages acknowledged after the dead-letter store took them
	Attempts       uint64 // attempts that succeeded
	FailedAttempts uint64 // attempts that did not
	// Durations counts attempts by duration: Durations[i] those that took
	// at most DurationBuckets[i] (not cumulative); the last element those
	// that took longer. DurationSum is their total, in seconds.
	Durations   []uint64
	DurationSum float64
	// LastError is the last failed attempt's error and when it happened;
	// empty once a later attempt succeeded.
	LastError   string
	LastErrorAt time.Time
	Paused      bool
	PauseReason string
}

type stats struct {
	inFlight     atomic.Int64
	delivered    atomic.Uint64
	deadLettered atomic.Uint64
	attempts     atomic.Uint64
	failed       atomic.Uint64

	mu          sync.Mutex
	durations   [13]uint64 // len(DurationBuckets)+1
	durationSum float64
	lastError   string
	lastErrorAt time.Time
	// failingSince is the first failed attempt after the last success;
	// zero while attempts succeed. pause_after counts from
	// it.
	failingSince time.Time
}

// failingFor is how long attempts have failed without one success, 0 if
// the last one succeeded.
func (s *stats) failingFor() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failingSince.IsZero() {
		return 0
	}
	return time.Since(s.failingSince)
}

func (s *stats) attempt(d time.Duration, err error) {
	if err == nil {
		s.attempts.Add(1)
	} else {
		s.failed.Add(1)
	}
	secs := d.Seconds()
	i := 0
	for i < len(DurationBuckets) && secs > DurationBuckets[i] {
		i++
	}
	s.mu.Lock()
	s.durations[i]++
	s.durationSum += secs
	if err != nil {
		s.lastError, s.lastErrorAt = err.Error(), time.Now()
		if s.failingSince.IsZero() {
			s.failingSince = s.lastErrorAt.Add(-d) // when the attempt started
		}
	} else {
		s.lastError, s.failingSince = "", time.Time{}
	}
	s.mu.Unlock()
}

// Stats returns the pipeline's counters.
func (p *Pipeline) Stats() Stats {
	st := Stats{
		Pending:        p.Pending(),
		InFlight:       int(p.stats.inFlight.Load()),
		Delivered:      p.stats.delivered.Load(),
		DeadLettered:   p.stats.deadLettered.Load(),
		Attempts:       p.stats.attempts.Load(),
		FailedAttempts: p.stats.failed.Load(),
	}
	st.Paused, st.PauseReason = p.Paused()
	p.stats.mu.Lock()
	st.Durations = append([]uint64(nil), p.stats.durations[:]...)
	st.DurationSum = p.stats.durationSum
	st.LastError, st.LastErrorAt = p.stats.lastError, p.stats.lastErrorAt
	p.stats.mu.Unlock()
	return st
}
