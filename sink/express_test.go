package sink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// TestExpressBesideReads: while a lane's batch of reads is in flight, a
// change of another group goes at once beside it, and a change of a group
// the batch holds waits for it.
func TestExpressBesideReads(t *testing.T) {
	release := make(chan struct{})
	got := make(chan string, 10)
	dest := deliverFunc(func(_ context.Context, b *Batch) error {
		if b.Messages[0].Action == change.Read {
			<-release
		}
		for _, m := range b.Messages {
			got <- m.Key
		}
		return nil
	})
	p, err := New(config.Sink{Name: "s", BatchSize: 10, MaxInFlight: 1, Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond}}, dest, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	submit := func(lsn int, key string, read bool, group uint64) {
		t.Helper()
		if err := p.Submit(msgAt(lsn, key, read), group, false); err != nil {
			t.Fatal(err)
		}
	}
	submit(1, "r1", true, 1)
	waitFor(t, "the batch of reads in flight", func() bool { return p.stats.inFlight.Load() == 1 })
	submit(2, "c1", false, 1) // row 1's change: after its read
	submit(3, "c2", false, 2)
	select {
	case k := <-got:
		t.Fatalf("got %s first while the reads were held, want nothing: c1 must wait for r1 and c2 behind it", k)
	case <-time.After(50 * time.Millisecond):
	}
	submit(4, "c3", false, 3) // nothing before it: c1 is not at the head of the queue any more
	close(release)
	var order []string
	for range 4 {
		order = append(order, <-got)
	}
	if fmt.Sprint(order) != "[r1 c1 c2 c3]" {
		t.Fatalf("delivered %v, want [r1 c1 c2 c3]: c1 waits for its row's read, and c2, c3 behind c1 in the lane", order)
	}

	// Now a change of another group first: it goes beside the reads.
	release = make(chan struct{})
	submit(5, "r5", true, 5)
	waitFor(t, "the batch of reads in flight", func() bool { return p.stats.inFlight.Load() == 1 })
	submit(6, "c6", false, 6)
	select {
	case k := <-got:
		if k != "c6" {
			t.Fatalf("got %s, want c6 beside the held reads", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a change of another group waited for the batch of reads in flight")
	}
	close(release)
	if k := <-got; k != "r5" {
		t.Fatalf("got %s, want r5", k)
	}
}

// TestExpressKeepsGroupOrder: random reads and changes over a few groups,
// two lanes, a destination that takes a random while: no message of a
// group goes out before every message of its group submitted before it
// was acknowledged (or is ahead of it in its batch), and every message
// arrives once.
func TestExpressKeepsGroupOrder(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var mu sync.Mutex
		acked := map[string]bool{}
		var before map[string][]string // the messages submitted before each, of its group
		var bad []string
		n := 0
		all := make(chan struct{})
		total := 300
		dest := deliverFunc(func(_ context.Context, b *Batch) error {
			mu.Lock()
			earlier := map[string]bool{} // in this batch, before the message
			for _, m := range b.Messages {
				for _, k := range before[m.Key] {
					if !acked[k] && !earlier[k] {
						bad = append(bad, fmt.Sprintf("%s went before %s was acknowledged", m.Key, k))
					}
				}
				earlier[m.Key] = true
			}
			mu.Unlock()
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond) // not rng: lanes call it concurrently
			mu.Lock()
			defer mu.Unlock()
			for _, m := range b.Messages {
				if acked[m.Key] {
					bad = append(bad, m.Key+" delivered twice")
				}
				acked[m.Key] = true
				if n++; n == total {
					close(all)
				}
			}
			return nil
		})
		p, err := New(config.Sink{Name: "s", BatchSize: 4, MaxInFlight: 2, Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond}}, dest, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go p.Run(ctx)
		before = map[string][]string{}
		byGroup := map[uint64][]string{}
		type sub struct {
			m *change.Message
			g uint64
		}
		var subs []sub
		for i := range total {
			g := uint64(rng.IntN(6))
			read := rng.IntN(3) > 0
			key := fmt.Sprintf("g%d/%d", g, i)
			m := msgAt(i+1, key, read)
			before[key] = append([]string(nil), byGroup[g]...)
			byGroup[g] = append(byGroup[g], key)
			subs = append(subs, sub{m, g})
		}
		for _, s := range subs {
			if err := p.Submit(s.m, s.g, false); err != nil {
				t.Fatal(err)
			}
			if rng.IntN(10) == 0 {
				time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
			}
		}
		select {
		case <-all:
		case <-time.After(30 * time.Second):
			t.Fatalf("seed %d: %d of %d delivered", seed, n, total)
		}
		cancel()
		mu.Lock()
		if len(bad) > 0 {
			t.Fatalf("seed %d: %d violations, the first: %v", seed, len(bad), bad[:min(len(bad), 5)])
		}
		mu.Unlock()
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
