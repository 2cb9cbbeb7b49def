package state

import (
	"context"
	"time"
)

// The reasons a sink is paused (Pause.Reason), as the status shows them.
const (
	PausedOperator   = "operator"    // the operator paused it (API, CLI, console)
	PausedGone       = "gone"        // its destination answered 410 Gone
	PausedPauseAfter = "pause_after" // it failed for its pause_after without one success
)

// Pause is a sink's stored pause: it holds across restarts and takeovers
// until the operator resumes the sink.
type Pause struct {
	Reason string    // PausedOperator, PausedGone or PausedPauseAfter
	At     time.Time // when the sink was paused
	// Detail is what the operator may want to know beyond the reason (the
	// destination's answer, say), secrets left out by the caller; it may
	// be empty.
	Detail string
}

// Pauses is the part of a Store that keeps sinks' pauses. Its writes are
// durable when they return, like every store write.
type Pauses interface {
	// Pauses returns every paused sink's pause.
	Pauses(ctx context.Context) (map[string]Pause, error)
	// SavePause records that the sink is paused, replacing its pause.
	SavePause(ctx context.Context, sink string, p Pause) error
	// DeletePause removes the sink's pause; a sink without one is not an
	// error.
	DeletePause(ctx context.Context, sink string) error
}

// pauseVersion is the version of pause records.
const pauseVersion = 1

// AppendPause appends p's record: version 1, Reason, At, Detail.
func AppendPause(b []byte, p Pause) []byte {
	b = append(b, pauseVersion)
	b = appendString(b, p.Reason)
	b = appendTime(b, p.At)
	return appendString(b, p.Detail)
}

// DecodePause decodes what AppendPause wrote.
func DecodePause(b []byte) (Pause, error) {
	r := reader{kind: "pause", b: b}
	if v := r.byte("version"); r.err == nil && v != pauseVersion {
		r.version(v, pauseVersion)
	}
	var p Pause
	p.Reason = r.string("reason")
	p.At = r.time("at")
	p.Detail = r.string("detail")
	if r.err == nil && r.off != len(b) {
		r.fail("end", "%d bytes after the detail", len(b)-r.off)
	}
	if r.err != nil {
		return Pause{}, r.err
	}
	return p, nil
}
