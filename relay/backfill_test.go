package relay

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/backfill"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/replication"
)

// chanSource streams what the test sends it, in the batches it sends.
type chanSource struct{ events chan []replication.Event }

func (s *chanSource) Setup(context.Context, bool) (pglogrepl.LSN, error) { return 0x10, nil }

func (s *chanSource) Run(ctx context.Context, stop <-chan struct{}, _ func() pglogrepl.LSN, out chan<- []replication.Event) error {
	for {
		select {
		case ev := <-s.events:
			select {
			case out <- ev:
			case <-ctx.Done():
				return nil
			}
		case <-stop:
			<-ctx.Done()
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func mark(lsn int, content string) replication.Event {
	return replication.Event{Kind: replication.EventWatermark, Msg: &change.Message{
		Action: change.Emitted, Prefix: replication.WatermarkPrefix, Content: []byte(content), Pos: pos(lsn, 0), XID: 7}}
}

func readRow(key string) *change.Message {
	return &change.Message{Action: change.Read, Schema: "public", Table: "t", Key: key, Record: []byte(`{}`), BackfillID: "bf_1"}
}

func keys(msgs []*change.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.Action)+" "+m.Key+" "+m.Pos.String())
	}
	return out
}

// TestBackfillChunk: between its watermarks a chunk's rows whose key the
// stream changed are left out; the others reach only the chunk's sink, at
// the high watermark's position, in order with the stream; Delivered
// says when they are acknowledged; a chunk whose low watermark was not seen
// is to be read again, and watermarks of no chunk are ignored.
func TestBackfillChunk(t *testing.T) {
	src := &chanSource{events: make(chan []replication.Event)}
	h := startRelay(t, src, openStore(t, t.TempDir()+"/state"), map[string]config.Sink{"a": {}, "b": {}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.relay.Streaming(ctx); err != nil {
		t.Fatal(err)
	}
	// Each send is one batch, watermarks amid other events, as the stream
	// hands them on.
	send := func(evs ...replication.Event) { src.events <- evs }
	w := backfill.NewWindow("public", "t")
	passed, err := h.relay.Expect("c1", "a", w)
	if err != nil {
		t.Fatal(err)
	}
	send(mark(0x100, "high old-run"), commit(0x101), mark(0x110, "low c1"), commit(0x111))
	k2 := insert("t", pos(0x200, 0))
	k2.Msg.Key = "k2"
	send(k2, commit(0x201))
	w.SetRows([]*change.Message{readRow("k1"), readRow("k2"), readRow("k3")})
	send(mark(0x300, "high c1"), commit(0x301))
	var p backfill.Passed
	select {
	case p = <-passed:
	case <-ctx.Done():
		t.Fatal("no answer at the high watermark")
	}
	if p.Retry || p.Err != nil || p.Sent != 2 || p.Last != pos(0x300, 2) {
		t.Fatalf("got %+v, want 2 sent, the last at 0/300:2", p)
	}
	a, b := h.sinks["a"], h.sinks["b"]
	want := []string{"insert k2 0/200:0", "read k1 0/300:1", "read k3 0/300:2"}
	waitFor(t, "sink a has the insert and the reads", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return slices.Equal(keys(a.got), want)
	})
	b.mu.Lock()
	if got := keys(b.got); !slices.Equal(got, want[:1]) {
		t.Errorf("sink b got %q, want only the insert", got)
	}
	b.mu.Unlock()

	if ok, err := h.relay.Delivered("a", p.Last); ok || err != nil {
		t.Errorf("Delivered before any ack: %v, %v", ok, err)
	}
	for _, q := range []change.Position{pos(0x200, 0), pos(0x300, 1), pos(0x300, 2)} {
		a.deliver(q)
	}
	waitFor(t, "the chunk delivered", func() bool { ok, _ := h.relay.Delivered("a", p.Last); return ok })
	if _, err := h.relay.Delivered("nope", p.Last); err == nil {
		t.Error("Delivered of an unknown sink: no error")
	}

	// The stream resumed between the watermarks: read the chunk again.
	w2 := backfill.NewWindow("public", "t")
	passed2, _ := h.relay.Expect("c2", "a", w2)
	w2.SetRows([]*change.Message{readRow("k4")})
	send(mark(0x400, "high c2"), commit(0x401))
	if p := <-passed2; !p.Retry {
		t.Errorf("a chunk without its low watermark: got %+v, want Retry", p)
	}
}
