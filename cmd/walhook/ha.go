package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/walhook/walhook/backfill"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/events"
	"github.com/walhook/walhook/lease"
	"github.com/walhook/walhook/relay"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/state/pgstore"
)

// runHA runs walhook as a member of an active/passive group (state.url):
// a standby until it holds the slot's lease, then active until it loses
// the lease (back to standby), the relay fails (back to standby, so that
// another member may do better) or ctx ends (a graceful shutdown, then the
// lease is released for a standby to take over at once). The admin server
// runs throughout, answering for whichever role the instance has.
func runHA(ctx context.Context, cfg *config.Config, path string, shutdown time.Duration, log *slog.Logger) error {
	cand := lease.NewCandidate(cfg.State.URL, cfg.Source.Slot, log)
	defer cand.Close()
	group := &groupAdmin{cfg: cfg, cand: cand}
	stop, err := startAdminServer(cfg, group, log)
	if err != nil {
		return err
	}
	latest := watchConfig(ctx, path, cfg, log)
	runErr := func() error {
		if err := migrate(ctx, cfg, log); err != nil {
			return nil // ctx ended
		}
		for {
			cfg := latest()
			log.Info("standby: waiting for the lease of the slot", "version", version, "slot", cfg.Source.Slot)
			l, err := cand.Acquire(ctx)
			if err != nil {
				return nil // ctx ended
			}
			log.Info("active: holding the lease of the slot", "slot", cfg.Source.Slot)
			err = runActive(ctx, cfg, path, shutdown, l, group, log)
			lost := l.Err()
			l.Release()
			switch {
			case ctx.Err() != nil:
				return err
			case lost != nil:
				log.Error("the lease is lost: delivery stopped; back to standby", "err", lost)
			case isFatal(err):
				return err
			case errors.Is(err, errSourceLost):
				log.Error("the lease is released and this instance is a standby again; it competes again after a pause, so that a member that can reach the source takes over",
					"err", err, "pause", sourceLossHoldBack)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(sourceLossHoldBack):
				}
			default:
				log.Error("the relay stopped; the lease is released and this instance is a standby again", "err", secrets.Error(err))
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(lease.PollInterval):
				}
			}
		}
	}()
	if err := stop(); err != nil && runErr == nil {
		runErr = err
	}
	if runErr == nil {
		log.Info("stopped")
	}
	return runErr
}

// watchConfig reads the configuration file again on SIGHUP, also while
// the instance stands by (where SIGHUP would otherwise end the process), and
// returns what gives the newest one that may apply live: each term as the
// active starts with it. While active, the term's reloader applies the
// same file to the running relay.
func watchConfig(ctx context.Context, path string, cfg *config.Config, log *slog.Logger) func() *config.Config {
	var mu sync.Mutex
	cur := cfg
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			next, err := loadConfig(path)
			mu.Lock()
			switch {
			case err != nil:
				log.Error("configuration not taken for the next term as the active: the file does not validate", "err", secrets.Error(err))
			case len(liveRefusals(cur, next)) > 0:
				log.Error("configuration not taken for the next term as the active: these cannot change while walhook runs; restart walhook to apply them",
					"fields", strings.Join(liveRefusals(cur, next), ", "))
			default:
				cur = next
			}
			mu.Unlock()
		}
	}()
	return func() *config.Config {
		mu.Lock()
		defer mu.Unlock()
		return cur
	}
}

// migrate creates or migrates the schema walhook before the instance
// competes for the lease (the lease records its holder there), retrying
// while the state database cannot be reached; it fails only when ctx ends.
func migrate(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	logged := false
	for {
		err := pgstore.Migrate(ctx, cfg.State.URL)
		if err == nil || ctx.Err() != nil {
			return ctx.Err()
		}
		if !logged {
			log.Warn("cannot create or migrate the schema walhook in state.url; retrying", "err", secrets.Error(err))
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(lease.PollInterval):
		}
	}
}

// isFatal: an error no other member of the group would do better with.
func isFatal(err error) bool {
	var ue usageError
	return errors.As(err, &ue) || errors.Is(err, replication.ErrSlotLost) || errors.Is(err, replication.ErrPublicationMissing)
}

// runActive relays while l holds: every state write goes through the
// lease's lock connection, and the lease's loss stops the relay hard at
// once (relay.Kill: nothing more is delivered or written). A source that
// cannot be streamed for source.receive_timeout ends the term gracefully,
// with errSourceLost (sourceloss.go).
func runActive(ctx context.Context, cfg *config.Config, path string, shutdown time.Duration, l *lease.Lease, group *groupAdmin, log *slog.Logger) error {
	ctx, endTerm := context.WithCancelCause(ctx)
	defer endTerm(nil)
	store, err := pgstore.Open(ctx, cfg.State.URL, cfg.Source.Slot, pgstore.Options{Writer: l.Tx})
	if err != nil {
		return err
	}
	defer store.Close()
	// Only the active sends events: the queue is the slot's, in the state
	// database, and a takeover sends what the last active left.
	em, err := newEmitter(cfg, store, log)
	if err != nil {
		return err
	}
	stopEvents := runEmitter(ctx, em)
	defer stopEvents()
	watched := events.Watch(store, em)
	// Every delivery attempt first asks whether the lease still holds by
	// the clock: a process frozen past its validity and resumed sends
	// nothing, even before the lease's timer has counted it lost.
	rr, err := buildRelay(cfg, watched, shutdown, l.Valid, log)
	if err != nil {
		return err
	}
	reloads := watchReloads(ctx, path, cfg, rr, watched, log)
	defer reloads.stop()
	// Backfills resume where the last active left them: their progress is
	// in the state database, written through the lease like the cursors.
	backfills := backfill.NewManager(watched, rr.relay, backfill.Options{Source: cfg.Source, Sink: reloads.sink, Ended: em.BackfillEnded}, log)
	reloads.setOnCreate(func(sinks []string) { startOnCreate(ctx, backfills, sinks, log) })
	onCreate, err := firstStarts(ctx, cfg, watched)
	if err != nil {
		return err
	}
	stopBackfills := startBackfills(ctx, backfills, onCreate, log)
	defer stopBackfills()
	a := newAdmin(cfg, rr, backfills, reloads.sink, em)
	rateCtx, stopRates := context.WithCancel(ctx)
	defer stopRates()
	go a.sampleRates(rateCtx)
	group.setActive(a, time.Now())
	defer group.setActive(nil, time.Time{})

	go watchSource(ctx, rr.src, cfg.Source.ReceiveTimeout, endTerm, log)
	ran := make(chan struct{})
	defer close(ran)
	go func() {
		select {
		case <-l.Lost():
			rr.relay.Kill()
		case <-ran:
		}
	}()
	err = rr.relay.Run(ctx)
	if cause := context.Cause(ctx); err == nil && errors.Is(cause, errSourceLost) {
		return cause
	}
	if errors.Is(err, replication.ErrSlotLost) {
		return fmt.Errorf("%w (the state is in schema walhook of state.url, slot %s)", err, cfg.Source.Slot)
	}
	if errors.Is(err, relay.ErrKilled) && l.Err() != nil {
		return l.Err()
	}
	return err
}
