// Package replication reads a PostgreSQL database's changes through a
// logical replication slot with the pgoutput plugin and turns them into
// change messages and position-only events.
package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/pgvalue"
	"golang.org/x/sync/errgroup"
)

// EventKind says what an Event carries.
type EventKind uint8

// The kinds of events a Stream emits.
const (
	// EventChange carries a committed change in Msg.
	EventChange EventKind = iota + 1
	// EventCommit says a transaction ended at LSN: once every change
	// emitted before it is delivered, LSN is safe to flush.
	EventCommit
	// EventIdle says the server has sent everything before LSN and no
	// transaction is open: LSN is safe to flush once every change emitted
	// before it is delivered.
	EventIdle
	// EventWatermark carries one of walhook's own backfill watermarks, a
	// transactional pg_logical_emit_message with prefix WatermarkPrefix,
	// in Msg: its Pos, CommitTime and XID, and in Content the raw payload
	// (not JSON). It is never a message for a sink.
	EventWatermark
)

// WatermarkPrefix is the prefix of the backfill's watermark messages. The
// stream recognises it whatever source.messages says.
const WatermarkPrefix = "walhook.backfill"

// Event is one item of the stream, in order.
type Event struct {
	Kind EventKind
	Msg  *change.Message
	LSN  pglogrepl.LSN
	// Reserved is what the stream took of its Budget for Msg: its size as
	// decoded. Every consumer gives back exactly this once it took the
	// event (Taker.Took), whatever became of Msg since (a projection
	// makes it smaller); 0 for an event outside the budget.
	Reserved int
}

// FinalStatusTimeout bounds the final standby status update Run sends when
// its context ends.
const FinalStatusTimeout = time.Second

// Stream streams one slot. Run may be called again after it returned, to
// reconnect.
type Stream struct {
	src     config.Source
	log     *slog.Logger
	flushed func() pglogrepl.LSN
	// Budget, when set, bounds the bytes of messages handed on and not
	// yet taken by every consumer.
	Budget *Budget
	// Progress, when set, receives what the stream sees.
	Progress *Progress
	// SkipSchemas are schemas whose row changes and truncates are dropped
	// (see Source.SkipSchemas).
	SkipSchemas []string
	// CheckSystem, when set, is asked on every connection, before
	// streaming starts, whether walhook may stream from the server it
	// reached (see Source.CheckSystem); its error ends Run.
	CheckSystem func(ctx context.Context, sys System) error
	// Role, when set, tells where heartbeats go (Role.WriteURL; none when
	// it is empty); unset, they go to source.url.
	Role func() Role
}

// New returns a stream of src's slot. flushed gives the LSN that is safe to
// report to PostgreSQL as flushed; it is read for every status update.
func New(src config.Source, flushed func() pglogrepl.LSN, log *slog.Logger) *Stream {
	return &Stream{src: src, log: log, flushed: flushed}
}

// Run connects, starts streaming from the slot's confirmed position and
// sends events to out, in order. Once stop is closed it reads no more, but
// keeps the connection alive with status updates until ctx ends; then it
// sends a final status update with the flushed LSN and returns ctx's error.
// It returns early with an error if the connection fails; IsConnLost tells
// whether a reconnect is worth trying.
func (s *Stream) Run(ctx context.Context, stop <-chan struct{}, out chan<- []Event) error {
	catalog, err := pgx.Connect(ctx, s.src.URL)
	if err != nil {
		return connectError(err)
	}
	defer catalog.Close(context.Background())

	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if s.CheckSystem != nil {
		// On this connection: with several hosts in source.url, another
		// connection may reach another server.
		sys, err := identifySystem(ctx, conn)
		if err != nil {
			return err
		}
		if err := s.CheckSystem(ctx, sys); err != nil {
			return err
		}
	}
	timeout, err := senderTimeout(ctx, conn)
	if err != nil {
		return err
	}
	interval := statusInterval(s.src.ReceiveTimeout, s.src.Heartbeat, timeout)

	err = pglogrepl.StartReplication(ctx, conn, s.src.Slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{
			"proto_version '1'",
			fmt.Sprintf("publication_names '%s'", escapeLiteral(s.src.Publication)),
			"messages 'true'",
		},
	})
	if err != nil {
		return explainPublication(ctx, catalog, s.src, fmt.Errorf("start replication from slot %q: %w", s.src.Slot, translate(s.src, err)))
	}
	s.log.Info("streaming", "slot", s.src.Slot, "publication", s.src.Publication,
		"wal_sender_timeout", timeout, "status_interval", interval)

	if s.Progress != nil {
		s.Progress.connected.Store(true)
		defer s.Progress.connected.Store(false)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { s.heartbeat(gctx); return nil })
	dec := newDecoder(pgvalue.NewTypes(pgvalue.QueryCatalog(catalog)), queryPrimaryKey(catalog), s.src.Messages, s.SkipSchemas...)
	dec.partialFull = queryPartialFull(catalog)
	g.Go(func() error {
		r := &receiver{
			s:        s,
			conn:     conn,
			interval: interval,
			dec:      dec,
			out:      out,
			stop:     stop,
		}
		return r.run(gctx)
	})
	return explainPublication(ctx, catalog, s.src, g.Wait())
}

func (s *Stream) connect(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(s.src.URL)
	if err != nil {
		return nil, fmt.Errorf("source.url: %w", err)
	}
	// Values are formatted by the walsender with these settings; the
	// decoder relies on them.
	for k, v := range pgvalue.SessionSettings {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "walhook"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(err)
	}
	return conn, nil
}

// receiver is one connection's receive loop.
type receiver struct {
	s          *Stream
	conn       *pgconn.PgConn
	dec        *decoder
	out        chan<- []Event
	pending    []Event // emitted, not yet handed on (see emit)
	stop       <-chan struct{}
	interval   time.Duration // between status updates, see statusInterval
	nextStatus time.Time
	lastRecv   time.Time
}

func (r *receiver) run(ctx context.Context) error {
	defer r.dropPending()
	r.lastRecv = time.Now()
	if err := r.sendStatus(ctx, true); err != nil {
		return err
	}
	readCtx, cancelRead := context.WithCancel(ctx)
	defer cancelRead()
	recv := readDeadline{conn: r.conn.Conn()}
	go func() {
		select {
		case <-r.stop:
			cancelRead()
		case <-readCtx.Done():
		}
		recv.interrupt()
	}()

	// now is the time after the last receive (or the last timeout): one
	// clock read a message, which is a measurable share of a backlog's
	// drain on some virtual machines.
	now := r.lastRecv
	for readCtx.Err() == nil {
		if !now.Before(r.nextStatus) {
			if err := r.sendStatus(ctx, true); err != nil {
				return err
			}
		}
		if !recv.until(r.nextStatus) {
			break
		}
		// Background: the deadline is on the connection, see readDeadline.
		raw, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) || readCtx.Err() != nil {
				now = time.Now()
				if readCtx.Err() == nil && now.Sub(r.lastRecv) > r.s.src.ReceiveTimeout {
					return errDead
				}
				continue
			}
			return fmt.Errorf("receive from slot %q: %w", r.s.src.Slot, translate(r.s.src, err))
		}
		if err := r.handle(readCtx, raw); err != nil {
			if readCtx.Err() != nil {
				break // stopped while handing an event on; it is sent again after a restart
			}
			return err
		}
		// After handle, which may have waited for the sinks: a wait is not
		// silence from the server.
		now = time.Now()
		r.lastRecv = now
	}
	if ctx.Err() != nil {
		return r.final()
	}

	// Stopped: read nothing more, keep the connection alive until ctx ends,
	// on the same schedule as before, so no gap is longer than the interval.
	t := time.NewTimer(time.Until(r.nextStatus))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return r.final()
		case <-t.C:
			if err := r.sendStatus(ctx, false); err != nil {
				return err
			}
			t.Reset(time.Until(r.nextStatus))
		}
	}
}

// readDeadline bounds each receive by the time the next status update is
// due, with a read deadline on the connection itself. A context with a
// deadline would do the same, but pgconn then registers and removes a
// watcher on every message, which cost about a twentieth of walhook's CPU
// while draining a backlog. Nothing else sets a read deadline on the
// replication connection while the receiver runs (status updates are
// written without one), so the deadline set stays set.
type readDeadline struct {
	conn net.Conn

	mu      sync.Mutex
	at      time.Time
	stopped bool
}

// until makes reads time out at t. It returns false once interrupt was
// called: the receiver is to stop reading.
func (d *readDeadline) until(t time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return false
	}
	if !d.at.Equal(t) {
		d.conn.SetReadDeadline(t)
		d.at = t
	}
	return true
}

// interrupt ends a read in progress and every later until.
func (d *readDeadline) interrupt() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	d.conn.SetReadDeadline(time.Now())
}

func (r *receiver) final() error {
	ctx, cancel := context.WithTimeout(context.Background(), FinalStatusTimeout)
	defer cancel()
	if err := r.sendStatus(ctx, false); err != nil {
		r.s.log.Warn("final standby status not sent", "err", err)
	} else {
		r.s.log.Info("sent final standby status", "flush_lsn", r.s.flushed().String())
	}
	return context.Canceled
}

func (r *receiver) sendStatus(ctx context.Context, reply bool) error {
	lsn := r.s.flushed()
	err := pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn,
		WALFlushPosition: lsn,
		WALApplyPosition: lsn,
		ReplyRequested:   reply,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	r.nextStatus = time.Now().Add(r.interval)
	return nil
}

func (r *receiver) handle(ctx context.Context, raw pgproto3.BackendMessage) error {
	switch msg := raw.(type) {
	case *pgproto3.CopyData:
		if len(msg.Data) == 0 {
			return errors.New("empty CopyData message")
		}
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("parse keepalive: %w", err)
			}
			r.s.Progress.receivedAt(ka.ServerWALEnd)
			if ka.ReplyRequested {
				if err := r.sendStatus(ctx, false); err != nil {
					return err
				}
			}
			if !r.dec.inTx {
				return r.emit(ctx, Event{Kind: EventIdle, LSN: ka.ServerWALEnd})
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("parse XLogData: %w", err)
			}
			r.s.Progress.receivedAt(xld.WALStart)
			if err := r.dec.decode(ctx, xld.WALData, xld.WALStart, xld.ServerTime, func(ev Event) error { return r.emit(ctx, ev) }); err != nil {
				return fmt.Errorf("decode at %s: %w", xld.WALStart, err)
			}
		}
	case *pgproto3.ErrorResponse:
		return fmt.Errorf("replication from slot %q: %w", r.s.src.Slot, translate(r.s.src, pgconn.ErrorResponseToPgError(msg)))
	case *pgproto3.CopyDone:
		return fmt.Errorf("replication from slot %q: server ended the stream: %w", r.s.src.Slot, errDead)
	}
	return nil
}

// emitBatch is the most events the receiver hands on at once. Events go
// on in batches so that a backlog costs one hand-off to the relay per
// batch rather than per event: a transaction's changes wait until its
// commit, or until emitBatch of them are together; every event outside a
// transaction goes on at once.
const emitBatch = 64

// emit adds an event to the pending batch and hands the batch on once it
// is full or ev ends a transaction (see emitBatch).
func (r *receiver) emit(ctx context.Context, ev Event) error {
	if ev.Kind == EventChange && r.s.Budget != nil {
		ev.Reserved = ev.Msg.Size()
		if !r.s.Budget.reserve(ev.Reserved) {
			// What is pending holds budget too: hand it on before waiting
			// for the consumers to free some.
			if err := r.handOn(ctx); err != nil {
				return err
			}
			if err := r.waitBudget(ctx, ev.Reserved); err != nil {
				return err
			}
		}
	}
	r.pending = append(r.pending, ev)
	if len(r.pending) >= emitBatch || !r.dec.inTx {
		return r.handOn(ctx)
	}
	return nil
}

// handOn hands the pending batch on, sending status updates on the usual
// schedule while it waits, so that a long wait for a blocked sink never
// lets wal_sender_timeout end the connection (see statusInterval).
func (r *receiver) handOn(ctx context.Context) error {
	if len(r.pending) == 0 {
		return nil
	}
	batch := r.pending
	r.s.Progress.handedOn(batch)
	select {
	case r.out <- batch:
		r.pending = nil
		return nil
	default:
	}
	t := time.NewTimer(time.Until(r.nextStatus))
	defer t.Stop()
	for {
		select {
		case r.out <- batch:
			r.pending = nil
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := r.sendStatus(ctx, false); err != nil {
				return err
			}
			t.Reset(time.Until(r.nextStatus))
		}
	}
}

// dropPending gives back the budget of the events never handed on: the
// connection ends, and the next one reads them again from the slot.
// Without it every connection lost mid-transaction would keep up to a
// batch of the budget spent for good.
func (r *receiver) dropPending() {
	for _, ev := range r.pending {
		r.s.Budget.release(ev.Reserved)
	}
	r.pending = nil
}

// waitBudget waits until the budget has room for n bytes, and takes them,
// sending status updates meanwhile.
func (r *receiver) waitBudget(ctx context.Context, n int) error {
	t := time.NewTimer(time.Until(r.nextStatus))
	defer t.Stop()
	for !r.s.Budget.reserve(n) {
		select {
		case <-r.s.Budget.freed:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := r.sendStatus(ctx, false); err != nil {
				return err
			}
			t.Reset(time.Until(r.nextStatus))
		}
	}
	return nil
}

// heartbeat writes a logical decoding message every source.heartbeat, so
// that the slot moves even when nothing that walhook captures changes.
func (s *Stream) heartbeat(ctx context.Context) {
	if s.src.Heartbeat <= 0 {
		return
	}
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(s.src.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if conn == nil {
			url := s.src.URL
			if s.Role != nil {
				if url = s.Role().WriteURL; url == "" {
					continue // a standby without source.primary_url
				}
			}
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				s.log.Debug("heartbeat: connect", "err", err)
				continue
			}
			conn = c
		}
		var end pglogrepl.LSN
		if err := conn.QueryRow(ctx, "SELECT pg_logical_emit_message(false, $1, '')::text", heartbeatPrefix).Scan(&end); err != nil {
			s.log.Debug("heartbeat", "err", err)
			conn.Close(context.Background())
			conn = nil
			continue
		}
		if s.Progress != nil {
			// The heartbeat's own LSN is where the server's WAL ended a
			// moment ago: what replication lag is measured against.
			s.Progress.serverEnd.Store(uint64(end))
			s.Progress.heartbeatAt.Store(time.Now().UnixNano())
		}
	}
}

// queryPrimaryKey returns the columns of a table's primary key, in key order.
func queryPrimaryKey(conn *pgx.Conn) func(ctx context.Context, relid uint32) ([]string, error) {
	return func(ctx context.Context, relid uint32) ([]string, error) {
		rows, err := conn.Query(ctx, `
			SELECT a.attname FROM pg_index i
			CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.n`, relid)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
}

// queryPartialFull tells whether relid is a partitioned table one of
// whose partitions has an identity other than FULL (decoder.partialFull).
func queryPartialFull(conn *pgx.Conn) func(ctx context.Context, relid uint32) (bool, error) {
	return func(ctx context.Context, relid uint32) (bool, error) {
		var partial bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_partition_tree($1::oid::regclass) t
			JOIN pg_class l ON l.oid = t.relid WHERE t.isleaf AND l.relreplident <> 'f')`, relid).Scan(&partial)
		return partial, err
	}
}

func escapeLiteral(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(out)
}
