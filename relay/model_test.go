package relay

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/state"
)

// The model test drives a relay with a fake source and fake destinations
// through random sequences of what happens to sinks (down and up, pause and
// resume, removal and addition, reconfiguration, replays, a full backlog)
// and to the process (a hard kill and a restart from the slot's confirmed
// flush), then checks what a user is promised: no message lost, per-key
// order, a flush LSN never past a message not delivered or durably kept,
// and no goroutine left behind.
//
// A run is seeded; a failure names its seed. Reproduce one with
// -model.seed=N (or WALHOOK_MODEL_SEED=N); run many with -model.runs=N
// (or WALHOOK_MODEL_RUNS=N).

var (
	modelSeed = flag.Uint64("model.seed", 0, "run the relay model test once with this seed")
	modelRuns = flag.Int("model.runs", 0, "how many seeded runs the relay model test makes (default 3; more for a long run)")
)

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

func TestRelayModel(t *testing.T) {
	seeds := []uint64{}
	seed := *modelSeed
	if seed == 0 {
		seed = uint64(envInt("WALHOOK_MODEL_SEED"))
	}
	if seed != 0 {
		seeds = append(seeds, seed)
	} else {
		runs := *modelRuns
		if runs == 0 {
			runs = envInt("WALHOOK_MODEL_RUNS")
		}
		if runs == 0 {
			runs = 3
		}
		base := uint64(time.Now().UnixNano())
		for i := range runs {
			seeds = append(seeds, base+uint64(i))
		}
	}
	for _, s := range seeds {
		if !t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) { runModel(t, s) }) {
			t.Fatalf("reproduce with: go test -race -run 'TestRelayModel' ./relay/ -model.seed=%d", s)
		}
	}
}

// modelWAL is the slot's WAL: transactions committed so far, and the
// flush LSN the slot confirmed.
type modelWAL struct {
	mu        sync.Mutex
	txs       [][]replication.Event // each ends with its commit
	grew      chan struct{}         // closed and replaced when txs grows
	confirmed pglogrepl.LSN
	next      int // the next transaction's LSN
	keys      int
	rnd       *rand.Rand
}

// commit adds n transactions of 1 to 3 rows over the model's keys; one in
// twenty is a truncate, a barrier.
func (w *modelWAL) commit(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for range n {
		lsn := w.next
		w.next += 0x100
		var tx []replication.Event
		if w.rnd.IntN(20) == 0 {
			tx = append(tx, replication.Event{Kind: replication.EventChange, Msg: &change.Message{
				Action: change.Truncate, Schema: "public", Table: "t", Pos: pos(lsn, 0), Barrier: true, Record: []byte(`{}`)}})
		} else {
			for i := range 1 + w.rnd.IntN(3) {
				key := "k" + strconv.Itoa(w.rnd.IntN(w.keys))
				tx = append(tx, replication.Event{Kind: replication.EventChange, Msg: &change.Message{
					Action: change.Update, Schema: "public", Table: "t", Pos: pos(lsn, i), Key: key, Record: []byte(`{"v":"` + strings.Repeat("x", w.rnd.IntN(200)) + `"}`)}})
			}
		}
		tx = append(tx, commit(lsn+0x80))
		w.txs = append(w.txs, tx)
	}
	if w.grew != nil {
		close(w.grew)
	}
	w.grew = make(chan struct{})
}

// messages is every change message committed.
func (w *modelWAL) messages() []*change.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*change.Message
	for _, tx := range w.txs {
		for _, ev := range tx {
			if ev.Kind == replication.EventChange {
				out = append(out, ev.Msg)
			}
		}
	}
	return out
}

// confirm records a flush LSN reported by the relay, as PostgreSQL keeps
// the highest.
func (w *modelWAL) confirm(lsn pglogrepl.LSN) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.confirmed = max(w.confirmed, lsn)
}

func (w *modelWAL) confirmedFlush() pglogrepl.LSN {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.confirmed
}

// modelSource streams the WAL from the slot's confirmed flush, then what
// is committed later, and confirms the relay's flush LSN as it goes.
type modelSource struct{ w *modelWAL }

func (s *modelSource) Setup(context.Context, bool) (pglogrepl.LSN, error) {
	return s.w.confirmedFlush(), nil
}

func (s *modelSource) Run(ctx context.Context, stop <-chan struct{}, flushed func() pglogrepl.LSN, out chan<- []replication.Event) error {
	start := s.w.confirmedFlush()
	i := 0
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		s.w.mu.Lock()
		var tx []replication.Event
		if i < len(s.w.txs) {
			tx = slices.Clone(s.w.txs[i]) // the relay may replace its messages, as a stream's batch is its own
		}
		grew := s.w.grew
		s.w.mu.Unlock()
		if tx != nil && tx[len(tx)-1].LSN <= start {
			i++
			continue
		}
		var send chan<- []replication.Event
		if tx != nil {
			send = out
		}
		select {
		case send <- tx:
			i++
		case <-grew:
		case <-tick.C:
			s.w.confirm(flushed())
		case <-stop:
			<-ctx.Done()
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// modelSink is one sink's destination across restarts: what it delivered,
// and what the model did to it.
type modelSink struct {
	name    string
	failing atomic.Bool

	mu        sync.Mutex
	epoch     int                      // a new one at every restart and addition
	delivered []modelDelivery          // in delivery order
	dead      map[change.Position]bool // ever moved to the dead letters
	required  change.Position          // every message above it must arrive
	present   bool
	paused    bool
	// pausedAtStart: the sink was paused when the relay (re)started, and
	// not resumed since; it must deliver nothing.
	pausedAtStart bool
	violations    []string
}

type modelDelivery struct {
	epoch int
	pos   change.Position
	key   string
}

func (s *modelSink) Deliver(_ context.Context, b *sink.Batch) error {
	if s.failing.Load() {
		return errors.New("the model's destination is down")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pausedAtStart {
		s.violations = append(s.violations, fmt.Sprintf("epoch %d: delivered %d messages from %s while paused since the restart", s.epoch, len(b.Messages), b.Messages[0].Pos))
	}
	for _, m := range b.Messages {
		s.delivered = append(s.delivered, modelDelivery{epoch: s.epoch, pos: m.Pos, key: m.Key})
		if b.Tx != nil && m.Pos.CommitLSN != b.Tx.CommitLSN {
			s.violations = append(s.violations, fmt.Sprintf("epoch %d: a batch of transaction %s (part %d) holds %s", s.epoch, b.Tx.CommitLSN, b.Tx.Part, m.Pos))
		}
	}
	return nil
}

// model is one run.
type model struct {
	t     *testing.T
	rnd   *rand.Rand
	wal   *modelWAL
	store state.Store
	sinks map[string]*modelSink

	relay *Relay
	from  pglogrepl.LSN // the slot's confirmed flush when the relay started: where its stream starts
	done  chan error
	stop  context.CancelFunc
	log   *slog.Logger
}

func runModel(t *testing.T, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	before := relayGoroutines()
	m := &model{t: t, rnd: rnd, wal: &modelWAL{next: 0x1000, keys: 6, rnd: rand.New(rand.NewPCG(seed, 1))},
		sinks: map[string]*modelSink{}, log: slog.New(slog.DiscardHandler)}
	m.wal.confirmed = 0x100
	m.store = openStore(t, filepath.Join(t.TempDir(), "state"))
	for _, name := range []string{"a", "b", "c"} {
		m.sinks[name] = &modelSink{name: name, dead: map[change.Position]bool{}, present: true}
	}
	m.start()
	steps := 40 + rnd.IntN(40)
	var did []string
	for range steps {
		did = append(did, m.step())
		m.checkFlush()
		time.Sleep(time.Duration(rnd.IntN(4)) * time.Millisecond)
	}
	m.settle(did)
	m.halt()
	m.store.Close()
	m.checkOrder()
	if left := waitGoroutines(before); left != "" {
		t.Fatalf("goroutines left behind after the relay stopped:\n%s", left)
	}
}

// start builds a relay over the store with the sinks present, and runs it.
func (m *model) start() {
	m.from = m.wal.confirmedFlush()
	m.relay = New(&modelSource{w: m.wal}, "slot", m.store, Options{PersistInterval: 3 * time.Millisecond, ShutdownTimeout: time.Second, KeepRemoved: time.Hour}, m.log)
	for _, name := range []string{"a", "b", "c"} {
		s := m.sinks[name]
		if !s.present {
			continue
		}
		s.mu.Lock()
		s.epoch++
		s.pausedAtStart = s.paused // a pause outlasts the restart
		s.mu.Unlock()
		m.relay.Add(m.newSink(s))
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	m.done = make(chan error, 1)
	go func() { m.done <- m.relay.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !m.relay.Status().Running {
		if time.Now().After(deadline) {
			m.t.Fatal("the relay did not run within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	for _, s := range m.sinks {
		st, ok := sinkStatus(m.relay, s.name)
		s.mu.Lock()
		paused := s.paused && s.present
		s.mu.Unlock()
		if ok && paused && (st.Pause == nil || st.Pause.Reason != state.PausedOperator) {
			m.t.Fatalf("sink %s was paused before the restart; after it its pause is %+v", s.name, st.Pause)
		}
		if ok && !paused && st.Pause != nil {
			m.t.Fatalf("sink %s was not paused before the restart; after it its pause is %+v", s.name, st.Pause)
		}
	}
}

// newSink builds s's delivery engine for the current relay.
func (m *model) newSink(s *modelSink) Sink {
	sc := config.Sink{Name: s.name, BatchSize: 1 + m.rnd.IntN(5), MaxInFlight: 1 + m.rnd.IntN(3),
		Retry: config.Retry{Initial: time.Millisecond, Max: 3 * time.Millisecond, MaxAttempts: 3}}
	if m.rnd.IntN(2) == 0 {
		sc.BatchBy = config.BatchByTransaction
	}
	window := config.Window{Messages: 2 + m.rnd.IntN(20), Bytes: 1 << 30}
	sc.Window = window
	deadLetter := m.relay.DeadLetterer(s.name)
	p, err := sink.New(sc, s, sink.Options{Ack: m.relay.Acker(s.name), DeadLetter: func(ctx context.Context, d sink.DeadLetter) error {
		if err := deadLetter(ctx, d); err != nil {
			return err
		}
		s.mu.Lock()
		for _, msg := range d.Messages {
			s.dead[msg.Pos] = true
		}
		s.mu.Unlock()
		return nil
	}})
	if err != nil {
		m.t.Fatal(err)
	}
	return Sink{Name: s.name, Delivery: p, Filter: sink.NewFilter(sc, nil), Router: sink.NewRouter(sc),
		Window: window, Backlog: m.store.Backlog(s.name),
		MaxSize: 1 << 30, WhenFull: "block", BatchSize: 10, Transactions: sc.BatchBy == config.BatchByTransaction}
}

// step does one random thing and says what.
func (m *model) step() string {
	names := []string{"a", "b", "c"}
	s := m.sinks[names[m.rnd.IntN(3)]]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch k := m.rnd.IntN(100); {
	case k < 30:
		n := 1 + m.rnd.IntN(30)
		m.wal.commit(n)
		return fmt.Sprintf("commit %d", n)
	case k < 42:
		down := !s.failing.Load()
		s.failing.Store(down)
		return fmt.Sprintf("%s down=%v", s.name, down)
	case k < 52:
		if !s.present {
			return "nothing"
		}
		s.mu.Lock()
		paused := !s.paused
		s.paused = paused
		s.pausedAtStart = false
		s.mu.Unlock()
		if paused {
			m.must(m.relay.Pause(context.Background(), s.name))
		} else {
			m.must(m.relay.Resume(context.Background(), s.name))
		}
		return fmt.Sprintf("%s paused=%v", s.name, paused)
	case k < 60:
		c := m.sinks["c"]
		if c.present {
			m.must(m.relay.RemoveSink(ctx, "c"))
			c.mu.Lock()
			c.present = false
			c.mu.Unlock()
			return "remove c"
		}
		// A sink added again skips what the cursor its name left
		// acknowledged: after a restart the stream may start below it,
		// and what lies there c had, or missed while removed.
		cursors, err := m.store.Cursors(ctx)
		m.must(err)
		kept := cursors["c"].Acked
		c.mu.Lock()
		c.epoch++
		c.present, c.paused, c.pausedAtStart = true, false, false
		c.mu.Unlock()
		m.must(m.relay.AddSink(ctx, m.newSink(c)))
		st, _ := sinkStatus(m.relay, "c")
		c.mu.Lock()
		c.required = st.Acked // everything after where it starts
		if st.Acked.IsZero() {
			c.required = change.Position{CommitLSN: m.from} // added before the stream sent anything
		}
		if c.required.Less(kept) {
			c.required = kept
		}
		c.mu.Unlock()
		return fmt.Sprintf("add c at %s (kept cursor %s)", st.Acked, kept)
	case k < 72:
		if !s.present {
			return "nothing"
		}
		window, maxSize := 2+m.rnd.IntN(30), int64(1<<30)
		if m.rnd.IntN(3) == 0 {
			maxSize = 2000 // about four messages: the backlog fills
		}
		m.must(m.relay.UpdateSink(ctx, s.name, func(rs *Sink) {
			rs.Window.Messages, rs.MaxSize = window, maxSize
		}))
		return fmt.Sprintf("%s window=%d max_size=%d", s.name, window, maxSize)
	case k < 82:
		if !s.present {
			return "nothing"
		}
		ids, err := m.relay.Replay(ctx, s.name, nil)
		m.must(err)
		return fmt.Sprintf("%s replay %d", s.name, len(ids))
	case k < 88:
		m.relay.Kill()
		if err := m.wait(); !errors.Is(err, ErrKilled) {
			m.t.Fatalf("Run after Kill: got %v, want ErrKilled", err)
		}
		m.start()
		return "kill and restart"
	default:
		time.Sleep(time.Duration(m.rnd.IntN(20)) * time.Millisecond)
		return "wait"
	}
}

func (m *model) must(err error) {
	m.t.Helper()
	if err == nil {
		return
	}
	select {
	case runErr := <-m.done:
		m.t.Fatalf("%v; the relay stopped: %v", err, runErr)
	case <-time.After(100 * time.Millisecond):
		m.t.Fatal(err)
	}
}

// wait waits for Run to return.
func (m *model) wait() error {
	select {
	case err := <-m.done:
		return err
	case <-time.After(10 * time.Second):
		m.t.Fatal("Run did not return within 10 s")
		return nil
	}
}

// halt stops the relay gracefully.
func (m *model) halt() {
	m.stop()
	if err := m.wait(); err != nil {
		m.t.Fatalf("Run: %v", err)
	}
}

// settle brings every sink up, resumed, with room, replays every dead
// letter, and waits until every message a sink must have arrived.
func (m *model) settle(did []string) {
	ctx := context.Background()
	for _, s := range m.sinks {
		s.failing.Store(false)
		if !s.present {
			continue
		}
		s.mu.Lock()
		s.paused, s.pausedAtStart = false, false
		if len(s.violations) > 0 {
			m.t.Fatalf("sink %s: %s\nsteps: %s", s.name, strings.Join(s.violations, "; "), strings.Join(did, "; "))
		}
		s.mu.Unlock()
		m.must(m.relay.Resume(context.Background(), s.name))
		m.must(m.relay.UpdateSink(ctx, s.name, func(rs *Sink) { rs.Window.Messages, rs.MaxSize = 1000, 1<<30 }))
	}
	msgs := m.wal.messages()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-m.done:
			m.t.Fatalf("Run returned %v\nsteps: %s", err, strings.Join(did, "; "))
		default:
		}
		var missing []string
		for _, name := range []string{"a", "b", "c"} {
			s := m.sinks[name]
			if !s.present {
				continue
			}
			if n, _ := m.store.DeadLetters(name).Count(ctx); n > 0 {
				_, err := m.relay.Replay(ctx, name, nil)
				m.must(err)
				missing = append(missing, fmt.Sprintf("%s: %d dead letters", name, n))
				continue
			}
			got := map[change.Position]bool{}
			s.mu.Lock()
			for _, d := range s.delivered {
				got[d.pos] = true
			}
			required := s.required
			s.mu.Unlock()
			for _, msg := range msgs {
				if required.Less(msg.Pos) && !got[msg.Pos] {
					missing = append(missing, fmt.Sprintf("%s: %s", name, msg.Pos))
				}
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var sts []string
			for _, st := range m.relay.Status().Sinks {
				sts = append(sts, fmt.Sprintf("%+v", st))
				if rn := m.relay.runnerNamed(st.Name); rn != nil {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					err := rn.do(ctx, func() {
						sts = append(sts, fmt.Sprintf("runner %s: mode=%d replaying=%+v queued=%v feedPos=%s dispatched=%s trimmed=%s", st.Name, rn.mode, rn.replaying, rn.replayQ, rn.feedPos, rn.dispatched, rn.trimmed))
					})
					cancel()
					if err != nil {
						sts = append(sts, fmt.Sprintf("runner %s does not answer: %v", st.Name, err))
					}
				}
			}
			for _, g := range relayGoroutines() {
				if strings.Contains(g, "(*runner).run") {
					sts = append(sts, g)
				}
			}
			m.t.Fatalf("lost: %d messages never delivered, such as %v\nsteps: %s\nstatus: %s", len(missing), missing[:min(len(missing), 5)], strings.Join(did, "; "), strings.Join(sts, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkFlush checks that the slot's confirmed flush LSN is not past a
// message some sink has neither delivered nor durably kept (in its backlog
// or dead letters).
func (m *model) checkFlush() {
	flush := m.wal.confirmedFlush()
	ctx := context.Background()
	for _, name := range []string{"a", "b"} { // present throughout
		s := m.sinks[name]
		kept := map[change.Position]bool{}
		entries, err := m.store.Backlog(name).Read(ctx, change.Position{}, 0, 0)
		m.must(err)
		for _, e := range entries {
			kept[e.Msg.Pos] = true
		}
		list, err := m.store.DeadLetters(name).List(ctx)
		m.must(err)
		for _, d := range list {
			full, err := m.store.DeadLetters(name).Get(ctx, d.ID)
			if err != nil {
				continue // replayed and deleted meanwhile: delivered
			}
			for _, e := range full.Entries {
				kept[e.Msg.Pos] = true
			}
		}
		s.mu.Lock()
		for _, d := range s.delivered {
			kept[d.pos] = true
		}
		for p := range s.dead {
			kept[p] = true
		}
		s.mu.Unlock()
		for _, msg := range m.wal.messages() {
			if msg.Pos.CommitLSN < flush && !kept[msg.Pos] {
				m.t.Fatalf("the flush LSN %s passed %s, which sink %s neither delivered nor kept", flush, msg.Pos, name)
			}
		}
	}
}

// checkOrder checks per-key order: within an epoch (between restarts and
// additions), the messages of a key a sink got from the stream arrive in
// position order. Replayed dead letters come later by nature and are left
// out.
func (m *model) checkOrder() {
	for _, s := range m.sinks {
		last := map[string]change.Position{}
		epoch := -1
		for _, d := range s.delivered {
			if d.epoch != epoch {
				clear(last)
				epoch = d.epoch
			}
			if s.dead[d.pos] {
				continue
			}
			if p, ok := last[d.key]; ok && !p.Less(d.pos) {
				m.t.Fatalf("sink %s got %s of key %q after %s", s.name, d.pos, d.key, p)
			}
			last[d.key] = d.pos
		}
	}
}

// relayGoroutines returns the stacks of the goroutines running code of
// the relay or sink packages, by goroutine ID.
func relayGoroutines() map[string]string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	out := map[string]string{}
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if !strings.Contains(g, "walhook/relay.") && !strings.Contains(g, "walhook/sink.") {
			continue
		}
		if strings.Contains(g, "testing.tRunner") {
			continue // the test itself
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		out[id] = g
	}
	return out
}

// waitGoroutines waits up to 5 s until no goroutine of the relay is left
// beyond those running before, and returns what is left.
func waitGoroutines(before map[string]string) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for id, g := range relayGoroutines() {
			if _, ok := before[id]; !ok {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			slices.Sort(left)
			return strings.Join(left, "\n\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
