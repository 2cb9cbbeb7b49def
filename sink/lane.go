package sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pglogrepl"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// lane delivers the ordering groups that hash to it, one batch at a time.
// Its queue is unbounded: the sink's window bounds what is submitted.
type lane struct {
	p  *Pipeline
	id int

	mu     sync.Mutex
	queue  laneQueue
	notify chan struct{} // poked when queue gets its first message

	batch   []submission
	bytes   int64 // the sizes of batch's messages, while takePart fills it
	last    bool  // batch is its transaction's last part (batch_by: transaction)
	txs     int   // transactions started in this lane, not yet delivered; under Pipeline.mu
	b       Batch
	flow    int // what the previous batch showed flowing (flowNone, flowChanges, flowReads)
	timer   *time.Timer
	backoff *backoff.ExponentialBackOff
	idBuf   []byte

	// The express (express.go): nil for the express itself and under
	// batch_by: transaction. flying holds the groups of the batch of
	// reads in flight while the express may send beside it (nil when it
	// may not), exBusy whether the express has a batch; both under mu.
	express   *lane
	flying    map[uint64]struct{}
	flyingSet map[uint64]struct{} // flying's storage, reused
	exBusy    bool
	exNotify  chan struct{} // poked when a change is queued or a batch of reads goes
	exDone    chan struct{} // poked when the express's batch is done
}

func newLane(p *Pipeline, id int) *lane {
	return &lane{
		p:      p,
		id:     id,
		queue:  laneQueue{inOrder: p.byTx},
		notify: make(chan struct{}, 1),
		b:      Batch{Sink: p.name},
	}
}

func (l *lane) push(s submission) {
	l.mu.Lock()
	l.queue.push(s)
	// The lane is told of its first message, and of every change: it may
	// wait for a read slot (readSlot) that the change does not need. The
	// express is told of a change only while the lane sends a batch of
	// reads alone: at a stream's rate a wake-up per change costs.
	first := l.queue.len() == 1
	isChange := s.m == nil || s.m.Action != change.Read
	express := isChange && l.flying != nil
	l.mu.Unlock()
	if first || isChange {
		poke(l.notify)
	}
	if express {
		poke(l.exNotify)
	}
}

// take moves queued messages into the batch, live changes before
// backfill reads (see laneQueue), up to batch_size and batch_bytes (one
// larger message goes alone), and reports whether the batch is full. The
// batch is in position order.
func (l *lane) take() bool {
	cfg := l.p.settings()
	limit, maxBytes := cfg.BatchSize, cfg.BatchBytes
	l.mu.Lock()
	defer l.mu.Unlock()
	bytes := int64(0)
	for _, s := range l.batch {
		bytes += int64(s.m.Size())
	}
	defer func() { inPositionOrder(l.batch) }()
	changes := slices.ContainsFunc(l.batch, func(s submission) bool { return s.m.Action != change.Read })
	for l.queue.len() > 0 && len(l.batch) < limit {
		if changes && l.queue.readsNext() {
			return false // a change goes without the reads that wait behind it
		}
		front := l.queue.front()
		if len(l.batch) > 0 && !changes && front.m.Action != change.Read && l.express != nil {
			return true // reads alone go now: the change goes beside them (express)
		}
		changes = changes || front.m.Action != change.Read
		size := int64(front.m.Size())
		if len(l.batch) > 0 && maxBytes > 0 && bytes+size > maxBytes {
			return true
		}
		l.batch = append(l.batch, l.queue.pop())
		bytes += size
	}
	return len(l.batch) >= limit
}

func (l *lane) queued() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.queue.len() > 0
}

// run takes batches from the queue and delivers them until ctx ends.
func (l *lane) run(ctx context.Context) {
	l.timer = time.NewTimer(time.Hour)
	l.timer.Stop()
	defer l.timer.Stop()
	for {
		for !l.queued() {
			select {
			case <-ctx.Done():
				return
			case <-l.notify:
			}
		}
		// A paused pipeline forms no batches either: what is queued meanwhile
		// goes out together once it resumes.
		collect := l.collect
		if l.p.byTx {
			collect = l.collectPart
		}
		if !l.p.waitResumed(ctx) {
			return
		}
		held, ok := l.readSlot(ctx)
		if !ok {
			return
		}
		if ok = collect(ctx); ok {
			l.expressOpen()
			ok = l.deliver(ctx)
			ok = l.expressEnd(ctx) && ok
		}
		if held {
			<-l.p.readSlots
		}
		if !ok {
			return
		}
	}
}

// readSlotsFor is how many of a sink's lanes may send a batch of a
// backfill's reads at once: half of them (at least one). A receiver
// serves the requests it has in some order, often first come first
// served: with a batch of reads in every lane, a change's request waits
// behind all of them there, after waiting for its own lane's. Half the
// lanes' reads keep a receiver as busy as all of them would, unless it
// needs more than max_in_flight/2 requests at once to be busy.
func readSlotsFor(lanes int) int { return max(1, lanes/2) }

// readSlot takes one of the pipeline's read slots when what the lane takes
// next is a backfill's reads, waiting for it unless a change comes first:
// a change needs no slot, and collect does not put reads in a batch with
// one (see take). It reports whether it holds a slot, and false for ok if
// ctx ended.
func (l *lane) readSlot(ctx context.Context) (held, ok bool) {
	if l.p.readSlots == nil {
		return false, true
	}
	for {
		l.mu.Lock()
		reads := l.queue.readsNext()
		l.mu.Unlock()
		if !reads {
			return false, true
		}
		select {
		case l.p.readSlots <- struct{}{}:
			return true, true
		case <-l.notify: // a change may have come: it goes first
		case <-ctx.Done():
			return false, false
		}
	}
}

// collect builds the next batch from what is queued. A batch does not wait
// for company while the lane is idle: it goes with what is there. Only
// while a backlog flows (the previous batch was full) does a batch that is
// not full wait for more, at most batch_wait. When that backlog is a
// backfill's reads, the wait ends as soon as the batch holds a change of
// the stream: the change goes at once rather than wait for more reads. It
// reports false if ctx ended.
func (l *lane) collect(ctx context.Context) bool {
	l.batch = l.batch[:0]
	full := l.take()
	wait := l.p.settings().BatchWait
	if full || l.flow == flowNone || wait <= 0 || l.changeWaitsNot() {
		l.flow = l.flowOf(full)
		return true
	}
	l.timer.Reset(wait)
	defer l.timer.Stop()
	for !full {
		select {
		case <-l.notify:
			// A batch waiting here holds reads alone, or changes while
			// changes flow: take ends a batch of reads when a change
			// comes (the change goes beside it), so none waits here.
			full = l.take()
		case <-l.timer.C:
			l.flow = flowNone
			return true
		case <-l.p.draining:
			l.take()
			l.flow = flowNone
			return true
		case <-ctx.Done():
			return false
		}
	}
	l.flow = l.flowOf(true)
	return true
}

// What flows through a lane, as its last batch showed.
const (
	flowNone    = iota // the last batch was not full
	flowChanges        // full, of the stream's changes alone
	flowReads          // full, with a backfill's reads
)

// flowOf is what the batch just collected says flows.
func (l *lane) flowOf(full bool) int {
	if !full {
		return flowNone
	}
	for _, s := range l.batch {
		if s.m.Action == change.Read {
			return flowReads
		}
	}
	return flowChanges
}

// changeWaitsNot reports whether the batch holds a change of the stream
// while what flows is reads: it goes without waiting for company.
func (l *lane) changeWaitsNot() bool {
	if l.flow != flowReads {
		return false
	}
	for _, s := range l.batch {
		if s.m.Action != change.Read {
			return true
		}
	}
	return false
}

// collectPart builds the next part of the transaction at the head of the
// queue (see takePart), waiting for its messages or its end as long as it
// takes. It reports false if ctx ended.
func (l *lane) collectPart(ctx context.Context) bool {
	l.batch, l.bytes = l.batch[:0], 0
	for !l.takePart() {
		select {
		case <-l.notify:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// deliver sends the batch until the destination takes it or the dead-letter
// store does, then acknowledges its messages. It reports false if ctx ended
// first; the batch then stays unacknowledged.
func (l *lane) deliver(ctx context.Context) bool {
	p := l.p
	batch := l.batch
	defer func() {
		clear(l.batch) // let the messages go once the lane is done with them
		l.b.Messages = l.b.Messages[:0]
		if cap(l.b.Body) > 4*int(max(p.settings().BatchBytes, 1<<20)) {
			l.b.Body = nil // a huge message passed: do not keep its buffer
		}
	}()
	l.b.Messages = l.b.Messages[:0]
	for _, s := range batch {
		l.b.Messages = append(l.b.Messages, s.m)
	}
	l.b.ID, l.idBuf = BatchID(p.name, l.b.Messages, l.idBuf)
	l.b.Body = l.b.Body[:0]
	l.b.Tx = nil
	if t := batch[0].tx; t != nil {
		t.parts++
		l.b.Tx = txOf(t, batch[0].m, l.last)
		if t.dead {
			return l.followDead(ctx, batch)
		}
	}
	cfg := p.settings()
	l.resetBackoff(cfg)
	p.stats.inFlight.Add(1)
	defer p.stats.inFlight.Add(-1)

	var firstAttempt time.Time
	for attempt := 1; ; attempt++ {
		// The lease is asked last, just before the attempt: a rate limit's
		// wait between the two would let a lease lapse unnoticed.
		if !p.waitResumed(ctx) || !p.limit.take(ctx, len(batch)) || !l.waitAllowed(ctx) {
			return false
		}
		l.b.Attempt = attempt
		start := time.Now()
		if attempt == 1 {
			firstAttempt = start
		}
		if now := p.settings(); now != cfg {
			cfg = now // reconfigured: the new retry settings from this attempt on
			l.resetBackoff(cfg)
			l.b.Body = l.b.Body[:0]
		}
		err := p.destination().Deliver(ctx, &l.b)
		if err == nil {
			p.stats.attempt(time.Since(start), nil)
			p.stats.delivered.Add(uint64(len(batch)))
			p.acknowledged(batch)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		p.stats.attempt(time.Since(start), err)
		attrs := []slog.Attr{
			slog.Int("lane", l.id),
			slog.String("batch_id", l.b.ID),
			slog.Int("messages", len(batch)),
			slog.String("first", batch[0].m.Pos.String()),
			slog.Int("attempt", attempt),
			slog.String("err", err.Error()),
		}
		if Pauses(err) {
			p.pauseItself(PausedGone, fmt.Sprintf("the destination answered HTTP %d", StatusOf(err)))
			p.log.LogAttrs(ctx, slog.LevelError, "sink paused: the destination is gone; nothing is dropped, resume the sink to go on", attrs...)
			continue
		}
		if p.pauseAfterDue(cfg) == 0 {
			p.pauseItself(PausedPauseAfter, "no attempt succeeded for pause_after ("+cfg.PauseAfter.String()+")")
			p.log.LogAttrs(ctx, slog.LevelError, "sink paused: it failed for its pause_after without one success; nothing is dropped, resume the sink to go on",
				append(attrs, slog.Duration("pause_after", cfg.PauseAfter))...)
			continue
		}
		if reason := giveUp(cfg, attempt, batch[0].m, start, p.walEndNow()); p.deadLetter != nil && reason != "" {
			d := DeadLetter{
				Messages:     append([]*change.Message(nil), l.b.Messages...),
				Groups:       make([]uint64, len(batch)),
				Barriers:     make([]bool, len(batch)),
				Attempts:     attempt,
				LastStatus:   StatusOf(err),
				LastError:    err.Error(),
				FirstAttempt: firstAttempt,
				LastAttempt:  start,
				Reason:       reason,
			}
			for i, s := range batch {
				d.Groups[i], d.Barriers[i] = s.group, s.barrier
			}
			dlErr := p.deadLetter(ctx, d)
			if dlErr == nil {
				p.log.LogAttrs(ctx, slog.LevelWarn, "delivery gave up: batch moved to the dead letters", attrs...)
				p.stats.deadLettered.Add(uint64(len(batch)))
				if t := batch[0].tx; t != nil && !l.last {
					t.dead = true // its other parts follow it: never half a transaction delivered after this one
				}
				p.acknowledged(batch)
				return true
			}
			if ctx.Err() != nil {
				return false
			}
			p.log.LogAttrs(ctx, slog.LevelError, "dead-letter store failed: delivery goes on",
				append(attrs, slog.String("dead_letter_error", dlErr.Error()))...)
		}
		next := l.retryWait(cfg, attempt, err)
		level, msg := slog.LevelWarn, "delivery failed"
		if NeedsOperator(err) {
			level, msg = slog.LevelError, "delivery failed: the destination refuses until an operator acts"
		}
		p.log.LogAttrs(ctx, level, msg, append(attrs, slog.Duration("retry_in", next))...)
		if due := p.pauseAfterDue(cfg); due > 0 && due < next {
			// pause_after ends before the next attempt: pause on time.
			if !l.sleep(ctx, due) {
				return false
			}
			p.pauseItself(PausedPauseAfter, "no attempt succeeded for pause_after ("+cfg.PauseAfter.String()+")")
			p.log.LogAttrs(ctx, slog.LevelError, "sink paused: it failed for its pause_after without one success; nothing is dropped, resume the sink to go on",
				append(attrs, slog.Duration("pause_after", cfg.PauseAfter))...)
			continue
		}
		if !l.sleep(ctx, next) {
			return false
		}
	}
}

// waitAllowed waits until Options.Allowed lets an attempt go, asking
// every RefusedWait; it reports false if ctx ended first. A refusal is
// logged once per wait.
func (l *lane) waitAllowed(ctx context.Context) bool {
	if l.p.allowed == nil {
		return true
	}
	for logged := false; ; logged = true {
		err := l.p.allowed()
		if err == nil {
			return true
		}
		if !logged {
			l.p.log.LogAttrs(ctx, slog.LevelWarn, "delivery held: this instance may not send now",
				slog.Int("lane", l.id), slog.String("batch_id", l.b.ID), slog.String("err", err.Error()))
		}
		if !l.sleep(ctx, RefusedWait) {
			return false
		}
	}
}

// giveUp says why a batch whose attempt failed at now goes to the dead
// letters instead of being tried again, or "": it had its
// retry.max_attempts, or its oldest message (a lane's batch is in position
// order) was committed longer than max_lag ago, or more than max_lag's
// bytes of WAL before walEnd (0: unknown).
func giveUp(cfg *config.Sink, attempt int, oldest *change.Message, now time.Time, walEnd pglogrepl.LSN) string {
	switch {
	case cfg.Retry.MaxAttempts > 0 && attempt >= cfg.Retry.MaxAttempts:
		return ReasonMaxAttempts
	case cfg.MaxLag > 0 && !oldest.CommitTime.IsZero() && now.Sub(oldest.CommitTime) > cfg.MaxLag:
		return ReasonMaxLag
	case cfg.MaxLagBytes > 0 && walEnd > oldest.Pos.CommitLSN && int64(walEnd-oldest.Pos.CommitLSN) > cfg.MaxLagBytes:
		return ReasonMaxLag
	}
	return ""
}

// pauseAfterDue is how long until the sink's pause_after is reached: 0
// once it is, -1 without pause_after or while attempts succeed.
func (p *Pipeline) pauseAfterDue(cfg *config.Sink) time.Duration {
	if cfg.PauseAfter <= 0 {
		return -1
	}
	f := p.stats.failingFor()
	if f == 0 {
		return -1
	}
	return max(cfg.PauseAfter-f, 0)
}

// walEndNow is the server's WAL end as last seen, 0 if unknown.
func (p *Pipeline) walEndNow() pglogrepl.LSN {
	if p.walEnd == nil {
		return 0
	}
	return p.walEnd()
}

// maxLagText is max_lag as written: a duration or a size, "" for none.
func maxLagText(cfg *config.Sink) string {
	switch {
	case cfg.MaxLagBytes > 0:
		return config.FormatSize(cfg.MaxLagBytes)
	case cfg.MaxLag > 0:
		return cfg.MaxLag.String()
	}
	return ""
}

// retryWait is how long to wait after failed attempt number attempt,
// which got err. Without retry.schedule it is the exponential backoff
// (with jitter) up to retry.max, or what Retry-After asked for up to
// retry.max. With a schedule it is the schedule's wait for that attempt
// (its last wait past its end, when there is no dead-letter store to end
// the retries) varied by up to 10%, or Retry-After's wait when that is
// longer, up to the schedule's longest wait.
func (l *lane) retryWait(cfg *config.Sink, attempt int, err error) time.Duration {
	sched := cfg.Retry.Schedule
	if len(sched) == 0 {
		next := min(l.backoff.NextBackOff(), cfg.Retry.Max)
		if wait := RetryAfter(err); wait > 0 {
			next = min(wait, cfg.Retry.Max)
		}
		return next
	}
	base := sched[min(attempt, len(sched))-1]
	next := time.Duration(float64(base) * (0.9 + 0.2*rand.Float64()))
	if wait := RetryAfter(err); wait > next {
		next = max(next, min(wait, slices.Max(sched)))
	}
	return next
}

// resetBackoff starts the retry schedule of a batch under cfg.
func (l *lane) resetBackoff(cfg *config.Sink) {
	if l.backoff == nil {
		l.backoff = backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0),
			backoff.WithRandomizationFactor(0.5), backoff.WithMultiplier(2))
	}
	l.backoff.InitialInterval, l.backoff.MaxInterval = cfg.Retry.Initial, cfg.Retry.Max
	l.backoff.Reset()
}

// sleep waits d, or less if ctx ends; it reports whether ctx is still live.
func (l *lane) sleep(ctx context.Context, d time.Duration) bool {
	l.timer.Reset(d)
	defer l.timer.Stop()
	select {
	case <-l.timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// RetryAfter is the wait a failed attempt's error asks for, or 0.
func RetryAfter(err error) time.Duration {
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		return ra.RetryAfter()
	}
	return 0
}

// Pauses reports whether a failed attempt's error asks to stop delivering
// until the sink is resumed.
func Pauses(err error) bool {
	var pe interface{ Pause() bool }
	return errors.As(err, &pe) && pe.Pause()
}

// NeedsOperator reports whether a failed attempt's error is one that
// retrying cannot mend until someone acts (no JetStream stream covers the
// subject, bad credentials, an unknown topic): it is retried all the same,
// and logged as an error rather than a warning.
func NeedsOperator(err error) bool {
	var oe interface{ NeedsOperator() bool }
	return errors.As(err, &oe) && oe.NeedsOperator()
}

// StatusOf is a failed attempt's status code, or 0.
func StatusOf(err error) int {
	var se interface{ Status() int }
	if errors.As(err, &se) {
		return se.Status()
	}
	return 0
}

// BatchID names a batch of the named sink: "msg_" and 32 hex digits, the
// first 16 bytes of the SHA-256 of the sink name and every message's
// idempotency key, each followed by a zero byte. It is the same on every
// attempt at a batch and after a restart for a batch of the same messages,
// and differs for any batch that holds another message or lacks one,
// whatever its bounds (a change of max_in_flight, group_by or the filters
// regroups batches). buf is scratch space, returned for reuse.
func BatchID(sink string, batch []*change.Message, buf []byte) (string, []byte) {
	buf = append(buf[:0], sink...)
	buf = append(buf, 0)
	for _, m := range batch {
		buf = m.AppendIdempotencyKey(buf)
		buf = append(buf, 0)
	}
	sum := sha256.Sum256(buf)
	id := make([]byte, 4, 4+32)
	copy(id, "msg_")
	return string(hex.AppendEncode(id, sum[:16])), buf
}
