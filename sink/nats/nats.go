// Package nats is walhook's NATS JetStream destination: it publishes each
// message of a batch the sink's pipeline hands it to the subject its
// template names, asynchronously with a bound on what is outstanding, and
// acknowledges the batch when JetStream has confirmed every message with a
// PubAck. Nats-Msg-Id is the idempotency key, so a message published again
// (a retried batch, a restart) within the stream's duplicate window is
// dropped by the stream, and its duplicate PubAck counts as delivered.
// Lanes, batching, retries and dead letters are the pipeline's.
package nats

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
	"unicode"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/broker"
)

// maxPending bounds the messages a sink has published and JetStream not
// yet confirmed, over all its lanes; a lane that would exceed it waits.
const maxPending = 1024

// Options are the parts of a NATS destination that come from walhook.
type Options struct {
	Logger *slog.Logger // nil discards
}

// Sink publishes batches to JetStream. It is safe for concurrent use: the
// pipeline's lanes call Deliver at once.
type Sink struct {
	cfg     config.Sink
	log     *slog.Logger
	subject *broker.Template
	nc      *natsgo.Conn
	js      jetstream.JetStream
	servers string // the url without credentials, for messages
}

// Forbidden is what a subject token may not hold besides the separator:
// the wildcards and whitespace.
func Forbidden(r rune) bool { return r == '*' || r == '>' || unicode.IsSpace(r) }

// New builds a destination for cfg and starts connecting; it does not
// wait for the server, which may be down: Deliver fails until it is up.
func New(cfg config.Sink, opts Options) (*Sink, error) {
	subject, err := broker.Parse(cfg.NATS.Subject, Forbidden)
	if err != nil {
		return nil, fmt.Errorf("sink %q: subject: %w", cfg.Name, err)
	}
	s := &Sink{cfg: cfg, log: opts.Logger, subject: subject, servers: redactURLs(cfg.NATS.URL)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("sink", cfg.Name)
	options, err := connectOptions(cfg, s.log)
	if err != nil {
		return nil, fmt.Errorf("sink %q: %w", cfg.Name, err)
	}
	options = append(options,
		natsgo.RetryOnFailedConnect(true),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(500*time.Millisecond),
		// Nothing is buffered while the server is away: a publish fails
		// at once and the pipeline retries the batch with its backoff.
		natsgo.ReconnectBufSize(-1),
	)
	s.nc, err = natsgo.Connect(cfg.NATS.URL, options...)
	if err != nil {
		return nil, fmt.Errorf("sink %q: connect to %s: %w", cfg.Name, s.servers, err)
	}
	s.js, err = jetstream.New(s.nc,
		jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncTimeout(cfg.Timeout))
	if err != nil {
		s.nc.Close()
		return nil, fmt.Errorf("sink %q: %w", cfg.Name, err)
	}
	return s, nil
}

// connectOptions are the options of every connection of cfg's: its
// credentials, TLS and timeouts.
func connectOptions(cfg config.Sink, log *slog.Logger) ([]natsgo.Option, error) {
	options := []natsgo.Option{
		natsgo.Name("walhook " + cfg.Name),
		natsgo.Timeout(min(cfg.Timeout, 10*time.Second)),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			log.Warn("nats connection", "err", err)
		}),
	}
	if cfg.NATS.CredsFile != "" {
		options = append(options, natsgo.UserCredentials(cfg.NATS.CredsFile))
	}
	if cfg.NATS.NKeyFile != "" {
		o, err := natsgo.NkeyOptionFromSeed(cfg.NATS.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nkey_file %s: %w", cfg.NATS.NKeyFile, err)
		}
		options = append(options, o)
	}
	tlsConfig, err := cfg.NATS.TLS.ClientConfig()
	if err != nil {
		return nil, err
	}
	if tlsConfig != nil {
		options = append(options, natsgo.Secure(tlsConfig))
	}
	return options, nil
}

// Close closes the connection.
func (s *Sink) Close() error {
	s.nc.Close()
	return nil
}

// Deliver publishes every message of b and returns nil once JetStream
// confirmed each. It fails at the first message that cannot be published
// or is refused, and when the sink's timeout passes first.
func (s *Sink) Deliver(ctx context.Context, b *sink.Batch) error {
	if !s.nc.IsConnected() {
		return s.unreachable()
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	maxPayload := s.nc.MaxPayload()
	futures := make([]jetstream.PubAckFuture, 0, len(b.Messages))
	for i, m := range b.Messages {
		msg := s.message(m, b.Sink, broker.TxHeaders(b.Tx, i, len(b.Messages)))
		if size := int64(len(msg.Data) + headerSize(msg.Header)); maxPayload > 0 && size > maxPayload {
			return broker.Retry(fmt.Sprintf("the change %s is %d bytes with its headers, more than the NATS server's max_payload (%d bytes); "+
				"raise max_payload in the server's configuration (and the stream's max_msg_size), or leave the columns out with columns", m.IdempotencyKey(), size, maxPayload), nil)
		}
		wait := time.Second
		if d, ok := actx.Deadline(); ok {
			wait = max(time.Until(d), time.Millisecond)
		}
		f, err := s.js.PublishMsgAsync(msg, jetstream.WithRetryAttempts(0), jetstream.WithStallWait(wait))
		if err != nil {
			return s.classify(err, msg.Subject)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
			// A duplicate PubAck says the stream has the message already
			// (an earlier attempt got it there): delivered all the same.
		case err := <-f.Err():
			return s.classify(err, f.Msg().Subject)
		case <-actx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return broker.Retry(fmt.Sprintf("JetStream did not confirm every message within the sink's timeout (%s); the batch is published again, and the stream drops what it already has", s.cfg.Timeout), nil)
		}
	}
	return nil
}

// message is m's NATS message for sink, with tx's headers (see
// broker.TxHeaders).
func (s *Sink) message(m *change.Message, sinkName string, tx []broker.Header) *natsgo.Msg {
	h := make(natsgo.Header, 6+len(tx))
	for _, kv := range broker.Headers(m, sinkName) {
		h[kv.Name] = []string{kv.Value}
	}
	for _, kv := range tx {
		h[kv.Name] = []string{kv.Value}
	}
	h[jetstream.MsgIDHeader] = []string{m.IdempotencyKey()}
	return &natsgo.Msg{Subject: s.subject.Name(m, sinkName), Header: h, Data: broker.AppendBody(nil, m, sinkName)}
}

// headerSize is about what h takes on the wire.
func headerSize(h natsgo.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// Error is a failed attempt at a batch, with what to do about it. It
// needs an operator when no stream takes the subject, the server refuses
// the credentials or the permission to publish.
type Error = broker.Error

// unreachable is the error of an attempt while the connection is down.
func (s *Sink) unreachable() error {
	last := s.nc.LastError()
	if last != nil && isAuth(last) {
		return broker.Operator(fmt.Sprintf("the NATS server at %s refuses walhook's credentials: %v; check creds_file, nkey_file or the user and password in url", s.servers, last), last)
	}
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	switch {
	case errors.As(last, &unknownCA):
		return broker.Operator(fmt.Sprintf("the NATS server at %s shows a certificate walhook does not trust: %v; set tls.ca_file to the CA that signs it", s.servers, last), last)
	case errors.As(last, &hostname):
		return broker.Operator(fmt.Sprintf("the NATS server at %s shows a certificate for another host: %v; use a host the certificate names in url", s.servers, last), last)
	case last != nil:
		return broker.Retry(fmt.Sprintf("the NATS server at %s is unreachable: %v", s.servers, last), last)
	}
	return broker.Retry(fmt.Sprintf("the NATS server at %s is unreachable (connecting)", s.servers), nil)
}

// classify turns a publish error into an Error that says what it means.
func (s *Sink) classify(err error, subject string) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, natsgo.ErrNoResponders):
		return broker.Operator(fmt.Sprintf("no JetStream stream takes subject %q: create a stream whose subjects cover it (e.g. nats stream add WALHOOK --subjects %q); walhook never creates streams", subject, wildcardOf(s.cfg.NATS.Subject)), err)
	case errors.Is(err, natsgo.ErrMaxPayload):
		return broker.Retry(fmt.Sprintf("a message to %q is larger than the NATS server's max_payload (%d bytes); raise max_payload in the server's configuration", subject, s.nc.MaxPayload()), err)
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return broker.Retry(fmt.Sprintf("the stream taking %q refuses a message as larger than its max_msg_size: %v; raise the stream's max_msg_size", subject, err), err)
	case errors.Is(err, natsgo.ErrPermissionViolation), isPermission(s.nc.LastError()):
		return broker.Operator(fmt.Sprintf("the NATS server does not let walhook publish to %q: %v; allow the user to publish to the subject (and to $JS.API.> for check)", subject, err), err)
	case isAuth(err), errors.Is(err, natsgo.ErrConnectionClosed), errors.Is(err, natsgo.ErrDisconnected),
		errors.Is(err, natsgo.ErrReconnectBufExceeded), errors.Is(err, natsgo.ErrConnectionReconnecting):
		return s.unreachable()
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return broker.Retry(fmt.Sprintf("JetStream did not confirm a message to %q within the sink's timeout (%s)", subject, s.cfg.Timeout), err)
	}
	return broker.Retry(fmt.Sprintf("publish to %q: %v", subject, err), err)
}

func isAuth(err error) bool {
	return err != nil && (errors.Is(err, natsgo.ErrAuthorization) || errors.Is(err, natsgo.ErrAuthExpired) ||
		strings.Contains(strings.ToLower(err.Error()), "authorization violation") ||
		strings.Contains(strings.ToLower(err.Error()), "authentication"))
}

func isPermission(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "permissions violation")
}

// wildcardOf is a subject wildcard that covers every subject of template:
// each token holding a placeholder becomes *, and a trailing one >.
func wildcardOf(template string) string {
	tokens := strings.Split(template, ".")
	for i, t := range tokens {
		if strings.Contains(t, "{") {
			tokens[i] = "*"
		}
	}
	if n := len(tokens); tokens[n-1] == "*" {
		tokens[n-1] = ">"
	}
	return strings.Join(tokens, ".")
}

// redactURLs is a comma-separated list of NATS URLs without their
// credentials.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(a bad url)"
			continue
		}
		u.User = nil
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
