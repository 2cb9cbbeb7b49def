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
	"github.com/walhook/walhook/sink"
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

// TestBackfillChunk: a chunk's rows whose key the stream changed between
// its watermarks, in a change its sink took, are left out; the others
// reach only the chunk's sink, at the high watermark's position (each row
// keeps its index), in order with the stream; Delivered
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
	w.SetRows([]*change.Message{readRow("k1"), readRow("k2"), readRow("k3")}, backfill.Snapshot{})
	send(mark(0x300, "high c1"), commit(0x301))
	var p backfill.Passed
	select {
	case p = <-passed:
	case <-ctx.Done():
		t.Fatal("no answer at the high watermark")
	}
	if p.Retry || p.Err != nil || p.Sent != 3 || p.Last != pos(0x300, 3) {
		t.Fatalf("got %+v, want 3 sent, the last at 0/300:3", p)
	}
	a, b := h.sinks["a"], h.sinks["b"]
	want := []string{"insert k2 0/200:0", "read k1 0/300:1", "read k3 0/300:3"} // a took k2's insert: its read goes
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
	for _, q := range []change.Position{pos(0x200, 0), pos(0x300, 1), pos(0x300, 3)} {
		a.deliver(q)
	}
	waitFor(t, "the chunk delivered", func() bool { ok, _ := h.relay.Delivered("a", p.Last); return ok })
	if _, err := h.relay.Delivered("nope", p.Last); err == nil {
		t.Error("Delivered of an unknown sink: no error")
	}

	// The stream resumed between the watermarks: read the chunk again.
	w2 := backfill.NewWindow("public", "t")
	passed2, _ := h.relay.Expect("c2", "a", w2)
	w2.SetRows([]*change.Message{readRow("k4")}, backfill.Snapshot{})
	send(mark(0x400, "high c2"), commit(0x401))
	if p := <-passed2; !p.Retry {
		t.Errorf("a chunk without its low watermark: got %+v, want Retry", p)
	}
}

// tRel is table t (id, n, big) as the tests' changes and reads describe it.
var tRel = &change.Relation{Schema: "public", Name: "t", Table: "public.t",
	Columns: []change.Column{{Name: "id", Identity: true}, {Name: "n"}, {Name: "big"}}}

// rowMsg is a message of row key of t whose record has the given columns,
// in t's order: "id" from the key, "n" = n, "big" = big when not "".
func rowMsg(a change.Action, key string, p change.Position, n, big string) *change.Message {
	m := &change.Message{Action: a, Schema: "public", Table: "t", Rel: tRel, Key: key, Pos: p}
	rec := []byte(`{"id":`)
	m.RecordFields = append(m.RecordFields, change.Field{Col: 0, Start: uint32(len(rec)), End: uint32(len(rec) + len(key))})
	rec = append(rec, key...)
	if n != "" {
		rec = append(rec, `,"n":`...)
		m.RecordFields = append(m.RecordFields, change.Field{Col: 1, Start: uint32(len(rec)), End: uint32(len(rec) + len(n))})
		rec = append(rec, n...)
	}
	if big != "" {
		rec = append(rec, `,"big":`...)
		m.RecordFields = append(m.RecordFields, change.Field{Col: 2, Start: uint32(len(rec)), End: uint32(len(rec) + len(big))})
		rec = append(rec, big...)
	} else if a == change.Update {
		m.UnchangedToast = []string{"big"}
	}
	m.Record = append(rec, '}')
	if a == change.Read {
		m.BackfillID = "bf_1"
	}
	return m
}

func ev(m *change.Message) replication.Event {
	return replication.Event{Kind: replication.EventChange, Msg: m}
}

// records lists what a sink got, as "action record".
func records(d *fakeDelivery) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, m := range d.got {
		out = append(out, string(m.Action)+" "+string(m.Record))
	}
	return out
}

// runChunk runs one chunk of sink between watermarks at 0x100 and 0x300,
// with the given batches between them, and waits for its answer.
func runChunk(t *testing.T, h *harness, src *chanSource, id, sink string, rows []*change.Message, between ...[]replication.Event) backfill.Passed {
	t.Helper()
	w := backfill.NewWindow("public", "t")
	passed, err := h.relay.Expect(id, sink, w)
	if err != nil {
		t.Fatal(err)
	}
	src.events <- []replication.Event{mark(0x100, "low "+id), commit(0x101)}
	for _, b := range between {
		src.events <- b
	}
	w.SetRows(rows, backfill.Snapshot{})
	src.events <- []replication.Event{mark(0x300, "high "+id), commit(0x301)}
	select {
	case p := <-passed:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no answer at the high watermark")
		return backfill.Passed{}
	}
}

// TestBackfillReadPerSink: whether a read is left out is decided per sink,
// on what the sink takes: a sink whose actions leave updates out keeps the
// read of a row updated between the watermarks (it would never get that
// row otherwise), one that takes updates does not; and a filter replaced
// while the chunk is open counts from where the runner applied it.
func TestBackfillReadPerSink(t *testing.T) {
	src := &chanSource{events: make(chan []replication.Event)}
	h := startRelay(t, src, openStore(t, t.TempDir()+"/state"), map[string]config.Sink{
		"all": {}, "reads": {Actions: []string{"read", "insert", "delete"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.relay.Streaming(ctx); err != nil {
		t.Fatal(err)
	}
	rows := func() []*change.Message {
		return []*change.Message{rowMsg(change.Read, "1", change.Position{}, "0", `"a"`), rowMsg(change.Read, "2", change.Position{}, "0", `"b"`)}
	}
	// A batch is the runners' to read once sent: each send has its own.
	upd1 := func() []replication.Event {
		return []replication.Event{ev(rowMsg(change.Update, "1", pos(0x200, 0), "1", `"a"`)), commit(0x201)}
	}
	all, reads := h.sinks["all"], h.sinks["reads"]

	if p := runChunk(t, h, src, "c1", "all", rows(), upd1()); p.Retry || p.Err != nil {
		t.Fatalf("chunk of all: %+v", p)
	}
	want := []string{`update {"id":1,"n":1,"big":"a"}`, `read {"id":2,"n":0,"big":"b"}`}
	waitFor(t, "sink all's update and read", func() bool { return slices.Equal(records(all), want) })

	if p := runChunk(t, h, src, "c2", "reads", rows(), upd1()); p.Retry || p.Err != nil {
		t.Fatalf("chunk of reads: %+v", p)
	}
	want = []string{`read {"id":1,"n":0,"big":"a"}`, `read {"id":2,"n":0,"big":"b"}`}
	waitFor(t, "sink reads keeps both reads", func() bool { return slices.Equal(records(reads), want) })

	// A reload lets updates through while the chunk is open: row 1's update
	// came before it (the sink never gets it: the read stays), row 2's
	// after (the sink gets it: the read goes).
	w := backfill.NewWindow("public", "t")
	passed, _ := h.relay.Expect("c3", "reads", w)
	src.events <- []replication.Event{mark(0x400, "low c3"), commit(0x401), ev(rowMsg(change.Update, "1", pos(0x402, 0), "1", `"a"`)), ev(rowMsg(change.Insert, "9", pos(0x410, 0), "0", `"z"`)), commit(0x411)}
	waitFor(t, "sink reads took the insert after the update", func() bool { return len(records(reads)) == 3 })
	if err := h.relay.UpdateSink(ctx, "reads", func(s *Sink) { s.Filter = sink.NewFilter(config.Sink{}, nil) }); err != nil {
		t.Fatal(err)
	}
	src.events <- []replication.Event{ev(rowMsg(change.Update, "2", pos(0x500, 0), "1", `"b"`)), commit(0x501)}
	w.SetRows(rows(), backfill.Snapshot{})
	src.events <- []replication.Event{mark(0x600, "high c3"), commit(0x601)}
	if p := <-passed; p.Retry || p.Err != nil {
		t.Fatalf("chunk c3: %+v", p)
	}
	want = append(want, `insert {"id":9,"n":0,"big":"z"}`, `update {"id":2,"n":1,"big":"b"}`, `read {"id":1,"n":0,"big":"a"}`)
	waitFor(t, "sink reads: the read of row 1 only", func() bool { return slices.Equal(records(reads), want) })
}

// TestBackfillUnchangedToast: a row updated between the watermarks by an
// update that left its TOASTed column out (unchanged_toast_columns) is
// not left out: its read becomes the row's newest state, the update's
// values and the read's value of that column, after the update.
func TestBackfillUnchangedToast(t *testing.T) {
	src := &chanSource{events: make(chan []replication.Event)}
	h := startRelay(t, src, openStore(t, t.TempDir()+"/state"), map[string]config.Sink{"a": {}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.relay.Streaming(ctx); err != nil {
		t.Fatal(err)
	}
	rows := []*change.Message{rowMsg(change.Read, "1", change.Position{}, "0", `"toasted"`), rowMsg(change.Read, "2", change.Position{}, "0", `"t2"`)}
	between := []replication.Event{
		ev(rowMsg(change.Update, "1", pos(0x200, 0), "1", "")), commit(0x201),
		ev(rowMsg(change.Update, "1", pos(0x210, 0), "2", "")), commit(0x211),
		ev(rowMsg(change.Update, "2", pos(0x220, 0), "5", "")), ev(rowMsg(change.Update, "2", pos(0x220, 1), "6", `"new"`)), commit(0x221),
	}
	if p := runChunk(t, h, src, "c1", "a", rows, between); p.Retry || p.Err != nil {
		t.Fatalf("chunk: %+v", p)
	}
	want := []string{`update {"id":1,"n":1}`, `update {"id":1,"n":2}`, `update {"id":2,"n":5}`, `update {"id":2,"n":6,"big":"new"}`,
		`read {"id":1,"n":2,"big":"toasted"}`}
	waitFor(t, "the merged read after the updates", func() bool { return slices.Equal(records(h.sinks["a"]), want) })
}

// TestBackfillHiddenCommit: a chunk whose snapshot does not see a
// transaction of its table that the stream delivered before its low
// watermark is read again; one whose snapshot sees it is not. A newer
// snapshot's xmin does not make the relay forget the transaction while a
// chunk registered before it, maybe read in an older snapshot, is open.
func TestBackfillHiddenCommit(t *testing.T) {
	src := &chanSource{events: make(chan []replication.Event)}
	h := startRelay(t, src, openStore(t, t.TempDir()+"/state"), map[string]config.Sink{"a": {}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.relay.Streaming(ctx); err != nil {
		t.Fatal(err)
	}
	upd := rowMsg(change.Update, "1", pos(0x150, 0), "1", `"a"`)
	upd.XID = 50
	src.events <- []replication.Event{ev(upd), commit(0x151)}
	older, newer := backfill.NewWindow("public", "t"), backfill.NewWindow("public", "t")
	pOlder, _ := h.relay.Expect("older", "a", older)
	pNewer, _ := h.relay.Expect("newer", "a", newer)
	src.events <- []replication.Event{mark(0x200, "low older"), commit(0x201), mark(0x210, "low newer"), commit(0x211)}
	row := func() []*change.Message {
		return []*change.Message{rowMsg(change.Read, "1", change.Position{}, "0", `"a"`)}
	}
	older.SetRows(row(), backfill.Snapshot{Xmin: 40, Xmax: 60, Xip: []uint32{50}, Valid: true})
	newer.SetRows(row(), backfill.Snapshot{Xmin: 55, Xmax: 60, Valid: true})
	src.events <- []replication.Event{mark(0x300, "high newer"), commit(0x301), mark(0x310, "high older"), commit(0x311)}
	if p := <-pNewer; p.Retry || p.Err != nil || p.Sent != 1 {
		t.Errorf("the chunk that sees the update: got %+v, want its read sent", p)
	}
	if p := <-pOlder; !p.Retry {
		t.Errorf("the chunk that misses the update: got %+v, want Retry", p)
	}
	// Both are done: a later snapshot that misses 50 is not told (50 is
	// below the xmin of a snapshot that every later one follows).
	w := backfill.NewWindow("public", "t")
	pw, _ := h.relay.Expect("later", "a", w)
	src.events <- []replication.Event{mark(0x400, "low later"), commit(0x401)}
	w.SetRows(row(), backfill.Snapshot{Xmin: 40, Xmax: 60, Xip: []uint32{50}, Valid: true})
	src.events <- []replication.Event{mark(0x410, "high later"), commit(0x411)}
	if p := <-pw; p.Retry {
		t.Errorf("after every chunk is done, 50 is forgotten: got %+v", p)
	}
}
