// Package lateness measures how late a test process's timers fire: the
// scheduling delay a loaded machine adds to every timestamp the test takes.
// A test that checks timing through timestamps (requests in a 1 s window,
// the wait between two attempts) allows for it, instead of failing
// whenever the machine is busy or passing only because its bounds are
// loose.
package lateness

import (
	"sync"
	"testing"
	"time"
)

// tick is the probe's period.
const tick = 5 * time.Millisecond

// Probe starts measuring and returns a function that stops the probe and
// reports the largest lateness seen, how much later than asked a timer of
// this process fired. The probe also stops when the test ends.
func Probe(t testing.TB) func() time.Duration {
	stop, done := make(chan struct{}), make(chan time.Duration, 1)
	go func() {
		var worst time.Duration
		timer := time.NewTimer(tick)
		defer timer.Stop()
		at := time.Now()
		for {
			select {
			case <-stop:
				done <- worst
				return
			case <-timer.C:
				// Not the value received: the runtime sends the time
				// the timer was due, which hides the lateness.
				now := time.Now()
				worst = max(worst, now.Sub(at)-tick)
				at = now
				timer.Reset(tick)
			}
		}
	}()
	var once sync.Once
	var worst time.Duration
	result := func() time.Duration {
		once.Do(func() { close(stop); worst = <-done })
		return worst
	}
	t.Cleanup(func() { result() })
	return result
}
