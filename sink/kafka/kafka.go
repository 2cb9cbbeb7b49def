// Package kafka is walhook's Kafka destination: it produces one record per
// message of a batch the sink's pipeline hands it, to the topic its
// template names, with an idempotent producer whose every produce is
// acknowledged by all in-sync replicas, and acknowledges the batch when
// every record's produce promise succeeded. A record's key is the JSON
// array of its row's group values, so one row's changes go to one
// partition, in order; a truncate has a null key. Lanes, batching,
// retries and dead letters are the pipeline's.
package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/broker"
)

// maxRecordBytes is the largest record batch walhook's producer sends:
// Kafka's default max.message.bytes (1 MiB and its batch header). A
// larger change is refused by the producer, as a broker with the default
// would refuse it.
const maxRecordBytes = 1048588

// Options are the parts of a Kafka destination that come from walhook.
type Options struct {
	Logger *slog.Logger // nil discards
}

// Sink produces batches to Kafka. It is safe for concurrent use: the
// pipeline's lanes call Deliver at once.
type Sink struct {
	cfg     config.Sink
	log     *slog.Logger
	topic   *broker.Template
	keys    *keyer
	client  *kgo.Client
	brokers string
	tx      *txState // under batch_by: transaction, nil otherwise
}

// Forbidden is what a topic may not hold: everything but [A-Za-z0-9._-]
// (the separator . is replaced in any case).
func Forbidden(r rune) bool {
	return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-')
}

// New builds a destination for cfg. It does not wait for the cluster,
// which may be down: Deliver fails until it is up.
func New(cfg config.Sink, opts Options) (*Sink, error) {
	topic, err := parseTopic(cfg)
	if err != nil {
		return nil, fmt.Errorf("sink %q: %w", cfg.Name, err)
	}
	s := &Sink{cfg: cfg, log: opts.Logger, topic: topic, keys: newKeyer(cfg), brokers: joinBrokers(cfg.Kafka.Brokers)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("sink", cfg.Name)
	options, err := clientOptions(cfg)
	if err != nil {
		return nil, fmt.Errorf("sink %q: %w", cfg.Name, err)
	}
	options = append(options,
		kgo.RequiredAcks(kgo.AllISRAcks()), // with idempotence, kgo's default; said out loud
		kgo.ProducerBatchMaxBytes(maxRecordBytes),
		kgo.RecordDeliveryTimeout(cfg.Timeout),
		kgo.ProducerLinger(0),
		// An unknown topic fails the records after two metadata answers
		// that lack it, rather than four: the pipeline retries the batch.
		kgo.UnknownTopicRetries(2),
		kgo.MetadataMinAge(time.Second),
	)
	if cfg.BatchBy == config.BatchByTransaction {
		s.tx = newTxState()
		options = append(options, kgo.TransactionalID(TransactionalID(cfg.Name)), kgo.TransactionTimeout(txTimeout))
	}
	s.client, err = kgo.NewClient(options...)
	if err != nil {
		return nil, fmt.Errorf("sink %q: kafka client: %w", cfg.Name, err)
	}
	return s, nil
}

// parseTopic parses cfg's topic template.
func parseTopic(cfg config.Sink) (*broker.Template, error) {
	t, err := broker.Parse(cfg.Kafka.Topic, Forbidden)
	if err != nil {
		return nil, fmt.Errorf("topic: %w", err)
	}
	return t, nil
}

// joinBrokers is the seed brokers, for messages.
func joinBrokers(brokers []string) string { return strings.Join(brokers, ",") }

// clientOptions are the options of every client of cfg's: its brokers,
// SASL, TLS and dial timeout.
func clientOptions(cfg config.Sink) ([]kgo.Opt, error) {
	options := []kgo.Opt{
		kgo.SeedBrokers(cfg.Kafka.Brokers...),
		kgo.ClientID("walhook"),
		kgo.DialTimeout(min(cfg.Timeout, 10*time.Second)),
	}
	if m := mechanism(cfg.Kafka.SASL); m != nil {
		options = append(options, kgo.SASL(m))
	}
	tlsConfig, err := cfg.Kafka.TLS.ClientConfig()
	if err != nil {
		return nil, err
	}
	if tlsConfig == nil && cfg.Kafka.TLSSet {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if tlsConfig != nil {
		options = append(options, kgo.DialTLSConfig(tlsConfig))
	}
	return options, nil
}

// mechanism is the SASL mechanism a configures, nil for none.
func mechanism(a config.SASL) sasl.Mechanism {
	switch a.Mechanism {
	case "PLAIN":
		return plain.Auth{User: a.Username, Pass: a.Password}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: a.Username, Pass: a.Password}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: a.Username, Pass: a.Password}.AsSha512Mechanism()
	}
	return nil
}

// Close closes the client; records not yet produced fail.
func (s *Sink) Close() error {
	s.client.Close()
	return nil
}

// Deliver produces every message of b and returns nil once every record's
// produce was acknowledged by all in-sync replicas. Records of one key go
// to one partition in the order of b; a failed attempt may have produced
// some of them, which the retry produces again (consumers dedupe on
// walhook-idempotency-key). Under batch_by: transaction the records are
// produced in a Kafka transaction (see txn.go).
func (s *Sink) Deliver(ctx context.Context, b *sink.Batch) error {
	if s.tx != nil {
		return s.deliverTx(ctx, b)
	}
	return s.produce(ctx, b)
}

// produce produces every message of b, as Deliver says.
func (s *Sink) produce(ctx context.Context, b *sink.Batch) error {
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error // the error of the earliest record that failed
		at    = len(b.Messages)
	)
	for i, m := range b.Messages {
		r := s.record(m, b.Sink, broker.TxHeaders(b.Tx, i, len(b.Messages)))
		wg.Add(1)
		s.client.Produce(actx, r, func(r *kgo.Record, err error) {
			defer wg.Done()
			if err == nil {
				return
			}
			mu.Lock()
			if i < at {
				first, at = s.classify(err, r, b.Messages[i]), i
			}
			mu.Unlock()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-actx.Done():
		// kgo holds records while it has no broker to send them to, past
		// their context: the attempt ends here all the same. What it still
		// holds goes out before the retried batch, in order, or fails.
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return s.timedOut(ctx)
	}
	mu.Lock()
	defer mu.Unlock()
	if first != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(first, kgo.ErrRecordTimeout) || errors.Is(first, context.DeadlineExceeded) {
		// The records ran out of time before the attempt did (both are
		// the sink's timeout): say why, as for an attempt that timed out.
		return s.timedOut(ctx)
	}
	return first
}

// timedOut is the error of an attempt that was not acknowledged in time:
// why, as far as a ping of the cluster tells (refused credentials, no
// broker reachable).
func (s *Sink) timedOut(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := s.client.Ping(pctx)
	switch {
	case err != nil && (isAuth(err) || s.cfg.Kafka.SASL.Mechanism != "" && errors.Is(err, io.EOF)):
		// A broker that refuses SASL answers SaslAuthenticationFailed;
		// some close the connection instead.
		return broker.Operator(fmt.Sprintf("the Kafka cluster at %s refuses walhook's credentials: %v; check sasl's mechanism, username and password", s.brokers, err), err)
	case certFix(err) != "":
		return broker.Operator(fmt.Sprintf("the Kafka cluster at %s shows a certificate walhook does not accept: %v; %s", s.brokers, err, certFix(err)), err)
	case err != nil:
		return broker.Retry(fmt.Sprintf("the Kafka cluster at %s did not acknowledge every record within the sink's timeout (%s): unreachable: %v", s.brokers, s.cfg.Timeout, err), err)
	}
	return broker.Retry(fmt.Sprintf("the Kafka cluster at %s did not acknowledge every record within the sink's timeout (%s): a partition's leader or in-sync replicas are missing?", s.brokers, s.cfg.Timeout), context.DeadlineExceeded)
}

// record is m's Kafka record for sink, with tx's headers (see
// broker.TxHeaders).
func (s *Sink) record(m *change.Message, sinkName string, tx []broker.Header) *kgo.Record {
	hs := broker.Headers(m, sinkName)
	headers := make([]kgo.RecordHeader, 0, len(hs)+len(tx))
	for _, h := range hs {
		headers = append(headers, kgo.RecordHeader{Key: h.Name, Value: []byte(h.Value)})
	}
	for _, h := range tx {
		headers = append(headers, kgo.RecordHeader{Key: h.Name, Value: []byte(h.Value)})
	}
	return &kgo.Record{
		Topic:   s.topic.Name(m, sinkName),
		Key:     s.keys.key(m),
		Value:   broker.AppendBody(nil, m, sinkName),
		Headers: headers,
	}
}

// Error is a failed attempt at a batch, with what to do about it. It
// needs an operator when the topic does not exist, the cluster refuses the
// credentials or the permission to write.
type Error = broker.Error

// classify turns the error of r, the record of m, into an Error that says
// what it means.
func (s *Sink) classify(err error, r *kgo.Record, m *change.Message) error {
	switch {
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return broker.Operator(fmt.Sprintf("unknown topic %q: the Kafka cluster at %s has no such topic; create it (e.g. kafka-topics.sh --create --topic %s); walhook never creates topics", r.Topic, s.brokers, r.Topic), err)
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		size := len(r.Key) + len(r.Value)
		for _, h := range r.Headers {
			size += len(h.Key) + len(h.Value)
		}
		return broker.Retry(fmt.Sprintf("the change %s is %d bytes with its key and headers, too large for topic %q: message too large; Kafka accepts a record up to the topic's max.message.bytes (walhook's producer sends at most %d bytes); leave the large columns out with columns", m.IdempotencyKey(), size, r.Topic, maxRecordBytes), err)
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return broker.Operator(fmt.Sprintf("the Kafka cluster at %s does not let walhook write to topic %q: %v; allow the user to write (and, for the idempotent producer, IdempotentWrite on the cluster)", s.brokers, r.Topic, err), err)
	case isAuth(err):
		return broker.Operator(fmt.Sprintf("the Kafka cluster at %s refuses walhook's credentials: %v; check sasl's mechanism, username and password", s.brokers, err), err)
	case errors.Is(err, kgo.ErrRecordTimeout), errors.Is(err, context.DeadlineExceeded):
		return broker.Retry(fmt.Sprintf("the Kafka cluster at %s did not acknowledge a record to %q within the sink's timeout (%s): unreachable, or no in-sync replicas: %v", s.brokers, r.Topic, s.cfg.Timeout, err), err)
	}
	return broker.Retry(fmt.Sprintf("produce to %q at %s: %v", r.Topic, s.brokers, err), err)
}

// certFix is what would mend a TLS handshake that failed on the
// cluster's certificate, "" when err is no such failure: retrying cannot
// mend it.
func certFix(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	switch {
	case errors.As(err, &unknownCA):
		return "set tls.ca_file to the CA that signs it"
	case errors.As(err, &hostname):
		return "use a host the certificate names in brokers"
	}
	return ""
}

// isAuth reports whether err is a refused SASL authentication.
func isAuth(err error) bool {
	return errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.IllegalSaslState) ||
		errors.Is(err, kerr.UnsupportedSaslMechanism)
}
