package relay

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/state"
)

// Status is a synchronised snapshot of the relay, for the admin API and
// metrics.
type Status struct {
	Slot string
	// Running is false before Run has set the sinks up and after it ended.
	Running bool
	// FlushLSN is the LSN last made safe to report to PostgreSQL.
	FlushLSN pglogrepl.LSN
	// Received counts the change messages the stream handed on.
	Received uint64
	Sinks    []SinkStatus
}

// SinkStatus is one sink in a Status.
type SinkStatus struct {
	Name string
	// Acked is the highest position below which everything was delivered.
	Acked change.Position
	// SafeLSN is the sink's part of the flush LSN.
	SafeLSN pglogrepl.LSN
	// Window is how many messages lie between the cursor and the newest
	// one the sink took, and WindowBytes the bytes of those not delivered.
	Window      int
	WindowBytes int64
	// Oldest is the commit time of the oldest undelivered message, zero
	// when nothing is undelivered.
	Oldest time.Time
	// Delivery is the delivery engine's counters; zero for an engine that
	// keeps none.
	Delivery sink.Stats
	// Spilling: the sink's messages go to its backlog while it catches up.
	Spilling     bool
	BacklogCount int64
	BacklogBytes int64
	// Backlogged counts the messages ever appended to the backlog, and
	// DeadLetteredFull those moved from a full backlog to the dead
	// letters.
	Backlogged       uint64
	DeadLetteredFull uint64
	// FilterErrors counts the messages the sink's filter failed on.
	FilterErrors uint64
	// Pause is the sink's pause (see pause.go), nil while it is not
	// paused.
	Pause *state.Pause
}

// Status returns the relay's state now.
func (r *Relay) Status() Status {
	st := Status{Slot: r.slot, Received: r.received.Load()}
	cursors := r.cursorSet()
	if cursors == nil {
		return st
	}
	st.Running = r.running.Load()
	st.FlushLSN = cursors.Flush()
	for _, rn := range r.runnerList() {
		acked, safe, _ := rn.tracker.State()
		n, b := rn.tracker.Window()
		ss := SinkStatus{Name: rn.Name, Acked: acked, SafeLSN: safe, Window: n, WindowBytes: b, Oldest: rn.tracker.Oldest()}
		if s, ok := rn.Delivery.(interface{ Stats() sink.Stats }); ok {
			ss.Delivery = s.Stats()
		}
		ss.Spilling = rn.stats.spilling.Load()
		ss.Backlogged, ss.DeadLetteredFull = rn.stats.backlogged.Load(), rn.stats.deadLettered.Load()
		ss.FilterErrors = rn.stats.filterErrors.Load()
		ss.Pause = rn.stats.pause.Load()
		if rn.Backlog != nil {
			b := rn.Backlog.Stats()
			ss.BacklogCount, ss.BacklogBytes = b.Count, b.Bytes
		}
		st.Sinks = append(st.Sinks, ss)
	}
	return st
}

// ErrUnknownSink is returned for a sink name the relay does not have.
var ErrUnknownSink = fmt.Errorf("no such sink")
