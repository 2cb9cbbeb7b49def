package server

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/walhook/walhook/config"
)

// The interfaces below are what the server needs from the components that
// own walhook's state. Their method names differ, so one type (the relay,
// say) may implement several of them. A method's error is answered by kind:
// one wrapping ErrNotFound is 404, ErrConflict 409, ErrInvalid 400,
// ErrUnavailable 503, any other 500; the error's text is the answer's "error", so it must be fit to
// show an operator and hold no secret.

// Health says whether walhook is ready: replicating, with no sink paused by
// an error. role is "active" or "standby" (a standby is never ready); reason
// says why walhook is not ready, and is empty when it is.
type Health interface {
	Ready() (ok bool, reason, role string)
}

// Status reports the state of the relay and its sinks for GET /status. The
// server fills the report's Ready, Reason and Role from Health.
type Status interface {
	Status(ctx context.Context) (StatusReport, error)
}

// Sinks pauses and resumes sinks. Pausing a paused sink, or resuming a
// running one, is not an error.
type Sinks interface {
	PauseSink(ctx context.Context, sink string) error
	ResumeSink(ctx context.Context, sink string) error
}

// DeadLetters is the dead-letter store of every sink.
type DeadLetters interface {
	// ListDeadLetters returns a sink's dead letters, oldest first; the
	// messages may be left out (the list never carries them).
	ListDeadLetters(ctx context.Context, sink string) ([]DeadLetter, error)
	// DeadLetter returns one dead letter with its messages.
	DeadLetter(ctx context.Context, sink, id string) (DeadLetter, error)
	// ReplayDeadLetters queues dead letters for redelivery in their original
	// order and returns the IDs queued; no id means all of the sink's. A dead
	// letter is removed only once its redelivery is acknowledged.
	ReplayDeadLetters(ctx context.Context, sink string, ids []string) ([]string, error)
	// DropDeadLetter deletes a dead letter without delivering it.
	DropDeadLetter(ctx context.Context, sink, id string) error
}

// SinkConfigs shows a sink's configuration to the console, with every
// secret masked: the server shows the settings as they come.
type SinkConfigs interface {
	SinkConfig(ctx context.Context, sink string) ([]Setting, error)
}

// Setting is one key of a sink's configuration as the console shows it,
// such as {"retry.max_attempts", "5"}.
type Setting struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Backfills starts, lists and cancels backfills.
type Backfills interface {
	// StartBackfill accepts a backfill of a sink's tables (none means every
	// table of the sink) and returns it as accepted; it runs in the
	// background. where is an SQL condition, or "".
	StartBackfill(ctx context.Context, sink string, tables []config.Table, where string) (Backfill, error)
	// Backfills returns every backfill, running or finished.
	Backfills(ctx context.Context) ([]Backfill, error)
	// CancelBackfill stops a running backfill.
	CancelBackfill(ctx context.Context, id string) error
}

// Errors an interface method wraps to say what kind of failure it had.
var (
	// ErrNotFound: the sink, dead letter or backfill does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the request clashes with the current state, such as
	// cancelling a finished backfill (409).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request is wrong, such as a table without a primary
	// key or a table the sink does not capture (400).
	ErrInvalid = errors.New("invalid request")
	// ErrUnavailable: this instance cannot do it now, such as a standby
	// asked about sinks the active instance runs (503).
	ErrUnavailable = errors.New("unavailable")
)

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

// Readiness is the body of /readyz.
type Readiness struct {
	Ready  bool   `json:"ready"`
	Role   string `json:"role,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// StatusReport is the body of GET /api/v1/status. Positions are written as
// change.Position prints them ("0/16B3748:3"), LSNs as "0/16B3748".
type StatusReport struct {
	Ready  bool   `json:"ready"`
	Role   string `json:"role,omitempty"`
	Reason string `json:"reason,omitempty"`

	// Active is the instance of the active/passive group (state.url) that
	// holds the slot's lease: this one when Role is "active"; nil without
	// a group, or when no instance holds it.
	Active *Instance `json:"active,omitempty"`
	// Instance is the walhook process that answered, its Since when its
	// admin server started; the server fills it in.
	Instance *Instance `json:"instance,omitempty"`

	Version     string `json:"version,omitempty"`
	Slot        string `json:"slot"`
	Publication string `json:"publication,omitempty"`
	// Connected says whether the replication connection is streaming.
	Connected bool `json:"connected"`
	// FlushLSN is the flush LSN walhook last reported to PostgreSQL (the
	// slot's confirmed_flush_lsn follows it).
	FlushLSN string `json:"flush_lsn,omitempty"`
	// ReceivedLSN is the last WAL position received from the server.
	ReceivedLSN string `json:"received_lsn,omitempty"`
	// ServerWALEnd is the server's WAL end as the last heartbeat saw it;
	// LagBytes is ServerWALEnd minus FlushLSN.
	ServerWALEnd  string     `json:"server_wal_end,omitempty"`
	LagBytes      int64      `json:"lag_bytes"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	// HeartbeatAgeSeconds is how long ago LastHeartbeat was, by the
	// server's clock; LagSeconds the largest of the sinks' LagSeconds (the
	// age of the oldest commit some sink has not delivered). The server
	// fills both in.
	HeartbeatAgeSeconds *float64     `json:"heartbeat_age_seconds,omitempty"`
	LagSeconds          float64      `json:"lag_seconds"`
	Reconnects          uint64       `json:"reconnects"`
	Sinks               []SinkStatus `json:"sinks"`
	// Backfills are every backfill, running or finished, oldest first.
	Backfills []Backfill `json:"backfills,omitempty"`
}

// Instance names a walhook process.
type Instance struct {
	Host  string    `json:"host"`
	PID   int       `json:"pid"`
	Since time.Time `json:"since"` // when it became active
}

// SinkStatus is one sink in a StatusReport.
type SinkStatus struct {
	Name string `json:"name"`
	// Type is the sink's destination type: webhook, nats, kafka, ...
	Type string `json:"type,omitempty"`
	// State is "running", "paused" (by the operator or by the destination,
	// see PausedReason), "failing" (the last attempt failed) or
	// "backlogged" (messages wait in the sink's backlog on disk).
	State string `json:"state"`
	// PausedReason says who or what paused the sink: "operator", "gone"
	// (the destination answered 410) or "pause_after" (it failed for its
	// pause_after without one success); empty while not paused. PausedAt
	// is when it was paused. LastError carries any detail.
	PausedReason string     `json:"paused_reason,omitempty"`
	PausedAt     *time.Time `json:"paused_at,omitempty"`

	Acked   string `json:"acked,omitempty"`    // highest contiguously acknowledged position
	SafeLSN string `json:"safe_lsn,omitempty"` // the sink's part of the flush LSN
	// LagBytes is the server's WAL end minus SafeLSN; LagSeconds the age of
	// the oldest undelivered commit (0 when nothing is undelivered).
	LagBytes   int64   `json:"lag_bytes"`
	LagSeconds float64 `json:"lag_seconds"`

	Queued    int64 `json:"queued"`    // taken and not yet delivered
	InFlight  int64 `json:"in_flight"` // batches being delivered, retries included
	Delivered int64 `json:"delivered"`
	// DeliveredPerSec is the messages delivered per second over the last
	// minute (or since the sink started, if that is less).
	DeliveredPerSec float64    `json:"delivered_per_sec"`
	FailedAttempts  int64      `json:"failed_attempts"`
	LastError       string     `json:"last_error,omitempty"`
	LastErrorAt     *time.Time `json:"last_error_at,omitempty"`
	DeadLetters     int64      `json:"dead_letters"`
	BacklogCount    int64      `json:"backlog_count"`
	BacklogBytes    int64      `json:"backlog_bytes"`
	// FilterErrors counts the messages the sink's filter failed on (see
	// filter_errors).
	FilterErrors uint64 `json:"filter_errors"`
}

// DeadLetter is a batch that failed its last attempt.
type DeadLetter struct {
	ID       string `json:"id"`
	Sink     string `json:"sink"`
	Count    int    `json:"count"`           // messages in the batch
	First    string `json:"first,omitempty"` // position of the first message
	Last     string `json:"last,omitempty"`  // position of the last message
	Attempts int    `json:"attempts"`
	// Reason says why the batch became a dead letter: max_attempts,
	// max_lag, backlog_full or filter_error.
	Reason string `json:"reason,omitempty"`
	// LastStatus is the HTTP status of the last attempt; 0 when it got no
	// answer (a timeout, a refused connection).
	LastStatus     int       `json:"last_status"`
	LastError      string    `json:"last_error,omitempty"`
	FirstAttemptAt time.Time `json:"first_attempt_at"`
	LastAttemptAt  time.Time `json:"last_attempt_at"`
	// Messages are the batch's messages as they were delivered; only
	// GET sinks/{name}/dlq/{id} carries them.
	Messages []json.RawMessage `json:"messages,omitempty"`
}

// DeadLetterList is the body of GET /api/v1/sinks/{name}/dlq.
type DeadLetterList struct {
	Sink        string       `json:"sink"`
	DeadLetters []DeadLetter `json:"dead_letters"`
}

// ReplayRequest is the body of POST /api/v1/sinks/{name}/dlq/replay. No IDs
// (or no body at all) replays every dead letter of the sink.
type ReplayRequest struct {
	IDs []string `json:"ids,omitempty"`
}

// ReplayResult is the answer to a replay: the dead letters queued.
type ReplayResult struct {
	Sink      string   `json:"sink"`
	Replaying []string `json:"replaying"`
}

// SinkState is the answer to a pause or resume.
type SinkState struct {
	Sink   string `json:"sink"`
	Paused bool   `json:"paused"`
}

// BackfillRequest is the body of POST /api/v1/sinks/{name}/backfills. Tables
// are written as in the configuration ("public.orders",
// `"Sales"."Order Items"`); none (or no body) means every table of the sink.
type BackfillRequest struct {
	Tables []string `json:"tables,omitempty"`
	Where  string   `json:"where,omitempty"`
}

// Backfill is one backfill and its progress.
type Backfill struct {
	ID   string `json:"id"`
	Sink string `json:"sink"`
	// State is "running", "done", "cancelled" or "failed".
	State  string          `json:"state"`
	Where  string          `json:"where,omitempty"`
	Tables []TableProgress `json:"tables"`
	// RowsDone and RowsEstimate add up the tables; RowsEstimate comes from
	// reltuples, so it is an estimate.
	RowsDone     int64      `json:"rows_done"`
	RowsEstimate int64      `json:"rows_estimate"`
	RowsPerSec   float64    `json:"rows_per_sec"`
	StartedAt    time.Time  `json:"started_at"`
	FinishedAt   *time.Time `json:"finished_at,omitempty"`
	Error        string     `json:"error,omitempty"`
}

// TableProgress is a backfill's progress on one table.
type TableProgress struct {
	Table        string `json:"table"` // schema.name
	RowsDone     int64  `json:"rows_done"`
	RowsEstimate int64  `json:"rows_estimate"`
	Done         bool   `json:"done"`
}

// BackfillList is the body of GET /api/v1/backfills.
type BackfillList struct {
	Backfills []Backfill `json:"backfills"`
}
