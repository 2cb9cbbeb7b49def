package kafka

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/broker"
)

// Kafka transactions (batch_by: transaction).
//
// Each walhook transaction's records are produced in one Kafka
// transaction, begun with its first part and committed with its last, so
// that read_committed consumers see all of it or none. The producer is
// transactional, with an ID stable per sink (TransactionalID): a walhook
// that starts again, or takes over, fences the one before it, and Kafka
// aborts what that one left open; walhook then produces the transaction
// again whole, from its first part, since its cursor never stops inside a
// transaction.
//
// A transactional producer has one open transaction, so the sink's
// transactions are produced one at a time (the lanes of disjoint
// transactions wait their turn); the parts of one transaction keep the
// turn until the last is committed. When a part fails, the Kafka
// transaction is aborted: a first part is produced again in a new one, but
// a later part is refused (an operator's matter: restart walhook to
// produce the transaction again whole), because the parts before it are
// gone from Kafka and walhook holds no whole transaction to produce them
// again. Backfilled reads, which are no transaction, are produced in a
// Kafka transaction of their own per batch.

// txTimeout is how long a Kafka transaction may stay open before the
// broker aborts it: long enough for a large transaction's parts; Kafka's
// transaction.max.timeout.ms defaults to 15 minutes.
const txTimeout = 5 * time.Minute

// TransactionalID is the Kafka transactional ID of the named sink.
func TransactionalID(sink string) string { return "walhook-" + sink }

// txState is what a transactional sink knows of its open transaction.
type txState struct {
	turn chan struct{} // holds a token while a Kafka transaction is open
	mu   sync.Mutex
	open pglogrepl.LSN // the commit LSN of the transaction being produced, 0 if none
}

func newTxState() *txState { return &txState{turn: make(chan struct{}, 1)} }

// deliverTx produces b, one part of a transaction, in the transaction's
// Kafka transaction: it begins it with the first part, and commits it
// with the last.
func (s *Sink) deliverTx(ctx context.Context, b *sink.Batch) error {
	t := s.tx
	lsn, xid, part, last := b.Messages[0].Pos.CommitLSN, b.Messages[0].XID, 1, true
	if b.Tx != nil {
		part, last = b.Tx.Part, b.Tx.Last
	}
	t.mu.Lock()
	holding := t.open != 0 && t.open == lsn
	t.mu.Unlock()
	if !holding {
		if part > 1 {
			return broker.Operator(fmt.Sprintf("part %d of transaction %d (commit %s) has no Kafka transaction: the one that took its earlier parts was aborted, "+
				"and walhook does not produce later parts alone; restart walhook to produce the transaction again whole", part, xid, lsn), nil)
		}
		select {
		case t.turn <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := s.client.BeginTransaction(); err != nil {
			<-t.turn
			return broker.Retry(fmt.Sprintf("begin a Kafka transaction on the cluster at %s: %v", s.brokers, err), err)
		}
		t.mu.Lock()
		t.open = lsn
		t.mu.Unlock()
	}
	err := s.produce(ctx, b)
	if err == nil && !last {
		return nil // the transaction goes on: the next part keeps the turn
	}
	if err == nil {
		cerr := s.client.EndTransaction(context.WithoutCancel(ctx), kgo.TryCommit)
		if cerr == nil {
			s.release()
			return nil
		}
		err = broker.Retry(fmt.Sprintf("commit the Kafka transaction of transaction %d (commit %s): %v", xid, lsn, cerr), cerr)
	}
	s.abort(ctx)
	if part > 1 {
		return broker.Operator(fmt.Sprintf("part %d of transaction %d (commit %s) failed, and its Kafka transaction was aborted with its earlier parts: %v; "+
			"restart walhook to produce the transaction again whole", part, xid, lsn, err), err)
	}
	return err
}

// abort aborts the open Kafka transaction and gives up the turn.
func (s *Sink) abort(ctx context.Context) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	if err := s.client.AbortBufferedRecords(actx); err != nil {
		s.log.Warn("abort the records of a Kafka transaction", "err", err)
	}
	if err := s.client.EndTransaction(actx, kgo.TryAbort); err != nil {
		s.log.Warn("abort a Kafka transaction; the next one begins after the client recovers", "err", err)
	}
	s.release()
}

// release ends the turn of the open transaction.
func (s *Sink) release() {
	s.tx.mu.Lock()
	s.tx.open = 0
	s.tx.mu.Unlock()
	<-s.tx.turn
}
