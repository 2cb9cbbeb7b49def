package relay

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
)

// deadLettered returns the positions in the named sink's dead letters, in
// the order of the dead letters and their entries.
func (h *controlHarness) deadLettered(name string) []change.Position {
	h.t.Helper()
	dl := h.store.DeadLetters(name)
	list, err := dl.List(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	var out []change.Position
	for _, d := range list {
		full, err := dl.Get(context.Background(), d.ID)
		if err != nil {
			continue // deleted meanwhile
		}
		for _, e := range full.Entries {
			out = append(out, e.Msg.Pos)
		}
	}
	return out
}

// TestReplayStaysApartFromLiveMessages: a dead letter replayed while a
// live message waits in a paused sink is not mixed into its batch: when
// both fail their attempts, each becomes a dead letter again (positions
// in order); replayed twice at once it is delivered once, and the live
// message before it.
func TestReplayStaysApartFromLiveMessages(t *testing.T) {
	h := newControlHarness(t, Options{})
	var failing atomic.Bool
	failing.Store(true)
	var mu sync.Mutex
	var got []change.Position
	dest := destFunc(func(_ context.Context, b *sink.Batch) error {
		if failing.Load() {
			return errors.New("down")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, m := range b.Messages {
			got = append(got, m.Pos)
		}
		return nil
	})
	s := h.sink("s", true, 10, true)
	p, err := sink.New(config.Sink{Name: "s", BatchSize: 10, MaxInFlight: 1, Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond, MaxAttempts: 2}},
		dest, sink.Options{Ack: h.relay.Acker("s"), DeadLetter: h.relay.DeadLetterer("s")})
	if err != nil {
		t.Fatal(err)
	}
	s.Delivery = p
	h.relay.Add(s)
	h.run()

	<-h.send(1) // 0/100
	waitFor(t, "the first message in the dead letters", func() bool { return slices.Equal(h.deadLettered("s"), []change.Position{pos(0x100, 0)}) })
	waitFor(t, "the first message acknowledged", func() bool { st, _ := sinkStatus(h.relay, "s"); return st.Acked == pos(0x100, 0) })
	if err := h.relay.Pause(context.Background(), "s"); err != nil {
		t.Fatal(err)
	}
	<-h.send(1) // 0/110, waits in the paused sink
	h.waitFull("s", 1)
	ctx := context.Background()
	if _, err := h.relay.Replay(ctx, "s", nil); err != nil {
		t.Fatal(err)
	}
	if err := h.relay.Resume(context.Background(), "s"); err != nil {
		t.Fatal(err)
	}
	want := []change.Position{pos(0x110, 0), pos(0x100, 0)} // the live one failed first, then the replay
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(h.deadLettered("s"), want) {
		if time.Now().After(deadline) {
			t.Fatalf("dead letters hold %v, want %v; status %+v", h.deadLettered("s"), want, h.relay.Status().Sinks)
		}
		time.Sleep(5 * time.Millisecond)
	}

	failing.Store(false)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := h.relay.Replay(ctx, "s", nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	waitFor(t, "no dead letters left", func() bool { return len(h.deadLettered("s")) == 0 })
	<-h.send(1) // 0/120, after the replay
	waitFor(t, "the live message after the replay", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 3 })
	mu.Lock()
	defer mu.Unlock()
	if want := []change.Position{pos(0x110, 0), pos(0x100, 0), pos(0x120, 0)}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
}

// TestReplaySkipsAGoneDeadLetter: a queued dead letter that is gone when
// its turn comes (replayed by an earlier request, or dropped) is skipped,
// and the replay goes on with the next one.
func TestReplaySkipsAGoneDeadLetter(t *testing.T) {
	h := newControlHarness(t, Options{})
	var mu sync.Mutex
	var got []change.Position
	var failing atomic.Bool
	failing.Store(true)
	s := h.sink("s", true, 10, true)
	p, err := sink.New(config.Sink{Name: "s", BatchSize: 10, MaxInFlight: 1, Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond, MaxAttempts: 1}},
		destFunc(func(_ context.Context, b *sink.Batch) error {
			if failing.Load() {
				return errors.New("down")
			}
			mu.Lock()
			defer mu.Unlock()
			for _, m := range b.Messages {
				got = append(got, m.Pos)
			}
			return nil
		}), sink.Options{Ack: h.relay.Acker("s"), DeadLetter: h.relay.DeadLetterer("s")})
	if err != nil {
		t.Fatal(err)
	}
	s.Delivery = p
	h.relay.Add(s)
	h.run()
	<-h.send(1)
	waitFor(t, "a dead letter", func() bool { return len(h.deadLettered("s")) == 1 })
	failing.Store(false)
	list, err := h.store.DeadLetters("s").List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rn := h.relay.runnerNamed("s")
	if err := rn.do(context.Background(), func() { rn.queueReplay([]string{"0000000000000999", list[0].ID}) }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dead letter after the gone one replayed", func() bool { return len(h.deadLettered("s")) == 0 })
	mu.Lock()
	defer mu.Unlock()
	if want := []change.Position{pos(0x100, 0)}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
}
