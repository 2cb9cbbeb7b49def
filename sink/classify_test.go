package sink

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// destErr is an error of a destination that says all a destination can.
type destErr struct {
	wait     time.Duration
	pause    bool
	status   int
	operator bool
}

func (e destErr) Error() string             { return "refused" }
func (e destErr) RetryAfter() time.Duration { return e.wait }
func (e destErr) Pause() bool               { return e.pause }
func (e destErr) Status() int               { return e.status }
func (e destErr) NeedsOperator() bool       { return e.operator }

// TestErrorClassification asks wrapped destination errors what they say,
// as the lanes do.
func TestErrorClassification(t *testing.T) {
	e := fmt.Errorf("publish: %w", destErr{wait: time.Second, pause: true, status: 503, operator: true})
	if got := RetryAfter(e); got != time.Second {
		t.Errorf("RetryAfter: got %v, want 1s", got)
	}
	if !Pauses(e) || StatusOf(e) != 503 || !NeedsOperator(e) {
		t.Errorf("got Pauses %t, StatusOf %d, NeedsOperator %t; want true, 503, true", Pauses(e), StatusOf(e), NeedsOperator(e))
	}
	plain := errors.New("connection refused")
	if RetryAfter(plain) != 0 || Pauses(plain) || StatusOf(plain) != 0 || NeedsOperator(plain) {
		t.Error("a plain error says something; want nothing")
	}
}
