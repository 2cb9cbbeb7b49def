package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/walhook/walhook/change"
)

// lane delivers the messages of the keys that hash to it, one batch at a
// time. Everything but queue belongs to the lane's goroutine.
type lane struct {
	s     *Sink
	id    int
	queue chan *change.Message

	batch   []*change.Message
	body    []byte // the batch's JSON, reused from batch to batch
	idBuf   []byte // BatchID's scratch space
	resp    []byte // a failed attempt's response body, reused
	mac     hash.Hash
	sig     []byte
	timer   *time.Timer
	backoff *backoff.ExponentialBackOff
}

func newLane(s *Sink, id int) *lane {
	l := &lane{
		s:     s,
		id:    id,
		queue: make(chan *change.Message, 2*s.cfg.BatchSize),
		batch: make([]*change.Message, 0, s.cfg.BatchSize),
		backoff: backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(s.cfg.Retry.Initial),
			backoff.WithMaxInterval(s.cfg.Retry.Max),
			backoff.WithMaxElapsedTime(0),
			backoff.WithRandomizationFactor(0.5),
			backoff.WithMultiplier(2),
		),
	}
	if s.key != nil {
		l.mac = hmac.New(sha256.New, s.key)
	}
	return l
}

// run takes batches from the queue and delivers them until ctx ends.
func (l *lane) run(ctx context.Context) {
	l.timer = time.NewTimer(time.Hour)
	l.timer.Stop()
	defer l.timer.Stop()
	for {
		var first *change.Message
		select {
		case <-ctx.Done():
			return
		case first = <-l.queue:
		}
		batch, ok := l.collect(ctx, first)
		if !ok || !l.deliver(ctx, batch) {
			return
		}
	}
}

// collect builds a batch that starts with first: it takes queued messages
// until the batch is full, batch_wait has passed since first, or the queue
// is empty while the sink drains. It reports false if ctx ended.
func (l *lane) collect(ctx context.Context, first *change.Message) ([]*change.Message, bool) {
	s := l.s
	batch := append(l.batch[:0], first)
	wait := s.cfg.BatchWait > 0
	if wait {
		l.timer.Reset(s.cfg.BatchWait)
		defer l.timer.Stop()
	}
	for len(batch) < s.cfg.BatchSize {
		select {
		case m := <-l.queue:
			batch = append(batch, m)
			continue
		default:
		}
		if !wait {
			break
		}
		select {
		case m := <-l.queue:
			batch = append(batch, m)
		case <-l.timer.C:
			return batch, true
		case <-s.draining:
			// The queue is empty and no more is coming: flush now.
			return batch, true
		case <-ctx.Done():
			return nil, false
		}
	}
	return batch, true
}

// deliver posts batch until the receiver answers 2xx or the dead-letter store
// takes it, then acknowledges its messages. It reports false if ctx ended
// first; the batch then stays unacknowledged.
func (l *lane) deliver(ctx context.Context, batch []*change.Message) bool {
	s := l.s
	defer clear(batch) // let the messages go once the lane is done with them
	first := batch[0].Pos
	var id string
	id, l.idBuf = BatchID(s.cfg.Name, batch, l.idBuf)
	l.body = change.AppendBody(l.body[:0], batch, s.cfg.Name)
	l.backoff.Reset()
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)

	for attempt := 1; ; attempt++ {
		retryAfter, err := l.post(ctx, id)
		if err == nil {
			l.acknowledge(batch, &s.delivered)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.failedAttempts.Add(1)
		attrs := []slog.Attr{
			slog.Int("lane", l.id),
			slog.String("webhook_id", id),
			slog.Int("messages", len(batch)),
			slog.String("first", first.String()),
			slog.Int("attempt", attempt),
		}
		var serr *StatusError
		if errors.As(err, &serr) {
			attrs = append(attrs, slog.Int("status", serr.StatusCode))
			if serr.Body != "" {
				attrs = append(attrs, slog.String("response", serr.Body))
			}
		} else {
			attrs = append(attrs, slog.String("error", err.Error()))
		}

		if s.deadLetter != nil && s.cfg.Retry.MaxAttempts > 0 && attempt >= s.cfg.Retry.MaxAttempts {
			dlErr := s.deadLetter(ctx, slices.Clone(batch), err)
			if dlErr == nil {
				s.log.LogAttrs(ctx, slog.LevelWarn, "webhook delivery gave up: batch sent to the dead-letter store", attrs...)
				l.acknowledge(batch, &s.deadLettered)
				return true
			}
			if ctx.Err() != nil {
				return false
			}
			s.log.LogAttrs(ctx, slog.LevelError, "dead-letter store failed: delivery goes on",
				append(attrs, slog.String("dead_letter_error", dlErr.Error()))...)
		}

		next := min(l.backoff.NextBackOff(), s.cfg.Retry.Max)
		if retryAfter > 0 {
			next = min(retryAfter, s.cfg.Retry.Max)
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "webhook delivery failed", append(attrs, slog.Duration("retry_in", next))...)
		if !l.sleep(ctx, next) {
			return false
		}
	}
}

// acknowledge reports batch delivered, in order, and counts it.
func (l *lane) acknowledge(batch []*change.Message, counter *atomic.Uint64) {
	if ack := l.s.ack; ack != nil {
		for _, m := range batch {
			ack(m.Pos)
		}
	}
	counter.Add(uint64(len(batch)))
	l.s.release(len(batch))
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
