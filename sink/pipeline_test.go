package sink

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

func TestNewRejectsBadSettings(t *testing.T) {
	good := config.Sink{Name: "s", BatchSize: 10, MaxInFlight: 2, Retry: config.Retry{Initial: time.Millisecond, Max: time.Second}}
	if _, err := New(good, nil, Options{}); err != nil {
		t.Fatalf("New with good settings: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*config.Sink)
		want   string
	}{
		{"batch size", func(c *config.Sink) { c.BatchSize = 0 }, "batch_size"},
		{"batch wait", func(c *config.Sink) { c.BatchWait = -time.Second }, "batch_wait"},
		{"lanes", func(c *config.Sink) { c.MaxInFlight = 0 }, "max_in_flight"},
		{"retry initial", func(c *config.Sink) { c.Retry.Initial = 0 }, "retry.initial"},
		{"retry max", func(c *config.Sink) { c.Retry.Max = time.Microsecond }, "retry.max"},
		{"max attempts", func(c *config.Sink) { c.Retry.MaxAttempts = -1 }, "retry.max_attempts"},
	} {
		cfg := good
		tc.change(&cfg)
		if _, err := New(cfg, nil, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %s", tc.name, err, tc.want)
		}
	}
}

type deliverFunc func(context.Context, *Batch) error

func (f deliverFunc) Deliver(ctx context.Context, b *Batch) error { return f(ctx, b) }

// TestReplayAcrossLanes: a dead letter whose messages spread over several
// lanes is counted down by all of them at once; done is called once, when
// the last one is delivered (run with -race).
func TestReplayAcrossLanes(t *testing.T) {
	var delivered atomic.Int64
	p, err := New(config.Sink{Name: "s", BatchSize: 1, MaxInFlight: 8, Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond}},
		deliverFunc(func(_ context.Context, b *Batch) error { delivered.Add(int64(len(b.Messages))); return nil }), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	const n = 2000
	entries := make([]Entry, n)
	for i := range entries {
		entries[i] = Entry{Msg: &change.Message{Pos: change.Position{CommitLSN: pglogrepl.LSN(0x100 + i)}, Key: fmt.Sprint(i)}, Group: uint64(i)}
	}
	var calls atomic.Int64
	done := make(chan struct{})
	if err := p.Replay(entries, func() {
		if calls.Add(1) == 1 {
			close(done)
		}
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("done not called within 10 s; %d of %d delivered", delivered.Load(), n)
	}
	time.Sleep(10 * time.Millisecond)
	if c, d := calls.Load(), delivered.Load(); c != 1 || d != n {
		t.Fatalf("done called %d times after %d deliveries, want once after %d", c, d, n)
	}
}
