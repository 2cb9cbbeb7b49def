package replication

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/pgtest"
)

func TestMain(m *testing.M) {
	// A fuzzing worker runs only a fuzz target, which needs no server;
	// the fuzzing engine restarts workers, and each would start one.
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run())
	}
	pgtest.Main(m)
}

// syncPrefix marks the logical message a test writes to know that the
// stream has delivered everything before it.
const syncPrefix = "walhook.test.sync"

// testDB is a database of its own for one test, with a connection to run
// SQL on.
type testDB struct {
	dsn  string
	name string // the database's name, unique on the server; also the test's slot name
	conn *pgx.Conn
}

func newTestDB(t testing.TB) *testDB {
	t.Helper()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &testDB{dsn: dsn, name: conn.Config().Database, conn: conn}
}

// exec runs each statement, failing the test on the first error.
func (db *testDB) exec(t testing.TB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := db.conn.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// testStream is a replication.Stream running against a test database,
// with the events it emitted.
type testStream struct {
	db      *testDB
	events  chan []Event
	pending []Event // taken from events, not yet returned by next
	budget  *Budget // streamOpts.budget's, nil without
	taker   *Taker  // with streamOpts.budget: next takes each change
	flushed atomic.Uint64
	done    chan struct{} // closed when Run returned, with err set
	err     error
}

// streamOpts change the source a test streams.
type streamOpts struct {
	tables    []config.Table // default: all tables
	messages  []string       // passed-through prefixes besides syncPrefix
	heartbeat time.Duration
	buffer    int // event channel capacity in batches; default 1024
	// columns is source.columns.
	columns map[config.Table]config.Columns
	// budget, when above 0, bounds the bytes of changes handed on and not
	// yet returned by next.
	budget int64
}

// startStream creates the publication and the slot (as walhook run does),
// then streams them until the test ends. Changes made before it returns are
// captured once their transaction commits after the slot was created.
func startStream(t testing.TB, db *testDB, opts streamOpts) *testStream {
	t.Helper()
	src := config.Source{
		URL:            db.dsn,
		Slot:           db.name, // slots are the server's, not the database's
		Publication:    "walhook",
		Tables:         opts.tables,
		Columns:        opts.columns,
		ReceiveTimeout: 30 * time.Second,
		Heartbeat:      opts.heartbeat,
		Messages:       append([]string{syncPrefix}, opts.messages...),
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := Setup(ctx, src, false, log); err != nil {
		cancel()
		t.Fatalf("setup: %v", err)
	}
	if opts.buffer == 0 {
		opts.buffer = 1024
	}
	ts := &testStream{db: db, events: make(chan []Event, opts.buffer), done: make(chan struct{})}
	s := New(src, func() pglogrepl.LSN { return pglogrepl.LSN(ts.flushed.Load()) }, log)
	if opts.budget > 0 {
		s.Budget = NewBudget(opts.budget)
		ts.budget, ts.taker = s.Budget, s.Budget.Taker()
	}
	go func() {
		ts.err = s.Run(ctx, nil, ts.events)
		close(ts.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.done:
		case <-time.After(10 * time.Second):
			t.Errorf("stream did not stop within 10s of its context ending")
		}
	})
	return ts
}

// next returns the next event, or fails the test after timeout.
func (ts *testStream) next(t testing.TB, timeout time.Duration) Event {
	t.Helper()
	for len(ts.pending) == 0 {
		select {
		case ts.pending = <-ts.events:
		case <-ts.done:
			t.Fatalf("stream ended: %v", ts.err)
		case <-time.After(timeout):
			t.Fatalf("no event within %v", timeout)
		}
	}
	ev := ts.pending[0]
	ts.pending = ts.pending[1:]
	if ev.Kind == EventCommit {
		ts.flushed.Store(uint64(ev.LSN))
	}
	if ev.Kind == EventChange {
		if err := checkFields(ev.Msg); err != nil {
			t.Error(err)
		}
		if ts.taker != nil {
			ts.taker.Took(ev.Msg.Size())
		}
	}
	return ev
}

// end waits for the stream to end by itself and returns its error, with
// the change messages it emitted until then.
func (ts *testStream) end(t testing.TB, timeout time.Duration) ([]*change.Message, error) {
	t.Helper()
	var msgs []*change.Message
	deadline := time.After(timeout)
	for {
		for _, ev := range ts.pending {
			if ev.Kind == EventChange {
				msgs = append(msgs, ev.Msg)
			}
		}
		ts.pending = nil
		select {
		case ts.pending = <-ts.events:
		case <-ts.done:
			return msgs, ts.err
		case <-deadline:
			t.Fatalf("stream still running after %v, want it to end with an error", timeout)
		}
	}
}

// sync writes a marker and returns every change message streamed before
// it, in order. The marker is not among them.
func (ts *testStream) sync(t testing.TB) []*change.Message {
	t.Helper()
	ts.db.exec(t, "SELECT pg_logical_emit_message(true, '"+syncPrefix+"', 'sync')")
	var msgs []*change.Message
	for {
		ev := ts.next(t, 30*time.Second)
		if ev.Kind != EventChange {
			continue
		}
		if ev.Msg.Action == change.Emitted && ev.Msg.Prefix == syncPrefix {
			return msgs
		}
		msgs = append(msgs, ev.Msg)
	}
}

// wantMessages compares msgs with want, each a message rendered by
// render.
func wantMessages(t testing.TB, msgs []*change.Message, want ...string) {
	t.Helper()
	got := make([]string, len(msgs))
	for i, m := range msgs {
		got[i] = render(m)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got messages\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// render is a message's JSON without the metadata that changes from run to
// run (LSN, time, xid): action, table, record, changes, commit_idx and
// unchanged TOAST columns, in that order.
func render(m *change.Message) string {
	var b []byte
	b = append(b, `{"action":`...)
	b = change.AppendString(b, string(m.Action))
	if m.Action == change.Emitted {
		b = append(b, `,"prefix":`...)
		b = change.AppendString(b, m.Prefix)
		b = append(b, `,"content":`...)
		b = append(b, m.Content...)
	} else {
		b = append(b, `,"table":`...)
		b = change.AppendString(b, m.QualifiedTable())
	}
	b = append(b, `,"record":`...)
	b = appendOrNull(b, m.Record)
	b = append(b, `,"changes":`...)
	b = appendOrNull(b, m.Changes)
	if len(m.UnchangedToast) > 0 {
		b = append(b, `,"unchanged_toast_columns":["`...)
		b = append(b, strings.Join(m.UnchangedToast, `","`)...)
		b = append(b, `"]`...)
	}
	return string(append(b, '}'))
}

func appendOrNull(b, raw []byte) []byte {
	if raw == nil {
		return append(b, "null"...)
	}
	return append(b, raw...)
}
