package boltstore

import (
	"context"

	"github.com/walhook/walhook/state"
	bolt "go.etcd.io/bbolt"
)

// Group commit. bbolt commits one write transaction at a time, and each
// commit waits for fsync, which takes milliseconds. Writers from several
// goroutines (each sink appends to its own backlog, the relay saves
// cursors) would each wait for the others' fsyncs in turn. So writes are
// queued, and one writer, the leader, commits everything queued in one
// transaction with one fsync; whatever is queued meanwhile goes into the
// next. A lone writer commits at once (bbolt's DB.Batch would first wait
// up to MaxBatchDelay for company).
//
// The leader is the writer that found nobody committing. After its commit
// it hands the lead to the oldest queued writer, if any, and returns: no
// writer commits for others for longer than one transaction, and no
// goroutine runs in the background.

// op is one queued write. fn makes the write in the shared transaction
// and returns what to do once it is durable (update what is kept in
// memory), or an error, which rolls the transaction back; fn then runs
// again without that write. So fn must not change anything outside tx.
type op struct {
	fn    func(tx *bolt.Tx) (after func(), err error)
	after func()
	err   error
	lead  bool          // set before done is closed: the op's writer commits next
	done  chan struct{} // closed when err is final, or to hand over the lead
}

// update makes fn's write durable, together with whatever other writes are
// waiting.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) (func(), error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{fn: fn, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return state.ErrClosed
	}
	if s.solo {
		s.mu.Unlock()
		s.commit([]*op{o})
		return o.err
	}
	s.queue = append(s.queue, o)
	lead := !s.leading
	s.leading = true
	s.mu.Unlock()

	if !lead {
		<-o.done
		if !o.lead {
			return o.err
		}
	}
	// o is queued, and nobody else takes the queue while s.leading holds.
	s.mu.Lock()
	group := s.queue
	s.queue = nil
	s.mu.Unlock()

	s.commit(group)

	s.mu.Lock()
	if len(s.queue) > 0 {
		next := s.queue[0]
		next.lead = true
		close(next.done)
	} else {
		s.leading = false
	}
	s.mu.Unlock()
	for _, g := range group {
		if g != o {
			close(g.done)
		}
	}
	return o.err
}

// commit runs the ops in one transaction. An op whose fn fails gets its
// error and is left out: the transaction is rolled back and the others run
// again without it. If the commit itself fails, every op gets its error.
func (s *Store) commit(ops []*op) {
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
