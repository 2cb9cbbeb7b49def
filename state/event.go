package state

import (
	"context"
	"time"
)

// Event is one of walhook's operational events waiting to be sent to the
// events endpoint (package events). The store keeps it as given; what the
// body says is the events package's business.
type Event struct {
	// Seq orders the queue: the store gives it, increasing, and it is
	// never reused. Zero before AddEvent.
	Seq uint64
	// ID is the event's webhook-id, the same on every attempt.
	ID      string
	Created time.Time
	Body    []byte // the JSON sent
}

// Events is the small durable queue of operational events. Every store
// holds one, whatever its sinks.
type Events interface {
	// AddEvent stores e at the end of the queue, durably, and returns its
	// Seq.
	AddEvent(ctx context.Context, e Event) (uint64, error)
	// Events returns the oldest events, at most max of them (max <= 0: all),
	// oldest first.
	Events(ctx context.Context, max int) ([]Event, error)
	// DeleteEvent removes the event with that Seq; one that is not there
	// is not an error (it was sent and deleted before).
	DeleteEvent(ctx context.Context, seq uint64) error
}

const eventVersion = 1

// AppendEvent appends e's record (its Seq is the store's key, not part of
// it): version 1, ID, Created, then the body to the end.
func AppendEvent(b []byte, e *Event) []byte {
	b = append(b, eventVersion)
	b = appendString(b, e.ID)
	b = appendTime(b, e.Created)
	return append(b, e.Body...)
}

// DecodeEvent decodes what AppendEvent wrote, under the store's seq. The
// result owns its memory.
func DecodeEvent(seq uint64, b []byte) (Event, error) {
	r := reader{kind: "event", b: b}
	if v := r.byte("version"); r.err == nil && v != eventVersion {
		r.version(v, eventVersion)
	}
	e := Event{Seq: seq}
	e.ID = r.string("id")
	e.Created = r.time("created")
	if r.err != nil {
		return Event{}, r.err
	}
	e.Body = append([]byte{}, b[r.off:]...)
	return e, nil
}
