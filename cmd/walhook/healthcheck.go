package main

import (
	"time"

	"github.com/spf13/cobra"
)

// newHealthcheckCmd is the container image's HEALTHCHECK: it asks the
// daemon's /healthz, through server.listen and server.token of the same
// configuration, so the image needs no curl or wget. It is hidden: not part
// of the CLI's contract, and meant for the Dockerfile only. Docker reserves
// exit code 2, so every failure, a bad configuration too, exits 1.
func newHealthcheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:    "healthcheck",
		Short:  "Exit 0 if the running daemon's /healthz answers 200 (internal: the container image's HEALTHCHECK)",
		Args:   noArgs,
		Hidden: true,
	}
	path := configFlag(cmd)
	timeout := cmd.Flags().Duration("timeout", 5*time.Second, "how long to wait for the answer")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := client(*path)
		if err != nil {
			return unhealthy{err}
		}
		c.SetTimeout(*timeout)
		if err := c.Health(cmd.Context()); err != nil {
			return unhealthy{err}
		}
		return nil
	}
	return cmd
}

// unhealthy is a failed health check: exit code 1 whatever the cause,
// since Docker reserves 2. It hides the cause from errors.As for that
// reason, and keeps its text.
type unhealthy struct{ err error }

func (e unhealthy) Error() string { return "unhealthy: " + e.err.Error() }
