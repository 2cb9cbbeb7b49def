package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/walhook/walhook/server"
)

func newBackfillCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backfill",
		Short: "Send a sink the rows its tables already hold, as action read, while streaming goes on",
		Long: `Send a sink the rows its tables already hold, as action read, through the
running daemon. Without --table, every table the sink receives. The command
returns once the backfill is accepted; with --wait, once it is done (exit 0)
or failed or cancelled (exit 1), showing its progress.`,
		Args: noArgs,
	}
	path := configFlag(cmd)
	sink := cmd.Flags().String("sink", "", "the sink's name")
	tables := cmd.Flags().StringArray("table", nil, "a table to backfill, schema.name (repeatable; default: every table of the sink)")
	where := cmd.Flags().String("where", "", "one boolean SQL expression over the table's columns that the rows must meet, such as \"created_at > now() - interval '30 days'\"")
	wait := cmd.Flags().Bool("wait", false, "wait until the backfill ends, showing its progress")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *sink == "" {
			return usageError{errors.New("backfill needs --sink NAME")}
		}
		c, err := client(*path)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
		b, err := c.StartBackfill(ctx, *sink, server.BackfillRequest{Tables: *tables, Where: *where})
		cancel()
		if err != nil {
			return apiError(err)
		}
		out := cmd.OutOrStdout()
		fmt.Fprintf(out, "backfill %s of sink %s started: %s\n", b.ID, b.Sink, tablesText(b))
		if !*wait {
			return nil
		}
		bar := writerIsTerminal(out)
		for {
			select {
			case <-cmd.Context().Done():
				return cmd.Context().Err()
			case <-time.After(waitInterval(bar)):
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			list, err := c.Backfills(ctx)
			cancel()
			if err != nil {
				return apiError(err)
			}
			cur, ok := findBackfill(list, b.ID)
			if !ok {
				return fmt.Errorf("backfill %s is gone from the daemon's list", b.ID)
			}
			printProgress(out, cur, bar)
			switch cur.State {
			case "done":
				return nil
			case "failed":
				return fmt.Errorf("backfill %s failed: %s", cur.ID, cur.Error)
			case "cancelled":
				return fmt.Errorf("backfill %s was cancelled", cur.ID)
			}
		}
	}
	return cmd
}

func waitInterval(bar bool) time.Duration {
	if bar {
		return 250 * time.Millisecond
	}
	return 2 * time.Second
}

func findBackfill(list []server.Backfill, id string) (server.Backfill, bool) {
	for _, b := range list {
		if b.ID == id {
			return b, true
		}
	}
	return server.Backfill{}, false
}

func tablesText(b server.Backfill) string {
	names := make([]string, len(b.Tables))
	for i, t := range b.Tables {
		names[i] = t.Table
	}
	s := strings.Join(names, ", ")
	if b.Where != "" {
		s += " where " + b.Where
	}
	return s
}

// printProgress shows a backfill's progress: on a terminal one bar that
// redraws itself, otherwise a plain line each time.
func printProgress(w io.Writer, b server.Backfill, bar bool) {
	eta := "-"
	if b.RowsPerSec > 0 && b.RowsEstimate > b.RowsDone && b.State == "running" {
		eta = (time.Duration(float64(b.RowsEstimate-b.RowsDone)/b.RowsPerSec) * time.Second).Round(time.Second).String()
	}
	line := fmt.Sprintf("%s %s: %d of ~%d rows, %.0f rows/s, ETA %s", b.ID, b.State, b.RowsDone, b.RowsEstimate, b.RowsPerSec, eta)
	if !bar {
		fmt.Fprintln(w, line)
		return
	}
	const width = 30
	filled := width
	if b.RowsEstimate > 0 && b.RowsDone < b.RowsEstimate && b.State != "done" {
		filled = int(int64(width) * b.RowsDone / b.RowsEstimate)
	}
	fmt.Fprintf(w, "\r[%s%s] %s\x1b[K", strings.Repeat("#", filled), strings.Repeat(" ", width-filled), line)
	if b.State != "running" {
		fmt.Fprintln(w)
	}
}

// writerIsTerminal reports whether w is a terminal.
func writerIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}
