package replication

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/config"
)

// Source is one slot with walhook's policy for faults around it: setup is
// retried while PostgreSQL cannot be reached, a lost or silent connection
// is reconnected with backoff, and a slot another process holds is waited
// for (that is how a standby behaves). Errors that no retry can mend (wal
// level, privileges, a lost slot, a decoding error) end Run.
type Source struct {
	cfg config.Source
	log *slog.Logger
	// Preflight, when set, runs once Setup has the source ready: checks
	// that need the database. It is retried like Setup while PostgreSQL
	// cannot be reached.
	Preflight func(ctx context.Context) error
	// Budget, when set, bounds the bytes of decoded messages waiting for
	// the sinks (see Budget).
	Budget *Budget
	// SkipSchemas are schemas whose row changes and truncates are never
	// relayed, whatever the publication holds: walhook's own schema when
	// its state is in the source database (state.url), which a publication
	// FOR ALL TABLES would otherwise feed back to the sinks. Their changes
	// keep their place in their transaction (commit_idx), so the positions
	// of the others do not depend on it.
	SkipSchemas []string
	// TakeOver lets the source end the process that streams from the slot
	// (pg_terminate_backend) instead of waiting for it to let go: the
	// active of an active/passive group holds the slot's lease, so a
	// walsender still on the slot is the previous active's, left behind
	// when that instance was cut off (the server would keep it until
	// wal_sender_timeout).
	TakeOver bool
	// CheckSystem, when set, is asked on every connection to the slot,
	// before any change streams, whether the server is still the cluster
	// and timeline walhook's positions belong to (see CheckOrigin); its
	// error ends Run. Progress().HandedOn is what this source handed on.
	CheckSystem func(ctx context.Context, sys System) error

	progress Progress
	role     atomic.Pointer[Role]
}

// Role is what Setup found source.url to be (primary or hot standby) and
// where walhook writes; the zero Role (a primary at source.url) before
// Setup ran.
func (s *Source) Role() Role {
	if r := s.role.Load(); r != nil {
		return *r
	}
	return Role{WriteURL: s.cfg.URL}
}

// Progress reports what the source's streams saw: connection, positions,
// heartbeats.
func (s *Source) Progress() ProgressReport { return s.progress.Report() }

// NewSource returns the source of cfg.
func NewSource(cfg config.Source, log *slog.Logger) *Source {
	return &Source{cfg: cfg, log: log}
}

// Setup checks the server and makes the publication and the slot,
// retrying while PostgreSQL cannot be reached, then runs Preflight. It
// returns the slot's confirmed flush LSN: nothing before it is sent again.
// usedBefore says that walhook's state already belongs to the slot: a
// missing slot is then an error, never something to create.
func (s *Source) Setup(ctx context.Context, usedBefore bool) (pglogrepl.LSN, error) {
	var info SlotInfo
	err := s.retryConn(ctx, "set up the source", func() error {
		var err error
		info, err = Setup(ctx, s.cfg, usedBefore, s.log)
		if err == nil {
			s.setRole(info.Role)
		}
		if err == nil && s.Preflight != nil {
			err = s.Preflight(ctx)
		}
		return err
	})
	return info.ConfirmedFlush, err
}

// setRole keeps the role Setup found, and says once what it means.
func (s *Source) setRole(r Role) {
	old := s.role.Swap(&r)
	if old != nil && *old == r {
		return
	}
	switch {
	case r.Standby && r.WriteURL == "" && s.cfg.Heartbeat > 0:
		s.log.Warn("source.url is a hot standby and source.primary_url is not set: heartbeats are off, and backfills are refused; set source.primary_url to the primary's URL")
	case r.Standby:
		s.log.Info("source.url is a hot standby; heartbeats and backfill watermarks go to source.primary_url")
	case s.cfg.PrimaryURL != "":
		s.log.Warn("source.url is not a standby; source.primary_url is not used")
	}
}

// retryConn calls fn until it succeeds, retrying with backoff while the
// error says the connection failed.
func (s *Source) retryConn(ctx context.Context, what string, fn func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 500*time.Millisecond, 30*time.Second, 0
	for {
		err := fn()
		if err == nil || !IsConnLost(err) || ctx.Err() != nil {
			return err
		}
		wait := b.NextBackOff()
		s.log.Warn("cannot reach PostgreSQL; retrying", "action", what, "err", err, "retry_in", wait.Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// maxSlotWait bounds the wait between two tries at a slot another process
// holds: a standby takes over within this long after the holder is gone.
const maxSlotWait = 5 * time.Second

// Run streams the slot, in order, to out, reporting flushed() to
// PostgreSQL as the flushed LSN, and reconnects after a lost connection.
// Once stop is closed it reads no more but keeps the connection alive
// until ctx ends, then sends a final standby status. It returns nil when
// ctx ends, or the error that no reconnect can mend.
func (s *Source) Run(ctx context.Context, stop <-chan struct{}, flushed func() pglogrepl.LSN, out chan<- []Event) error {
	stream := New(s.cfg, flushed, s.log)
	stream.Budget = s.Budget
	stream.SkipSchemas = s.SkipSchemas
	stream.Progress = &s.progress
	stream.CheckSystem = s.CheckSystem
	stream.Role = s.Role
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 500*time.Millisecond, 30*time.Second, 0
	held := backoff.NewExponentialBackOff()
	held.InitialInterval, held.MaxInterval, held.MaxElapsedTime = 500*time.Millisecond, maxSlotWait, 0
	holder := 0 // the PID last seen holding the slot
	ended := 0  // the PID TakeOver last ended
	for first := true; ; first = false {
		if !first {
			info, err := Setup(ctx, s.cfg, true, s.log)
			if err == nil {
				s.setRole(info.Role)
			}
			if err != nil && !IsConnLost(err) {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if err != nil {
				if !s.wait(ctx, stop, b.NextBackOff(), "cannot reach PostgreSQL; retrying", err) {
					return nil
				}
				continue
			}
		}
		started := time.Now()
		if !first {
			s.progress.reconnects.Add(1)
		}
		err := stream.Run(ctx, stop, out)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			b.Reset()
			held.Reset()
		}
		var active *ErrSlotActive
		switch {
		case errors.As(err, &active) && s.TakeOver && active.PID != 0 && active.PID != ended:
			ended = active.PID
			if err := endHolder(ctx, s.cfg, active.PID); err != nil {
				s.log.Warn("cannot end the previous holder of the slot; waiting for it to let go", "slot", s.cfg.Slot, "pid", active.PID, "err", err)
				continue
			}
			s.log.Warn("ended the process still streaming from the slot: this instance holds the lease, so it is a previous active's",
				"slot", s.cfg.Slot, "pid", active.PID)
			if !s.sleep(ctx, stop, 100*time.Millisecond) {
				return nil
			}
		case errors.As(err, &active):
			// Warn when a holder appears; while it stays, say so at info.
			level := slog.LevelInfo
			if active.PID != holder {
				level, holder = slog.LevelWarn, active.PID
			}
			d := held.NextBackOff()
			s.log.Log(ctx, level, "replication slot is in use by another process; waiting", "slot", s.cfg.Slot, "pid", active.PID, "retry_in", d.Round(time.Millisecond).String())
			if !s.sleep(ctx, stop, d) {
				return nil
			}
		case IsConnLost(err):
			if !s.wait(ctx, stop, b.NextBackOff(), "replication connection lost; reconnecting", err) {
				return nil
			}
		default:
			return err
		}
	}
}

// endHolder terminates the backend pid if it still streams from the slot.
func endHolder(ctx context.Context, src config.Source, pid int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, src.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var ended bool
	err = conn.QueryRow(ctx, `SELECT coalesce(bool_or(pg_terminate_backend(active_pid)), false) FROM pg_replication_slots
		WHERE slot_name = $1 AND active_pid = $2`, src.Slot, pid).Scan(&ended)
	if err != nil {
		return err
	}
	if !ended {
		return errors.New("it no longer holds the slot, or this role may not end it")
	}
	return nil
}

// wait logs why it waits, then sleeps.
func (s *Source) wait(ctx context.Context, stop <-chan struct{}, d time.Duration, msg string, err error) bool {
	s.log.Warn(msg, "err", err, "retry_in", d.Round(time.Millisecond).String())
	return s.sleep(ctx, stop, d)
}

// sleep waits d and reports true, or false once ctx ends; after stop it
// waits for ctx only, since a stopping relay does not reconnect.
func (s *Source) sleep(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		<-ctx.Done() // hold nothing open: the connection is gone; wait to be ended
		return false
	case <-t.C:
		return true
	}
}
