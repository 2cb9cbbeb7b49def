package main

import (
	"context"
	"errors"
	"strings"

	"fmt"
	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/config"
	"time"

	"github.com/spf13/cobra"
	"github.com/walhook/walhook/cursor"
	"github.com/walhook/walhook/filter"
	"github.com/walhook/walhook/relay"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/webhook"
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
		if cfg.State.URL != "" {
			return usageError{fmt.Errorf("%s: state.url: the Postgres state store is not available in this version; use state.path", cfg.Path)}
		}
		log := newLogger(cfg.Log)
		store, err := cursor.Open(cfg.State.Path)
		if err != nil {
			return err
		}
		defer store.Close()

		preflight := func(ctx context.Context) error { return checkGroupBy(ctx, cfg) }
		r := relay.New(cfg.Source, store, relay.Options{ShutdownTimeout: *shutdown, Preflight: preflight}, log)
		exprs, err := filter.CompileSinks(cfg)
		if err != nil {
			return err
		}
		for _, sc := range cfg.Sinks {
			s, err := webhook.New(sc, webhook.Options{Version: version, Logger: log, Ack: r.Acker(sc.Name), Route: sink.NewRouter(sc).Route})
			if err != nil {
				return err
			}
			r.Add(s, sink.NewFilter(sc, exprs[sc.Name]), sink.NewColumns(sc.Columns), sc.Window)
		}
		log.Info("starting walhook", "version", version, "slot", cfg.Source.Slot, "sinks", len(cfg.Sinks))
		if err := r.Run(cmd.Context()); err != nil {
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
