package main

import (
	"errors"
	"log/slog"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/filter"
	"github.com/walhook/walhook/relay"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/factory"
	"github.com/walhook/walhook/state"
)

// buildSink builds what the relay drives for one configured sink: its
// destination, its pipeline and the relay's parts before it. walEnd is
// the server's WAL end as last seen, for max_lag in bytes; allowed, when
// not nil, is asked before every attempt (see sink.Options.Allowed).
func buildSink(sc config.Sink, expr *filter.Expr, r *relay.Relay, walEnd func() pglogrepl.LSN, allowed func() error, store state.Store, log *slog.Logger) (relay.Sink, destination, error) {
	dest, err := newDestination(sc, log)
	if err != nil {
		return relay.Sink{}, nil, err
	}
	p, err := sink.New(sc, dest, sink.Options{Logger: log, Ack: r.Acker(sc.Name), DeadLetter: r.DeadLetterer(sc.Name), WALEnd: walEnd, Allowed: allowed})
	if err != nil {
		dest.Close()
		return relay.Sink{}, nil, err
	}
	return relay.Sink{
		Name: sc.Name, Delivery: p, Filter: sink.NewFilter(sc, expr), Router: sink.NewRouter(sc),
		Columns: sink.NewColumns(sc.Columns), Window: sc.Window,
		Backlog: store.Backlog(sc.Name), MaxSize: sc.Backlog.MaxSize, WhenFull: sc.Backlog.WhenFull, BatchSize: sc.BatchSize,
		FilterErrors: sc.FilterErrors, Transactions: sc.BatchBy == config.BatchByTransaction,
	}, dest, nil
}

// destination is a sink's type-specific part.
type destination = factory.Destination

// newDestination builds the destination of a sink by its type.
func newDestination(sc config.Sink, log *slog.Logger) (destination, error) {
	d, err := factory.New(sc, factory.Options{Version: version, Logger: log})
	var unknown *factory.UnknownTypeError
	if errors.As(err, &unknown) {
		return nil, usageError{err}
	}
	return d, err
}
