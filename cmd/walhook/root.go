package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/filter"
	"github.com/walhook/walhook/internal/redact"
)

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "walhook",
		Short:         "Relay PostgreSQL row changes to webhooks",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.Args = func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q; run walhook --help for the commands", args[0])}
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	root.AddCommand(newRunCmd(), newCheckCmd(), newVersionCmd(), newReceiveCmd(), newStatusCmd(), newPauseCmd(true), newPauseCmd(false), newDLQCmd(), newSlotCmd(), newBackfillCmd())
	root.AddCommand(newHealthcheckCmd()) // hidden: the container image's HEALTHCHECK
	return root
}

// configFlag adds --config, defaulting to $WALHOOK_CONFIG or walhook.yaml.
func configFlag(cmd *cobra.Command) *string {
	def := os.Getenv("WALHOOK_CONFIG")
	if def == "" {
		def = "walhook.yaml"
	}
	return cmd.Flags().StringP("config", "c", def, "configuration file (env WALHOOK_CONFIG)")
}

func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, usageError{fmt.Errorf("%w (pass --config FILE or set WALHOOK_CONFIG)", err)}
	}
	if err != nil {
		return nil, err
	}
	if secrets == nil {
		secrets = redact.ForConfig(cfg)
	} else {
		secrets.Merge(redact.ForConfig(cfg)) // a reload: old secrets stay masked too
	}
	// Filters are compiled at load, so that check and run refuse a bad
	// expression at its file:line:col before anything starts.
	if _, err := filter.CompileSinks(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// secrets masks the secrets of the configuration the command loaded, in
// its log and in the error main prints; nil before a configuration is
// loaded.
var secrets *redact.Redactor

func newLogger(cfg *config.Config) *slog.Logger {
	c := cfg.Log
	var level slog.Level
	switch strings.ToLower(c.Level) {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	format := c.Format
	if format == "" || format == "auto" {
		format = "json"
		if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			format = "text"
		}
	}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, opts)
	if format == "text" {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	return slog.New(secrets.Handler(h))
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print walhook's version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "walhook", version)
			return nil
		},
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}
