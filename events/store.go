package events

import (
	"context"

	"github.com/walhook/walhook/state"
)

// Watch returns store wrapped so that every dead letter made through it
// (a batch that gave up, DeadLetters.Add; a full backlog's oldest
// batches, Backlog.MoveToDeadLetters) emits dead_letter.created once it
// is stored, and so that Of finds e. With a nil e it returns store.
//
// This is how the events reach the places that make dead letters without
// those places knowing of events: the relay is handed the watched store.
func Watch(store state.Store, e *Emitter) state.Store {
	if e == nil {
		return store
	}
	return &watched{Store: store, e: e}
}

// Of returns the Emitter of a store returned by Watch, or nil (events
// off).
func Of(store state.Store) *Emitter {
	if w, ok := store.(*watched); ok {
		return w.e
	}
	return nil
}

type watched struct {
	state.Store
	e *Emitter
}

func (w *watched) DeadLetters(sink string) state.DeadLetters {
	return &watchedDeadLetters{DeadLetters: w.Store.DeadLetters(sink), sink: sink, e: w.e}
}

func (w *watched) Backlog(sink string) state.Backlog {
	return &watchedBacklog{Backlog: w.Store.Backlog(sink), sink: sink, e: w.e}
}

type watchedDeadLetters struct {
	state.DeadLetters
	sink string
	e    *Emitter
}

func (d *watchedDeadLetters) Add(ctx context.Context, dl state.DeadLetter) (string, error) {
	id, err := d.DeadLetters.Add(ctx, dl)
	if err == nil {
		d.e.DeadLetterCreated(ctx, d.sink, id, dl.Reason, len(dl.Entries))
	}
	return id, err
}

type watchedBacklog struct {
	state.Backlog
	sink string
	e    *Emitter
}

func (b *watchedBacklog) MoveToDeadLetters(ctx context.Context, max int, maxBytes int64, d state.DeadLetter) (state.DeadLetter, error) {
	dl, err := b.Backlog.MoveToDeadLetters(ctx, max, maxBytes, d)
	if err == nil {
		b.e.DeadLetterCreated(ctx, b.sink, dl.ID, dl.Reason, dl.Count)
	}
	return dl, err
}
