// Package redis is walhook's Redis Streams destination: it appends each
// message of a batch the sink's pipeline hands it to the stream its
// template names, with XADD (MAXLEN ~ N when max_len is set), every XADD
// of a batch in one MULTI/EXEC pipeline, and acknowledges the batch when
// Redis has replied to every XADD. An entry's fields are data (the
// change's JSON) and the walhook-* headers. Redis streams do not dedupe:
// a batch whose replies were lost is appended again, and consumers dedupe
// by walhook-idempotency-key. Lanes, batching, retries and dead letters
// are the pipeline's.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	goredis "github.com/redis/go-redis/v9"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/broker"
)

// Options are the parts of a Redis destination that come from walhook.
type Options struct {
	Logger *slog.Logger // nil discards
}

// Sink appends batches to Redis streams. It is safe for concurrent use:
// the pipeline's lanes call Deliver at once.
type Sink struct {
	cfg    config.Sink
	log    *slog.Logger
	stream *broker.Template
	client *goredis.Client
	server string // host:port, for messages
}

// New builds a destination for cfg. It does not connect: Deliver does,
// and fails while the server is away.
func New(cfg config.Sink, opts Options) (*Sink, error) {
	stream, err := broker.Parse(cfg.Redis.Stream, nil)
	if err != nil {
		return nil, fmt.Errorf("sink %q: stream: %w", cfg.Name, err)
	}
	o, err := clientOptions(cfg)
	if err != nil {
		return nil, fmt.Errorf("sink %q: %w", cfg.Name, err)
	}
	s := &Sink{cfg: cfg, log: opts.Logger, stream: stream, client: goredis.NewClient(o), server: o.Addr}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("sink", cfg.Name)
	return s, nil
}

// clientOptions are cfg's client settings. go-redis does not retry on its
// own: a retried MULTI/EXEC could append a batch twice behind the
// pipeline's back; the pipeline retries, with its backoff.
func clientOptions(cfg config.Sink) (*goredis.Options, error) {
	o, err := goredis.ParseURL(cfg.Redis.URL)
	if err != nil {
		// The URL may hold a password: name the problem, not the text.
		return nil, errors.New("url is not a valid redis:// or rediss:// URL (e.g. redis://127.0.0.1:6379/0)")
	}
	o.MaxRetries = -1
	o.PoolSize = max(cfg.MaxInFlight, 1)
	o.DialTimeout = cfg.Timeout
	o.ReadTimeout = cfg.Timeout
	o.WriteTimeout = cfg.Timeout
	o.ClientName = "walhook-" + cfg.Name
	o.DisableIdentity = true
	return o, nil
}

// Close closes the connections.
func (s *Sink) Close() error { return s.client.Close() }

// Deliver appends every message of b and returns nil once Redis replied
// to every XADD.
func (s *Sink) Deliver(ctx context.Context, b *sink.Batch) error {
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	pipe := s.client.TxPipeline()
	cmds := make([]*goredis.StringCmd, len(b.Messages))
	for i, m := range b.Messages {
		cmds[i] = pipe.XAdd(actx, s.args(m, b.Sink, broker.TxHeaders(b.Tx, i, len(b.Messages))))
	}
	_, err := pipe.Exec(actx)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for i, c := range cmds {
		if c.Err() != nil && !errors.Is(c.Err(), err) {
			return s.classify(c.Err(), s.stream.Name(b.Messages[i], b.Sink))
		}
	}
	return s.classify(err, s.stream.Name(b.Messages[0], b.Sink))
}

// args is the XADD of m for sink, with tx's fields (see
// broker.TxHeaders).
func (s *Sink) args(m *change.Message, sinkName string, tx []broker.Header) *goredis.XAddArgs {
	h := broker.Headers(m, sinkName)
	values := make([]any, 0, 2+2*len(h)+2*len(tx))
	values = append(values, "data", broker.AppendBody(nil, m, sinkName))
	for _, kv := range h {
		values = append(values, kv.Name, kv.Value)
	}
	for _, kv := range tx {
		values = append(values, kv.Name, kv.Value)
	}
	a := &goredis.XAddArgs{Stream: s.stream.Name(m, sinkName), Values: values}
	if s.cfg.Redis.MaxLen > 0 {
		a.MaxLen, a.Approx = s.cfg.Redis.MaxLen, true
	}
	return a
}

// Error is a failed attempt at a batch, with what to do about it. It
// needs an operator on bad credentials, a missing permission, a key that
// is not a stream, or a read-only replica.
type Error = broker.Error

// classify turns an error of Redis into an Error that says what it means.
func (s *Sink) classify(err error, stream string) error {
	text := err.Error()
	var ne net.Error
	switch {
	case strings.HasPrefix(text, "NOAUTH"), strings.HasPrefix(text, "WRONGPASS"):
		return broker.Operator(fmt.Sprintf("the Redis server at %s refuses walhook's credentials: %v; set the user and password in url", s.server, err), err)
	case strings.HasPrefix(text, "NOPERM"):
		return broker.Operator(fmt.Sprintf("the Redis user may not XADD to %q: %v; grant it +xadd on the stream's keys", stream, err), err)
	case strings.HasPrefix(text, "WRONGTYPE"):
		return broker.Operator(fmt.Sprintf("the key %q holds something other than a stream: %v; delete or rename it, or change stream", stream, err), err)
	case strings.HasPrefix(text, "READONLY"):
		return broker.Operator(fmt.Sprintf("the Redis server at %s is a read-only replica: %v; point url at the primary", s.server, err), err)
	case strings.HasPrefix(text, "OOM"), strings.HasPrefix(text, "EXECABORT"):
		return broker.Retry(fmt.Sprintf("the Redis server at %s refuses writes: %v; give it memory (maxmemory) or set max_len", s.server, err), err)
	case errors.As(err, &ne), errors.Is(err, net.ErrClosed), strings.Contains(text, "connection refused"), strings.Contains(text, "EOF"):
		return broker.Retry(fmt.Sprintf("the Redis server at %s is unreachable: %v", s.server, err), err)
	}
	return broker.Retry(fmt.Sprintf("XADD to %q: %v", stream, err), err)
}
