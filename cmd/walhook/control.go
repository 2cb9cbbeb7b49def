package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/walhook/walhook/internal/adminclient"
	"github.com/walhook/walhook/server"
)

// Commands that act on a running daemon: they read the same configuration
// to find server.listen and server.token, and go through the admin API.

// client loads the configuration at path and returns a client of the
// daemon it describes.
func client(path string) (*adminclient.Client, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	c, err := adminclient.New(cfg)
	if errors.Is(err, adminclient.ErrOff) {
		return nil, fmt.Errorf("%w; set server.listen in %s to reach the daemon", err, cfg.Path)
	}
	return c, err
}

// apiError turns an API answer into the CLI's exit codes: an unknown sink,
// dead letter or a bad request is the user's input (2); the daemon not
// running, or anything else, a runtime failure (1).
func apiError(err error) error {
	var ae *adminclient.APIError
	if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusBadRequest) {
		return usageError{err}
	}
	return err
}

func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running daemon's slot, sinks, lag and errors",
		Args:  noArgs,
	}
	path := configFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print the API's JSON answer")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := client(*path)
		if err != nil {
			return err
		}
		st, err := c.Status(cmd.Context())
		if err != nil {
			return apiError(err)
		}
		if *asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		printStatus(cmd.OutOrStdout(), st)
		return nil
	}
	return cmd
}

// printStatus writes a status report as a readable table.
func printStatus(w io.Writer, st server.StatusReport) {
	ready := "ready"
	if !st.Ready {
		ready = "not ready: " + st.Reason
	}
	conn := "connected"
	if !st.Connected {
		conn = "disconnected"
	}
	fmt.Fprintf(w, "walhook %s (%s), %s\n", st.Version, st.Role, ready)
	if st.Active != nil {
		fmt.Fprintf(w, "active instance: pid %d on %s, since %s\n", st.Active.PID, st.Active.Host, st.Active.Since.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "slot %s, publication %s, %s\n", st.Slot, st.Publication, conn)
	fmt.Fprintf(w, "flush %s, received %s, server WAL end %s, slot lag %s\n",
		dash(st.FlushLSN), dash(st.ReceivedLSN), dash(st.ServerWALEnd), bytesText(st.LagBytes))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSINK\tSTATE\tACKED\tLAG\tLAG AGE\tQUEUED\tIN FLIGHT\tDELIVERED\tFAILED\tDEAD LETTERS\tBACKLOG")
	for _, s := range st.Sinks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", s.Name, s.State, dash(s.Acked), bytesText(s.LagBytes),
			(time.Duration(s.LagSeconds * float64(time.Second))).Round(time.Millisecond), s.Queued, s.InFlight,
			s.Delivered, s.FailedAttempts, s.DeadLetters, bytesText(s.BacklogBytes))
	}
	tw.Flush()
	if len(st.Backfills) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "\nBACKFILL\tSINK\tTABLE\tSTATE\tROWS\tESTIMATE\tRATE")
		for _, b := range st.Backfills {
			if len(b.Tables) == 0 { // backfill.on_create's, before the stream runs
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\n", b.ID, b.Sink, "(its tables, once the stream runs)", b.State)
			}
			for _, t := range b.Tables {
				state := b.State
				if t.Done {
					state = "done"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%.0f rows/s\n", b.ID, b.Sink, t.Table, state, t.RowsDone, t.RowsEstimate, b.RowsPerSec)
			}
		}
		tw.Flush()
		for _, b := range st.Backfills {
			if b.Error != "" {
				fmt.Fprintf(w, "%s: %s\n", b.ID, b.Error)
			}
		}
	}
	for _, s := range st.Sinks {
		if s.PausedReason != "" {
			at := ""
			if s.PausedAt != nil {
				at = " at " + s.PausedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s: paused (%s)%s\n", s.Name, s.PausedReason, at)
		}
		if s.LastError != "" {
			at := ""
			if s.LastErrorAt != nil {
				at = " at " + s.LastErrorAt.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s: last error%s: %s\n", s.Name, at, s.LastError)
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// bytesText writes n bytes in the largest binary unit.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, units := float64(n), []string{"KiB", "MiB", "GiB", "TiB"}
	i := -1
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

func newPauseCmd(pause bool) *cobra.Command {
	use, short := "pause", "Stop a sink delivering; it keeps its cursor"
	if !pause {
		use, short = "resume", "Let a paused sink deliver again, where it stopped"
	}
	cmd := &cobra.Command{Use: use, Short: short, Args: noArgs}
	path := configFlag(cmd)
	name := cmd.Flags().String("sink", "", "the sink's name")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *name == "" {
			return usageError{fmt.Errorf("%s needs --sink NAME", use)}
		}
		c, err := client(*path)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
		defer cancel()
		if pause {
			err = c.Pause(ctx, *name)
		} else {
			err = c.Resume(ctx, *name)
		}
		if err != nil {
			return apiError(err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "sink %s %sd\n", *name, use)
		return nil
	}
	return cmd
}
