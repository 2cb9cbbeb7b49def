package sink

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// sent is what a test destination got: one entry per successful attempt.
type sent struct {
	id  string
	tx  change.Transaction
	pos []change.Position
}

// recorder is a destination that records every batch it takes; block,
// when set, is asked before each batch and may hold it.
type recorder struct {
	mu    sync.Mutex
	got   []sent
	block func(b *Batch) error
	more  chan struct{}
}

func newRecorder() *recorder { return &recorder{more: make(chan struct{}, 1)} }

func (r *recorder) Deliver(ctx context.Context, b *Batch) error {
	if r.block != nil {
		if err := r.block(b); err != nil {
			return err
		}
	}
	s := sent{id: b.ID}
	if b.Tx != nil {
		s.tx = *b.Tx
	}
	for _, m := range b.Messages {
		s.pos = append(s.pos, m.Pos)
	}
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
	return nil
}

// wait waits until the recorder has n batches and returns them.
func (r *recorder) wait(t *testing.T, n int) []sent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		got := slices.Clone(r.got)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.more:
		case <-deadline:
			t.Fatalf("got %d batches within 10 s, want %d: %v", len(got), n, got)
		}
	}
}

func txMsg(lsn, idx int, key string) *change.Message {
	return &change.Message{Action: change.Insert, Pos: change.Position{CommitLSN: pglogrepl.LSN(lsn), Idx: uint32(idx)},
		XID: uint32(lsn / 16), CommitTime: time.Unix(int64(lsn), 0), Key: key}
}

func txPipeline(t *testing.T, cfg config.Sink, dest Destination, opts Options) *Pipeline {
	t.Helper()
	cfg.Name, cfg.BatchBy = "s", config.BatchByTransaction
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 4
	}
	cfg.Retry.Initial, cfg.Retry.Max = time.Millisecond, time.Millisecond
	p, err := New(cfg, dest, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go p.Run(ctx)
	return p
}

// TestTxParts: a transaction goes in parts cut by batch_size and
// batch_bytes, numbered from 1, the last one with last:true and sent only
// once the transaction ended; the same messages make the same parts (and
// batch IDs) whether they come at once or one at a time between parts.
func TestTxParts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   config.Sink
		n     int
		sizes []int // messages per part
	}{
		{"by count", config.Sink{BatchSize: 3}, 7, []int{3, 3, 1}},
		{"count fills exactly", config.Sink{BatchSize: 3}, 6, []int{3, 3}},
		{"one part", config.Sink{BatchSize: 100}, 5, []int{5}},
		// txMsg's size is 257 bytes (256 + a one-byte key).
		{"by bytes", config.Sink{BatchSize: 100, BatchBytes: 600}, 5, []int{2, 2, 1}},
		{"larger than batch_bytes goes alone", config.Sink{BatchSize: 100, BatchBytes: 100}, 3, []int{1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ids [2][]string
			for round, oneByOne := range []bool{false, true} {
				rec := newRecorder()
				p := txPipeline(t, tc.cfg, rec, Options{})
				for i := range tc.n {
					if err := p.Submit(txMsg(0x100, i, "k"), 1, false); err != nil {
						t.Fatal(err)
					}
					if oneByOne {
						time.Sleep(time.Millisecond) // lanes see the transaction grow
					}
				}
				if len(tc.sizes) > 1 {
					// Every part but the last may go before the transaction ends.
					got := rec.wait(t, len(tc.sizes)-1)
					if len(got) != len(tc.sizes)-1 {
						t.Fatalf("before the end: got %d parts, want %d", len(got), len(tc.sizes)-1)
					}
				}
				time.Sleep(20 * time.Millisecond)
				if n := len(rec.wait(t, 0)); n != len(tc.sizes)-1 {
					t.Fatalf("the last part went before the transaction ended: got %d parts, want %d", n, len(tc.sizes)-1)
				}
				p.Ended(0x101)
				got := rec.wait(t, len(tc.sizes))
				idx := 0
				for i, s := range got {
					want := change.Transaction{XID: 0x10, CommitLSN: 0x100, CommitTime: time.Unix(0x100, 0), Part: i + 1, Last: i == len(tc.sizes)-1}
					if !s.tx.CommitTime.Equal(want.CommitTime) || s.tx.XID != want.XID || s.tx.CommitLSN != want.CommitLSN || s.tx.Part != want.Part || s.tx.Last != want.Last {
						t.Errorf("part %d: got %+v, want %+v", i+1, s.tx, want)
					}
					if len(s.pos) != tc.sizes[i] {
						t.Errorf("part %d: got %d messages, want %d", i+1, len(s.pos), tc.sizes[i])
					}
					for _, pos := range s.pos {
						if pos.Idx != uint32(idx) {
							t.Errorf("part %d: got commit_idx %d, want %d", i+1, pos.Idx, idx)
						}
						idx++
					}
					ids[round] = append(ids[round], s.id)
				}
			}
			if !slices.Equal(ids[0], ids[1]) {
				t.Errorf("batch IDs differ with the timing: %v and %v", ids[0], ids[1])
			}
		})
	}
}

// waiting is the commit LSNs of the transactions that wait to start.
func waiting(p *Pipeline) []pglogrepl.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []pglogrepl.LSN
	for _, t := range p.txs {
		if t.lane == nil {
			out = append(out, t.lsn)
		}
	}
	return out
}

// TestTxOrder: transactions that share an ordering group go one after the
// other in commit order; a disjoint one goes meanwhile; a batch never
// mixes transactions.
func TestTxOrder(t *testing.T) {
	rec := newRecorder()
	release := make(chan struct{})
	rec.block = func(b *Batch) error {
		if b.Tx.CommitLSN == 0x100 {
			<-release
		}
		return nil
	}
	p := txPipeline(t, config.Sink{BatchSize: 10}, rec, Options{})
	submit := func(lsn int, groups ...uint64) {
		for i, g := range groups {
			if err := p.Submit(txMsg(lsn, i, fmt.Sprint(g)), g, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	submit(0x100, 1, 2) // held by the destination
	submit(0x200, 2, 3) // shares group 2: waits for 0x100
	submit(0x300, 4)    // disjoint: goes now
	submit(0x400, 5, 3) // shares group 3 with 0x200, which waits: waits too
	submit(0x500, 6)    // disjoint
	p.Ended(0x501)
	// Which transactions start is decided at once, under the pipeline's
	// lock, when they are submitted or end.
	if got, want := waiting(p), []pglogrepl.LSN{0x200, 0x400}; !slices.Equal(got, want) {
		t.Fatalf("while 0x100 is held: got %v waiting, want %v", got, want)
	}
	got := rec.wait(t, 2)
	var lsns []pglogrepl.LSN
	for _, s := range got {
		lsns = append(lsns, s.tx.CommitLSN)
	}
	slices.Sort(lsns)
	if !slices.Equal(lsns, []pglogrepl.LSN{0x300, 0x500}) {
		t.Fatalf("while 0x100 is held: got %v delivered, want the disjoint 0x300 and 0x500", lsns)
	}
	close(release)
	got = rec.wait(t, 5)
	order := map[pglogrepl.LSN]int{}
	for i, s := range got {
		order[s.tx.CommitLSN] = i
		for _, pos := range s.pos {
			if pos.CommitLSN != s.tx.CommitLSN {
				t.Errorf("batch of %s holds %v", s.tx.CommitLSN, pos)
			}
		}
	}
	if !(order[0x100] < order[0x200] && order[0x200] < order[0x400]) {
		t.Errorf("got order %v, want 0x100 before 0x200 before 0x400", got)
	}
}

// TestTxBarrier: a transaction holding a barrier waits for every earlier
// one, and every later one waits for it.
func TestTxBarrier(t *testing.T) {
	rec := newRecorder()
	release := make(chan struct{})
	rec.block = func(b *Batch) error {
		if b.Tx.CommitLSN == 0x100 {
			<-release
		}
		return nil
	}
	p := txPipeline(t, config.Sink{BatchSize: 10}, rec, Options{})
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(p.Submit(txMsg(0x100, 0, "a"), 1, false))
	must(p.Submit(txMsg(0x200, 0, "b"), 2, true)) // a truncate, say
	must(p.Submit(txMsg(0x300, 0, "c"), 3, false))
	p.Ended(0x301)
	if got, want := waiting(p), []pglogrepl.LSN{0x200, 0x300}; !slices.Equal(got, want) {
		t.Fatalf("while 0x100 is held: got %v waiting, want %v", got, want)
	}
	close(release)
	got := rec.wait(t, 3)
	for i, want := range []pglogrepl.LSN{0x100, 0x200, 0x300} {
		if got[i].tx.CommitLSN != want {
			t.Fatalf("got %v, want 0x100, 0x200, 0x300 in order", got)
		}
	}
}

// TestTxReadsHaveNoTransaction: backfilled reads are batched like a
// transaction's changes but carry no transaction object.
func TestTxReadsHaveNoTransaction(t *testing.T) {
	var mu sync.Mutex
	var txs []*change.Transaction
	p := txPipeline(t, config.Sink{BatchSize: 2}, deliverFunc(func(_ context.Context, b *Batch) error {
		mu.Lock()
		txs = append(txs, b.Tx)
		mu.Unlock()
		return nil
	}), Options{})
	for i := range 3 {
		m := txMsg(0x100, i, fmt.Sprint(i))
		m.Action = change.Read
		if err := p.Submit(m, uint64(i), false); err != nil {
			t.Fatal(err)
		}
	}
	p.Ended(0x101)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(txs) != 2 || txs[0] != nil || txs[1] != nil {
		t.Fatalf("got transaction objects %v, want 2 batches without one", txs)
	}
}

// TestTxDeadLetterTakesTheRest: when a part fails its last attempt, the
// transaction's later parts follow it to the dead letters without an
// attempt, and the next transaction is delivered.
func TestTxDeadLetterTakesTheRest(t *testing.T) {
	rec := newRecorder()
	var attempts sync.Map
	rec.block = func(b *Batch) error {
		if b.Tx.CommitLSN == 0x100 {
			attempts.Store(b.Tx.Part, true)
			return fmt.Errorf("refused")
		}
		return nil
	}
	var mu sync.Mutex
	var dead []DeadLetter
	p := txPipeline(t, config.Sink{BatchSize: 2, Retry: config.Retry{MaxAttempts: 2}}, rec, Options{
		DeadLetter: func(_ context.Context, d DeadLetter) error {
			mu.Lock()
			dead = append(dead, d)
			mu.Unlock()
			return nil
		},
	})
	for i := range 5 {
		if err := p.Submit(txMsg(0x100, i, "k"), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Submit(txMsg(0x200, 0, "k"), 1, false); err != nil {
		t.Fatal(err)
	}
	p.Ended(0x201)
	got := rec.wait(t, 1)
	if got[0].tx.CommitLSN != 0x200 {
		t.Fatalf("got %v, want 0x200 delivered", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dead) != 3 || dead[0].Attempts != 2 || dead[1].Attempts != 0 || dead[2].Attempts != 0 {
		t.Fatalf("got %d dead letters %+v, want 3: part 1 after 2 attempts, parts 2 and 3 without one", len(dead), dead)
	}
	if _, ok := attempts.Load(2); ok {
		t.Errorf("part 2 was attempted after part 1 became a dead letter")
	}
}

// TestPartLimits: parts stay below the sink's window, in messages and in
// bytes, so the message after a full part always fits in it.
func TestPartLimits(t *testing.T) {
	for _, tc := range []struct {
		batch     int
		bytes     int64
		window    config.Window
		wantN     int
		wantBytes int64
	}{
		{100, 1 << 20, config.Window{Messages: 10000, Bytes: 64 << 20}, 100, 1 << 20},
		{100, 1 << 20, config.Window{Messages: 50, Bytes: 8 << 10}, 49, 8<<10 - 1},
		{100, 0, config.Window{Messages: 100, Bytes: 0}, 99, 0},
		{100, 0, config.Window{Messages: 1, Bytes: 4096}, 1, 4095},
		{100, 0, config.Window{Messages: 2, Bytes: 1}, 1, 1},
	} {
		n, b := partLimits(&config.Sink{BatchSize: tc.batch, BatchBytes: tc.bytes, Window: tc.window})
		if n != tc.wantN || b != tc.wantBytes {
			t.Errorf("batch %d/%d, window %+v: got %d/%d, want %d/%d", tc.batch, tc.bytes, tc.window, n, b, tc.wantN, tc.wantBytes)
		}
	}
}

// TestTxReplay: a dead letter replayed under batch_by: transaction goes
// in parts of its own transaction, the last one last, and done is called
// once it is all delivered.
func TestTxReplay(t *testing.T) {
	rec := newRecorder()
	p := txPipeline(t, config.Sink{BatchSize: 2}, rec, Options{})
	entries := make([]Entry, 5)
	for i := range entries {
		entries[i] = Entry{Msg: txMsg(0x100, i+3, "k"), Group: 1}
	}
	done := make(chan struct{})
	if err := p.Replay(entries, func() { close(done) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("replay not done within 10 s")
	}
	got := rec.wait(t, 3)
	for i, s := range got {
		if s.tx.Part != i+1 || s.tx.Last != (i == 2) || len(s.pos) != min(2, 5-2*i) {
			t.Errorf("batch %d: got part %d last %v with %d messages", i, s.tx.Part, s.tx.Last, len(s.pos))
		}
	}
}
