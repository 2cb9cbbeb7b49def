package boltstore

import (
	"context"

	"github.com/walhook/walhook/state"
	bolt "go.etcd.io/bbolt"
)

// Writes go through a state.GroupCommit: one transaction, with one fsync,
// for whatever writes are queued when it starts. bbolt's DB.Batch would
// first wait up to MaxBatchDelay for company; a lone write here commits at
// once.

// op is one queued write. fn makes the write in the shared transaction
// and returns what to do once it is durable (update what is kept in
// memory), or an error, which rolls the transaction back; fn then runs
// again without that write. So fn must not change anything outside tx.
type op struct {
	fn    func(tx *bolt.Tx) (after func(), err error)
	after func()
	err   error
}

// update makes fn's write durable, together with whatever other writes are
// waiting.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) (func(), error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	closed, solo := s.closed, s.solo
	s.mu.Unlock()
	if closed {
		return state.ErrClosed
	}
	o := &op{fn: fn}
	if solo {
		s.commit(ctx, []*op{o})
	} else {
		s.group.Do(ctx, o)
	}
	return o.err
}

// commit runs the ops in one transaction. An op whose fn fails gets its
// error and is left out: the transaction is rolled back and the others run
// again without it. If the commit itself fails, every op gets its error.
func (s *Store) commit(_ context.Context, ops []*op) {
	for len(ops) > 0 {
		failed := -1
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, o := range ops {
				after, err := o.fn(tx)
				if err != nil {
					failed, o.err = i, err
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
		err = translate(err)
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
