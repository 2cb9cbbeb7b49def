package backfill

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/state"
)

// memStore keeps backfills in memory.
type memStore struct {
	mu sync.Mutex
	b  map[string]state.Backfill
}

func (s *memStore) Backfills(context.Context) ([]state.Backfill, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var l []state.Backfill
	for _, b := range s.b {
		l = append(l, b)
	}
	return l, nil
}

func (s *memStore) SaveBackfill(_ context.Context, b state.Backfill) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b[b.ID] = b
	return nil
}

func (s *memStore) get(id string) state.Backfill {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b[id]
}

// passStream is the stream side without a stream: a chunk passes once its
// rows are read, and every read is delivered at once. The first chunk
// comes back void, once, and only after the next chunk was registered:
// the next chunk is read while one travels.
type passStream struct {
	mu       sync.Mutex
	expected []string
	second   chan struct{} // closed at the second Expect
	voided   bool
	ahead    bool // the next chunk was registered before the first came back
	lsn      pglogrepl.LSN
	passed   map[string]int // row key: times passed
	stop     chan struct{}
}

func (s *passStream) Streaming(context.Context) error { return nil }

func (s *passStream) Expect(id, _ string, w *Window) (<-chan Passed, error) {
	s.mu.Lock()
	s.expected = append(s.expected, id)
	first := len(s.expected) == 1
	if len(s.expected) == 2 {
		close(s.second)
	}
	s.mu.Unlock()
	ch := make(chan Passed, 1)
	go func() {
		var rows []*change.Message
		for rows == nil { // until the rows are read (or the test ends)
			w.mu.Lock()
			rows = w.rows
			w.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if first && !s.voided {
			s.voided = true
			s.mu.Unlock()
			ahead := false
			select { // void only once the next chunk travels too
			case <-s.second:
				ahead = true
			case <-time.After(5 * time.Second):
			case <-s.stop:
			}
			s.mu.Lock()
			s.ahead = ahead
			ch <- Passed{Retry: true}
			return
		}
		s.lsn += 0x100
		for _, m := range rows {
			s.passed[m.Key]++
		}
		ch <- Passed{Last: change.Position{CommitLSN: s.lsn, Idx: uint32(len(rows))}, Sent: len(rows)}
	}()
	return ch, nil
}

func (s *passStream) Forget(string) {}

func (s *passStream) Delivered(string, change.Position) (bool, error) { return true, nil }

// TestChunkReadWhileOneTravels: the next chunk is read while the one
// before travels through the stream, and when that one comes back void,
// it and everything after it are read again: every row passes, and the
// progress saved counts each row once.
func TestChunkReadWhileOneTravels(t *testing.T) {
	const n = 1000
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	execSQL(t, dsn, `CREATE TABLE t (id int PRIMARY KEY, v text);
		INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 1000) i; ANALYZE t`)
	store := &memStore{b: map[string]state.Backfill{}}
	stream := &passStream{second: make(chan struct{}), passed: map[string]int{}, stop: make(chan struct{})}
	defer close(stream.stop)
	tables := []config.Table{{Schema: "public", Name: "t"}}
	m := NewManager(store, stream, Options{
		Source: config.Source{URL: dsn, Tables: tables},
		Sink:   func(string) (config.Sink, bool) { return config.Sink{Name: "s", Tables: tables}, true },
	}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go m.Run(ctx)
	<-m.Ready()
	b, err := m.Start(ctx, "s", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for store.get(b.ID).State == state.BackfillRunning {
		select {
		case <-ctx.Done():
			t.Fatalf("backfill still running: %+v", store.get(b.ID))
		case <-time.After(10 * time.Millisecond):
		}
	}
	got := store.get(b.ID)
	if got.State != state.BackfillDone || got.Tables[0].Rows != n {
		t.Fatalf("backfill %s with %d rows saved, want done with %d (%s)", got.State, got.Tables[0].Rows, n, got.Error)
	}
	stream.mu.Lock()
	defer stream.mu.Unlock()
	if !stream.voided || !stream.ahead {
		t.Fatalf("first chunk voided: %v; the next chunk registered while it travelled: %v; want both", stream.voided, stream.ahead)
	}
	if len(stream.passed) != n {
		t.Errorf("%d distinct rows passed, want %d", len(stream.passed), n)
	}
}

// execSQL runs setup in the database dsn names.
func execSQL(t *testing.T, dsn, setup string) {
	t.Helper()
	m := &Manager{opts: Options{Source: config.Source{URL: dsn}}}
	conn, err := m.connectAs(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), setup); err != nil {
		t.Fatal(err)
	}
}
