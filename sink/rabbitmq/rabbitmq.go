// Package rabbitmq is walhook's RabbitMQ (AMQP 0-9-1) destination: it
// publishes each message of a batch the sink's pipeline hands it to the
// sink's exchange with the routing key its template names, on a channel in
// confirm mode, mandatory, persistent, with message_id = the idempotency
// key, and acknowledges the batch when the broker has confirmed every
// message (a nack, or a message returned as unroutable, fails it).
//
// Each attempt takes a channel of its own from a small pool, so the
// returns it reads are its own; a channel that saw any failure is closed,
// never reused. A connection closed by a broker restart (or by an error)
// is dialled again by the next attempt. Lanes, batching, retries and dead
// letters are the pipeline's.
package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"
	"unicode"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/broker"
)

// Options are the parts of a RabbitMQ destination that come from walhook.
type Options struct {
	Logger *slog.Logger // nil discards
}

// Sink publishes batches to a RabbitMQ exchange. It is safe for concurrent
// use: the pipeline's lanes call Deliver at once.
type Sink struct {
	cfg    config.Sink
	log    *slog.Logger
	key    *broker.Template
	server string // the url without credentials, for messages

	mu     sync.Mutex
	conn   *amqp.Connection
	idle   []*channel // channels of conn no attempt uses now
	closed bool
}

// channel is a confirm-mode channel with what it notifies.
type channel struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
	closes  chan *amqp.Error
}

// returnsBuffer is how many returned messages a channel holds unread: a
// return is read before its confirm, so it must fit while the attempt
// waits for a confirm; the attempt reads returns while it waits.
const returnsBuffer = 256

// Forbidden is what a routing key's word may not hold besides the
// separator: a topic exchange's wildcards * and #, which a binding cannot
// match literally, and whitespace, as in NATS subjects.
func Forbidden(r rune) bool { return r == '*' || r == '#' || unicode.IsSpace(r) }

// New builds a destination for cfg. It does not connect: the first
// attempt does, so a broker that is down fails attempts, not the start.
func New(cfg config.Sink, opts Options) (*Sink, error) {
	key, err := broker.Parse(cfg.RabbitMQ.RoutingKey, Forbidden)
	if err != nil {
		return nil, fmt.Errorf("sink %q: routing_key: %w", cfg.Name, err)
	}
	s := &Sink{cfg: cfg, log: opts.Logger, key: key, server: redactURL(cfg.RabbitMQ.URL)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("sink", cfg.Name)
	return s, nil
}

// Close closes the connection.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.idle = nil
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	return nil
}

// Deliver publishes every message of b and returns nil once the broker
// confirmed each, none of them returned.
func (s *Sink) Deliver(ctx context.Context, b *sink.Batch) error {
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	c, err := s.take(actx)
	if err != nil {
		return err
	}
	err = s.publish(actx, c, b)
	if err != nil {
		c.ch.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	s.give(c)
	return nil
}

// publish publishes b's messages on c and waits for their confirms.
func (s *Sink) publish(ctx context.Context, c *channel, b *sink.Batch) error {
	confirms := make([]*amqp.DeferredConfirmation, len(b.Messages))
	returned := map[string]amqp.Return{}
	for i, m := range b.Messages {
		key := s.key.Name(m, b.Sink)
		dc, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, s.cfg.RabbitMQ.Exchange, key, true, false, publishing(m, b.Sink, broker.TxHeaders(b.Tx, i, len(b.Messages))))
		if err != nil {
			return s.channelError(c, err)
		}
		confirms[i] = dc
		s.readReturns(c, returned)
	}
	returns := c.returns // nil once closed with the channel
	for i := 0; i < len(confirms); {
		dc := confirms[i]
		select {
		case <-dc.Done():
			i++
		case r, ok := <-returns:
			if !ok {
				returns = nil
			} else {
				returned[r.MessageId] = r
			}
			continue
		case <-ctx.Done():
			return broker.Retry(fmt.Sprintf("RabbitMQ at %s did not confirm every message within the sink's timeout (%s); the batch is published again", s.server, s.cfg.Timeout), ctx.Err())
		}
		if !dc.Acked() {
			if err := s.closeError(c); err != nil {
				return err
			}
			return broker.Retry(fmt.Sprintf("RabbitMQ at %s refused (nack) the change %s to exchange %q: the broker could not take it (a queue's limit, an internal error); it is published again", s.server, b.Messages[i-1].IdempotencyKey(), s.cfg.RabbitMQ.Exchange), nil)
		}
	}
	// A return comes before its message's confirm: every return of the
	// batch is in c.returns by now.
	s.readReturns(c, returned)
	for _, m := range b.Messages {
		if r, ok := returned[m.IdempotencyKey()]; ok {
			return broker.Operator(fmt.Sprintf("unroutable: exchange %q routes nothing for routing key %q (%d %s); bind a queue that matches it (walhook never creates queues or bindings)", r.Exchange, r.RoutingKey, r.ReplyCode, r.ReplyText), nil)
		}
	}
	return nil
}

// readReturns moves the returns c holds now into returned.
func (s *Sink) readReturns(c *channel, returned map[string]amqp.Return) {
	for {
		select {
		case r, ok := <-c.returns:
			if !ok {
				return
			}
			returned[r.MessageId] = r
		default:
			return
		}
	}
}

// publishing is m's AMQP message for sink, with tx's headers (see
// broker.TxHeaders).
func publishing(m *change.Message, sinkName string, tx []broker.Header) amqp.Publishing {
	headers := amqp.Table{}
	for _, h := range broker.Headers(m, sinkName) {
		headers[h.Name] = h.Value
	}
	for _, h := range tx {
		headers[h.Name] = h.Value
	}
	return amqp.Publishing{
		Headers:      headers,
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    m.IdempotencyKey(),
		Body:         broker.AppendBody(nil, m, sinkName),
	}
}

// take returns an idle channel of the current connection, or a new one,
// dialling the connection again when it is closed.
func (s *Sink) take(ctx context.Context) (*channel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, broker.Retry("the sink is closed", nil)
	}
	for len(s.idle) > 0 {
		c := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if c.conn == s.conn && !c.ch.IsClosed() && !s.conn.IsClosed() {
			return c, nil
		}
	}
	if s.conn == nil || s.conn.IsClosed() {
		s.idle = nil
		conn, err := s.dial(ctx)
		if err != nil {
			return nil, err
		}
		s.conn = conn
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, s.connError(err)
	}
	c := &channel{conn: s.conn, ch: ch, returns: make(chan amqp.Return, returnsBuffer), closes: make(chan *amqp.Error, 1)}
	ch.NotifyClose(c.closes)
	ch.NotifyReturn(c.returns)
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, s.connError(err)
	}
	return c, nil
}

// give puts c back among the idle channels.
func (s *Sink) give(c *channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || c.conn != s.conn || len(s.idle) >= max(s.cfg.MaxInFlight, 1) {
		c.ch.Close()
		return
	}
	s.idle = append(s.idle, c)
}

// dial connects to the broker.
func (s *Sink) dial(ctx context.Context) (*amqp.Connection, error) {
	cfg := dialConfig(s.cfg)
	if d, ok := ctx.Deadline(); ok {
		cfg.Dial = amqp.DefaultDial(max(time.Until(d), time.Millisecond))
	}
	conn, err := amqp.DialConfig(s.cfg.RabbitMQ.URL, cfg)
	if err != nil {
		return nil, s.connError(err)
	}
	go func(closes chan *amqp.Error) {
		if e, ok := <-closes; ok && e != nil {
			s.log.Warn("rabbitmq connection closed; the next attempt connects again", "err", e.Error())
		}
	}(conn.NotifyClose(make(chan *amqp.Error, 1)))
	return conn, nil
}

// dialConfig is the connection settings of cfg. An amqps:// url speaks
// TLS with the system's CAs.
func dialConfig(cfg config.Sink) amqp.Config {
	return amqp.Config{
		Dial:       amqp.DefaultDial(min(cfg.Timeout, 10*time.Second)),
		Properties: amqp.Table{"connection_name": "walhook " + cfg.Name},
	}
}

// Error is a failed attempt at a batch, with what to do about it. It
// needs an operator when the exchange does not exist or routes nowhere, the
// broker refuses the credentials or the permission to publish.
type Error = broker.Error

// connError is the error of a connection that could not be opened, or a
// channel that could not be.
func (s *Sink) connError(err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.AccessRefused {
		return broker.Operator(fmt.Sprintf("RabbitMQ at %s refuses walhook's credentials: %s; check the user and password in url (and the user's access to the vhost)", s.server, ae.Reason), err)
	}
	if errors.Is(err, amqp.ErrCredentials) || errors.Is(err, amqp.ErrSASL) {
		return broker.Operator(fmt.Sprintf("RabbitMQ at %s refuses walhook's credentials: %v; check the user and password in url", s.server, err), err)
	}
	if errors.As(err, &ae) && ae.Code == amqp.NotAllowed {
		return broker.Operator(fmt.Sprintf("RabbitMQ at %s does not let walhook in: %s; check the vhost in url and the user's access to it", s.server, ae.Reason), err)
	}
	return broker.Retry(fmt.Sprintf("RabbitMQ at %s is unreachable: %v", s.server, err), err)
}

// channelError is the error of a publish on c that failed.
func (s *Sink) channelError(c *channel, err error) error {
	if e := s.closeError(c); e != nil {
		return e
	}
	if errors.Is(err, amqp.ErrClosed) {
		return broker.Retry(fmt.Sprintf("RabbitMQ at %s closed the connection (a restart?); the next attempt connects again", s.server), err)
	}
	return broker.Retry(fmt.Sprintf("publish to exchange %q at %s: %v", s.cfg.RabbitMQ.Exchange, s.server, err), err)
}

// closeError says why the broker closed c, or nil if it did not.
func (s *Sink) closeError(c *channel) error {
	var e *amqp.Error
	select {
	case e = <-c.closes:
	default:
		if !c.ch.IsClosed() {
			return nil
		}
		// The library marks a channel closed before it hands out why
		// (it closes c.closes after that): wait for the reason, or a
		// publish to a missing exchange reads as a restart.
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case e = <-c.closes:
		case <-t.C:
		}
	}
	if e == nil {
		return broker.Retry(fmt.Sprintf("RabbitMQ at %s closed the connection (a restart?); the next attempt connects again", s.server), amqp.ErrClosed)
	}
	switch e.Code {
	case amqp.NotFound:
		return broker.Operator(fmt.Sprintf("exchange %q does not exist on RabbitMQ at %s (%s); declare it (e.g. rabbitmqadmin declare exchange name=%s type=topic durable=true); walhook never creates exchanges", s.cfg.RabbitMQ.Exchange, s.server, e.Reason, s.cfg.RabbitMQ.Exchange), e)
	case amqp.AccessRefused:
		return broker.Operator(fmt.Sprintf("RabbitMQ at %s does not let walhook publish to exchange %q (%s); grant the user write permission on it", s.server, s.cfg.RabbitMQ.Exchange, e.Reason), e)
	case amqp.ConnectionForced:
		return broker.Retry(fmt.Sprintf("RabbitMQ at %s closed the connection (%s; a restart?); the next attempt connects again", s.server, e.Reason), e)
	}
	return broker.Retry(fmt.Sprintf("RabbitMQ at %s closed the channel: %d %s", s.server, e.Code, e.Reason), e)
}

// redactURL is an AMQP URL without its credentials.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(a bad url)"
	}
	u.User = nil
	return u.String()
}
