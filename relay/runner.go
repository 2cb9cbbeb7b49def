package relay

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
	"github.com/walhook/walhook/cursor"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/state"
)

// Delivery is what the relay needs of a sink's delivery engine:
// *sink.Pipeline, or a fake in tests.
type Delivery interface {
	// Run delivers until ctx ends.
	Run(ctx context.Context) error
	// Submit queues a message in its ordering group without blocking.
	Submit(m *change.Message, group uint64, barrier bool) error
	// Drain delivers everything submitted, or gives up when ctx ends.
	Drain(ctx context.Context) error
	// Ended says the stream passed lsn: every transaction that committed
	// before it has ended (batch_by: transaction sends its last part).
	Ended(lsn pglogrepl.LSN)
}

// Sink is one destination as the relay drives it: its delivery engine and
// what the relay decides before it (which messages, in which group, how
// many at once, where they wait when the sink cannot keep up).
type Sink struct {
	Name     string
	Delivery Delivery
	Filter   *sink.Filter
	Router   *sink.Router
	// Columns leaves out of what the sink gets the columns its columns
	// key excludes; nil keeps all. It applies after the filter, which may
	// read them.
	Columns *sink.Columns
	// FilterErrors is config.Sink.FilterErrors: "dead_letter" keeps a
	// message the filter fails on in DeadLetters; anything else leaves
	// it out.
	FilterErrors string
	Window       config.Window
	// Backlog is where the sink's messages wait, durably, while its window
	// is full and another sink could go on; nil: the sink holds the stream
	// back instead.
	Backlog  state.Backlog
	MaxSize  int64  // backlog.max_size
	WhenFull string // backlog.when_full: "block" or "dead_letter"
	// BatchSize bounds what moves to the dead letters at once when the
	// backlog is full under when_full: dead_letter.
	BatchSize int
	// Transactions is batch_by: transaction: the sink's cursor moves by
	// whole transactions, and the delivery engine is told where each one
	// ends (Delivery.Ended).
	Transactions bool
}

// runner owns one sink's side of the stream: a goroutine that takes the
// sink's events from its inbox, in stream order, skips what the sink
// already has, filters, routes, keeps the window and hands messages to the
// delivery engine. Commits and idle positions travel in the same inbox, so
// marks stay ordered with the sink's messages.
//
// When the window is full and another sink could go on, the runner spills:
// it appends what it takes to the sink's backlog (first everything in the
// window that is not delivered, so that the backlog holds every
// undelivered message from then on), and feeds the delivery engine from
// the backlog, in position order, as room frees up. Once the backlog is
// fed up to its end, messages go straight to the engine again. While
// spilling, a mark is safe once everything taken before it is durable:
// the runner raises its sink's floor in the cursor set to it, so the slot
// moves on while the sink lags.
type runner struct {
	Sink
	log   *slog.Logger
	inbox chan []replication.Event
	// next is what the runner has yet to take of the last batch from its
	// inbox; the batch is shared with the other runners, read only.
	next    []replication.Event
	tracker *cursor.Tracker
	cursors *cursor.Set
	// deadLetters is the sink's dead-letter store: for messages its
	// filter fails on, and the dead letters it replays.
	deadLetters state.DeadLetters
	taker       *replication.Taker // nil without a budget
	// dispatched is the last position taken (handed to the engine, or put
	// in the backlog, or delivered before a restart): anything at or below
	// it is skipped.
	dispatched change.Position

	// blocked counts the relay's runners that cannot take their inbox;
	// total is how many runners there are. A runner spills only while
	// another one can go on. wake is poked whenever either changes: a
	// runner held because nobody else could go on looks again.
	blocked *atomic.Int32
	total   *atomic.Int32
	wake    *wakeup
	isBlock bool
	// ctl carries control requests (see do), run by the runner's
	// goroutine between two events; exited is closed when run returns.
	ctl    chan func()
	exited chan struct{}
	// stopDelivery ends the delivery engine's Run (a hard stop), and
	// stopRun the runner's, for a sink removed while walhook runs;
	// delivered is closed when the engine's Run returned.
	stopDelivery context.CancelFunc
	stopRun      context.CancelFunc
	delivered    chan struct{}

	// mode is the runner's state (see runnerMode); the backlog state
	// below, like mode, is owned by the runner's goroutine.
	mode      runnerMode
	buf       []state.Entry   // taken while spilling, not yet appended
	bufBytes  int             // sizes of buf's messages
	bufMark   pglogrepl.LSN   // the last mark after buf's entries
	lastMark  pglogrepl.LSN   // the last mark taken
	feedPos   change.Position // the newest position handed to the engine
	submitted []state.Entry   // handed to the engine, not yet known delivered
	trimmed   change.Position // the backlog is trimmed up to here
	txEnded   pglogrepl.LSN   // the engine was told that the transaction of this commit LSN ended (txend.go)
	// Under batch_by: transaction (txend.go): floorCap bounds the floor
	// while the transaction of commit LSN capTx is delivered in part and
	// the rest of it is in the backlog; resumeFrom is the slot's flush LSN
	// the stream started from.
	floorCap   pglogrepl.LSN
	capTx      pglogrepl.LSN
	resumeFrom pglogrepl.LSN
	lastTrim   time.Time
	fatal      error // a backlog write failed

	// Replay state (see replay.go): the dead letters queued, in order, the
	// IDs queued or in the engine, and the one in the engine.
	replayQ   []string
	replayIDs map[string]bool
	replaying *replayRun

	fullSince time.Time     // when the window filled, unless it fell below half since
	recheck   time.Duration // canTake asks to be asked again after this

	filterErrors int       // filter evaluation errors since the last report
	reported     time.Time // when filter errors were last logged

	stats runnerStats

	// pause is the sink's pause, nil while it is not paused: a state
	// beside the mode, owned by the runner's goroutine (see pause.go).
	// pauses is where it is stored; onPause is Options.OnPause.
	pause   *state.Pause
	pauses  state.Pauses
	onPause func(PauseNotice)

	// chunks are the backfill chunks between their watermarks for this
	// sink (relay/backfill.go).
	chunks sinkChunks

	// seen is the newest change the runner took from its inbox; taken (see
	// takenThrough) how far every message it took is in its tracker.
	seen    change.Position
	takenMu sync.Mutex
	taken   change.Position
}

// setTaken records that every message the runner took up to pos is in its
// tracker (or was left out by its filter).
func (r *runner) setTaken(pos change.Position) {
	r.takenMu.Lock()
	if r.taken.Less(pos) {
		r.taken = pos
	}
	r.takenMu.Unlock()
}

// takenThrough is the position up to which every message the runner took
// is in its tracker: a message at or below it is delivered once the
// tracker has it acknowledged.
func (r *runner) takenThrough() change.Position {
	r.takenMu.Lock()
	defer r.takenMu.Unlock()
	return r.taken
}

// runnerStats are what the runner counts, read by Status.
type runnerStats struct {
	spilling     atomic.Bool
	filterErrors atomic.Uint64 // messages the filter failed on
	backlogged   atomic.Uint64 // messages appended to the backlog
	deadLettered atomic.Uint64 // messages moved from a full backlog to the dead letters
	pause        atomic.Pointer[state.Pause]
}

// inboxSize is how many batches of events may wait for a runner: the
// stream's batches, or a backfill chunk's rows in batches of inboxBatch.
const (
	inboxSize  = 8
	inboxBatch = 64
)

// Spilling appends in batches: up to spillBatch messages or spillBytes,
// or whatever waited spillWait.
const (
	spillBatch = 1000
	spillBytes = 4 << 20
	spillWait  = 10 * time.Millisecond
	// spillAfter is how long a sink stays behind before it spills.
	spillAfter = time.Second
)

// runnerMode is what a runner does with what it takes.
type runnerMode uint8

const (
	// modeLive: messages go straight to the delivery engine, bounded by
	// the window.
	modeLive runnerMode = iota
	// modeSpilling: messages go to the backlog, and the engine is fed
	// from the backlog in position order until it is fed to its end
	// (then modeLive again).
	modeSpilling
	// modeReplaying: messages go to the backlog (without one, the runner
	// takes nothing), and the engine gets dead letters only (see
	// replay.go); then modeSpilling.
	modeReplaying
)

func newRunner(s Sink, log *slog.Logger) *runner {
	return &runner{Sink: s, log: log, inbox: make(chan []replication.Event, inboxSize), ctl: make(chan func()), exited: make(chan struct{})}
}

// errRunnerStopped answers a request to a runner that no longer runs.
var errRunnerStopped = errors.New("the sink's runner has stopped")

// do runs f on the runner's goroutine between two events, and waits for
// it: the runner takes requests whatever it waits for, so this never
// waits for the stream or for another sink.
func (r *runner) do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case r.ctl <- func() { f(); close(done) }:
	case <-r.exited:
		return fmt.Errorf("sink %q: %w", r.Name, errRunnerStopped)
	case <-ctx.Done():
		return ctx.Err()
	}
	<-done
	return nil
}

// start prepares the runner of a sink whose state is loaded: with a
// backlog that holds messages, it starts spilling, skips what the backlog
// holds and feeds the engine from its start.
func (r *runner) start(ctx context.Context) error {
	r.feedPos = r.dispatched
	// Every transaction that committed before the stream's start has
	// ended: what the backlog holds of one is all of it.
	r.lastMark = max(r.lastMark, r.resumeFrom)
	if err := r.loadPause(ctx); err != nil {
		return err
	}
	if r.Backlog == nil {
		return nil
	}
	st := r.Backlog.Stats()
	if st.Count == 0 {
		return nil
	}
	if !r.dispatched.Less(st.First) {
		if err := r.Backlog.Trim(ctx, r.dispatched); err != nil {
			return fmt.Errorf("sink %q: trim the backlog: %w", r.Name, err)
		}
		r.trimmed = r.dispatched
		st = r.Backlog.Stats()
	}
	if st.Count == 0 {
		return nil
	}
	if r.Transactions && r.resumeFrom < st.First.CommitLSN {
		return r.dropBacklog(ctx, st)
	}
	r.setMode(modeSpilling)
	if r.dispatched.Less(st.Last) {
		r.dispatched = st.Last
	}
	r.log.Info("sink has a backlog; delivering it first", "sink", r.Name, "messages", st.Count, "bytes", st.Bytes,
		"first", st.First.String(), "last", st.Last.String())
	return nil
}

// run takes events until the inbox is closed or ctx ends. It returns an
// error only when the backlog cannot be written: the sink's messages
// could not be kept.
func (r *runner) run(ctx context.Context) error {
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	defer flush.Stop()
	armed := false // flush is set to append what waits in buf
	defer close(r.exited)
	defer r.setBlocked(false)
	for {
		if r.fatal != nil {
			return r.fatal
		}
		// Taken before canTake looks at the other runners, so that a change
		// between the look and the wait ends the wait.
		wake := r.wake.C()
		r.replayStep(ctx)
		if r.fatal != nil {
			return r.fatal
		}
		r.feed(ctx)
		r.trim(ctx)
		r.recheck = 0
		take := r.canTake(ctx)
		r.setBlocked(!take)
		if take && len(r.next) > 0 {
			r.takeNext(ctx)
			continue
		}
		inbox := r.inbox
		var recheck <-chan time.Time
		if !take {
			inbox = nil
			if r.recheck > 0 {
				recheck = time.After(r.recheck)
			}
		} else {
			wake = nil // only a held runner needs to know
		}
		if len(r.buf) > 0 && !armed {
			flush.Reset(spillWait)
			armed = true
		}
		select {
		case <-ctx.Done():
			return nil
		case evs := <-inbox:
			r.next = evs
		case <-r.tracker.Changed():
		case <-recheck:
		case <-wake: // another runner was held or let go, or one was added or removed
		case f := <-r.ctl:
			f()
		case <-r.replayDone():
			r.finishReplay(ctx)
		case <-flush.C:
			armed = false
			r.flush(ctx)
		}
	}
}

// setMode moves the runner to mode m.
func (r *runner) setMode(m runnerMode) {
	r.mode = m
	r.stats.spilling.Store(m != modeLive)
}

// takeNext handles the events of the current batch for as long as the
// runner may take them. While spilling it takes one, so that the backlog
// is fed between two events.
func (r *runner) takeNext(ctx context.Context) {
	for len(r.next) > 0 {
		ev := r.next[0]
		r.next = r.next[1:]
		r.handle(ctx, ev)
		if r.mode != modeLive || r.fatal != nil || !r.canTake(ctx) {
			return
		}
	}
}

// setBlocked tells the relay whether this runner can take its inbox.
func (r *runner) setBlocked(b bool) {
	if r.blocked == nil || b == r.isBlock {
		return
	}
	r.isBlock = b
	if b {
		r.blocked.Add(1)
	} else {
		r.blocked.Add(-1)
	}
	r.wake.poke()
}

// roomInWindow reports whether the window takes one more message. Under
// batch_by: transaction a window of one message takes one more: a part
// cannot go before the message after it (or its transaction's end) is
// known, and that message must get in even after a change larger than the
// window's bytes.
func (r *runner) roomInWindow() bool {
	n, b := r.tracker.Window()
	if r.Transactions && n <= 1 {
		return true
	}
	return (r.Window.Messages <= 0 || n < r.Window.Messages) && (r.Window.Bytes <= 0 || b < r.Window.Bytes || b == 0)
}

// canTake decides whether the runner may take its next event now: when
// the window has room, or by spilling to the backlog while another sink
// could go on, as long as the backlog has room (or its oldest messages can
// move to the dead letters).
func (r *runner) canTake(ctx context.Context) bool {
	if r.mode == modeLive {
		if r.roomInWindow() {
			if n, _ := r.tracker.Window(); n < r.Window.Messages/2 {
				r.fullSince = time.Time{}
			}
			return true
		}
		if r.fullSince.IsZero() {
			r.fullSince = time.Now()
		}
		if r.Backlog == nil || int(r.blocked.Load()) >= int(r.total.Load())-1+boolInt(r.isBlock) {
			return false // nobody else could go on: hold the stream, WAL stays in PostgreSQL
		}
		// Spill only a sink that stays behind: its window full, or never
		// below half full since, for spillAfter. Sinks of about one speed
		// take turns at a full window, and disk would only cost them.
		if wait := spillAfter - time.Since(r.fullSince); wait > 0 {
			r.recheck = wait
			return false
		}
		r.startSpill(ctx, "sink cannot keep up; its messages go to its backlog while the other sinks go on")
		if r.fatal != nil || r.mode != modeSpilling {
			return false // failed, or stopping before the backlog had the window
		}
	}
	if r.Backlog == nil {
		return false // replaying without a backlog: hold the stream until done
	}
	if r.MaxSize <= 0 || r.Backlog.Stats().Bytes+int64(r.bufBytes) < r.MaxSize {
		return true
	}
	if r.WhenFull == "dead_letter" {
		r.flush(ctx)
		r.moveOldest(ctx)
		return r.fatal == nil && r.Backlog.Stats().Bytes < r.MaxSize
	}
	return false // when_full: block
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// startSpill makes the backlog hold every undelivered message of the
// window, then takes what comes next into the backlog; why is logged.
func (r *runner) startSpill(ctx context.Context, why string) {
	acked, _, _ := r.tracker.State()
	last := r.Backlog.Stats().Last
	var window []state.Entry
	for _, e := range r.submitted {
		if acked.Less(e.Msg.Pos) && last.Less(e.Msg.Pos) {
			window = append(window, e)
		}
	}
	if err := r.Backlog.Append(ctx, window); err != nil {
		if ctx.Err() == nil { // else stopping: the window stays undelivered, nothing is lost
			r.fatal = fmt.Errorf("sink %q: append to the backlog: %w", r.Name, err)
		}
		return
	}
	r.setMode(modeSpilling)
	r.stats.backlogged.Add(uint64(len(window)))
	// Everything taken so far is delivered or durable now.
	r.capFloor()
	r.raiseFloor(r.lastMark)
	r.log.Info(why, "sink", r.Name, "window", len(window))
}

// handle takes one event.
func (r *runner) handle(ctx context.Context, ev replication.Event) {
	switch ev.Kind {
	case replication.EventCommit, replication.EventIdle:
		r.lastMark = ev.LSN
		if r.mode == modeLive {
			r.tracker.Mark(ev.LSN)
			r.Delivery.Ended(ev.LSN)
			return
		}
		if len(r.buf) == 0 {
			r.raiseFloor(ev.LSN) // everything before it is durable
		} else {
			r.bufMark = ev.LSN
		}
		return
	case replication.EventChange:
	default:
		return
	}
	m := ev.Msg
	if r.taker != nil && ev.Reserved > 0 {
		// What the stream reserved, not m.Size(): source.columns may have
		// made m smaller since. Backfilled rows reserved nothing.
		defer r.taker.Took(ev.Reserved)
	}
	if r.seen.Less(m.Pos) {
		r.seen = m.Pos
	}
	if r.mode == modeLive {
		defer r.setTaken(r.seen)
	}
	if m.Action == change.Read {
		m = r.settleRead(m) // nil: the sink has the row's newer state
	}
	if m == nil || !r.dispatched.Less(m.Pos) || !r.match(ctx, m) {
		return
	}
	r.took(m)
	group, barrier := r.Router.Route(m)
	m = r.Columns.Apply(m)
	r.dispatched = m.Pos
	e := state.Entry{Msg: m, Group: group, Barrier: barrier}
	if r.mode != modeLive {
		r.buf = append(r.buf, e)
		r.bufBytes += m.Size()
		if len(r.buf) >= spillBatch || r.bufBytes >= spillBytes {
			r.flush(ctx)
		}
		return
	}
	r.submit(e)
}

// submit hands e to the engine.
func (r *runner) submit(e state.Entry) {
	r.tracker.AddMessage(e.Msg)
	r.feedPos = e.Msg.Pos
	if r.Backlog != nil {
		r.submitted = append(r.submitted, e)
	}
	if err := r.Delivery.Submit(e.Msg, e.Group, e.Barrier); err != nil {
		return // stopping; the message stays unacknowledged
	}
}

// flush appends what waits in buf to the backlog, then raises the floor to
// the last mark taken after it.
func (r *runner) flush(ctx context.Context) {
	if len(r.buf) == 0 {
		return
	}
	if err := r.Backlog.Append(ctx, r.buf); err != nil {
		if ctx.Err() == nil { // else stopping: buf stays, its floor is not raised
			r.fatal = fmt.Errorf("sink %q: append to the backlog: %w", r.Name, err)
		}
		return
	}
	r.stats.backlogged.Add(uint64(len(r.buf)))
	clear(r.buf)
	r.buf, r.bufBytes = r.buf[:0], 0
	if r.bufMark != 0 {
		r.raiseFloor(r.bufMark)
		r.bufMark = 0
	}
}

// feed hands backlog messages to the engine while the window has room,
// and stops spilling once the backlog is fed to its end.
func (r *runner) feed(ctx context.Context) {
	for r.mode == modeSpilling && r.fatal == nil && r.roomInWindow() {
		n, _ := r.tracker.Window()
		want := r.Window.Messages - n
		if want <= 0 {
			want = 1
		}
		entries, err := r.Backlog.Read(ctx, r.feedPos, min(want, spillBatch), r.Window.Bytes)
		if err != nil {
			if ctx.Err() == nil {
				r.fatal = fmt.Errorf("sink %q: read the backlog: %w", r.Name, err)
			}
			return
		}
		if len(entries) == 0 {
			if len(r.buf) > 0 {
				r.flush(ctx) // the rest is still in memory: make it durable, then feed it
				continue
			}
			r.setMode(modeLive)
			r.setTaken(r.seen)
			r.Delivery.Ended(r.lastMark) // everything taken is fed: a transaction that ended may end
			r.log.Info("sink caught up with its backlog", "sink", r.Name)
			return
		}
		for _, e := range entries {
			r.submit(e)
		}
		r.setTaken(entries[len(entries)-1].Msg.Pos)
	}
}

// trim deletes what the sink delivered from its backlog, at most every
// 100 ms, and forgets it from the submitted list.
func (r *runner) trim(ctx context.Context) {
	if r.Backlog == nil || time.Since(r.lastTrim) < 100*time.Millisecond {
		return
	}
	r.lastTrim = time.Now()
	acked, _, _ := r.tracker.State()
	r.liftFloorCap(acked)
	// What was delivered leaves memory, even when its transaction was
	// not delivered whole (the backlog keeps it until it is).
	delivered := r.tracker.Delivered()
	i := 0
	for i < len(r.submitted) && !delivered.Less(r.submitted[i].Msg.Pos) {
		i++
	}
	if i > 0 {
		n := copy(r.submitted, r.submitted[i:])
		clear(r.submitted[n:])
		r.submitted = r.submitted[:n]
	}
	if !r.trimmed.Less(acked) || r.Backlog.Stats().Count == 0 {
		return
	}
	if err := r.Backlog.Trim(ctx, acked); err != nil {
		if ctx.Err() == nil {
			r.fatal = fmt.Errorf("sink %q: trim the backlog: %w", r.Name, err)
		}
		return
	}
	r.trimmed = acked
}

// moveOldest moves the backlog's oldest messages to the dead letters, to
// make room under when_full: dead_letter.
func (r *runner) moveOldest(ctx context.Context) {
	d, err := r.Backlog.MoveToDeadLetters(ctx, max(r.BatchSize, 1), 0, state.DeadLetter{Reason: state.ReasonBacklogFull,
		LastError: "the sink's backlog reached backlog.max_size with when_full: dead_letter"})
	if err != nil {
		if ctx.Err() == nil {
			r.fatal = fmt.Errorf("sink %q: move backlog to the dead letters: %w", r.Name, err)
		}
		return
	}
	r.stats.deadLettered.Add(uint64(d.Count))
	r.log.Warn("backlog full: its oldest messages moved to the dead letters", "sink", r.Name,
		"dead_letter", d.ID, "messages", d.Count, "first", d.First.String(), "last", d.Last.String())
}

// match applies the sink's filter to m. A filter that fails on a message
// does not match it: the failure is counted, and under filter_errors:
// dead_letter the message is kept in the sink's dead letters before the
// runner takes anything after it (so the flush LSN never passes it before
// it is durable). Failures are logged at most every 10 s, with the latest
// error and how many there were, so a filter that fails on every message
// cannot flood the log.
func (r *runner) match(ctx context.Context, m *change.Message) bool {
	ok, err := r.Filter.Match(m)
	if err == nil {
		return ok
	}
	r.stats.filterErrors.Add(1)
	r.filterErrors++
	kept := r.FilterErrors == "dead_letter"
	if kept {
		r.deadLetterFiltered(ctx, m, err)
	}
	if now := time.Now(); now.Sub(r.reported) >= 10*time.Second {
		what := "it is not delivered to this sink"
		if kept {
			what = "it is kept in the sink's dead letters"
		}
		r.log.Warn("filter failed on a message; "+what, "sink", r.Name,
			"position", m.Pos.String(), "err", err, "failures", r.filterErrors)
		r.filterErrors, r.reported = 0, now
	}
	return false
}

// deadLetterFiltered keeps m, which the filter failed on, as a dead letter
// of its own, with the routing and columns the sink would have given it.
func (r *runner) deadLetterFiltered(ctx context.Context, m *change.Message, ferr error) {
	group, barrier := r.Router.Route(m)
	now := time.Now()
	id, err := r.deadLetters.Add(ctx, state.DeadLetter{
		Entries:   []state.Entry{{Msg: r.Columns.Apply(m), Group: group, Barrier: barrier}},
		LastError: "the sink's filter failed: " + ferr.Error(),
		Reason:    state.ReasonFilterError, Created: now,
	})
	if err != nil {
		if ctx.Err() == nil {
			r.fatal = fmt.Errorf("sink %q: keep a message its filter failed on in the dead letters: %w", r.Name, err)
		}
		return
	}
	r.log.Debug("message the filter failed on moved to the dead letters", "sink", r.Name, "dead_letter", id, "position", m.Pos.String())
}
