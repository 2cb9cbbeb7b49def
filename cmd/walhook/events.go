package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/events"
	"github.com/walhook/walhook/state"
)

// newEmitter builds the emitter of walhook's operational events, queued
// in store; nil when the configuration has no events section.
func newEmitter(cfg *config.Config, store state.Store, log *slog.Logger) (*events.Emitter, error) {
	em, err := events.New(cfg.Events, store, events.Options{Version: version, Logger: log})
	if err != nil {
		return nil, usageError{err}
	}
	return em, nil
}

// runEmitter sends em's events beside the relay until stop is called;
// stop waits until the sender has returned. A nil em runs nothing.
func runEmitter(ctx context.Context, em *events.Emitter) (stop func()) {
	if em == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = em.Run(ctx) // returns nil when ctx ends
	}()
	return func() {
		cancel()
		<-done
	}
}

// checkEvents prints what walhook check finds of the events endpoint and
// returns the problems that would stop walhook run.
func checkEvents(ctx context.Context, out io.Writer, cfg *config.Config) []string {
	cctx, cancel := context.WithTimeout(ctx, checkSinkTimeout)
	defer cancel()
	summary, warning, err := events.Check(cctx, cfg.Events)
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return []string{err.Error()}
	}
	fmt.Fprintln(out, summary)
	if warning != "" {
		fmt.Fprintf(out, "  warning: %s\n", warning)
	}
	return nil
}
