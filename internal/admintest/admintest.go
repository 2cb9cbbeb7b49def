// Package admintest runs walhook's admin server for tests: a real listener
// on 127.0.0.1, in front of Fake, an in-memory stand-in for the state the
// relay, sinks, dead-letter store and backfills own.
package admintest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/server"
)

// Start serves srv on a free port of 127.0.0.1 until the test ends, and
// returns the address it listens on.
func Start(t testing.TB, srv *server.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// Fake implements every interface of package server in memory and records
// the calls it gets. Set its fields before the server starts, or under Lock.
type Fake struct {
	mu sync.Mutex

	// Readiness is what Ready answers.
	Readiness server.Readiness
	// Report is what Status answers, with paused sinks marked so.
	Report server.StatusReport

	// Dead holds the dead letters per sink, oldest first.
	Dead map[string][]server.DeadLetter
	// Runs holds the backfills, oldest first.
	Runs []server.Backfill
	// Settings holds each sink's configuration as SinkConfig shows it.
	Settings map[string][]server.Setting
	// Err, when set, is what every method but Ready returns.
	Err error

	paused map[string]bool
	calls  []string
	nextID int
}

// NewFake returns a ready, active Fake whose status lists sinks.
func NewFake(sinks ...string) *Fake {
	f := &Fake{Readiness: server.Readiness{Ready: true, Role: "active"}, Dead: map[string][]server.DeadLetter{}, paused: map[string]bool{}}
	f.Report.Slot = "walhook"
	for _, s := range sinks {
		f.Report.Sinks = append(f.Report.Sinks, server.SinkStatus{Name: s, State: "running"})
	}
	return f
}

// Options are server options with f behind every interface.
func (f *Fake) Options(sinks ...string) server.Options {
	return server.Options{SinkNames: sinks, Health: f, Status: f, Sinks: f, DeadLetters: f, Backfills: f, SinkConfigs: f}
}

// Lock and Unlock guard the fields while the server runs.
func (f *Fake) Lock()   { f.mu.Lock() }
func (f *Fake) Unlock() { f.mu.Unlock() }

// Calls returns the calls made so far, each as "Method arg...".
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Paused reports whether a sink was paused (and not resumed since).
func (f *Fake) Paused(sink string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.paused[sink]
}

func (f *Fake) record(method string, args ...string) error {
	f.calls = append(f.calls, strings.TrimSpace(method+" "+strings.Join(args, " ")))
	return f.Err
}

func (f *Fake) Ready() (bool, string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Readiness.Ready, f.Readiness.Reason, f.Readiness.Role
}

func (f *Fake) Status(context.Context) (server.StatusReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Status"); err != nil {
		return server.StatusReport{}, err
	}
	r := f.Report
	r.Sinks = slices.Clone(r.Sinks)
	for i := range r.Sinks {
		if f.paused[r.Sinks[i].Name] {
			r.Sinks[i].State, r.Sinks[i].PausedReason = "paused", "operator"
		}
	}
	return r, nil
}

func (f *Fake) PauseSink(_ context.Context, sink string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("PauseSink", sink); err != nil {
		return err
	}
	f.paused[sink] = true
	return nil
}

func (f *Fake) ResumeSink(_ context.Context, sink string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("ResumeSink", sink); err != nil {
		return err
	}
	delete(f.paused, sink)
	return nil
}

func (f *Fake) ListDeadLetters(_ context.Context, sink string) ([]server.DeadLetter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("ListDeadLetters", sink); err != nil {
		return nil, err
	}
	return slices.Clone(f.Dead[sink]), nil
}

func (f *Fake) find(sink, id string) (int, error) {
	i := slices.IndexFunc(f.Dead[sink], func(d server.DeadLetter) bool { return d.ID == id })
	if i < 0 {
		return 0, fmt.Errorf("sink %q has no dead letter %q: %w", sink, id, server.ErrNotFound)
	}
	return i, nil
}

func (f *Fake) DeadLetter(_ context.Context, sink, id string) (server.DeadLetter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("DeadLetter", sink, id); err != nil {
		return server.DeadLetter{}, err
	}
	i, err := f.find(sink, id)
	if err != nil {
		return server.DeadLetter{}, err
	}
	return f.Dead[sink][i], nil
}

func (f *Fake) ReplayDeadLetters(_ context.Context, sink string, ids []string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("ReplayDeadLetters", append([]string{sink}, ids...)...); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		for _, d := range f.Dead[sink] {
			ids = append(ids, d.ID)
		}
		return ids, nil
	}
	for _, id := range ids {
		if _, err := f.find(sink, id); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

func (f *Fake) DropDeadLetter(_ context.Context, sink, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("DropDeadLetter", sink, id); err != nil {
		return err
	}
	i, err := f.find(sink, id)
	if err != nil {
		return err
	}
	f.Dead[sink] = slices.Delete(f.Dead[sink], i, i+1)
	return nil
}

func (f *Fake) StartBackfill(_ context.Context, sink string, tables []config.Table, where string) (server.Backfill, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	args := []string{sink}
	for _, t := range tables {
		args = append(args, t.Quoted())
	}
	if where != "" {
		args = append(args, "where", where)
	}
	if err := f.record("StartBackfill", args...); err != nil {
		return server.Backfill{}, err
	}
	f.nextID++
	bf := server.Backfill{
		ID:        fmt.Sprintf("bf_%d", f.nextID),
		Sink:      sink,
		State:     "running",
		Where:     where,
		Tables:    []server.TableProgress{},
		StartedAt: time.Date(2026, 11, 26, 11, 20, 0, 0, time.UTC),
	}
	for _, t := range tables {
		bf.Tables = append(bf.Tables, server.TableProgress{Table: t.String()})
	}
	f.Runs = append(f.Runs, bf)
	return bf, nil
}

func (f *Fake) Backfills(context.Context) ([]server.Backfill, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("Backfills"); err != nil {
		return nil, err
	}
	return slices.Clone(f.Runs), nil
}

func (f *Fake) CancelBackfill(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("CancelBackfill", id); err != nil {
		return err
	}
	i := slices.IndexFunc(f.Runs, func(b server.Backfill) bool { return b.ID == id })
	switch {
	case i < 0:
		return fmt.Errorf("no backfill %q: %w", id, server.ErrNotFound)
	case f.Runs[i].State != "running":
		return fmt.Errorf("backfill %q is %s already: %w", id, f.Runs[i].State, server.ErrConflict)
	}
	f.Runs[i].State = "cancelled"
	return nil
}

func (f *Fake) SinkConfig(_ context.Context, sink string) ([]server.Setting, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("SinkConfig", sink); err != nil {
		return nil, err
	}
	return slices.Clone(f.Settings[sink]), nil
}
