package replication

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// TestTranslate checks how server errors about the slot become walhook's:
// the messages are PostgreSQL 15's.
func TestTranslate(t *testing.T) {
	tests := []struct {
		name      string
		err       *pgconn.PgError
		lost      bool
		activePID int
		says      string // in the error, when it is not ""
	}{
		{"in use", &pgconn.PgError{Code: "55006", Message: `replication slot "walhook" is active for PID 4242`}, false, 4242, ""},
		{"dropped", &pgconn.PgError{Code: "42704", Message: `replication slot "walhook" does not exist`}, true, 0, ""},
		{"invalidated", &pgconn.PgError{Code: "55000", Message: `cannot read from logical replication slot "walhook"`,
			Detail: "This slot has been invalidated because it exceeded the maximum reserved size."}, true, 0, "(wal_removed): it fell further behind than max_slot_wal_keep_size"},
		// PostgreSQL 16 on a standby.
		{"conflicting", &pgconn.PgError{Code: "55000", Message: `can no longer get changes from replication slot "walhook"`,
			Detail: "This slot has been invalidated because it was conflicting with recovery."}, true, 0, "(conflicting with recovery): it conflicted with recovery on this standby"},
		// PostgreSQL 17 and 18.
		{"rows removed", &pgconn.PgError{Code: "55000", Message: `can no longer access replication slot "walhook"`,
			Detail: `This replication slot has been invalidated due to "rows_removed".`}, true, 0, "(rows_removed): catalog rows it still needed"},
		{"wal level", &pgconn.PgError{Code: "55000", Message: `can no longer access replication slot "walhook"`,
			Detail: `This replication slot has been invalidated due to "wal_level_insufficient".`}, true, 0, "keep wal_level = logical on the primary"},
		{"idle", &pgconn.PgError{Code: "55000", Message: `can no longer access replication slot "walhook"`,
			Detail: `This replication slot has been invalidated due to "idle_timeout".`}, true, 0, "longer than idle_replication_slot_timeout"},
		{"a new reason", &pgconn.PgError{Code: "55000", Message: `can no longer access replication slot "walhook"`,
			Detail: `This replication slot has been invalidated due to "sunspots".`}, true, 0, `PostgreSQL gives the reason "sunspots"`},
		{"publication dropped", &pgconn.PgError{Code: "42704", Message: `publication "walhook" does not exist`,
			Where: `slot "walhook", output plugin "pgoutput", in the change callback, associated LSN 0/19451A0`}, false, 0, ""},
		{"other undefined object", &pgconn.PgError{Code: "42704", Message: `type "x" does not exist`}, false, 0, ""},
		{"other prerequisite", &pgconn.PgError{Code: "55000", Message: `replication slot "walhook" was not created in this database`}, false, 0, ""},
		{"unrelated", &pgconn.PgError{Code: "42501", Message: "permission denied"}, false, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := translate(config.Source{Slot: "walhook", Publication: "walhook"}, fmt.Errorf("start replication: %w", tt.err))
			if got := errors.Is(err, ErrSlotLost); got != tt.lost {
				t.Errorf("errors.Is(%v, ErrSlotLost) = %t, want %t", err, got, tt.lost)
			}
			if tt.says != "" && !strings.Contains(err.Error(), tt.says) {
				t.Errorf("got error %q, want it to say %q", err, tt.says)
			}
			var active *ErrSlotActive
			if got := errors.As(err, &active); got != (tt.activePID != 0) {
				t.Fatalf("errors.As(%v, *ErrSlotActive) = %t, want %t", err, got, tt.activePID != 0)
			}
			if active != nil && (active.PID != tt.activePID || active.Slot != "walhook") {
				t.Errorf("got %+v, want slot walhook held by PID %d", active, tt.activePID)
			}
		})
	}
}

func TestIsConnLost(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.ErrUnexpectedEOF, true},
		{fmt.Errorf("receive: %w", errDead), true},
		{&pgconn.PgError{Code: "57P01"}, true}, // terminated by an administrator
		{&pgconn.PgError{Code: "57P03"}, true}, // the database system is starting up
		{&pgconn.PgError{Code: "53300"}, true}, // too many clients
		{&pgconn.PgError{Code: "08006"}, true}, // connection failure
		{&pgconn.PgError{Code: "42501"}, false},
		{fmt.Errorf("x: %w", ErrSlotLost), false},
		{&ErrSlotActive{Slot: "walhook", PID: 1}, false},
	}
	for _, tt := range tests {
		if got := IsConnLost(tt.err); got != tt.want {
			t.Errorf("IsConnLost(%v) = %t, want %t", tt.err, got, tt.want)
		}
	}
}

// TestPublicationDropped drops the publication under a running stream
// (PostgreSQL 15): the stream must end with an error that names the
// publication, says the slot is fine and does not advise dropping it. Once
// the publication exists again, the change written while it was missing
// still cannot be decoded: the error must say so, and what to do.
func TestPublicationDropped(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	ts := startStream(t, db, streamOpts{})
	db.exec(t, `INSERT INTO t VALUES (1)`)
	wantMessages(t, ts.sync(t), `{"action":"insert","table":"public.t","record":{"id":1},"changes":null}`)

	db.exec(t, `DROP PUBLICATION walhook`, `INSERT INTO t VALUES (2)`)
	_, err := ts.end(t, 30*time.Second)
	checkPublicationMissing(t, err, `publication "walhook" does not exist`, "CREATE PUBLICATION", "publish_via_partition_root = true")

	// startStream creates the publication again, as walhook run does.
	ts = startStream(t, db, streamOpts{})
	msgs, err := ts.end(t, 30*time.Second)
	for _, m := range msgs {
		if m.Action == change.Insert && string(m.Record) != `{"id":1}` {
			t.Errorf("got %s, want nothing of the change written without the publication", render(m))
		}
	}
	checkPublicationMissing(t, err, `publication "walhook" did not exist when`, "pg_replication_slot_advance", "backfill")
}

func checkPublicationMissing(t *testing.T, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, ErrPublicationMissing) {
		t.Fatalf("got error %v, want one that is ErrPublicationMissing", err)
	}
	if errors.Is(err, ErrSlotLost) || IsConnLost(err) {
		t.Errorf("got error %v, which is a lost slot or connection; want only a missing publication", err)
	}
	msg := err.Error()
	t.Logf("the error: %s", msg)
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("got error %q, want it to say %q", msg, w)
		}
	}
	if strings.Contains(msg, "slot drop") || strings.Contains(msg, "pg_drop_replication_slot") {
		t.Errorf("got error %q, which advises dropping a healthy slot", msg)
	}
}
