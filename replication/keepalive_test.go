package replication

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/internal/pgtest"
)

func TestStatusInterval(t *testing.T) {
	const s, ms = time.Second, time.Millisecond
	tests := []struct {
		name                                   string
		receiveTimeout, heartbeat, senderLimit time.Duration
		want                                   time.Duration
	}{
		{"defaults: wal_sender_timeout 60s is not binding", 30 * s, 10 * s, 60 * s, 10 * s},
		{"sender timeout off", 30 * s, 10 * s, 0, 10 * s},
		{"long receive timeout is capped", 5 * time.Minute, time.Minute, 0, 10 * s},
		{"receive timeout", 6 * s, 10 * s, 60 * s, 2 * s},
		{"heartbeat", 30 * s, 3 * s, 60 * s, 3 * s},
		{"short sender timeout wins over the defaults", 30 * s, 10 * s, 4 * s, s},
		{"sender timeout beside a shorter heartbeat", 30 * s, 200 * ms, 4 * s, 200 * ms},
		{"sender timeout beside a shorter receive timeout", 3 * s, 10 * s, 8 * s, s},
		{"tiny sender timeout is floored", 30 * s, 10 * s, 10 * ms, 100 * ms},
		{"floor does not override a shorter heartbeat", 30 * s, 20 * ms, 10 * ms, 20 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := statusInterval(tt.receiveTimeout, tt.heartbeat, tt.senderLimit)
			if got != tt.want {
				t.Fatalf("statusInterval(%v, %v, %v) = %v, want %v", tt.receiveTimeout, tt.heartbeat, tt.senderLimit, got, tt.want)
			}
			// Receive-timeout detection needs three reply requests within
			// receive_timeout; a walsender with a timeout needs updates well
			// within it.
			if 3*got > tt.receiveTimeout {
				t.Errorf("interval %v leaves fewer than three updates within receive_timeout %v", got, tt.receiveTimeout)
			}
			if tt.senderLimit >= 400*ms && 4*got > tt.senderLimit {
				t.Errorf("interval %v is more than a quarter of wal_sender_timeout %v", got, tt.senderLimit)
			}
		})
	}
}

func TestParseTimeSetting(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"-1", 0},
		{"1500", 1500 * time.Millisecond},
		{"1500ms", 1500 * time.Millisecond},
		{"4s", 4 * time.Second},
		{"1min", time.Minute},
		{"2h", 2 * time.Hour},
		{"7d", 7 * 24 * time.Hour},
		{"250us", 250 * time.Microsecond},
	}
	for _, tt := range tests {
		got, err := parseTimeSetting(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseTimeSetting(%q) = %v, %v; want %v, nil", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "s", "4 s", "4sec", "4S", "1.5s", "99999999999d"} {
		if got, err := parseTimeSetting(in); err == nil {
			t.Errorf("parseTimeSetting(%q) = %v, nil; want an error", in, got)
		}
	}
}

// TestSenderTimeout reads wal_sender_timeout on a real replication
// connection, set per session to values SHOW writes in different units.
func TestSenderTimeout(t *testing.T) {
	dsn := pgtest.Shared().DSN("")
	for setting, want := range map[string]time.Duration{
		"0":      0,
		"1500ms": 1500 * time.Millisecond,
		"4s":     4 * time.Second,
		"90s":    90 * time.Second,
		"120s":   2 * time.Minute,
		"3h":     3 * time.Hour,
	} {
		cfg, err := pgconn.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["replication"] = "database"
		cfg.RuntimeParams["wal_sender_timeout"] = setting
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			cancel()
			t.Fatalf("connect with wal_sender_timeout=%s: %v", setting, err)
		}
		got, err := senderTimeout(ctx, conn)
		conn.Close(context.Background())
		cancel()
		if err != nil || got != want {
			t.Errorf("senderTimeout with wal_sender_timeout=%s = %v, %v; want %v, nil", setting, got, err, want)
		}
	}
}
