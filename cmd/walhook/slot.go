package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/lease"
	"github.com/walhook/walhook/state"
	"github.com/walhook/walhook/state/boltstore"
	"github.com/walhook/walhook/state/pgstore"
)

func newSlotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "slot",
		Short: "Administer the replication slot",
		Args:  noArgs,
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	cmd.AddCommand(newSlotDropCmd())
	return cmd
}

func newSlotDropCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drop",
		Short: "Drop the replication slot, so that walhook run starts a new one",
		Long: "drop drops source.slot (if it still exists) and makes walhook's state forget it, so that the next walhook run creates a\n" +
			"new slot at the current WAL position: the way back from a lost or invalidated slot. Changes made\n" +
			"before the new slot exists reach no receiver; re-sync them (for example with a backfill).\n" +
			"It refuses while a walhook streams from the slot or holds its state (the state file's lock, or the\n" +
			"lease with state.url), and asks for confirmation unless --yes is given.",
		Args: noArgs,
	}
	path := configFlag(cmd)
	yes := cmd.Flags().Bool("yes", false, "drop without asking")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loadConfig(*path)
		if err != nil {
			return err
		}
		return dropSlot(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cfg, *yes)
	}
	return cmd
}

// dropSlot drops cfg's slot after the checks and the confirmation.
func dropSlot(ctx context.Context, in io.Reader, out io.Writer, cfg *config.Config, yes bool) error {
	slot := cfg.Source.Slot
	if !yes {
		f, ok := in.(*os.File)
		if !ok || !isTerminal(f) {
			return usageError{fmt.Errorf("slot drop: refusing to drop slot %q without confirmation: standard input is not a terminal; pass --yes", slot)}
		}
	}
	conn, err := pgx.Connect(ctx, cfg.Source.URL)
	if err != nil {
		return fmt.Errorf("slot drop: connect to the source: %w", err)
	}
	defer conn.Close(context.Background())
	var active bool
	var pid *int32
	err = conn.QueryRow(ctx, `SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active, &pid)
	missing := errors.Is(err, pgx.ErrNoRows)
	if err != nil && !missing {
		return fmt.Errorf("slot drop: read slot %q: %w", slot, err)
	}
	if active {
		return fmt.Errorf("slot drop: slot %q is in use by the process with PID %d (a walhook streaming from it?): stop it first", slot, deref32(pid))
	}
	// Hold the state while dropping: no walhook may start on the slot.
	store, release, err := holdState(ctx, cfg)
	if err != nil {
		return err
	}
	defer release()
	if !yes && missing {
		fmt.Fprintf(out, "Slot %q does not exist. Make walhook's state forget it, so that walhook run creates a new one? "+
			"Changes made since the slot was lost reach no receiver.\nType the slot's name to go on: ", slot)
	} else if !yes {
		fmt.Fprintf(out, "Drop replication slot %q? Changes not yet delivered, and those made until walhook runs again, reach no receiver.\n"+
			"Type the slot's name to drop it: ", slot)
		line, _ := bufio.NewReader(in).ReadString('\n')
		if strings.TrimSpace(line) != slot {
			return usageError{fmt.Errorf("slot drop: not confirmed; slot %q is left as it was", slot)}
		}
	}
	if !missing {
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
			return fmt.Errorf("slot drop: %w", err)
		}
	}
	if store == nil {
		// No state file: nothing remembers the slot.
	} else if used, err := store.Slot(ctx); err == nil && used == slot {
		if err := store.SetSlot(ctx, ""); err != nil {
			return fmt.Errorf("slot drop: slot %q dropped, but the state still names it: %w", slot, err)
		}
		if err := forgetPositions(ctx, store); err != nil {
			return fmt.Errorf("slot drop: slot %q dropped, but %w", slot, err)
		}
	}
	if missing {
		fmt.Fprintf(out, "slot %q does not exist; the state no longer names it, and walhook run creates a new one\n", slot)
	} else {
		fmt.Fprintf(out, "dropped slot %q; walhook run creates a new one\n", slot)
	}
	return nil
}

// forgetPositions makes the state forget the cluster and timeline its
// positions belong to and sets every sink's cursor back to the start: they
// are positions of the dropped slot's stream. After a failover to a
// timeline that branched off below them, the new slot's changes could
// commit at or below them and be skipped.
func forgetPositions(ctx context.Context, store state.Store) error {
	if err := store.SetOrigin(ctx, state.Origin{}); err != nil {
		return fmt.Errorf("the state still names the cluster and timeline: %w", err)
	}
	cursors, err := store.Cursors(ctx)
	if err != nil {
		return fmt.Errorf("the sinks' cursors are unchanged: %w", err)
	}
	for name, c := range cursors {
		c.Acked = change.Position{}
		cursors[name] = c
	}
	if err := store.SaveCursors(ctx, cursors); err != nil {
		return fmt.Errorf("the sinks' cursors are unchanged: %w", err)
	}
	return nil
}

// holdState opens the state so that no walhook runs on it meanwhile: the
// state file (locked while open), or with state.url the slot's lease.
func holdState(ctx context.Context, cfg *config.Config) (state.Store, func(), error) {
	if cfg.State.URL == "" {
		if _, err := os.Stat(cfg.State.Path); errors.Is(err, fs.ErrNotExist) {
			return nil, func() {}, nil // no state to forget the slot in
		}
		s, err := boltstore.Open(cfg.State.Path)
		if errors.Is(err, state.ErrLocked) {
			return nil, nil, fmt.Errorf("slot drop: a walhook runs on %s: stop it first (%w)", cfg.State.Path, err)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("slot drop: %w", err)
		}
		return s, func() { s.Close() }, nil
	}
	if err := pgstore.Migrate(ctx, cfg.State.URL); err != nil {
		return nil, nil, fmt.Errorf("slot drop: state.url: %w", err)
	}
	c := lease.NewCandidate(cfg.State.URL, cfg.Source.Slot, newLogger(cfg))
	l, err := c.TryAcquire(ctx)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("slot drop: state.url: %w", err)
	}
	if l == nil {
		msg := "another walhook holds the slot's lease"
		if h, ok, _ := c.Holder(ctx); ok {
			msg = fmt.Sprintf("the walhook with pid %d on %s holds the slot's lease (active since %s)", h.PID, h.Host, h.Since.UTC().Format(time.RFC3339))
		}
		c.Close()
		return nil, nil, fmt.Errorf("slot drop: %s: stop it first", msg)
	}
	s, err := pgstore.Open(ctx, cfg.State.URL, cfg.Source.Slot, pgstore.Options{Writer: l.Tx})
	if err != nil {
		l.Release()
		c.Close()
		return nil, nil, fmt.Errorf("slot drop: %w", err)
	}
	return s, func() { s.Close(); l.Release(); c.Close() }, nil
}

func deref32(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}
