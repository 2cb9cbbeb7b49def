// Package events sends walhook's own operational events (a sink paused or
// resumed, a dead letter created, a backfill completed or failed) to the
// events endpoint as Standard Webhooks requests.
//
// An event is first written to the state store's small durable queue
// (state.Events), then sent by Run, oldest first, one at a time; it is
// deleted once the endpoint answered 2xx. A failed attempt is retried
// with exponential backoff from 1 s, capped at 30 s, for MaxAge; an event
// that old is dropped with an error in the log. Nothing here holds the
// replication slot: an emitter only waits for the queue's write, never for
// the endpoint. walhook sends no event about the events endpoint itself:
// its failures are only logged.
package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/state"
)

// The event types.
const (
	SinkPaused        = "sink.paused"
	SinkResumed       = "sink.resumed"
	DeadLetterCreated = "dead_letter.created"
	BackfillCompleted = "backfill.completed"
	BackfillFailed    = "backfill.failed"
)

// Retry timing of a failed send, and how long an event is tried at all.
const (
	InitialWait = time.Second
	MaxWait     = 30 * time.Second
	MaxAge      = 72 * time.Hour
)

// Store is the queue the emitter keeps its events in: every state.Store.
type Store = state.Events

// Options are the parts of an emitter that come from its caller.
type Options struct {
	Version string       // sent as User-Agent: walhook/<version>
	Logger  *slog.Logger // nil discards
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
	// InitialWait and MaxWait replace the retry timing when positive
	// (tests).
	InitialWait, MaxWait time.Duration
}

// Emitter queues events and sends them. Its methods are safe for
// concurrent use, and a nil *Emitter (events off) does nothing.
type Emitter struct {
	cfg     config.Events
	store   Store
	log     *slog.Logger
	now     func() time.Time
	send    *sender
	wake    chan struct{} // poked when an event was queued
	pending atomic.Int64
	initial time.Duration
	max     time.Duration
}

// New returns an emitter to cfg's endpoint with store as its queue, or nil
// when cfg has no URL (events off).
func New(cfg config.Events, store Store, opts Options) (*Emitter, error) {
	if cfg.URL == "" {
		return nil, nil
	}
	s, err := newSender(cfg, opts.Version)
	if err != nil {
		return nil, err
	}
	e := &Emitter{cfg: cfg, store: store, log: opts.Logger, now: opts.Now, send: s, wake: make(chan struct{}, 1),
		initial: InitialWait, max: MaxWait}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("component", "events")
	if e.now == nil {
		e.now = time.Now
	}
	if opts.InitialWait > 0 {
		e.initial = opts.InitialWait
	}
	if opts.MaxWait > 0 {
		e.max = opts.MaxWait
	}
	return e, nil
}

// Data is an event's data: always the sink's name, and per type the
// fields the documentation lists.
type Data map[string]any

// body is what an event's request carries.
type body struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      Data   `json:"data"`
}

// Emit queues an event of type typ about sink, unless the configuration
// leaves that type out. It returns once the event is in the durable queue;
// a queue that cannot be written is logged, never returned: an event must
// not stop delivery.
func (e *Emitter) Emit(ctx context.Context, typ, sink string, data Data) {
	if e == nil || !e.cfg.Wants(typ) {
		return
	}
	if data == nil {
		data = Data{}
	}
	data["sink"] = sink
	now := e.now().UTC()
	b, err := json.Marshal(body{Type: typ, Timestamp: now.Format(time.RFC3339Nano), Data: data})
	if err != nil {
		e.log.Error("event not queued: its data does not encode", "type", typ, "sink", sink, "err", err)
		return
	}
	ev := state.Event{ID: newID(), Created: now, Body: b}
	// The event is queued even when ctx ends now: what it tells happened.
	if _, err := e.store.AddEvent(context.WithoutCancel(ctx), ev); err != nil {
		e.log.Error("event not queued: the state store failed", "type", typ, "sink", sink, "err", err)
		return
	}
	e.pending.Add(1)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// SinkPaused emits sink.paused; reason is operator, gone or pause_after.
func (e *Emitter) SinkPaused(ctx context.Context, sink, reason string) {
	e.Emit(ctx, SinkPaused, sink, Data{"reason": reason})
}

// SinkResumed emits sink.resumed.
func (e *Emitter) SinkResumed(ctx context.Context, sink string) {
	e.Emit(ctx, SinkResumed, sink, nil)
}

// DeadLetterCreated emits dead_letter.created for a dead letter of
// messages messages, stored under id for reason (max_attempts, max_lag or
// backlog_full).
func (e *Emitter) DeadLetterCreated(ctx context.Context, sink, id, reason string, messages int) {
	e.Emit(ctx, DeadLetterCreated, sink, Data{"dead_letter_id": id, "reason": reason, "messages": messages})
}

// BackfillEnded emits backfill.completed or backfill.failed for a
// backfill that reached state done or failed; other states emit nothing.
func (e *Emitter) BackfillEnded(ctx context.Context, b state.Backfill) {
	var typ string
	switch b.State {
	case state.BackfillDone:
		typ = BackfillCompleted
	case state.BackfillFailed:
		typ = BackfillFailed
	default:
		return
	}
	tables := make([]string, len(b.Tables))
	var rows int64
	for i, t := range b.Tables {
		tables[i] = t.Table
		rows += t.Rows
	}
	data := Data{"backfill_id": b.ID, "tables": tables, "rows": rows}
	if typ == BackfillFailed {
		data["error"] = b.Error
	}
	e.Emit(ctx, typ, b.Sink, data)
}

// Pending is how many events wait in the queue to be sent.
func (e *Emitter) Pending() int {
	if e == nil {
		return 0
	}
	return int(e.pending.Load())
}

// newID is a new event's webhook-id: "evt_" and 32 random hex digits.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "evt_" + hex.EncodeToString(b[:])
}

// emitterKey is the context key of an Emitter.
type emitterKey struct{}

// NewContext returns ctx carrying e, for code that has no other way to
// reach it (relay's dead letters, until the relay takes options for it).
func NewContext(ctx context.Context, e *Emitter) context.Context {
	return context.WithValue(ctx, emitterKey{}, e)
}

// FromContext returns the Emitter ctx carries, or nil: events off.
func FromContext(ctx context.Context) *Emitter {
	e, _ := ctx.Value(emitterKey{}).(*Emitter)
	return e
}
