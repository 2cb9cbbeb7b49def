// Package factory builds a sink's destination by its type: the one
// place that maps a configured type to the package that delivers it
// (sink/webhook, sink/nats, ...) and to that package's checks. Adding a
// type is a package and an entry in kinds; nothing else in walhook learns
// its name.
package factory

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/kafka"
	"github.com/walhook/walhook/sink/nats"
	"github.com/walhook/walhook/sink/rabbitmq"
	"github.com/walhook/walhook/sink/redis"
	"github.com/walhook/walhook/sink/webhook"
)

// Destination is what a pipeline delivers through, and what its owner
// closes when the sink goes away or a reload replaces it.
type Destination interface {
	sink.Destination
	Close() error
}

// Options are the parts of a destination that come from walhook rather
// than from the configuration file.
type Options struct {
	Version string       // walhook's version
	Logger  *slog.Logger // nil discards
}

// Check tells, for walhook check, whether sc's destination is reachable,
// authenticated and would accept a message of each of tables (the
// captured tables), and what each maps to. It writes what it found to out,
// one line each, and returns the problems that would stop delivery, each
// naming its fix; the caller bounds it with ctx.
type Check func(ctx context.Context, out io.Writer, sc config.Sink, tables []config.Table) []string

// kind is one type of sink.
type kind struct {
	build func(sc config.Sink, opts Options) (Destination, error)
	check Check // nil: walhook check has nothing to ask the destination
}

// kinds are the types this walhook delivers to, by config.Sink.Type.
var kinds = map[string]kind{
	"webhook": {build: func(sc config.Sink, opts Options) (Destination, error) {
		return built(webhook.New(sc, webhook.Options{Version: opts.Version, Logger: opts.Logger}))
	}},
	"nats": {build: func(sc config.Sink, opts Options) (Destination, error) {
		return built(nats.New(sc, nats.Options{Logger: opts.Logger}))
	}, check: nats.Check},
	"redis": {build: func(sc config.Sink, opts Options) (Destination, error) {
		return built(redis.New(sc, redis.Options{Logger: opts.Logger}))
	}, check: redis.Check},
	"kafka": {build: func(sc config.Sink, opts Options) (Destination, error) {
		return built(kafka.New(sc, kafka.Options{Logger: opts.Logger}))
	}, check: kafka.Check},
	"rabbitmq": {build: func(sc config.Sink, opts Options) (Destination, error) {
		return built(rabbitmq.New(sc, rabbitmq.Options{Logger: opts.Logger}))
	}, check: rabbitmq.Check},
}

// built is what a type's constructor returned, as a Destination: nil, not
// a typed nil, when it failed.
func built[D Destination](d D, err error) (Destination, error) {
	if err != nil {
		return nil, err
	}
	return d, nil
}

// UnknownTypeError says a sink's type has no destination in this walhook.
type UnknownTypeError struct {
	Sink, Type string
}

func (e *UnknownTypeError) Error() string {
	return fmt.Sprintf("sink %q: type %q has no destination in this walhook; use %s", e.Sink, e.Type, typeList())
}

// New builds the destination of sc by its type. An unknown type is an
// *UnknownTypeError.
func New(sc config.Sink, opts Options) (Destination, error) {
	k, ok := kinds[sc.Type]
	if !ok {
		return nil, &UnknownTypeError{Sink: sc.Name, Type: sc.Type}
	}
	return k.build(sc, opts)
}

// CheckSink runs the check of sc's type, if it has one; see Check.
func CheckSink(ctx context.Context, out io.Writer, sc config.Sink, tables []config.Table) []string {
	k, ok := kinds[sc.Type]
	if !ok {
		return []string{(&UnknownTypeError{Sink: sc.Name, Type: sc.Type}).Error()}
	}
	if k.check == nil {
		return nil
	}
	return k.check(ctx, out, sc, tables)
}

// typeList names the types kinds holds, in order.
func typeList() string {
	names := make([]string, 0, len(kinds))
	for name := range kinds {
		names = append(names, name)
	}
	slices.Sort(names)
	s := ""
	for i, n := range names {
		switch {
		case i == 0:
		case i == len(names)-1:
			s += " or "
		default:
			s += ", "
		}
		s += n
	}
	return s
}
