// Command walhook relays PostgreSQL row changes to webhooks.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/replication"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes, as the contract gives them.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err))
}

// usageError marks an error that is the user's input: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(os.Stderr, "walhook:", secrets.Error(err))
	var ue usageError
	var ce *config.Errors
	// A setting the server cannot honour is the configuration's fault too.
	if errors.As(err, &ue) || errors.As(err, &ce) || errors.Is(err, replication.ErrFailoverUnsupported) {
		return exitUsage
	}
	return exitRuntime
}
