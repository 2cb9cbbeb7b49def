package sink

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// Transaction batches (batch_by: transaction).
//
// Every batch holds the messages of one transaction, in position order: all
// of them, or one part. A transaction goes through one lane; its parts are
// cut by batch_size and batch_bytes alone, from the messages in order, so
// that the same transaction is cut into the same parts (and each part gets
// the same webhook-id) after a restart, whatever the timing. A part that is
// not full goes only once the transaction is known to have ended (Ended, or
// a message of a later transaction): then it is the last part. batch_wait
// does not apply.
//
// A transaction starts (is handed to a lane) once no earlier transaction
// that is not yet delivered shares an ordering group with it; so the
// transactions that touch one row go one after the other, in commit
// order, and the others in parallel over the lanes. A transaction whose
// groups are not all known yet (it has not ended) starts only when every
// earlier one is delivered, and a barrier, or a transaction of more than
// maxTxGroups groups, is ordered against every other one.
//
// The pipeline holds no whole transaction: a lane takes a started
// transaction's messages as they are submitted and sends its parts as
// they fill, and what is submitted is bounded by the sink's window as in
// batch_by: message.

// maxTxGroups bounds the ordering groups the pipeline remembers of one
// transaction: one that touches more is ordered against every other
// transaction, as a barrier is.
const maxTxGroups = 4096

// scheduleLookahead bounds how many waiting transactions schedule looks
// at: those further on wait their turn (waiting longer never breaks an
// order), and a backlog of transactions on one hot row does not make every
// decision cost the whole backlog.
const scheduleLookahead = 256

// txn is one transaction on its way under batch_by: transaction. The
// pipeline's fields are under Pipeline.mu; parts and dead belong to the
// lane that delivers it.
type txn struct {
	lsn     pglogrepl.LSN
	groups  map[uint64]struct{} // nil once wide
	wide    bool                // ordered against every other transaction
	sealed  bool                // it ended: no message of it follows
	lane    *lane               // nil until it starts
	held    []submission        // submitted before it started
	unacked int                 // submitted, not yet acknowledged

	parts int  // parts cut so far
	dead  bool // a part became a dead letter: the rest follow it
}

// enqueueTx adds s to its transaction, which ends the open one if s
// belongs to another. p.mu is held.
func (p *Pipeline) enqueueTx(s submission) {
	t := p.open
	if t == nil || t.lsn != s.m.Pos.CommitLSN {
		p.seal()
		t = &txn{lsn: s.m.Pos.CommitLSN, groups: map[uint64]struct{}{}}
		p.txs = append(p.txs, t)
		p.open = t
		defer p.schedule()
	}
	s.tx = t
	t.unacked++
	if !t.wide {
		_, known := t.groups[s.group]
		switch {
		case s.barrier || !known && len(t.groups) >= maxTxGroups:
			if t.lane != nil {
				p.release(t.groups)
			}
			t.wide, t.groups = true, nil
		case known:
		case t.lane != nil:
			p.busy[s.group]++
			fallthrough
		default:
			t.groups[s.group] = struct{}{}
		}
	}
	if t.lane != nil {
		p.outstanding++
		t.lane.push(s)
		return
	}
	t.held = append(t.held, s)
}

// Ended tells the pipeline that the stream passed lsn: a transaction that
// committed before it has ended, and its last part may go. Under
// batch_by: message it does nothing.
func (p *Pipeline) Ended(lsn pglogrepl.LSN) {
	if !p.byTx {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open != nil && lsn > p.open.lsn {
		p.seal()
		p.schedule()
	}
}

// seal ends the open transaction. p.mu is held.
func (p *Pipeline) seal() {
	t := p.open
	if t == nil {
		return
	}
	p.open, t.sealed = nil, true
	if t.lane != nil {
		t.lane.push(submission{tx: t, end: true})
	}
}

// schedule starts every transaction that may start now: the oldest
// undelivered one, and any other that has ended whose groups no earlier
// undelivered transaction shares. p.mu is held.
func (p *Pipeline) schedule() {
	if len(p.txs) == 0 {
		return
	}
	if t := p.txs[0]; t.lane == nil {
		p.start(t)
	}
	if p.txs[0].wide {
		return // ordered against every other transaction
	}
	waiting := p.claimed // the groups of the earlier transactions that wait
	clear(waiting)
	looked := 0
	for _, t := range p.txs[1:] {
		if t.lane != nil {
			continue // started: p.busy has its groups
		}
		if t.wide || !t.sealed || looked == scheduleLookahead {
			return // nothing after a wide one starts; an open one is the newest
		}
		looked++
		if !overlaps(t.groups, p.busy) && !overlaps(t.groups, waiting) {
			p.start(t)
			continue
		}
		for g := range t.groups {
			waiting[g] = struct{}{}
		}
	}
}

// overlaps reports whether a group of groups is in set.
func overlaps[V any](groups map[uint64]struct{}, set map[uint64]V) bool {
	if len(set) < len(groups) {
		for g := range set {
			if _, ok := groups[g]; ok {
				return true
			}
		}
		return false
	}
	for g := range groups {
		if _, ok := set[g]; ok {
			return true
		}
	}
	return false
}

// start hands t to the lane with the fewest transactions. p.mu is held.
func (p *Pipeline) start(t *txn) {
	l := p.lanes[0]
	for _, c := range p.lanes[1:] {
		if c.txs < l.txs {
			l = c
		}
	}
	l.txs++
	t.lane = l
	for g := range t.groups {
		p.busy[g]++
	}
	p.outstanding += len(t.held)
	for _, s := range t.held {
		l.push(s)
	}
	t.held = nil
	if t.sealed {
		l.push(submission{tx: t, end: true})
	}
}

// txAcknowledged forgets what of t a delivered part held: once all of t
// is delivered, others may start. p.mu is held.
func (p *Pipeline) txAcknowledged(t *txn, n int) {
	t.unacked -= n
	if t.unacked > 0 || !t.sealed {
		return
	}
	t.lane.txs--
	p.release(t.groups)
	for i, u := range p.txs {
		if u == t {
			p.txs = append(p.txs[:i], p.txs[i+1:]...)
			break
		}
	}
	p.schedule()
}

// release forgets groups of a started transaction from p.busy. p.mu is
// held.
func (p *Pipeline) release(groups map[uint64]struct{}) {
	for g := range groups {
		if p.busy[g]--; p.busy[g] <= 0 {
			delete(p.busy, g)
		}
	}
}

// undeliverable is how many submitted messages cannot go before the
// stream goes on: the open transaction's, whose last part waits for its
// end. p.mu is held.
func (p *Pipeline) undeliverable() int {
	if p.open == nil {
		return 0
	}
	return p.open.unacked
}

// takePart moves the next messages of the transaction at the head of the
// queue into the batch, and reports whether they make a part: batch_size
// messages, or as many as batch_bytes holds, with a message of the
// transaction after them (l.last false), or the rest of the transaction
// once it ended (l.last true). A single message larger than batch_bytes
// is a part of its own.
func (l *lane) takePart() bool {
	limit, maxBytes := partLimits(l.p.settings())
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	defer func() { l.queue.drop(n) }()
	for n < l.queue.len() {
		s := *l.queue.at(n)
		if s.end {
			n++
			if len(l.batch) == 0 {
				continue // its parts were all cut: cannot happen, see seal
			}
			l.last = true
			return true
		}
		size := int64(s.m.Size())
		if len(l.batch) >= limit || len(l.batch) > 0 && maxBytes > 0 && l.bytes+size > maxBytes {
			l.last = false
			return true
		}
		l.batch = append(l.batch, s)
		l.bytes += size
		n++
	}
	return false
}

// partLimits are the most messages and bytes a part holds: batch_size and
// batch_bytes, but below the sink's window, so that the message after a
// full part fits in the window and tells the part is not the last (a part
// as large as the window would wait for a message the window keeps out).
func partLimits(cfg *config.Sink) (messages int, bytes int64) {
	messages, bytes = cfg.BatchSize, cfg.BatchBytes
	if w := cfg.Window.Messages; w > 0 && messages >= w {
		messages = max(w-1, 1)
	}
	if w := cfg.Window.Bytes; w > 0 && (bytes <= 0 || bytes >= w) {
		bytes = max(w-1, 1)
	}
	return messages, bytes
}

// txOf is the transaction object of a part of t that holds first: nil
// for backfilled reads, which are no transaction.
func txOf(t *txn, first *change.Message, last bool) *change.Transaction {
	if first.Action == change.Read {
		return nil
	}
	return &change.Transaction{XID: first.XID, CommitLSN: first.Pos.CommitLSN, CommitTime: first.CommitTime, Part: t.parts, Last: last}
}

// followDead moves a part of a transaction whose earlier part became a
// dead letter to the dead letters too, without an attempt: a receiver
// never gets a transaction's later parts without its earlier ones. It
// retries while the dead-letter store fails, and reports false if ctx
// ended first.
func (l *lane) followDead(ctx context.Context, batch []submission) bool {
	p := l.p
	now := time.Now()
	d := DeadLetter{
		Messages:     append([]*change.Message(nil), l.b.Messages...),
		Groups:       make([]uint64, len(batch)),
		Barriers:     make([]bool, len(batch)),
		LastError:    "an earlier part of its transaction became a dead letter",
		FirstAttempt: now,
		LastAttempt:  now,
		Reason:       ReasonMaxAttempts,
	}
	for i, s := range batch {
		d.Groups[i], d.Barriers[i] = s.group, s.barrier
	}
	for {
		err := p.deadLetter(ctx, d)
		if err == nil {
			p.log.LogAttrs(ctx, slog.LevelWarn, "transaction part moved to the dead letters after its earlier part",
				slog.Int("lane", l.id), slog.String("batch_id", l.b.ID), slog.Int("part", batch[0].tx.parts))
			p.stats.deadLettered.Add(uint64(len(batch)))
			p.acknowledged(batch)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		p.log.LogAttrs(ctx, slog.LevelError, "dead-letter store failed: trying again",
			slog.String("batch_id", l.b.ID), slog.String("dead_letter_error", err.Error()))
		if !l.sleep(ctx, p.settings().Retry.Initial) {
			return false
		}
	}
}
