package replication

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
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
	}{
		{"in use", &pgconn.PgError{Code: "55006", Message: `replication slot "walhook" is active for PID 4242`}, false, 4242},
		{"dropped", &pgconn.PgError{Code: "42704", Message: `replication slot "walhook" does not exist`}, true, 0},
		{"invalidated", &pgconn.PgError{Code: "55000", Message: `cannot read from logical replication slot "walhook"`,
			Detail: "This slot has been invalidated because it exceeded the maximum reserved size."}, true, 0},
		{"other prerequisite", &pgconn.PgError{Code: "55000", Message: `replication slot "walhook" was not created in this database`}, false, 0},
		{"unrelated", &pgconn.PgError{Code: "42501", Message: "permission denied"}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := translate(config.Source{Slot: "walhook", Publication: "walhook"}, fmt.Errorf("start replication: %w", tt.err))
			if got := errors.Is(err, ErrSlotLost); got != tt.lost {
				t.Errorf("errors.Is(%v, ErrSlotLost) = %t, want %t", err, got, tt.lost)
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
