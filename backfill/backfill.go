// Package backfill sends the rows a sink's tables already hold, as action
// "read", through the sink's normal path while the stream goes on, by the
// DBLog watermark algorithm (see Window): chunks read in primary key order
// between a low and a high watermark written into the WAL, the rows that
// changed meanwhile left out, the rest delivered at the high watermark's
// position. Progress is kept per table in the state store once a chunk is
// delivered, so a restart continues at the first chunk not delivered.
//
// The relay drives the stream side (Stream); a Manager runs the backfills.
package backfill

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/pgvalue"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/state"
)

// Stream is what a backfill needs of the running relay.
type Stream interface {
	// Streaming waits until the stream runs.
	Streaming(ctx context.Context) error
	// Expect registers w under id before its low watermark is written.
	// Once the stream passed the high watermark, the channel gets what
	// became of the chunk.
	Expect(id, sink string, w *Window) (<-chan Passed, error)
	// Forget drops a chunk that will have no high watermark.
	Forget(id string)
	// Delivered reports whether the sink has delivered (or its filter
	// left out) every message it was handed up to pos.
	Delivered(sink string, pos change.Position) (bool, error)
}

// Passed is what became of a chunk at its high watermark.
type Passed struct {
	// Last is the position of the last read message handed to the sink;
	// Sent how many were.
	Last change.Position
	Sent int
	// Retry says the chunk was void and must be read again.
	Retry bool
	Err   error
}

// Store keeps the backfills' progress: state.Store.
type Store interface {
	Backfills(ctx context.Context) ([]state.Backfill, error)
	SaveBackfill(ctx context.Context, b state.Backfill) error
}

// Options configure a Manager.
type Options struct {
	// Source is the configuration's source: its url to read with, its
	// tables and publication to tell what a sink receives.
	Source config.Source
	// Sink returns the named sink's current configuration.
	Sink func(name string) (config.Sink, bool)
	// TargetQuery is how long a chunk's query should take; default 100ms.
	TargetQuery time.Duration
	// MaxRows and MaxBytes bound a chunk; default 2,000 rows and 4 MiB of
	// records.
	MaxRows, MaxBytes int
	// Ended, when set, is told of a backfill that completed, failed or
	// was cancelled, once its end is saved (walhook's operational events:
	// events.Emitter.BackfillEnded).
	Ended func(ctx context.Context, b state.Backfill)
}

// ErrUnknownSink is wrapped by Start for a sink the configuration lacks.
var ErrUnknownSink = errors.New("unknown sink")

// ErrFinished is wrapped by Cancel for a backfill that is not running.
var ErrFinished = errors.New("backfill is not running")

// ErrRunning is wrapped by Start when a backfill of the same sink and
// table runs already.
var ErrRunning = errors.New("a backfill runs already")

// ErrNotFound is wrapped by Cancel for an unknown backfill.
var ErrNotFound = errors.New("no such backfill")

// Manager starts, resumes, lists and cancels backfills.
type Manager struct {
	store  Store
	stream Stream
	opts   Options
	log    *slog.Logger

	mu    sync.Mutex
	runs  map[string]*run // running in this process
	base  context.Context // set by Run
	ready chan struct{}   // closed once Run set base
	wg    sync.WaitGroup
}

// run is one backfill running in this process.
type run struct {
	cancel    context.CancelFunc
	cancelled bool
	b         state.Backfill // as last saved
	started   time.Time      // in this process
	rowsStart int64          // rows done when it started in this process
}

// NewManager returns a manager of the backfills in store.
func NewManager(store Store, stream Stream, opts Options, log *slog.Logger) *Manager {
	if opts.TargetQuery <= 0 {
		opts.TargetQuery = 100 * time.Millisecond
	}
	if opts.MaxRows <= 0 {
		opts.MaxRows = 2000
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 4 << 20
	}
	return &Manager{store: store, stream: stream, opts: opts, log: log, runs: map[string]*run{}, ready: make(chan struct{})}
}

// Run resumes the backfills the store says are running, runs those
// started meanwhile, and returns once ctx ends and they stopped. A
// backfill stopped that way stays running in the store, to be resumed.
func (m *Manager) Run(ctx context.Context) error {
	list, err := m.store.Backfills(ctx)
	if err != nil {
		return fmt.Errorf("read backfills: %w", err)
	}
	m.mu.Lock()
	m.base = ctx
	close(m.ready)
	for _, b := range list {
		if b.State == state.BackfillRunning {
			m.log.Info("resuming backfill", "backfill", b.ID, "sink", b.Sink)
			m.launch(b)
		}
	}
	m.mu.Unlock()
	<-ctx.Done()
	m.wg.Wait()
	return nil
}

// Ready is closed once Run is running: Start works from then on.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Start validates and starts a backfill of the sink's tables (none: every
// table the sink receives) with an optional SQL condition. Bad input is an
// error wrapping ErrInvalid or ErrUnknownSink, and nothing is started.
func (m *Manager) Start(ctx context.Context, sinkName string, tables []config.Table, where string) (state.Backfill, error) {
	m.mu.Lock()
	running := m.base != nil
	m.mu.Unlock()
	if !running {
		return state.Backfill{}, errors.New("walhook is not running its backfills yet; try again in a moment")
	}
	b := state.Backfill{ID: newID(), Sink: sinkName, Where: where, State: state.BackfillRunning}
	role, err := replication.ConnectRole(ctx, m.opts.Source)
	if err != nil {
		return state.Backfill{}, err
	}
	if role.WriteURL == "" {
		return state.Backfill{}, fmt.Errorf("%w: source.url is a hot standby and source.primary_url is not set, so walhook cannot write the backfill's watermarks; set source.primary_url to the primary's postgres:// URL", ErrInvalid)
	}
	if b.Tables, err = m.plan(ctx, sinkName, tables, where); err != nil {
		return state.Backfill{}, err
	}
	m.mu.Lock()
	for _, r := range m.runs {
		if r.b.Sink != sinkName {
			continue
		}
		for _, t := range r.b.Tables {
			if slices.ContainsFunc(b.Tables, func(x state.BackfillTable) bool { return x.Table == t.Table }) && !t.Done {
				m.mu.Unlock()
				return state.Backfill{}, fmt.Errorf("%w: %s of sink %q is being backfilled by %s; wait for it, or cancel it first", ErrRunning, tableName(t.Table), sinkName, r.b.ID)
			}
		}
	}
	m.mu.Unlock()
	b.Created = time.Now().UTC().Truncate(time.Microsecond)
	b.Updated = b.Created
	if err := m.store.SaveBackfill(ctx, b); err != nil {
		return state.Backfill{}, fmt.Errorf("save backfill: %w", err)
	}
	m.mu.Lock()
	m.launch(b)
	m.mu.Unlock()
	m.log.Info("backfill started", "backfill", b.ID, "sink", sinkName, "tables", len(b.Tables), "where", where)
	return b, nil
}

// StartOnCreate records a backfill of every table the sink receives and
// starts it (backfill.on_create). Unlike Start it does not need the
// source: the backfill is in the store, with no table yet, before
// anything is checked, and plan resolves its tables once the stream runs.
// So a source that is down when a sink first starts delays its backfill
// instead of losing it, across restarts too. What plan refuses then ends
// the backfill as failed, with the reason.
func (m *Manager) StartOnCreate(ctx context.Context, sinkName string) (state.Backfill, error) {
	m.mu.Lock()
	running := m.base != nil
	m.mu.Unlock()
	if !running {
		return state.Backfill{}, errors.New("walhook is not running its backfills yet; try again in a moment")
	}
	b := state.Backfill{ID: newID(), Sink: sinkName, State: state.BackfillRunning}
	b.Created = time.Now().UTC().Truncate(time.Microsecond)
	b.Updated = b.Created
	if err := m.store.SaveBackfill(ctx, b); err != nil {
		return state.Backfill{}, fmt.Errorf("save backfill: %w", err)
	}
	m.mu.Lock()
	m.launch(b)
	m.mu.Unlock()
	m.log.Info("backfill started for the sink's first start; its tables are read once the stream runs", "backfill", b.ID, "sink", sinkName)
	return b, nil
}

// plan checks a backfill of the sink's tables (none: every table the sink
// receives) with where against the source, and returns its tables, none
// done. Bad input is an error wrapping ErrInvalid or ErrUnknownSink.
func (m *Manager) plan(ctx context.Context, sinkName string, tables []config.Table, where string) ([]state.BackfillTable, error) {
	sc, ok := m.opts.Sink(sinkName)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownSink, sinkName)
	}
	if len(sc.Actions) > 0 && !slices.Contains(sc.Actions, string(change.Read)) {
		return nil, fmt.Errorf("%w: sink %q does not receive action read (its actions are %v); add read to its actions", ErrInvalid, sinkName, sc.Actions)
	}
	conn, err := m.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	receives, err := m.received(ctx, conn, sc)
	if err != nil {
		return nil, err
	}
	if len(tables) == 0 {
		tables = receives
		if len(tables) == 0 {
			return nil, fmt.Errorf("%w: sink %q receives no table", ErrInvalid, sinkName)
		}
	}
	var planned []state.BackfillTable
	types := pgvalue.NewTypes(pgvalue.QueryCatalog(conn))
	for _, t := range tables {
		if !slices.Contains(receives, t) {
			return nil, fmt.Errorf("%w: sink %q does not receive table %s (it receives %s)", ErrInvalid, sinkName, t, tableList(receives))
		}
		tb, err := Describe(ctx, conn, types, t, m.opts.Source.Publication)
		if err != nil {
			return nil, err
		}
		if err := tb.CheckWhere(ctx, conn, where); err != nil {
			return nil, err
		}
		planned = append(planned, state.BackfillTable{Table: t.Quoted(), Estimate: tb.Estimate})
	}
	return planned, nil
}

// HasBackfill reports whether the store holds a backfill of the sink, in
// any state.
func (m *Manager) HasBackfill(ctx context.Context, sink string) (bool, error) {
	list, err := m.store.Backfills(ctx)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(list, func(b state.Backfill) bool { return b.Sink == sink }), nil
}

func tableList(ts []config.Table) string {
	if len(ts) == 0 {
		return "no table"
	}
	s := ""
	for i, t := range ts {
		if i > 0 {
			s += ", "
		}
		s += t.String()
	}
	return s
}

// received is every table the sink receives: its tables, else the
// source's, else the publication's.
func (m *Manager) received(ctx context.Context, conn *pgx.Conn, sc config.Sink) ([]config.Table, error) {
	if len(sc.Tables) > 0 {
		return sc.Tables, nil
	}
	if !m.opts.Source.AllTables() {
		return m.opts.Source.Tables, nil
	}
	var tables []config.Table
	err := readOnly(ctx, conn, func() error {
		rows, err := conn.Query(ctx, `SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2`, m.opts.Source.Publication)
		if err != nil {
			return err
		}
		tables, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (config.Table, error) {
			var t config.Table
			return t, row.Scan(&t.Schema, &t.Name)
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list the publication's tables: %w", err)
	}
	return tables, nil
}

// launch starts b's goroutine; m.mu is held.
func (m *Manager) launch(b state.Backfill) {
	ctx, cancel := context.WithCancel(m.base)
	r := &run{cancel: cancel, b: b, started: time.Now()}
	for _, t := range b.Tables {
		r.rowsStart += t.Rows
	}
	m.runs[b.ID] = r
	m.wg.Go(func() {
		defer cancel()
		wait := retryMin
		for {
			err := m.execute(ctx, r)
			if err == nil || ctx.Err() != nil || !interrupted(err) {
				m.finish(r, err)
				return
			}
			// The source went away (a restart, a failover, a network
			// fault): go on from the last chunk delivered once it is back.
			m.log.Warn("backfill interrupted; it goes on from its last delivered chunk", "backfill", r.b.ID, "retry_in", wait.String(), "err", err)
			select {
			case <-ctx.Done():
				m.finish(r, ctx.Err())
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, retryMax)
		}
	})
}

// A backfill interrupted by the source retries after retryMin, doubling
// up to retryMax.
const (
	retryMin = 500 * time.Millisecond
	retryMax = 30 * time.Second
)

// interrupted reports whether err says the source could not be reached or
// went away, rather than refused what the backfill asked: a connection
// failure, or PostgreSQL's connection exceptions (class 08) and operator
// interventions (57P: shutting down, starting up, terminated).
func interrupted(err error) bool {
	if errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnknownSink) {
		return false
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return strings.HasPrefix(pg.Code, "08") || strings.HasPrefix(pg.Code, "57P")
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.As(err, &ne) || errors.As(err, &ce) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// finish records how a run ended.
func (m *Manager) finish(r *run, err error) {
	m.mu.Lock()
	delete(m.runs, r.b.ID)
	b := r.b
	cancelled := r.cancelled
	base := m.base
	m.mu.Unlock()
	switch {
	case cancelled:
		b.State = state.BackfillCancelled
	case err == nil:
		b.State = state.BackfillDone
	case base.Err() != nil:
		return // walhook stops: resumed at the next start
	default:
		b.State, b.Error = state.BackfillFailed, err.Error()
	}
	b.Updated = time.Now().UTC().Truncate(time.Microsecond)
	if err := m.store.SaveBackfill(context.Background(), b); err != nil {
		m.log.Error("could not save the backfill's end", "backfill", b.ID, "err", err)
	}
	if m.opts.Ended != nil {
		m.opts.Ended(context.Background(), b)
	}
	switch b.State {
	case state.BackfillFailed:
		m.log.Error("backfill failed", "backfill", b.ID, "sink", b.Sink, "err", err)
	default:
		m.log.Info("backfill "+b.State, "backfill", b.ID, "sink", b.Sink)
	}
}

// Cancel stops a running backfill; its state becomes cancelled.
func (m *Manager) Cancel(ctx context.Context, id string) error {
	m.mu.Lock()
	r, ok := m.runs[id]
	if ok {
		r.cancelled = true
		r.cancel()
	}
	m.mu.Unlock()
	if ok {
		return nil
	}
	list, err := m.store.Backfills(ctx)
	if err != nil {
		return err
	}
	for _, b := range list {
		if b.ID == id {
			return fmt.Errorf("%w: backfill %q is %s", ErrFinished, id, b.State)
		}
	}
	return fmt.Errorf("%w %q", ErrNotFound, id)
}

// Progress is a backfill as List reports it.
type Progress struct {
	state.Backfill
	// RowsPerSec is, for a running backfill, the rate since it started in
	// this process; for one that ended, its rows over its whole time.
	RowsPerSec float64
}

// List returns every backfill in the store, oldest first, with the
// progress of those running.
func (m *Manager) List(ctx context.Context) ([]Progress, error) {
	list, err := m.store.Backfills(ctx)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(list, func(a, b state.Backfill) int { return a.Created.Compare(b.Created) })
	out := make([]Progress, 0, len(list))
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range list {
		p := Progress{Backfill: b}
		if d := b.Updated.Sub(b.Created).Seconds(); b.State != state.BackfillRunning && d > 0 {
			var rows int64
			for _, t := range b.Tables {
				rows += t.Rows
			}
			p.RowsPerSec = float64(rows) / d
		}
		if r, ok := m.runs[b.ID]; ok {
			p.Backfill = r.b
			var rows int64
			for _, t := range r.b.Tables {
				rows += t.Rows
			}
			if d := time.Since(r.started).Seconds(); d > 0 {
				p.RowsPerSec = float64(rows-r.rowsStart) / d
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// save writes b as r's progress.
func (m *Manager) save(ctx context.Context, r *run, b state.Backfill) error {
	b.Updated = time.Now().UTC().Truncate(time.Microsecond)
	b.Tables = slices.Clone(b.Tables)
	if err := m.store.SaveBackfill(ctx, b); err != nil {
		return fmt.Errorf("save backfill progress: %w", err)
	}
	m.mu.Lock()
	r.b = b
	m.mu.Unlock()
	return nil
}

// connect opens a normal connection to the source with the session
// settings the value encoders rely on, its transactions read-only by
// default. Every statement a backfill reads with runs in a transaction
// walhook opens read-only (readOnly) besides: the session default is
// only a second line, since a statement can change it.
func (m *Manager) connect(ctx context.Context) (*pgx.Conn, error) {
	return m.connectAs(ctx, true)
}

func (m *Manager) connectAs(ctx context.Context, readOnly bool) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(m.opts.Source.URL)
	if err != nil {
		return nil, fmt.Errorf("source.url: %w", err)
	}
	session(cfg)
	if readOnly {
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("backfill: connect to source: %w", err)
	}
	return conn, nil
}

// session applies the backfill's session settings to cfg.
func session(cfg *pgx.ConnConfig) {
	for k, v := range pgvalue.SessionSettings {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["application_name"] = "walhook backfill"
}

// newID is "bf_" and 16 random hex digits.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "bf_" + hex.EncodeToString(b[:])
}

// tableName is a stored table name ("public"."orders") as schema.name.
func tableName(quoted string) string {
	if t, err := config.ParseTable(quoted); err == nil {
		return t.String()
	}
	return quoted
}
