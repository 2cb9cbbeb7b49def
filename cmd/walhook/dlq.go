package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, replay or drop a sink's dead letters (through the running daemon)",
		Args:  noArgs,
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	cmd.AddCommand(dlqList(), dlqShow(), dlqReplay(), dlqDrop())
	return cmd
}

// dlqFlags adds --config and a required --sink.
func dlqFlags(cmd *cobra.Command) (path, sink *string) {
	path = configFlag(cmd)
	sink = cmd.Flags().String("sink", "", "the sink's name")
	return path, sink
}

func needSink(use, sink string) error {
	if sink == "" {
		return usageError{fmt.Errorf("dlq %s needs --sink NAME", use)}
	}
	return nil
}

func dlqList() *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List a sink's dead letters, oldest first", Args: noArgs}
	path, sink := dlqFlags(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print the API's JSON answer")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := needSink("list", *sink); err != nil {
			return err
		}
		c, err := client(*path)
		if err != nil {
			return err
		}
		list, err := c.DeadLetters(cmd.Context(), *sink)
		if err != nil {
			return apiError(err)
		}
		if *asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(list)
		}
		if len(list) == 0 {
			fmt.Fprintf(cmd.OutOrStdout(), "sink %s has no dead letters\n", *sink)
			return nil
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tMESSAGES\tFIRST\tLAST\tREASON\tATTEMPTS\tSTATUS\tLAST ATTEMPT\tERROR")
		for _, d := range list {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", d.ID, d.Count, d.First, d.Last, dash(d.Reason), d.Attempts, d.LastStatus,
				d.LastAttemptAt.UTC().Format(time.RFC3339), oneLine(d.LastError, 60))
		}
		return tw.Flush()
	}
	return cmd
}

// oneLine cuts s to one line of at most n runes.
func oneLine(s string, n int) string {
	out := []rune{}
	for _, r := range s {
		if r == '\n' || r == '\r' {
			r = ' '
		}
		if len(out) == n {
			return string(out) + "…"
		}
		out = append(out, r)
	}
	return string(out)
}

func dlqShow() *cobra.Command {
	cmd := &cobra.Command{Use: "show ID", Short: "Show one dead letter with its messages, as JSON", Args: cobra.ExactArgs(1)}
	path, sink := dlqFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := needSink("show", *sink); err != nil {
			return err
		}
		c, err := client(*path)
		if err != nil {
			return err
		}
		d, err := c.DeadLetter(cmd.Context(), *sink, args[0])
		if err != nil {
			return apiError(err)
		}
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(d)
	}
	return cmd
}

func dlqReplay() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replay [ID...]",
		Short: "Deliver dead letters again through the sink, in their original order (no ID: all)",
		Long: "replay queues dead letters for delivery through the sink's normal path, in their original\n" +
			"order; each is removed once the receiver acknowledged it. It returns once they are queued.",
	}
	path, sink := dlqFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := needSink("replay", *sink); err != nil {
			return err
		}
		c, err := client(*path)
		if err != nil {
			return err
		}
		ids, err := c.ReplayDeadLetters(cmd.Context(), *sink, args...)
		if err != nil {
			return apiError(err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "replaying %d dead letters of sink %s\n", len(ids), *sink)
		return nil
	}
	return cmd
}

func dlqDrop() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drop ID... | --all",
		Short: "Delete dead letters without delivering them",
	}
	path, sink := dlqFlags(cmd)
	all := cmd.Flags().Bool("all", false, "drop every dead letter of the sink")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := needSink("drop", *sink); err != nil {
			return err
		}
		if len(args) == 0 && !*all {
			return usageError{fmt.Errorf("dlq drop needs the IDs to drop (dlq list shows them), or --all")}
		}
		if len(args) > 0 && *all {
			return usageError{fmt.Errorf("dlq drop takes IDs or --all, not both")}
		}
		c, err := client(*path)
		if err != nil {
			return err
		}
		ids := args
		if *all {
			list, err := c.DeadLetters(cmd.Context(), *sink)
			if err != nil {
				return apiError(err)
			}
			for _, d := range list {
				ids = append(ids, d.ID)
			}
		}
		if len(ids) > 0 {
			if err := c.DropDeadLetters(cmd.Context(), *sink, ids...); err != nil {
				return apiError(err)
			}
		}
		fmt.Fprintf(cmd.OutOrStdout(), "dropped %d dead letters of sink %s\n", len(ids), *sink)
		return nil
	}
	return cmd
}
