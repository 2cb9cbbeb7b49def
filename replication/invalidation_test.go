package replication

import (
	"context"
	"testing"
)

// TestSlotInvalidation reads why a slot is invalidated from views that have
// the columns of each PostgreSQL version: the real one of the test server
// (15: wal_status only), and stand-ins with the columns 16 and 17 add, so
// that each query walhook builds runs on a real server.
func TestSlotInvalidation(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	slot := db.name
	db.exec(t, `SELECT pg_create_logical_replication_slot('`+slot+`', 'pgoutput')`,
		`CREATE VIEW v15 (slot_name, wal_status) AS VALUES ('lost15'::name, 'lost'), ('ok15', 'reserved')`,
		`CREATE VIEW v16 (slot_name, wal_status, conflicting) AS VALUES
			('conflict16'::name, 'lost', true), ('lost16', 'lost', false), ('ok16', 'reserved', false)`,
		`CREATE VIEW v17 (slot_name, wal_status, conflicting, invalidation_reason) AS VALUES
			('rows17'::name, 'lost', true, 'rows_removed'), ('idle18', 'lost', false, 'idle_timeout'), ('ok17', 'reserved', false, NULL)`,
	)
	tests := []struct {
		view, slot string
		want       invalidation
	}{
		{slotsView, slot, ""},
		{slotsView, "no such slot", ""},
		{"v15", "lost15", invalWALRemoved},
		{"v15", "ok15", ""},
		{"v16", "conflict16", invalConflict},
		{"v16", "lost16", invalWALRemoved},
		{"v16", "ok16", ""},
		{"v17", "rows17", invalRowsRemoved},
		{"v17", "idle18", invalIdle},
		{"v17", "ok17", ""},
	}
	for _, tt := range tests {
		got, err := slotInvalidation(context.Background(), db.conn, tt.view, tt.slot)
		if err != nil {
			t.Fatalf("%s, slot %q: %v", tt.view, tt.slot, err)
		}
		if got != tt.want {
			t.Errorf("%s, slot %q: got %q, want %q", tt.view, tt.slot, got, tt.want)
		}
	}
}
