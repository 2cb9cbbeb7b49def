package sink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// msgAt is a message at commit LSN lsn of row key, a read or an insert.
func msgAt(lsn int, key string, read bool) *change.Message {
	a := change.Insert
	if read {
		a = change.Read
	}
	return &change.Message{Pos: change.Position{CommitLSN: pglogrepl.LSN(lsn)}, Key: key, Action: a}
}

// TestLaneQueueOrder pushes random sequences of reads and changes over a
// few groups and takes everything: each group comes out in the order it
// went in (a change is never overtaken by an older read of its group, nor
// overtakes one), and a change comes out before every read of another
// group that was waiting when it came.
func TestLaneQueueOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var q laneQueue
		var in []submission
		taken := map[*change.Message]int{}   // out index
		takenBy := map[*change.Message]int{} // pushes done when it was taken
		var out []submission
		for i := range 300 {
			s := submission{m: msgAt(i+1, "", rng.IntN(3) > 0), group: uint64(rng.IntN(5))}
			q.push(s)
			in = append(in, s)
			if rng.IntN(4) == 0 { // take a few now and then, as a lane does
				for n := rng.IntN(5); n > 0 && q.len() > 0; n-- {
					taken[q.front().m], takenBy[q.front().m] = len(out), i+1
					out = append(out, q.pop())
				}
			}
		}
		for q.len() > 0 {
			taken[q.front().m], takenBy[q.front().m] = len(out), len(in)
			out = append(out, q.pop())
		}
		if len(out) != len(in) || len(q.readGroups) != 0 {
			t.Fatalf("round %d: took %d of %d; %d groups of reads left counted", round, len(out), len(in), len(q.readGroups))
		}
		for g := range uint64(5) {
			var want, got []int
			for _, s := range in {
				if s.group == g {
					want = append(want, int(s.m.Pos.CommitLSN))
				}
			}
			for _, s := range out {
				if s.group == g {
					got = append(got, int(s.m.Pos.CommitLSN))
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("round %d, group %d: got order %v, want %v", round, g, got, want)
			}
		}
		// A change comes out before every read of another group that was
		// waiting when it went in, unless a change of the read's group
		// went in between them (it took the read along).
		for i, c := range in {
			if c.m.Action == change.Read {
				continue
			}
			for j, r := range in[:i] {
				if r.m.Action != change.Read || r.group == c.group || takenBy[r.m] <= i {
					continue
				}
				if slices.ContainsFunc(in[j+1:i], func(x submission) bool { return x.group == r.group && x.m.Action != change.Read }) {
					continue
				}
				if taken[r.m] < taken[c.m] {
					t.Fatalf("round %d: the change at %d came out after the read at %d of another group that was waiting", round, c.m.Pos.CommitLSN, r.m.Pos.CommitLSN)
				}
			}
		}
	}
}

// TestLiveChangeBeforeQueuedReads: with a lane busy on a batch of reads
// and 100 more reads queued behind it, a change submitted then goes out in
// the next batch, not after the queued reads (in one FIFO it was the
// eleventh batch).
func TestLiveChangeBeforeQueuedReads(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var batches [][]string
	first := make(chan struct{})
	dest := deliverFunc(func(_ context.Context, b *Batch) error {
		mu.Lock()
		var keys []string
		for _, m := range b.Messages {
			keys = append(keys, m.Key)
		}
		batches = append(batches, keys)
		n := len(batches)
		mu.Unlock()
		if n == 1 {
			close(first)
			<-release
		}
		return nil
	})
	acked := make(chan int, 1000)
	p, err := New(config.Sink{Name: "s", BatchSize: 10, MaxInFlight: 1, Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond}},
		dest, Options{Ack: func(ps []change.Position) { acked <- len(ps) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	submit := func(m *change.Message, group uint64) {
		t.Helper()
		if err := p.Submit(m, group, false); err != nil {
			t.Fatal(err)
		}
	}
	submit(msgAt(1, "r0", true), 0)
	<-first // the lane delivers the first read and waits
	for i := 1; i <= 100; i++ {
		submit(msgAt(1+i, fmt.Sprintf("r%d", i), true), uint64(i))
	}
	submit(msgAt(200, "live", false), 1000)
	close(release)
	for n := 0; n < 102; n += <-acked {
	}
	mu.Lock()
	defer mu.Unlock()
	if len(batches) < 2 || !slices.Contains(batches[1], "live") {
		at := slices.IndexFunc(batches, func(b []string) bool { return slices.Contains(b, "live") })
		t.Fatalf("the change went out in batch %d of %d, want the second (right after the batch in flight)", at+1, len(batches))
	}
	if !slices.Equal(batches[1], []string{"live"}) {
		t.Errorf("second batch %v, want the change alone: reads in its batch would make it wait while the receiver takes them", batches[1])
	}
}

// TestReadSlots: at most half the lanes send a batch of a backfill's reads
// at once, and a change never waits for a read slot. With four lanes and
// a destination that holds every batch of reads, reads of four groups
// (one a lane) have two batches in flight, not four; a change of a lane
// whose reads wait for a slot is delivered all the same, while both slots
// stay taken; once the reads are let go, every read arrives.
func TestReadSlots(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	readsInFlight, most := 0, 0
	sending := map[uint64]bool{} // lanes sending reads
	changes := make(chan string, 10)
	dest := deliverFunc(func(_ context.Context, b *Batch) error {
		if b.Messages[0].Action != change.Read {
			changes <- b.Messages[0].Key
			return nil
		}
		var lane uint64
		fmt.Sscanf(b.Messages[0].Key, "r%d", &lane)
		lane %= 4
		mu.Lock()
		readsInFlight++
		most = max(most, readsInFlight)
		sending[lane] = true
		mu.Unlock()
		<-release
		mu.Lock()
		readsInFlight--
		mu.Unlock()
		return nil
	})
	acked := make(chan int, 1000)
	p, err := New(config.Sink{Name: "s", BatchSize: 10, MaxInFlight: 4, Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond}},
		dest, Options{Ack: func(ps []change.Position) { acked <- len(ps) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	lsn := 0
	submit := func(key string, read bool, group uint64) {
		t.Helper()
		lsn++
		if err := p.Submit(msgAt(lsn, key, read), group, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 40 {
		submit(fmt.Sprint("r", i), true, uint64(i%4))
	}
	inFlight := func() int {
		mu.Lock()
		defer mu.Unlock()
		return readsInFlight
	}
	for inFlight() < 2 {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	var waiting []uint64 // the lanes whose reads wait for a slot
	for g := range uint64(4) {
		if !sending[g] {
			waiting = append(waiting, g)
		}
	}
	mu.Unlock()
	for _, g := range waiting {
		submit(fmt.Sprint("c", g), false, 100+g)
	}
	for range waiting {
		select {
		case <-changes:
		case <-time.After(10 * time.Second):
			t.Fatalf("a change waited behind the reads' slots (%d batches of reads in flight)", inFlight())
		}
	}
	if got := inFlight(); got != 2 {
		t.Fatalf("%d batches of reads in flight, want 2 (half of 4 lanes)", got)
	}
	close(release)
	for n := 0; n < 40+len(waiting); n += <-acked {
	}
	mu.Lock()
	defer mu.Unlock()
	if most != 2 {
		t.Fatalf("at most %d batches of reads were in flight at once, want 2", most)
	}
}

// TestLiveChangeAfterItsRowsRead: a change of a row whose read waits in
// the lane goes out after that read, and still before the reads of other
// rows queued behind it.
func TestLiveChangeAfterItsRowsRead(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var order []string
	first := make(chan struct{})
	dest := deliverFunc(func(_ context.Context, b *Batch) error {
		mu.Lock()
		for _, m := range b.Messages {
			order = append(order, m.Key)
		}
		n := len(order)
		mu.Unlock()
		if n == 1 {
			close(first)
			<-release
		}
		return nil
	})
	acked := make(chan int, 1000)
	p, err := New(config.Sink{Name: "s", BatchSize: 1, MaxInFlight: 1, Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond}},
		dest, Options{Ack: func(ps []change.Position) { acked <- len(ps) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	_ = p.Submit(msgAt(1, "r0", true), 0, false)
	<-first
	for i := 1; i <= 20; i++ {
		_ = p.Submit(msgAt(1+i, fmt.Sprintf("r%d", i), true), uint64(i), false)
	}
	_ = p.Submit(msgAt(100, "r7-update", false), 7, false) // row 7's group
	close(release)
	for n := 0; n < 22; n += <-acked {
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"r0", "r7", "r7-update", "r1"}; !slices.Equal(order[:4], want) {
		t.Fatalf("got %v first, want %v: row 7's read, then its change, then the other reads", order[:4], want)
	}
}

// BenchmarkLiveBesideReads measures how long a live change waits in the
// pipeline while a backfill keeps it busy: reads are submitted in chunks
// of 2,000 whenever fewer than 4,000 are outstanding (the backfill's bound
// with the default window), live changes one every 500 µs, to a
// destination that serves two batches at a time (a receiver on two cores)
// and takes 200 µs a batch plus 10 µs a message, spinning (a sleep that
// short takes a millisecond). It
// reports the live changes' p50 and p99 from Submit to delivered, and the
// reads' rate. Default sink settings (16 lanes, batches of 100).
//
//	go test ./sink -run '^$' -bench LiveBesideReads -benchtime 1x
func BenchmarkLiveBesideReads(b *testing.B) {
	for b.Loop() {
		var (
			mu        sync.Mutex
			submitted = map[*change.Message]time.Time{}
			lat       []time.Duration
			readsDone atomic.Int64
		)
		cores := make(chan struct{}, 2)
		dest := deliverFunc(func(_ context.Context, bt *Batch) error {
			cores <- struct{}{}
			for due := time.Now().Add(200*time.Microsecond + time.Duration(len(bt.Messages))*10*time.Microsecond); time.Now().Before(due); {
			}
			<-cores
			now := time.Now()
			mu.Lock()
			for _, m := range bt.Messages {
				if m.Action == change.Read {
					readsDone.Add(1)
					continue
				}
				lat = append(lat, now.Sub(submitted[m]))
			}
			mu.Unlock()
			return nil
		})
		p, err := New(config.Sink{Name: "s", BatchSize: 100, BatchWait: 50 * time.Millisecond, MaxInFlight: 16,
			Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond}}, dest, Options{})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go p.Run(ctx)
		const reads, chunk, live = 100_000, 2000, 2000
		start := time.Now()
		lsn, sentReads, sentLive := 0, 0, 0
		for sentReads < reads || readsDone.Load() < reads {
			due := start.Add(time.Duration(sentLive) * 500 * time.Microsecond)
			if sentLive < live && !time.Now().Before(due) {
				lsn++
				m := msgAt(lsn, fmt.Sprint("live", sentLive), false)
				mu.Lock()
				submitted[m] = time.Now()
				mu.Unlock()
				_ = p.Submit(m, uint64(1_000_000+sentLive), false)
				sentLive++
				continue
			}
			if sentReads < reads && int64(sentReads)-readsDone.Load() < 2*chunk {
				for range chunk {
					lsn++
					_ = p.Submit(msgAt(lsn, "", true), uint64(sentReads), false)
					sentReads++
				}
				continue
			}
			time.Sleep(100 * time.Microsecond)
		}
		took := time.Since(start)
		cancel()
		mu.Lock()
		slices.Sort(lat)
		if len(lat) > 0 {
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "live-p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "live-p99-ms")
		}
		mu.Unlock()
		b.ReportMetric(float64(reads)/took.Seconds(), "reads/s")
	}
}

// TestLiveChangeAfterReadBatchesGoesAtOnce: while a backfill's reads
// flow through a lane (its last batch was full of them), a batch of the
// reads left waits for company up to batch_wait as before, but a change
// ends that wait: the reads and the change go at once, not after
// batch_wait.
// After a full batch of changes (a backlog of the stream) a change still
// waits for company.
func TestLiveChangeAfterReadBatchesGoesAtOnce(t *testing.T) {
	const wait = 5 * time.Second
	delivered := make(chan []*change.Message, 10)
	p, err := New(config.Sink{Name: "s", BatchSize: 10, BatchWait: wait, MaxInFlight: 1, Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond}},
		deliverFunc(func(_ context.Context, b *Batch) error { delivered <- slices.Clone(b.Messages); return nil }), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	lsn := 0
	submit := func(read bool) {
		t.Helper()
		lsn++
		if err := p.Submit(msgAt(lsn, fmt.Sprint(lsn), read), uint64(lsn), false); err != nil {
			t.Fatal(err)
		}
	}
	waitsForCompany := func(what string) {
		t.Helper()
		select {
		case b := <-delivered:
			t.Fatalf("%s: a batch of %d went out at once, want it to wait for company up to batch_wait", what, len(b))
		case <-time.After(100 * time.Millisecond):
		}
	}
	// A paused lane forms no batch: the first message must not go alone.
	p.Pause("the test queues a full batch")
	for range 10 { // a full batch of reads
		submit(true)
	}
	p.Resume()
	if got := <-delivered; len(got) != 10 {
		t.Fatalf("got a batch of %d, want 10", len(got))
	}
	submit(true)
	waitsForCompany("one read after a full batch of reads")
	start := time.Now()
	submit(false)
	// The waiting read goes at once, and the change beside it (the
	// lane's express), or with it.
	for n := 0; n < 2; {
		got := <-delivered
		if took := time.Since(start); took > wait/2 {
			t.Fatalf("a batch of %d went out after %v, want the read and the change at once (batch_wait is %v)", len(got), took, wait)
		}
		n += len(got)
	}
	p.Pause("the test queues a full batch")
	for range 10 { // a full batch of changes: a backlog of the stream
		submit(false)
	}
	p.Resume()
	if got := <-delivered; len(got) != 10 {
		t.Fatalf("got a batch of %d, want 10", len(got))
	}
	submit(false)
	waitsForCompany("one change after a full batch of changes")
}
