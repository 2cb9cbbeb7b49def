package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// Destination sends one batch somewhere: it is all a kind of sink (HTTP,
// a message broker) implements. The pipeline owns everything else: lanes,
// batching, retries, barriers, dead letters, pausing and statistics.
//
// Deliver is called concurrently from several lanes, each with its own
// Batch. It returns nil once the destination has durably taken every
// message of the batch. Any other error is a failed attempt, retried after
// a backoff; the error may say more through these methods:
//
//	RetryAfter() time.Duration // the destination asked for this wait
//	Pause() bool               // stop delivering until Resume (HTTP 410)
//	Status() int               // a status code, kept in dead letters
//	NeedsOperator() bool       // retrying cannot mend it (no stream, bad credentials)
//
// A destination is one package per type (sink/webhook, sink/nats, ...),
// built by sink/factory; the error's text is what status shows as
// last_error, so it names the cause and its fix.
type Destination interface {
	Deliver(ctx context.Context, b *Batch) error
}

// Batch is one batch on its way, with what a destination may cache across
// the attempts at it.
type Batch struct {
	// ID names the batch's messages: the same on every attempt and after a
	// restart for the same messages (see BatchID).
	ID string
	// Attempt is 1 on the first attempt.
	Attempt  int
	Messages []*change.Message
	// Body is the destination's to fill on the first attempt and reuse on
	// retries; the pipeline empties it for every new batch and drops it
	// when it grew far beyond batch_bytes.
	Body []byte
	// Sink is the sink's name.
	Sink string
	// Tx is the transaction the batch holds, or a part of it, under
	// batch_by: transaction; nil otherwise, and for backfilled reads.
	Tx *change.Transaction
}

// DeadLetter is a batch that failed its last attempt, handed to
// Options.DeadLetter.
type DeadLetter struct {
	Messages     []*change.Message
	Groups       []uint64 // each message's ordering group
	Barriers     []bool   // whether each message is a barrier
	Attempts     int
	LastStatus   int    // the last attempt's status code, 0 if none
	LastError    string // what the last attempt got: a response excerpt or an error
	FirstAttempt time.Time
	LastAttempt  time.Time
	Reason       string // ReasonMaxAttempts or ReasonMaxLag
}

// Why a batch became a dead letter (the same words as the state package's).
const (
	ReasonMaxAttempts = "max_attempts"
	ReasonMaxLag      = "max_lag"
)

// Options are the parts of a pipeline that come from its caller.
type Options struct {
	// Logger receives a line for every failed attempt; nil discards.
	Logger *slog.Logger
	// Ack is called once per batch after it was delivered (or taken by
	// DeadLetter) with its messages' positions, in position order; the
	// slice is the callee's. Lanes call it concurrently.
	Ack func([]change.Position)
	// DeadLetter takes a batch that failed retry.max_attempts times (when
	// that is above 0). When it returns nil the messages are acknowledged;
	// when it fails, delivery goes on and the batch is offered again after
	// the next failed attempt. With a nil DeadLetter the pipeline retries
	// forever: it never drops a message.
	DeadLetter func(ctx context.Context, d DeadLetter) error
	// WALEnd returns the server's WAL end as last seen, 0 while unknown:
	// what max_lag in bytes measures a batch against. Nil, max_lag in
	// bytes does not act.
	WALEnd func() pglogrepl.LSN
	// Allowed, when set, is asked before every attempt. An error refuses
	// the attempt: nothing is sent, the attempt is not counted (it is no
	// failed attempt), and the lane asks again every RefusedWait until it
	// is allowed or the pipeline stops. walhook's active/passive member
	// asks its lease, so that an instance frozen past the lease's validity
	// and resumed sends nothing.
	Allowed func() error
}

// RefusedWait is how long a lane waits after Options.Allowed refused an
// attempt before it asks again.
const RefusedWait = 100 * time.Millisecond

// ErrDraining is returned by Submit once Drain has begun.
var ErrDraining = errors.New("sink is draining")

// ErrStopped is returned by Submit and Drain once Run has returned.
var ErrStopped = errors.New("sink has stopped")

// Pipeline delivers one sink's messages through its Destination: messages
// of one ordering group go through one lane, a batch at a time, in order;
// groups spread over max_in_flight lanes. Submit never blocks: the caller
// bounds what it submits (the sink's window).
//
// A barrier is delivered after everything submitted before it is
// acknowledged, and nothing submitted after it goes out before it is
// acknowledged itself.
type Pipeline struct {
	name       string
	lanesN     int
	cfg        atomic.Pointer[config.Sink] // delivery settings; Reconfigure swaps them
	dest       atomic.Pointer[Destination]
	log        *slog.Logger
	ack        func([]change.Position)
	deadLetter func(context.Context, DeadLetter) error
	walEnd     func() pglogrepl.LSN // nil: max_lag in bytes does not act
	allowed    func() error         // nil: every attempt may go
	limit      *bucket              // rate_limit, shared by the lanes
	lanes      []*lane
	// readSlots bounds the lanes sending a batch of a backfill's reads at
	// once (see readSlot); nil under batch_by: transaction.
	readSlots chan struct{}

	running  atomic.Bool
	stopped  chan struct{} // closed when Run returns
	draining chan struct{} // closed when Drain begins
	drain    sync.Once
	idle     chan struct{} // poked when pending drops to zero

	// byTx: batch_by transaction (see txn.go). txs are the transactions
	// not yet delivered, in commit order; open is the newest while it may
	// go on; busy counts the started transactions per ordering group;
	// claimed is schedule's scratch space.
	byTx    bool
	txs     []*txn
	open    *txn
	busy    map[uint64]int
	claimed map[uint64]struct{}

	mu          sync.Mutex
	pending     int          // submitted and not yet acknowledged, gated ones included
	outstanding int          // handed to lanes and not yet acknowledged
	gate        []submission // waiting behind a barrier, in order
	barrier     *change.Message
	paused      bool
	pauseReason string
	resumed     chan struct{} // closed and replaced on Resume
	// onPause is told when the pipeline pauses itself (see SetPauseHook).
	onPause func(reason, detail string)

	stats stats
}

type submission struct {
	m       *change.Message
	group   uint64
	barrier bool
	replay  *replay // set for a dead letter's message being replayed
	// tx is the message's transaction under batch_by: transaction; end
	// (without m) says tx ended.
	tx  *txn
	end bool
}

// replay is one dead letter being delivered again. Its messages may go
// through several lanes, which count them down concurrently.
type replay struct {
	remaining atomic.Int64
	done      func()
}

// New checks cfg's delivery settings and builds a pipeline to dest. It
// starts nothing: see Run.
func New(cfg config.Sink, dest Destination, opts Options) (*Pipeline, error) {
	if err := checkSettings(cfg); err != nil {
		return nil, err
	}
	p := &Pipeline{
		name:       cfg.Name,
		lanesN:     cfg.MaxInFlight,
		log:        opts.Logger,
		ack:        opts.Ack,
		deadLetter: opts.DeadLetter,
		walEnd:     opts.WALEnd,
		allowed:    opts.Allowed,
		stopped:    make(chan struct{}),
		draining:   make(chan struct{}),
		idle:       make(chan struct{}, 1),
		resumed:    make(chan struct{}),
		limit:      newBucket(cfg.RateLimit.PerSecond(), cfg.BatchSize, nil),
	}
	if cfg.BatchBy == config.BatchByTransaction {
		p.byTx, p.busy, p.claimed = true, map[uint64]int{}, map[uint64]struct{}{}
	} else {
		p.readSlots = make(chan struct{}, readSlotsFor(cfg.MaxInFlight))
	}
	p.cfg.Store(&cfg)
	p.dest.Store(&dest)
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("sink", cfg.Name)
	if (cfg.Retry.MaxAttempts > 0 || cfg.MaxLag > 0 || cfg.MaxLagBytes > 0) && p.deadLetter == nil {
		p.log.Warn("retry.max_attempts or max_lag is set but there is no dead-letter store: retrying forever",
			"max_attempts", cfg.Retry.MaxAttempts, "max_lag", maxLagText(&cfg))
	}
	p.lanes = make([]*lane, cfg.MaxInFlight)
	for i := range p.lanes {
		l := newLane(p, i)
		if !p.byTx {
			l.express, l.flyingSet = newLane(p, i), map[uint64]struct{}{}
			l.exNotify, l.exDone = make(chan struct{}, 1), make(chan struct{}, 1)
		}
		p.lanes[i] = l
	}
	return p, nil
}

// Reconfigure replaces the pipeline's delivery settings (batch_size,
// batch_wait, batch_bytes, retry, timeout, rate_limit) and its destination, live: each
// lane takes them up with its next batch (a batch being retried keeps
// retrying under the new retry settings from its next attempt). The number
// of lanes cannot change live, since that would move ordering groups
// between lanes with messages in flight. It returns the destination it
// replaced, for the caller to close once its requests are done.
func (p *Pipeline) Reconfigure(cfg config.Sink, dest Destination) (Destination, error) {
	if err := checkSettings(cfg); err != nil {
		return nil, err
	}
	if (cfg.BatchBy == config.BatchByTransaction) != p.byTx {
		return nil, fmt.Errorf("sink %q: batch_by cannot change while walhook runs; restart walhook to apply it", p.name)
	}
	if cfg.MaxInFlight != p.lanesN {
		return nil, fmt.Errorf("sink %q: max_in_flight cannot change while walhook runs (%d -> %d); restart walhook to apply it", p.name, p.lanesN, cfg.MaxInFlight)
	}
	cfg.Name = p.name
	p.cfg.Store(&cfg)
	p.limit.set(cfg.RateLimit.PerSecond(), cfg.BatchSize)
	old := p.dest.Swap(&dest)
	return *old, nil
}

// settings are the current delivery settings.
func (p *Pipeline) settings() *config.Sink { return p.cfg.Load() }

// destination is the current destination.
func (p *Pipeline) destination() Destination { return *p.dest.Load() }

func checkSettings(cfg config.Sink) error {
	switch {
	case cfg.BatchSize < 1:
		return fmt.Errorf("sink %q: batch_size must be at least 1, got %d", cfg.Name, cfg.BatchSize)
	case cfg.BatchWait < 0:
		return fmt.Errorf("sink %q: batch_wait must not be negative, got %s", cfg.Name, cfg.BatchWait)
	case cfg.MaxInFlight < 1:
		return fmt.Errorf("sink %q: max_in_flight must be at least 1, got %d", cfg.Name, cfg.MaxInFlight)
	case cfg.Retry.Initial <= 0:
		return fmt.Errorf("sink %q: retry.initial must be positive, got %s", cfg.Name, cfg.Retry.Initial)
	case cfg.Retry.Max < cfg.Retry.Initial:
		return fmt.Errorf("sink %q: retry.max (%s) must not be below retry.initial (%s)", cfg.Name, cfg.Retry.Max, cfg.Retry.Initial)
	case cfg.Retry.MaxAttempts < 0:
		return fmt.Errorf("sink %q: retry.max_attempts must not be negative, got %d (0 means forever)", cfg.Name, cfg.Retry.MaxAttempts)
	}
	return nil
}

// Name is the sink's name.
func (p *Pipeline) Name() string { return p.name }

// Run runs the lanes until ctx ends, then returns nil once every lane has
// stopped. Ending ctx is a hard stop: attempts in flight and retry waits
// are abandoned and their messages stay unacknowledged. Use Drain first
// for a graceful stop. A pipeline runs once.
func (p *Pipeline) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return fmt.Errorf("run sink %q: it has already run", p.name)
	}
	var wg sync.WaitGroup
	for _, l := range p.lanes {
		wg.Go(func() { l.run(ctx) })
		if l.express != nil {
			wg.Go(func() { l.express.runExpress(ctx, l) })
		}
	}
	wg.Wait()
	close(p.stopped)
	return nil
}

// Submit queues m in the lane of its ordering group. It never blocks. It
// returns ErrDraining once Drain has begun and ErrStopped once Run has
// returned. m must not change after Submit returned nil.
func (p *Pipeline) Submit(m *change.Message, group uint64, barrier bool) error {
	select {
	case <-p.draining:
		return ErrDraining
	case <-p.stopped:
		return ErrStopped
	default:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending++
	p.enqueue(submission{m: m, group: group, barrier: barrier})
	return nil
}

// Entry is a message with the routing its sink gave it, as a dead letter
// keeps it.
type Entry struct {
	Msg     *change.Message
	Group   uint64
	Barrier bool
}

// Replay queues a dead letter's messages for delivery again, in order, in
// their ordering groups and with their barriers, and calls done once all
// of them were delivered (or became a dead letter again). They are not
// acknowledged through Options.Ack: they are not part of the stream's
// cursor. The caller keeps them apart from submitted messages (nothing
// submitted is in flight, and nothing is submitted until done), so that a
// batch never mixes the two and a batch that fails is a dead letter in
// position order.
func (p *Pipeline) Replay(entries []Entry, done func()) error {
	if len(entries) == 0 {
		done()
		return nil
	}
	select {
	case <-p.draining:
		return ErrDraining
	case <-p.stopped:
		return ErrStopped
	default:
	}
	r := &replay{done: done}
	r.remaining.Store(int64(len(entries)))
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range entries {
		p.pending++
		p.enqueue(submission{m: e.Msg, group: e.Group, barrier: e.Barrier, replay: r})
	}
	if p.byTx {
		p.seal() // a dead letter is whole: its last part may go
		p.schedule()
	}
	return nil
}

// enqueue hands s to its lane, or keeps it behind a barrier. p.mu is held.
func (p *Pipeline) enqueue(s submission) {
	if p.byTx {
		p.enqueueTx(s)
		return
	}
	if p.barrier != nil || len(p.gate) > 0 || (s.barrier && p.outstanding > 0) {
		p.gate = append(p.gate, s)
		return
	}
	p.send(s)
}

// send hands s to its lane. p.mu is held.
func (p *Pipeline) send(s submission) {
	p.outstanding++
	if s.barrier {
		p.barrier = s.m
	}
	p.lanes[s.group%uint64(len(p.lanes))].push(s)
}

// acknowledged is called by a lane once batch was delivered: it forgets
// the batch and lets waiting messages through a barrier that is done.
func (p *Pipeline) acknowledged(batch []submission) {
	var done []func()
	var acked []change.Position
	for _, s := range batch {
		switch {
		case s.replay != nil:
			if s.replay.remaining.Add(-1) == 0 {
				done = append(done, s.replay.done)
			}
		case p.ack != nil:
			if acked == nil {
				acked = make([]change.Position, 0, len(batch))
			}
			acked = append(acked, s.m.Pos)
		}
	}
	if len(acked) > 0 {
		p.ack(acked)
	}
	for _, f := range done {
		f()
	}
	p.mu.Lock()
	p.pending -= len(batch)
	p.outstanding -= len(batch)
	if t := batch[0].tx; t != nil {
		p.txAcknowledged(t, len(batch))
	}
	if p.barrier != nil {
		for _, s := range batch {
			if s.m == p.barrier {
				p.barrier = nil
			}
		}
	}
	for p.barrier == nil && len(p.gate) > 0 {
		s := p.gate[0]
		if s.barrier && p.outstanding > 0 {
			break
		}
		p.gate[0] = submission{}
		p.gate = p.gate[1:]
		p.send(s)
	}
	if len(p.gate) == 0 {
		p.gate = nil
	}
	idle := p.pending-p.undeliverable() == 0
	p.mu.Unlock()
	if idle {
		select {
		case p.idle <- struct{}{}:
		default:
		}
	}
}

// Pending is how many submitted messages are not yet acknowledged.
func (p *Pipeline) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

// deliverable is how many submitted messages are not yet acknowledged and
// may go without waiting for the stream: under batch_by: transaction the
// open transaction's wait for its end.
func (p *Pipeline) deliverable() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending - p.undeliverable()
}

// Drain stops Submit and delivers everything submitted, sending partial
// batches at once. It returns nil when every submitted message is
// acknowledged, an error wrapping ctx.Err() if ctx ends first, and one
// wrapping ErrStopped if Run returns first. Drain needs Run to be running;
// it may be called more than once.
func (p *Pipeline) Drain(ctx context.Context) error {
	p.drain.Do(func() { close(p.draining) })
	for {
		// A transaction the stream stopped in the middle of cannot end: it
		// is delivered again, whole, after the restart.
		n := p.deliverable()
		if n == 0 {
			return nil
		}
		select {
		case <-p.idle:
		case <-ctx.Done():
			return fmt.Errorf("drain sink %q: %d messages not acknowledged: %w", p.name, n, ctx.Err())
		case <-p.stopped:
			if n := p.deliverable(); n > 0 {
				return fmt.Errorf("drain sink %q: %d messages not acknowledged: %w", p.name, n, ErrStopped)
			}
			return nil
		}
	}
}

// Pause stops the lanes from starting attempts until Resume; attempts in
// flight finish. reason is what Paused reports.
func (p *Pipeline) Pause(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused {
		p.paused, p.pauseReason = true, reason
	}
}

// The reasons the pipeline pauses itself for (the same words as
// state.PausedGone and state.PausedPauseAfter).
const (
	PausedGone       = "gone"        // the destination answered 410 Gone
	PausedPauseAfter = "pause_after" // attempts failed for pause_after without one success
)

// SetPauseHook makes f be called whenever the pipeline pauses itself: the
// reason (PausedGone or PausedPauseAfter) and a detail without secrets.
// The pipeline is paused already when f runs; f must not block. The
// relay sets it so that the sink's runner records the pause.
func (p *Pipeline) SetPauseHook(f func(reason, detail string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onPause = f
}

// pauseItself pauses the pipeline for reason and tells the hook.
func (p *Pipeline) pauseItself(reason, detail string) {
	p.mu.Lock()
	already, hook := p.paused, p.onPause
	if !p.paused {
		p.paused, p.pauseReason = true, reason
	}
	p.mu.Unlock()
	if !already && hook != nil {
		hook(reason, detail)
	}
}

// Resume lets a paused pipeline deliver again, where it stopped.
func (p *Pipeline) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused, p.pauseReason = false, ""
		close(p.resumed)
		p.resumed = make(chan struct{})
	}
}

// Paused reports whether the pipeline is paused, and why.
func (p *Pipeline) Paused() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused, p.pauseReason
}

// waitResumed blocks while the pipeline is paused; it reports false if ctx
// ended first.
func (p *Pipeline) waitResumed(ctx context.Context) bool {
	for {
		p.mu.Lock()
		paused, resumed := p.paused, p.resumed
		p.mu.Unlock()
		if !paused {
			return true
		}
		select {
		case <-resumed:
		case <-ctx.Done():
			return false
		}
	}
}
