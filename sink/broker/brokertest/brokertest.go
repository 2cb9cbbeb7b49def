// Package brokertest holds what the broker sinks' tests share: a sink
// configuration with short waits, changes to deliver, one attempt at a
// batch, and a logger that writes to the test's output.
//
//	cfg := brokertest.Config("nats")
//	cfg.NATS = config.NATS{URL: srv.URL, Subject: "walhook.{schema}.{table}"}
//	err := brokertest.Deliver(t, s, brokertest.Inserts("orders", 0, 3))
package brokertest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
)

// Sink is the sink name Config and Deliver use.
const Sink = "orders"

// Config is a sink named orders of type typ, 10 messages a batch on 4
// lanes, a 5 s timeout and retries from 10 ms to 50 ms; the caller sets
// its type's part.
func Config(typ string) config.Sink {
	return config.Sink{
		Name: Sink, Type: typ, BatchSize: 10, MaxInFlight: 4, Timeout: 5 * time.Second,
		Retry: config.Retry{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
	}
}

// Inserts are n inserts of rows {"id": from+i} into public.table, at
// positions 0/1000:from+i.
func Inserts(table string, from, n int) []*change.Message {
	msgs := make([]*change.Message, n)
	for i := range msgs {
		msgs[i] = &change.Message{
			Action: change.Insert, Schema: "public", Table: table,
			Record: fmt.Appendf(nil, `{"id":%d}`, from+i), Pos: change.Position{CommitLSN: pglogrepl.LSN(0x1000), Idx: uint32(from + i)},
			CommitTime: time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC), XID: 7,
		}
	}
	return msgs
}

// Destination is a broker sink.
type Destination interface {
	Deliver(ctx context.Context, b *sink.Batch) error
}

// Deliver makes one attempt at a batch of msgs for sink orders, given 20 s
// at most.
func Deliver(t testing.TB, d Destination, msgs []*change.Message) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return d.Deliver(ctx, &sink.Batch{ID: "b", Attempt: 1, Messages: msgs, Sink: Sink})
}

// Logger writes to t's output.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}
