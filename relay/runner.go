package relay

import (
	"context"
	"log/slog"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/cursor"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/sink"
)

// Delivery is what the relay needs of a sink's delivery engine:
// *sink.Pipeline, or a fake in tests.
type Delivery interface {
	// Run delivers until ctx ends.
	Run(ctx context.Context) error
	// Submit queues a message in its ordering group without blocking.
	Submit(m *change.Message, group uint64, barrier bool) error
	// Drain delivers everything submitted, or gives up when ctx ends.
	Drain(ctx context.Context) error
}

// Sink is one destination as the relay drives it: its delivery engine and
// what the relay decides before it (which messages, in which group, how
// many at once).
type Sink struct {
	Name     string
	Delivery Delivery
	Filter   *sink.Filter
	Router   *sink.Router
	// Columns leaves out of what the sink gets the columns its columns
	// key excludes; nil keeps all. It applies after the filter, which may
	// read them.
	Columns *sink.Columns
	Window  config.Window
}

// runner owns one sink's side of the stream: a goroutine that takes the
// sink's events from its inbox, in stream order, skips what the sink
// already has, filters, routes, keeps the window and hands messages to the
// delivery engine. Commits and idle positions travel in the same inbox, so
// marks stay ordered with the sink's messages.
type runner struct {
	Sink
	log     *slog.Logger
	inbox   chan replication.Event
	tracker *cursor.Tracker
	taker   *replication.Taker // nil without a budget
	// dispatched is the last position handed to the delivery engine (or
	// delivered before a restart): anything at or below it is skipped.
	dispatched change.Position

	filterErrors int       // filter evaluation errors since the last report
	reported     time.Time // when filter errors were last logged
}

// inboxSize is how many events may wait for a runner.
const inboxSize = 256

func newRunner(s Sink, log *slog.Logger) *runner {
	return &runner{Sink: s, log: log, inbox: make(chan replication.Event, inboxSize)}
}

// run takes events until the inbox is closed or ctx ends.
func (r *runner) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-r.inbox:
			if !ok {
				return
			}
			if !r.handle(ctx, ev) {
				return
			}
		}
	}
}

// handle takes one event; it reports false once ctx ended.
func (r *runner) handle(ctx context.Context, ev replication.Event) bool {
	switch ev.Kind {
	case replication.EventCommit, replication.EventIdle:
		r.tracker.Mark(ev.LSN)
		return true
	case replication.EventChange:
	default:
		return true
	}
	m := ev.Msg
	if r.taker != nil {
		defer r.taker.Took(m.Size())
	}
	if !r.dispatched.Less(m.Pos) || !r.match(m) {
		return true
	}
	group, barrier := r.Router.Route(m)
	m = r.Columns.Apply(m)
	// The window bounds what a restart would deliver again, and the memory
	// of a sink whose oldest batch keeps failing while later ones are
	// acknowledged.
	if err := r.tracker.Wait(ctx, r.Window.Messages, r.Window.Bytes); err != nil {
		return false
	}
	r.tracker.AddMessage(m)
	r.dispatched = m.Pos
	if err := r.Delivery.Submit(m, group, barrier); err != nil {
		return false // stopping; the message stays unacknowledged
	}
	return true
}

// match applies the sink's filter to m. A filter that fails on a message
// does not match it; failures are logged at most every 10 s, with the
// latest error and how many there were, so a filter that fails on every
// message cannot flood the log.
func (r *runner) match(m *change.Message) bool {
	ok, err := r.Filter.Match(m)
	if err != nil {
		r.filterErrors++
		if now := time.Now(); now.Sub(r.reported) >= 10*time.Second {
			r.log.Warn("filter failed on a message; it is not delivered to this sink", "sink", r.Name,
				"position", m.Pos.String(), "err", err, "failures", r.filterErrors)
			r.filterErrors, r.reported = 0, now
		}
	}
	return ok
}
