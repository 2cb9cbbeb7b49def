package sink

import (
	"testing"
	"time"

	"github.com/walhook/walhook/config"
)

// retryAfterErr is a failed attempt that asks for a wait.
type retryAfterErr time.Duration

func (e retryAfterErr) Error() string             { return "busy" }
func (e retryAfterErr) RetryAfter() time.Duration { return time.Duration(e) }

// TestRetryWaitSchedule: with retry.schedule, the wait after failed
// attempt N is entry N within 10% (the last entry past the end); a longer
// Retry-After wins, up to the schedule's longest wait.
func TestRetryWaitSchedule(t *testing.T) {
	cfg := &config.Sink{Retry: config.Retry{Initial: time.Second, Max: time.Minute, Schedule: []time.Duration{100 * time.Millisecond, time.Second}}}
	l := &lane{}
	for attempt, base := range map[int]time.Duration{1: 100 * time.Millisecond, 2: time.Second, 3: time.Second} {
		lo, hi := base, base
		for range 200 {
			w := l.retryWait(cfg, attempt, nil)
			if w < base*9/10 || w > base*11/10 {
				t.Fatalf("attempt %d: wait %v, want %v ± 10%%", attempt, w, base)
			}
			lo, hi = min(lo, w), max(hi, w)
		}
		if hi-lo < base/20 {
			t.Errorf("attempt %d: waits from %v to %v: no jitter", attempt, lo, hi)
		}
	}
	if w := l.retryWait(cfg, 1, retryAfterErr(500*time.Millisecond)); w != 500*time.Millisecond {
		t.Errorf("Retry-After 500ms after attempt 1: wait %v, want 500ms", w)
	}
	if w := l.retryWait(cfg, 1, retryAfterErr(time.Hour)); w != time.Second {
		t.Errorf("Retry-After 1h: wait %v, want the longest scheduled wait, 1s", w)
	}
	if w := l.retryWait(cfg, 2, retryAfterErr(10*time.Millisecond)); w < 900*time.Millisecond {
		t.Errorf("a shorter Retry-After: wait %v, want the schedule's 1s ± 10%%", w)
	}
}
