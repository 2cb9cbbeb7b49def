// Package config loads and validates walhook's YAML file.
//
// String values may refer to environment variables as ${NAME} or
// ${NAME:-default}; an unset variable without a default is an error. "$${"
// is a literal "${", and any other "$" is literal. Expansion happens per
// value after parsing, so YAML syntax in a variable's value has no effect.
// Keys are never expanded.
//
// Keys written without a value (or as null) take their defaults. Anchors,
// aliases and "<<" merge keys may be used, for example to share settings
// between sinks. Every problem found in a file is reported at once, as
// *Errors.
package config

import (
	"slices"
	"strconv"
	"time"
)

// Config is a loaded, expanded, defaulted and validated configuration.
type Config struct {
	// Path is the file the configuration was read from.
	Path   string
	Source Source
	State  State
	Server Server
	Log    Log
	Sinks  []Sink
	// Events is where walhook sends its own operational events; its URL
	// is "" when events are off.
	Events Events
}

// Events is the endpoint that receives walhook's operational events
// (sink.paused, dead_letter.created, ...) as signed webhooks.
type Events struct {
	URL string // http:// or https://; "" when events are off
	// Secrets sign every event, each with its own signature, newest
	// first; empty for unsigned events.
	Secrets []string
	// Types are the event types sent; every type when empty.
	Types []string
}

// EventTypes are the types of operational events, in the order the
// documentation lists them.
var EventTypes = []string{"sink.paused", "sink.resumed", "dead_letter.created", "backfill.completed", "backfill.failed"}

// Wants reports whether events of type typ are to be sent.
func (e Events) Wants(typ string) bool {
	return e.URL != "" && (len(e.Types) == 0 || slices.Contains(e.Types, typ))
}

// Source is the PostgreSQL database walhook reads.
type Source struct {
	URL            string
	Slot           string        // default "walhook"
	Publication    string        // default "walhook"
	Tables         []Table       // empty means every table (["*"])
	ReceiveTimeout time.Duration // default 30s
	Heartbeat      time.Duration // default 10s
	Messages       []string      // logical message prefixes passed through
	// Columns keeps columns from leaving PostgreSQL: it becomes the column
	// list of the publication walhook creates (PostgreSQL 15+), and walhook
	// removes the same columns from every message. Only allowed when Tables
	// lists the tables.
	Columns map[Table]Columns
	// Failover creates the slot as a failover slot (PostgreSQL 17+), or
	// makes an existing one so, for standbys with sync_replication_slots
	// to keep a copy in step.
	Failover bool
	// PrimaryURL is the primary of a hot standby that URL names: what
	// walhook writes (heartbeats, backfill watermarks) goes there, and
	// arrives through replication. Empty on a primary.
	PrimaryURL string
}

// AllTables reports whether the source captures every table.
func (s Source) AllTables() bool { return len(s.Tables) == 0 }

// Table is a schema-qualified table name, unquoted.
type Table struct {
	Schema string
	Name   string
}

// String is the table as "schema.name", the form metadata uses.
func (t Table) String() string { return t.Schema + "." + t.Name }

// State says where cursors are kept.
type State struct {
	Path string // embedded store file; default "walhook.state"
	URL  string // Postgres store; exclusive with Path
}

// Server is the admin HTTP API.
type Server struct {
	Listen string // default "127.0.0.1:9400"; "" turns it off
	Token  string // bearer token for /api; required off loopback
	// ProtectMetrics puts /metrics, /healthz and /readyz behind the token
	// too; it needs a token.
	ProtectMetrics bool
}

// Log configures logging.
type Log struct {
	Format string // auto, text or json
	Level  string // debug, info, warn or error
}

// Sink is one destination: the settings every type of sink shares, and
// the part of its own type (Webhook, NATS, Kafka, Redis or RabbitMQ), of
// which only the one Type names is set.
type Sink struct {
	Name    string
	Type    string   // webhook (default), nats, kafka, redis or rabbitmq
	Tables  []Table  // empty means every published table
	Actions []string // empty means every action
	Filter  string   // a CEL expression; "" for none
	// FilterErrors is what becomes of a message the filter fails on:
	// "skip" (default: it is left out, counted and logged) or
	// "dead_letter" (it is kept in the sink's dead letters).
	FilterErrors string
	// FilterOrigin is where Filter was written, to report a problem
	// inside the expression at its place in the file.
	FilterOrigin Origin
	GroupBy      map[Table][]string
	Columns      map[Table]Columns
	BatchSize    int           // default 100
	BatchWait    time.Duration // default 50ms
	BatchBytes   int64         // default 1MiB
	MaxInFlight  int           // default 16
	// BatchBy is BatchByMessage (default) or BatchByTransaction: whether a
	// batch may hold any messages, or holds one transaction's (or a part
	// of it).
	BatchBy string
	// Timeout bounds one attempt at one batch, whatever the type: an HTTP
	// request and its answer, or a broker's confirmation of every message.
	Timeout time.Duration // default 30s
	Retry   Retry
	// RateLimit bounds the messages sent a second; zero for no bound.
	RateLimit Rate
	// MaxLag: a batch that fails while its oldest message is older than
	// this (by commit time) goes to the dead letters, whatever
	// Retry.MaxAttempts says; 0 means no bound.
	MaxLag time.Duration
	// MaxLagBytes is max_lag given as a size: a batch that fails while
	// its oldest message is more than this many bytes of WAL behind the
	// server's WAL end goes to the dead letters; 0 means no bound. At
	// most one of MaxLag and MaxLagBytes is set.
	MaxLagBytes int64
	// PauseAfter: a sink whose attempts fail for this long, from the
	// first failed attempt after its last success, is paused (reason
	// pause_after) until the operator resumes it; 0 means never.
	PauseAfter time.Duration
	Window     Window
	Backlog    Backlog
	Backfill   Backfill

	Webhook  Webhook  // type webhook
	NATS     NATS     // type nats
	Kafka    Kafka    // type kafka
	Redis    Redis    // type redis
	RabbitMQ RabbitMQ // type rabbitmq
}

// The values of a sink's batch_by.
const (
	BatchByMessage     = "message"
	BatchByTransaction = "transaction"
)

// Webhook is where and how a sink of type webhook POSTs its batches.
type Webhook struct {
	URL string // http:// or https://
	// Secrets sign every request, each with its own signature, newest
	// first; empty for unsigned requests.
	Secrets []string
	Headers map[string]string
	// Compression is "gzip" to compress request bodies of 1 KiB or more,
	// "" for none.
	Compression string
	TLS         TLS
}

// NATS is the JetStream a sink of type nats publishes to.
type NATS struct {
	// URL is one or more nats:// (or tls://) server URLs, comma-separated.
	URL string
	// Subject is the subject template: {schema}, {table}, {action} and
	// {sink} stand for the message's values, mapped to subject tokens.
	Subject   string
	CredsFile string // a .creds file (user JWT and nkey seed); "" for none
	NKeyFile  string // an nkey seed file; "" for none
	TLS       TLS
}

// Kafka is the cluster and topic a sink of type kafka produces to.
type Kafka struct {
	Brokers []string // host:port seeds
	Topic   string   // a template, as NATS.Subject
	SASL    SASL     // zero: no SASL
	TLS     TLS
	// TLSSet says tls was written, so the client speaks TLS even with
	// the zero TLS (the system's CAs).
	TLSSet bool
}

// SASL authenticates a Kafka client.
type SASL struct {
	Mechanism string // PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	Username  string
	Password  string
}

// Redis is the server and stream a sink of type redis appends to.
type Redis struct {
	URL    string // redis:// or rediss://
	Stream string // a template, as NATS.Subject
	// MaxLen > 0 trims the stream on every XADD with MAXLEN ~ MaxLen.
	MaxLen int64
}

// RabbitMQ is the exchange a sink of type rabbitmq publishes to.
type RabbitMQ struct {
	URL        string // amqp:// or amqps://
	Exchange   string
	RoutingKey string // a template, as NATS.Subject
}

// Backlog bounds a sink's durable backlog.
type Backlog struct {
	MaxSize  int64  // default 1GiB
	WhenFull string // "block" (default) or "dead_letter"
}

// Backfill says when a sink is backfilled on its own.
type Backfill struct {
	OnCreate bool // backfill the sink's tables on its first start
}

// Window bounds what a sink holds undelivered in memory: the messages
// between its cursor and the newest one it took (what a restart would
// deliver again), and the bytes of those not yet acknowledged.
type Window struct {
	Messages int   // default 10000
	Bytes    int64 // default 64MiB
}

// Columns selects a table's columns: exactly one of Include (send only
// these) and Exclude (send all but these) is set, and it is not empty.
// Names are taken as written: they are the keys of the record.
type Columns struct {
	Include []string
	Exclude []string
}

// Keeps reports whether column passes the selection.
func (c Columns) Keeps(column string) bool {
	if c.Include != nil {
		return slices.Contains(c.Include, column)
	}
	return !slices.Contains(c.Exclude, column)
}

// Retry is a sink's retry schedule.
type Retry struct {
	Initial     time.Duration // default 1s
	Max         time.Duration // default 5m
	MaxAttempts int           // 0 means forever
	// Schedule, when not empty, replaces the exponential backoff: wait i
	// follows failed attempt i+1. MaxAttempts is then len(Schedule)+1,
	// and Initial and Max keep their defaults, unused.
	Schedule []time.Duration
}

// Rate is a number of messages per period: 200/s is {200, time.Second}.
// The zero Rate is no bound.
type Rate struct {
	Count int
	Per   time.Duration
}

// PerSecond is the rate in messages a second; 0 for no bound.
func (r Rate) PerSecond() float64 {
	if r.Count <= 0 || r.Per <= 0 {
		return 0
	}
	return float64(r.Count) / r.Per.Seconds()
}

// String is the rate as written: 200/s, 10/m; "" for no bound.
func (r Rate) String() string {
	switch {
	case r.Count <= 0 || r.Per <= 0:
		return ""
	case r.Per == time.Minute:
		return strconv.Itoa(r.Count) + "/m"
	}
	return strconv.Itoa(r.Count) + "/s"
}
