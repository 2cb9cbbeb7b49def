package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/backfill"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/events"
	"github.com/walhook/walhook/relay"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/server"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/state"
)

// admin answers the admin server from the running relay and its source:
// it implements server.Health, server.Status, server.Sinks,
// server.SinkConfigs and server.Snapshotter by reading their synchronised
// snapshots.
type admin struct {
	cfg       *config.Config
	relay     *relay.Relay
	src       *replication.Source
	backfills *backfill.Manager
	// sinks returns a sink's configuration as it runs now (reloads
	// included).
	sinks  func(name string) (config.Sink, bool)
	rates  *deliveryRates
	events *events.Emitter // nil: events off
}

func newAdmin(cfg *config.Config, rr *relayRun, bf *backfill.Manager, sinks func(string) (config.Sink, bool), em *events.Emitter) *admin {
	return &admin{cfg: cfg, relay: rr.relay, src: rr.src, backfills: bf, sinks: sinks, rates: newDeliveryRates(), events: em}
}

// sampleRates samples the sinks' delivered counters until ctx ends, so
// that the status's delivered_per_sec covers the last minute.
func (a *admin) sampleRates(ctx context.Context) {
	t := time.NewTicker(rateSampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			names := map[string]bool{}
			for _, s := range a.relay.Status().Sinks {
				a.rates.observe(s.Name, now, s.Delivery.Delivered)
				names[s.Name] = true
			}
			a.rates.forget(names)
		}
	}
}

// SinkConfig is a sink's configuration with every secret masked.
func (a *admin) SinkConfig(_ context.Context, name string) ([]server.Setting, error) {
	sc, ok := a.sinks(name)
	if !ok {
		return nil, fmt.Errorf("%w: no sink %q runs", server.ErrNotFound, name)
	}
	return sinkSettings(sc, secrets), nil
}

// Ready: replicating, and no sink paused by its destination. The reason
// never quotes the destination's answer: /readyz is open to anyone who can
// reach the admin server, and a receiver's body may hold row data or echo a
// credential; the status (behind the token) shows it, masked.
func (a *admin) Ready() (bool, string, string) {
	st := a.relay.Status()
	if !st.Running {
		return false, "starting: the source is not set up yet", "active"
	}
	if !a.src.Progress().Connected {
		return false, "the replication connection is down; walhook is reconnecting", "active"
	}
	for _, s := range st.Sinks {
		if s.Pause != nil && s.Pause.Reason != state.PausedOperator {
			return false, fmt.Sprintf("sink %q is paused (%s); walhook status shows its last error, and walhook resume --sink %s restarts the sink", s.Name, s.Pause.Reason, s.Name), "active"
		}
	}
	return true, "", "active"
}

func (a *admin) Status(ctx context.Context) (server.StatusReport, error) {
	st := a.relay.Status()
	p := a.src.Progress()
	r := server.StatusReport{
		Version:     version,
		Slot:        a.cfg.Source.Slot,
		Publication: a.cfg.Source.Publication,
		Connected:   p.Connected,
		Reconnects:  p.Reconnects,
	}
	if st.Running {
		r.FlushLSN = st.FlushLSN.String()
	}
	if p.Received != 0 {
		r.ReceivedLSN = p.Received.String()
	}
	if p.ServerWALEnd != 0 {
		r.ServerWALEnd = p.ServerWALEnd.String()
		r.LagBytes = lag(p.ServerWALEnd, st.FlushLSN)
	}
	if !p.LastHeartbeat.IsZero() {
		t := p.LastHeartbeat.UTC()
		r.LastHeartbeat = &t
	}
	now := time.Now()
	for _, s := range st.Sinks {
		d := s.Delivery
		ss := server.SinkStatus{
			Name:            s.Name,
			Type:            a.sinkType(s.Name),
			DeliveredPerSec: a.rates.observe(s.Name, now, d.Delivered),
			State:           "running",
			SafeLSN:         s.SafeLSN.String(),
			Queued:          int64(d.Pending),
			InFlight:        int64(d.InFlight),
			Delivered:       int64(d.Delivered),
			FailedAttempts:  int64(d.FailedAttempts),
			LastError:       secrets.String(d.LastError), // a receiver may echo a credential back
			BacklogCount:    s.BacklogCount,
			BacklogBytes:    s.BacklogBytes,
			FilterErrors:    s.FilterErrors,
			DeadLetters:     int64(a.deadLetterCount(ctx, s.Name)),
		}
		if !s.Acked.IsZero() {
			ss.Acked = s.Acked.String()
		}
		if p.ServerWALEnd != 0 {
			ss.LagBytes = lag(p.ServerWALEnd, s.SafeLSN)
		}
		if !s.Oldest.IsZero() {
			ss.LagSeconds = now.Sub(s.Oldest).Seconds()
		}
		if d.LastError != "" {
			t := d.LastErrorAt.UTC()
			ss.LastErrorAt = &t
		}
		switch {
		case s.Pause != nil:
			at := s.Pause.At.UTC()
			ss.State, ss.PausedReason, ss.PausedAt = "paused", s.Pause.Reason, &at
		case d.Paused: // paused by its engine, not recorded yet
			ss.State, ss.PausedReason = "paused", d.PauseReason
		case d.LastError != "":
			ss.State = "failing"
		case s.Spilling || s.BacklogCount > 0:
			ss.State = "backlogged"
		}
		r.Sinks = append(r.Sinks, ss)
	}
	bfs, err := a.Backfills(ctx)
	if err != nil {
		return r, err
	}
	r.Backfills = bfs
	return r, nil
}

// sinkType is a sink's type as configured now; "" when it is not
// configured (removed by a reload).
func (a *admin) sinkType(name string) string {
	sc, ok := a.sinks(name)
	if !ok {
		return ""
	}
	if sc.Type == "" {
		return "webhook"
	}
	return sc.Type
}

// lag is end minus lsn in bytes, never negative.
func lag(end, lsn pglogrepl.LSN) int64 {
	if end <= lsn {
		return 0
	}
	return int64(end - lsn)
}

func (a *admin) PauseSink(ctx context.Context, name string) error {
	return a.sinkErr(a.relay.Pause(ctx, name))
}

func (a *admin) ResumeSink(ctx context.Context, name string) error {
	return a.sinkErr(a.relay.Resume(ctx, name))
}

func (a *admin) sinkErr(err error) error {
	if errors.Is(err, relay.ErrUnknownSink) {
		return fmt.Errorf("%w: %v", server.ErrNotFound, err)
	}
	return err
}

// Snapshot is what /metrics exposes.
func (a *admin) Snapshot() server.Snapshot {
	st := a.relay.Status()
	p := a.src.Progress()
	s := server.Snapshot{Received: st.Received, LastHeartbeat: p.LastHeartbeat, EventsPending: a.events.Pending()}
	if p.ServerWALEnd != 0 && st.Running {
		s.ReplicationLagBytes, s.LagKnown = lag(p.ServerWALEnd, st.FlushLSN), true
	}
	now := time.Now()
	for _, k := range st.Sinks {
		d := k.Delivery
		ks := server.SinkSnapshot{
			Name:            k.Name,
			Delivered:       d.Delivered,
			DeadLettered:    d.DeadLettered,
			Attempts:        d.Attempts,
			FailedAttempts:  d.FailedAttempts,
			Durations:       d.Durations,
			DurationBuckets: sink.DurationBuckets,
			DurationSum:     d.DurationSum,
			DeadLetters:     a.deadLetterCount(context.Background(), k.Name),
			BacklogBytes:    k.BacklogBytes,
			Paused:          k.Pause != nil || d.Paused,
			FilterErrors:    k.FilterErrors,
		}
		switch {
		case k.Pause != nil:
			ks.PausedReason = k.Pause.Reason
		case d.Paused:
			ks.PausedReason = d.PauseReason
		}
		if p.ServerWALEnd != 0 {
			ks.LagBytes = lag(p.ServerWALEnd, k.SafeLSN)
		}
		if !k.Oldest.IsZero() {
			ks.LagSeconds = now.Sub(k.Oldest).Seconds()
		}
		s.Sinks = append(s.Sinks, ks)
	}
	s.Backfills, s.BackfillsRunning = a.backfillSnapshot()
	return s
}

// backfillSnapshot is the rows backfills sent per sink and table, and how
// many run.
func (a *admin) backfillSnapshot() ([]server.BackfillSnapshot, int) {
	list, err := a.backfills.List(context.Background())
	if err != nil {
		return nil, 0
	}
	type key struct{ sink, table string }
	rows := map[key]uint64{}
	var keys []key
	running := 0
	for _, b := range list {
		if b.State == state.BackfillRunning {
			running++
		}
		for _, t := range b.Tables {
			k := key{b.Sink, tableName(t.Table)}
			if _, ok := rows[k]; !ok {
				keys = append(keys, k)
			}
			rows[k] += uint64(t.Rows)
		}
	}
	out := make([]server.BackfillSnapshot, 0, len(keys))
	for _, k := range keys {
		out = append(out, server.BackfillSnapshot{Sink: k.sink, Table: k.table, Rows: rows[k]})
	}
	return out, running
}

// tableName is a stored backfill table ("public"."orders") as
// schema.name.
func tableName(quoted string) string {
	t, err := config.ParseTable(quoted)
	if err != nil {
		return quoted
	}
	return t.String()
}

func (a *admin) StartBackfill(ctx context.Context, sink string, tables []config.Table, where string) (server.Backfill, error) {
	b, err := a.backfills.Start(ctx, sink, tables, where)
	if err != nil {
		return server.Backfill{}, backfillErr(err)
	}
	return backfillStatus(backfill.Progress{Backfill: b}), nil
}

func (a *admin) Backfills(ctx context.Context) ([]server.Backfill, error) {
	list, err := a.backfills.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]server.Backfill, 0, len(list))
	for _, p := range list {
		out = append(out, backfillStatus(p))
	}
	return out, nil
}

func (a *admin) CancelBackfill(ctx context.Context, id string) error {
	return backfillErr(a.backfills.Cancel(ctx, id))
}

// backfillErr answers the backfill's errors by kind, with the backfill's
// own message.
func backfillErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, backfill.ErrUnknownSink), errors.Is(err, backfill.ErrNotFound):
		return kindError{server.ErrNotFound, secrets.Error(err)}
	case errors.Is(err, backfill.ErrInvalid):
		return kindError{server.ErrInvalid, secrets.Error(err)}
	case errors.Is(err, backfill.ErrFinished), errors.Is(err, backfill.ErrRunning):
		return kindError{server.ErrConflict, err}
	}
	return secrets.Error(err)
}

// kindError is err, answered by the server as kind.
type kindError struct{ kind, err error }

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.kind, e.err} }

// backfillStatus is a backfill as the API shows it.
func backfillStatus(p backfill.Progress) server.Backfill {
	b := server.Backfill{ID: p.ID, Sink: p.Sink, State: p.State, Where: p.Where, RowsPerSec: p.RowsPerSec,
		StartedAt: p.Created, Error: secrets.String(p.Error), Tables: []server.TableProgress{}}
	for _, t := range p.Tables {
		b.Tables = append(b.Tables, server.TableProgress{Table: tableName(t.Table), RowsDone: t.Rows, RowsEstimate: max(t.Estimate, 0), Done: t.Done})
		b.RowsDone += t.Rows
		b.RowsEstimate += max(t.Estimate, 0)
	}
	if p.State != state.BackfillRunning {
		t := p.Updated
		b.FinishedAt = &t
	}
	return b
}

// ListDeadLetters lists a sink's dead letters, without their messages.
func (a *admin) ListDeadLetters(ctx context.Context, name string) ([]server.DeadLetter, error) {
	dl, err := a.relay.DeadLetters(name)
	if err != nil {
		return nil, a.sinkErr(err)
	}
	list, err := dl.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]server.DeadLetter, 0, len(list))
	for _, d := range list {
		out = append(out, a.deadLetter(name, d))
	}
	return out, nil
}

// DeadLetter returns one dead letter with its messages, as delivered.
func (a *admin) DeadLetter(ctx context.Context, name, id string) (server.DeadLetter, error) {
	dl, err := a.relay.DeadLetters(name)
	if err != nil {
		return server.DeadLetter{}, a.sinkErr(err)
	}
	d, err := dl.Get(ctx, id)
	if err != nil {
		return server.DeadLetter{}, stateErr(err)
	}
	out := a.deadLetter(name, d)
	for _, e := range d.Entries {
		out.Messages = append(out.Messages, json.RawMessage(e.Msg.AppendJSON(nil, name)))
	}
	return out, nil
}

func (a *admin) ReplayDeadLetters(ctx context.Context, name string, ids []string) ([]string, error) {
	queued, err := a.relay.Replay(ctx, name, ids)
	if err != nil {
		return nil, stateErr(a.sinkErr(err))
	}
	if queued == nil {
		queued = []string{}
	}
	return queued, nil
}

func (a *admin) DropDeadLetter(ctx context.Context, name, id string) error {
	dl, err := a.relay.DeadLetters(name)
	if err != nil {
		return a.sinkErr(err)
	}
	return stateErr(dl.Delete(ctx, id))
}

func (a *admin) deadLetter(name string, d state.DeadLetter) server.DeadLetter {
	out := server.DeadLetter{
		ID: d.ID, Sink: name, Count: d.Count, Attempts: d.Attempts, Reason: d.Reason, LastStatus: d.LastStatus,
		LastError: secrets.String(d.LastError), FirstAttemptAt: d.FirstAttempt, LastAttemptAt: d.LastAttempt,
	}
	if !d.First.IsZero() || !d.Last.IsZero() {
		out.First, out.Last = d.First.String(), d.Last.String()
	}
	return out
}

// stateErr turns the state store's not-found into the server's.
func stateErr(err error) error {
	if errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("%w: %v", server.ErrNotFound, err)
	}
	return err
}

// deadLetterCount is how many dead letters a sink has; 0 if the store
// cannot say.
func (a *admin) deadLetterCount(ctx context.Context, name string) int {
	dl, err := a.relay.DeadLetters(name)
	if err != nil {
		return 0
	}
	n, err := dl.Count(ctx)
	if err != nil {
		return 0
	}
	return n
}
