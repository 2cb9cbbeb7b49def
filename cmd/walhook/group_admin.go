package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/lease"
	"github.com/walhook/walhook/server"
)

// groupAdmin answers the admin server for a member of an active/passive
// group: as the running relay's admin while the instance is active, as a
// standby otherwise (never ready; sinks, dead letters and backfills are
// the active's to answer for).
type groupAdmin struct {
	cfg  *config.Config
	cand *lease.Candidate

	mu     sync.Mutex
	active *admin
	since  time.Time
}

func (g *groupAdmin) setActive(a *admin, since time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active, g.since = a, since
}

func (g *groupAdmin) current() (*admin, time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.active, g.since
}

// errStandby answers what only the active instance can.
var errStandby = fmt.Errorf("%w: this walhook is a standby; ask the active instance (walhook status names it)", server.ErrUnavailable)

func (g *groupAdmin) Ready() (bool, string, string) {
	if a, _ := g.current(); a != nil {
		return a.Ready()
	}
	return false, "standby: another walhook holds the slot's lease, or this one is waiting for it", "standby"
}

func (g *groupAdmin) Status(ctx context.Context) (server.StatusReport, error) {
	if a, since := g.current(); a != nil {
		r, err := a.Status(ctx)
		host, _ := os.Hostname()
		r.Active = &server.Instance{Host: host, PID: os.Getpid(), Since: since.UTC()}
		return r, err
	}
	r := server.StatusReport{Version: version, Slot: g.cfg.Source.Slot, Publication: g.cfg.Source.Publication, Sinks: []server.SinkStatus{}}
	h, ok, err := g.cand.Holder(ctx)
	if err != nil {
		return r, fmt.Errorf("standby: read the active instance from the state database: %w", err)
	}
	if ok {
		r.Active = &server.Instance{Host: h.Host, PID: h.PID, Since: h.Since.UTC()}
	}
	return r, nil
}

func (g *groupAdmin) PauseSink(ctx context.Context, name string) error {
	if a, _ := g.current(); a != nil {
		return a.PauseSink(ctx, name)
	}
	return errStandby
}

func (g *groupAdmin) ResumeSink(ctx context.Context, name string) error {
	if a, _ := g.current(); a != nil {
		return a.ResumeSink(ctx, name)
	}
	return errStandby
}

func (g *groupAdmin) Snapshot() server.Snapshot {
	if a, _ := g.current(); a != nil {
		return a.Snapshot()
	}
	return server.Snapshot{Standby: true}
}

func (g *groupAdmin) ListDeadLetters(ctx context.Context, name string) ([]server.DeadLetter, error) {
	if a, _ := g.current(); a != nil {
		return a.ListDeadLetters(ctx, name)
	}
	return nil, errStandby
}

func (g *groupAdmin) DeadLetter(ctx context.Context, name, id string) (server.DeadLetter, error) {
	if a, _ := g.current(); a != nil {
		return a.DeadLetter(ctx, name, id)
	}
	return server.DeadLetter{}, errStandby
}

func (g *groupAdmin) ReplayDeadLetters(ctx context.Context, name string, ids []string) ([]string, error) {
	if a, _ := g.current(); a != nil {
		return a.ReplayDeadLetters(ctx, name, ids)
	}
	return nil, errStandby
}

func (g *groupAdmin) DropDeadLetter(ctx context.Context, name, id string) error {
	if a, _ := g.current(); a != nil {
		return a.DropDeadLetter(ctx, name, id)
	}
	return errStandby
}

func (g *groupAdmin) StartBackfill(ctx context.Context, sink string, tables []config.Table, where string) (server.Backfill, error) {
	if a, _ := g.current(); a != nil {
		return a.StartBackfill(ctx, sink, tables, where)
	}
	return server.Backfill{}, errStandby
}

func (g *groupAdmin) Backfills(ctx context.Context) ([]server.Backfill, error) {
	if a, _ := g.current(); a != nil {
		return a.Backfills(ctx)
	}
	return nil, errStandby
}

func (g *groupAdmin) CancelBackfill(ctx context.Context, id string) error {
	if a, _ := g.current(); a != nil {
		return a.CancelBackfill(ctx, id)
	}
	return errStandby
}

func (g *groupAdmin) SinkConfig(ctx context.Context, name string) ([]server.Setting, error) {
	if a, _ := g.current(); a != nil {
		return a.SinkConfig(ctx, name)
	}
	return nil, errStandby
}
