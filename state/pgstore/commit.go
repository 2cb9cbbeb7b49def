package pgstore

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/state"
)

// Writes go through a state.GroupCommit, as in the bbolt store: one
// transaction for whatever writes are queued when it starts. PostgreSQL's
// commit (a WAL flush) costs about what bbolt's fsync does, so sinks
// writing at once share it.

// op is one queued write. fn makes the write in the shared transaction and
// returns what to do once it is committed; an error it marks with refuse
// (the caller's input is wrong) rolls the transaction back and the others
// run again without it. Any other error (the database, the connection)
// fails the whole group. fn must not change anything outside tx.
type op struct {
	fn    func(ctx context.Context, tx pgx.Tx) (after func(), err error)
	after func()
	err   error
}

// refusal marks an op's error as the op's own: its group goes on without
// it.
type refusal struct{ err error }

func (r refusal) Error() string { return r.err.Error() }
func (r refusal) Unwrap() error { return r.err }

func refuse(err error) error { return refusal{err} }

// update makes fn's write durable, together with whatever other writes are
// waiting. Once queued, the write is carried out even if ctx ends (bounded
// by the writer's own deadline), so the caller is never left not knowing.
func (s *Store) update(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) (func(), error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosed() {
		return state.ErrClosed
	}
	o := &op{fn: fn}
	s.group.Do(context.WithoutCancel(ctx), o)
	return unrefuse(o.err)
}

func unrefuse(err error) error {
	var r refusal
	if errors.As(err, &r) {
		return r.err
	}
	return err
}

// commit runs the ops in one transaction through the store's writer, with
// the leading writer's context (its values; update has taken away its
// cancellation). Every statement runs under the context the writer hands
// on, which carries the writer's deadline: a server that stops answering
// (a partition) fails the write when the deadline passes, never later.
func (s *Store) commit(ctx context.Context, ops []*op) {
	for len(ops) > 0 {
		failed := -1
		err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
			for i, o := range ops {
				o.after = nil
				after, err := o.fn(ctx, tx)
				if err != nil {
					var r refusal
					if errors.As(err, &r) {
						failed, o.err = i, err
					}
					return err
				}
				o.after = after
			}
			return nil
		})
		if failed >= 0 {
			ops = append(ops[:failed:failed], ops[failed+1:]...)
			continue
		}
		if err != nil && s.isClosed() {
			err = state.ErrClosed
		}
		s.commits.Add(1)
		s.writes.Add(int64(len(ops)))
		for _, o := range ops {
			o.err = err
			if err == nil && o.after != nil {
				o.after()
			}
		}
		return
	}
}
