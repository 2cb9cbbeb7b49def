package main

import (
	"context"
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
