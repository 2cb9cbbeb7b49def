package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/relay"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/server"
	"github.com/walhook/walhook/sink"
)

// admin answers the admin server from the running relay and its source:
// it implements server.Health, server.Status, server.Sinks and
// server.Snapshotter by reading their synchronised snapshots.
type admin struct {
	cfg   *config.Config
	relay *relay.Relay
	src   *replication.Source
}

// Ready: replicating, and no sink paused by its destination.
func (a *admin) Ready() (bool, string, string) {
	st := a.relay.Status()
	if !st.Running {
		return false, "starting: the source is not set up yet", "active"
	}
	if !a.src.Progress().Connected {
		return false, "the replication connection is down; walhook is reconnecting", "active"
	}
	for _, s := range st.Sinks {
		if s.Delivery.Paused && !strings.HasPrefix(s.Delivery.PauseReason, pausedByOperator) {
			return false, fmt.Sprintf("sink %q is paused: %s", s.Name, s.Delivery.PauseReason), "active"
		}
	}
	return true, "", "active"
}

// pausedByOperator starts the reason of a pause asked for through the API.
const pausedByOperator = "paused by the operator"

func (a *admin) Status(context.Context) (server.StatusReport, error) {
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
			Name:           s.Name,
			State:          "running",
			SafeLSN:        s.SafeLSN.String(),
			Queued:         int64(d.Pending),
			InFlight:       int64(d.InFlight),
			Delivered:      int64(d.Delivered),
			FailedAttempts: int64(d.FailedAttempts),
			LastError:      secrets.String(d.LastError), // a receiver may echo a credential back
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
		case d.Paused:
			ss.State, ss.PausedReason = "paused", d.PauseReason
		case d.LastError != "":
			ss.State = "failing"
		}
		r.Sinks = append(r.Sinks, ss)
	}
	return r, nil
}

// lag is end minus lsn in bytes, never negative.
func lag(end, lsn pglogrepl.LSN) int64 {
	if end <= lsn {
		return 0
	}
	return int64(end - lsn)
}

func (a *admin) PauseSink(_ context.Context, name string) error {
	return a.sinkErr(a.relay.Pause(name, pausedByOperator+" through the admin API"))
}

func (a *admin) ResumeSink(_ context.Context, name string) error {
	return a.sinkErr(a.relay.Resume(name))
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
	s := server.Snapshot{Received: st.Received, LastHeartbeat: p.LastHeartbeat}
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
		}
		if p.ServerWALEnd != 0 {
			ks.LagBytes = lag(p.ServerWALEnd, k.SafeLSN)
		}
		if !k.Oldest.IsZero() {
			ks.LagSeconds = now.Sub(k.Oldest).Seconds()
		}
		s.Sinks = append(s.Sinks, ks)
	}
	return s
}
