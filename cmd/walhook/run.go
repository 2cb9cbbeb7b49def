package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/walhook/walhook/backfill"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/events"
	"github.com/walhook/walhook/filter"
	"github.com/walhook/walhook/relay"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/server"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/state"
	"github.com/walhook/walhook/state/boltstore"
)

func newRunCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Relay changes until SIGINT or SIGTERM",
		Args:  noArgs,
	}
	path := configFlag(cmd)
	shutdown := cmd.Flags().Duration("shutdown-timeout", 30*time.Second, "how long in-flight deliveries may drain after a stop signal")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loadConfig(*path)
		if err != nil {
			return err
		}
		log := newLogger(cfg)
		if cfg.State.URL != "" {
			return runHA(cmd.Context(), cfg, *path, *shutdown, log)
		}
		store, err := boltstore.Open(cfg.State.Path)
		if err != nil {
			return err
		}
		defer store.Close()
		em, err := newEmitter(cfg, store, log)
		if err != nil {
			return err
		}
		stopEvents := runEmitter(cmd.Context(), em)
		defer stopEvents()
		watched := events.Watch(store, em)
		rr, err := buildRelay(cfg, watched, *shutdown, nil, log)
		if err != nil {
			return err
		}
		r := rr.relay
		reloads := watchReloads(cmd.Context(), *path, cfg, rr, watched, log)
		defer reloads.stop()
		backfills := backfill.NewManager(watched, r, backfill.Options{Source: cfg.Source, Sink: reloads.sink, Ended: em.BackfillEnded}, log)
		reloads.setOnCreate(func(sinks []string) { startOnCreate(cmd.Context(), backfills, sinks, log) })
		onCreate, err := firstStarts(cmd.Context(), cfg, watched)
		if err != nil {
			return err
		}
		log.Info("starting walhook", "version", version, "slot", cfg.Source.Slot, "sinks", len(cfg.Sinks))
		if err := runWithServer(cmd.Context(), cfg, newAdmin(cfg, rr, backfills, reloads.sink, em), onCreate, log); err != nil {
			if errors.Is(err, replication.ErrSlotLost) {
				return fmt.Errorf("%w (the state file is %s)", err, cfg.State.Path)
			}
			return err
		}
		log.Info("stopped")
		return nil
	}
	return cmd
}

// relayRun is a relay built from the configuration, with its source and
// sinks.
type relayRun struct {
	relay   *relay.Relay
	src     *replication.Source
	sinks   map[string]liveSink
	walEnd  func() pglogrepl.LSN // the server's WAL end as the source last saw it
	allowed func() error         // asked before every delivery attempt; nil: always
}

// buildRelay builds the source, the relay and every configured sink, with
// store as their state. allowed, when not nil, is asked before every
// delivery attempt of every sink: an active/passive member's lease.
func buildRelay(cfg *config.Config, store state.Store, shutdown time.Duration, allowed func() error, log *slog.Logger) (*relayRun, error) {
	src := replication.NewSource(cfg.Source, log)
	src.Preflight = func(ctx context.Context) error { return checkGroupBy(ctx, cfg) }
	// What waits between the stream and the sinks is bounded in bytes
	// (a 24 MB row passes alone), each sink's window on top of it.
	src.Budget = replication.NewBudget(streamBudget)
	if cfg.State.URL != "" {
		// The state's own writes, when state.url is the source database,
		// are not changes to relay.
		src.SkipSchemas = []string{"walhook"}
		// The relay runs only while it holds the slot's lease: whoever
		// still streams from the slot is a previous active, cut off.
		src.TakeOver = true
	}
	r := relay.New(src, cfg.Source.Slot, store, relay.Options{ShutdownTimeout: shutdown, Budget: src.Budget,
		SourceColumns: sink.NewColumns(cfg.Source.Columns), OnPause: pauseEvents(events.Of(store))}, log)
	// Never stream from another cluster, or from a timeline that lacks
	// changes walhook delivered (after a failover).
	src.CheckSystem = func(ctx context.Context, sys replication.System) error {
		return r.CheckOrigin(ctx, sys, src.Progress().HandedOn)
	}
	exprs, err := filter.CompileSinks(cfg)
	if err != nil {
		return nil, err
	}
	walEnd := func() pglogrepl.LSN {
		p := src.Progress()
		return max(p.ServerWALEnd, p.Received)
	}
	built := map[string]liveSink{}
	for _, sc := range cfg.Sinks {
		s, dest, err := buildSink(sc, exprs[sc.Name], r, walEnd, allowed, store, log)
		if err != nil {
			for _, b := range built {
				b.dest.Close()
			}
			return nil, err
		}
		built[sc.Name] = liveSink{pipe: s.Delivery.(*sink.Pipeline), dest: dest}
		r.Add(s)
	}
	return &relayRun{relay: r, src: src, sinks: built, walEnd: walEnd, allowed: allowed}, nil
}

// checkGroupBy refuses, as a configuration error, a group_by that the
// database's replica identities cannot support.
func checkGroupBy(ctx context.Context, cfg *config.Config) error {
	conn, err := pgx.Connect(ctx, cfg.Source.URL)
	if err != nil {
		return fmt.Errorf("check group_by: connect to source: %w", err)
	}
	defer conn.Close(context.Background())
	problems, err := replication.CheckGroupBy(ctx, conn, cfg.Sinks)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return usageError{fmt.Errorf("%s: group_by cannot keep per-row order: %s", cfg.Path, strings.Join(problems, "; "))}
	}
	return nil
}

// streamBudget bounds the bytes of decoded messages that wait for the
// sinks.
const streamBudget = 16 << 20

// runWithServer runs the relay and, unless server.listen is "", the admin
// server beside it. The server starts first, so that a taken address fails
// before anything streams, and stops once the relay has shut down.
func runWithServer(ctx context.Context, cfg *config.Config, a *admin, onCreate []string, log *slog.Logger) error {
	stopBackfills := startBackfills(ctx, a.backfills, onCreate, log)
	defer stopBackfills()
	stop, err := startAdminServer(cfg, a, log)
	if err != nil {
		return err
	}
	rateCtx, stopRates := context.WithCancel(ctx)
	defer stopRates()
	go a.sampleRates(rateCtx)
	runErr := a.relay.Run(ctx)
	if err := stop(); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// adminAPI is what the admin server asks of walhook.
type adminAPI interface {
	server.Health
	server.Status
	server.Sinks
	server.DeadLetters
	server.Backfills
	server.SinkConfigs
	server.Snapshotter
}

// startAdminServer starts the admin server on a, unless server.listen is "";
// stop stops it and returns how it ended.
func startAdminServer(cfg *config.Config, a adminAPI, log *slog.Logger) (stop func() error, err error) {
	if cfg.Server.Listen == "" {
		return func() error { return nil }, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(server.NewCollector(a))
	srv := server.New(cfg.Server, server.Options{
		// Sinks come and go with a reload: the interfaces answer 404 for
		// an unknown one.
		Health: a, Status: a, Sinks: a, DeadLetters: a, Backfills: a, SinkConfigs: a, Metrics: reg, Log: log,
	})
	ln, err := srv.Listen()
	if err != nil {
		return nil, err
	}
	srvCtx, stopServer := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(srvCtx, ln) }()
	return func() error {
		stopServer()
		return <-served
	}, nil
}

// firstStarts names the sinks with backfill.on_create that start for the
// first time.
func firstStarts(ctx context.Context, cfg *config.Config, store state.Store) ([]string, error) {
	var names []string
	for _, sc := range cfg.Sinks {
		if !sc.Backfill.OnCreate {
			continue
		}
		first, err := firstStart(ctx, store, sc.Name)
		if err != nil {
			return nil, err
		}
		if first {
			names = append(names, sc.Name)
		}
	}
	return names, nil
}

// firstStart reports whether a sink starts for the first time: the state
// has no cursor of it and no backfill.
func firstStart(ctx context.Context, store state.Store, sink string) (bool, error) {
	cursors, err := store.Cursors(ctx)
	if err != nil {
		return false, fmt.Errorf("read state: %w", err)
	}
	if _, ok := cursors[sink]; ok {
		return false, nil
	}
	backfills, err := store.Backfills(ctx)
	if err != nil {
		return false, fmt.Errorf("read state: %w", err)
	}
	return !slices.ContainsFunc(backfills, func(b state.Backfill) bool { return b.Sink == sink }), nil
}

// startBackfills runs bf beside the relay and starts the backfills of the
// sinks in onCreate; stop ends them and waits until they have.
func startBackfills(ctx context.Context, bf *backfill.Manager, onCreate []string, log *slog.Logger) (stop func()) {
	bfCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := bf.Run(bfCtx); err != nil {
			log.Error("backfills do not run", "err", err)
		}
	}()
	go startOnCreate(bfCtx, bf, onCreate, log)
	return func() {
		cancel()
		<-done
	}
}

// startOnCreate starts the backfills of sinks' first starts. They need
// only the state store, not the source (Manager.StartOnCreate); one that
// cannot be recorded is logged and the sink streams on without it.
func startOnCreate(ctx context.Context, bf *backfill.Manager, sinks []string, log *slog.Logger) {
	if len(sinks) == 0 {
		return
	}
	select {
	case <-bf.Ready():
	case <-ctx.Done():
		return
	}
	for _, name := range sinks {
		if _, err := bf.StartOnCreate(ctx, name); err != nil && ctx.Err() == nil {
			log.Error("backfill.on_create: the sink's backfill could not be recorded", "sink", name, "err", secrets.Error(err))
		}
	}
}

// pauseEvents turns the relay's stored pauses and resumptions into
// operational events (sink.paused with the pause's reason, sink.resumed).
// The relay calls it once a pause is stored or deleted, so an event
// never tells of a pause a restart would not keep; em may be nil.
func pauseEvents(em *events.Emitter) func(relay.PauseNotice) {
	return func(n relay.PauseNotice) {
		if n.Pause != nil {
			em.SinkPaused(context.Background(), n.Sink, n.Pause.Reason)
		} else {
			em.SinkResumed(context.Background(), n.Sink)
		}
	}
}
