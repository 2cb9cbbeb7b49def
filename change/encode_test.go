package change

import (
	"encoding/json"
	"math"
	"math/rand"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

func TestAppendLSNMatchesPglogrepl(t *testing.T) {
	for _, v := range []uint64{0, 1, 0x16B3748, 0x16_B374D848, math.MaxUint32, math.MaxUint64} {
		lsn := pglogrepl.LSN(v)
		if got, want := string(AppendLSN(nil, lsn)), lsn.String(); got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

func TestPositionRoundTrip(t *testing.T) {
	p := Position{CommitLSN: 0x16B3748, Idx: 3}
	if got, want := p.String(), "0/16B3748:3"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	q, err := ParsePosition(p.String())
	if err != nil || q != p {
		t.Fatalf("got %v, %v; want %v", q, err, p)
	}
	for _, bad := range []string{"", "0/16B3748", "x:1", "0/1:-1"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition(%q) succeeded, want an error", bad)
		}
	}
}

// TestAppendJSONContract checks the documented message shape field by
// field.
func TestAppendJSONContract(t *testing.T) {
	m := &Message{
		Action:     Update,
		Schema:     "public",
		Table:      "orders",
		Record:     []byte(`{"id":42,"status":"paid"}`),
		Changes:    []byte(`{"status":"new"}`),
		Pos:        Position{CommitLSN: 0x16B3748, Idx: 3},
		CommitTime: time.Date(2026, 11, 26, 12, 20, 0, 123456000, time.FixedZone("CET", 3600)),
		XID:        771,
	}
	got := string(m.AppendJSON(nil, "orders"))
	want := `{"action":"update","record":{"id":42,"status":"paid"},"changes":{"status":"new"},"metadata":{"table_schema":"public","table_name":"orders","commit_lsn":"0/16B3748","commit_idx":3,"commit_timestamp":"2026-11-26T11:20:00.123456Z","xid":771,"idempotency_key":"0/16B3748:3","sink":"orders"}}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	m.Action, m.Record, m.Changes, m.UnchangedToast = Truncate, nil, nil, []string{"big"}
	var v map[string]any
	if err := json.Unmarshal(AppendBody(nil, []*Message{m, m}, "s\"1"), &v); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	data := v["data"].([]any)
	first := data[0].(map[string]any)
	if first["record"] != nil || first["changes"] != nil {
		t.Fatalf("got record %v changes %v on truncate, want null", first["record"], first["changes"])
	}
	md := first["metadata"].(map[string]any)
	if md["sink"] != "s\"1" || len(md["unchanged_toast_columns"].([]any)) != 1 {
		t.Fatalf("got metadata %v", md)
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", `"plain"`},
		{"q\"b\\", `"q\"b\\"`},
		{"\n\r\t\x00\x1f", `"\n\r\t\u0000\u001f"`},
		{"é€😀", `"é€😀"`},
		{"\xff", `"\ufffd"`},
		{"\u2028", `"\u2028"`},
		{"<&>", `"<&>"`},
	}
	for _, tt := range tests {
		got := string(AppendString(nil, tt.in))
		if got != tt.want {
			t.Errorf("AppendString(%q): got %s, want %s", tt.in, got, tt.want)
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("AppendString(%q) = %s is not JSON: %v", tt.in, got, err)
		}
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	m := &Message{Action: Insert, Schema: "public", Table: "orders", Record: []byte(`{"id":42,"status":"paid","amount":"19.90"}`),
		Pos: Position{CommitLSN: 0x16B3748, Idx: 3}, CommitTime: time.Now(), XID: 771}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = m.AppendJSON(buf[:0], "orders")
	}
}

// TestReadMessage: a backfilled row names its backfill, and its
// idempotency key depends on the backfill and the row, not the position it
// was read at.
func TestReadMessage(t *testing.T) {
	m := &Message{Action: Read, Schema: "public", Table: "orders", Record: []byte(`{"id":1}`),
		Pos: Position{CommitLSN: 0x200, Idx: 4}, Key: "public.orders\x001", BackfillID: "bf_1"}
	var got struct {
		Metadata map[string]any `json:"metadata"`
	}
	if err := json.Unmarshal(m.AppendJSON(nil, "s"), &got); err != nil {
		t.Fatal(err)
	}
	key := m.IdempotencyKey()
	if got.Metadata["backfill_id"] != "bf_1" || got.Metadata["idempotency_key"] != key {
		t.Errorf("got metadata %v, want backfill_id bf_1 and idempotency_key %s", got.Metadata, key)
	}
	if len(key) != len("bf_1:")+32 || key[:5] != "bf_1:" {
		t.Errorf("got key %q, want bf_1: and 32 hex digits", key)
	}
	again := *m
	again.Pos = Position{CommitLSN: 0x900, Idx: 1}
	other, otherBackfill := *m, *m
	other.Key = "public.orders\x002"
	otherBackfill.BackfillID = "bf_2"
	if again.IdempotencyKey() != key || other.IdempotencyKey() == key || otherBackfill.IdempotencyKey() == key {
		t.Errorf("keys: same row read again %s, another row %s, another backfill %s; want only the first equal to %s",
			again.IdempotencyKey(), other.IdempotencyKey(), otherBackfill.IdempotencyKey(), key)
	}
}

// TestAppendTimestamp: the hand-written formatting gives what the layout
// gives, for every year, in every time zone and at every precision.
func TestAppendTimestamp(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	zones := []*time.Location{time.UTC, time.FixedZone("east", 5*3600+1800), time.FixedZone("west", -11*3600)}
	times := []time.Time{
		{}, time.Unix(0, 0), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 6, 1, 0, 0, 0, 0, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 3, 9, 5, 7, 1000, time.UTC),
	}
	for range 10000 {
		times = append(times, time.Unix(rng.Int63n(400_000_000_000)-62_000_000_000, rng.Int63n(1e9)).In(zones[rng.Intn(len(zones))]))
	}
	for _, tm := range times {
		want := tm.UTC().Format(timestampLayout)
		if got := string(AppendTimestamp([]byte("x"), tm)[1:]); got != want {
			t.Fatalf("AppendTimestamp(%v) = %s, want %s", tm, got, want)
		}
	}
}

func BenchmarkAppendTimestamp(b *testing.B) {
	tm := time.Date(2026, 12, 3, 9, 5, 7, 123456789, time.UTC)
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = AppendTimestamp(buf[:0], tm)
	}
}

// TestAppendTransactionBody: the transaction object as the contract gives
// it, before data; without one the body is AppendBody's.
func TestAppendTransactionBody(t *testing.T) {
	m := &Message{Action: Insert, Schema: "public", Table: "t", Record: []byte(`{"id":1}`),
		Pos: Position{CommitLSN: 0x16B3748, Idx: 3}, CommitTime: time.Date(2026, 11, 26, 11, 20, 0, 123456000, time.UTC), XID: 771}
	tx := &Transaction{XID: 771, CommitLSN: 0x16B3748, CommitTime: m.CommitTime, Part: 2, Last: true}
	got := AppendTransactionBody(nil, []*Message{m}, "s", tx)
	want := `{"transaction":{"xid":771,"commit_lsn":"0/16B3748","commit_timestamp":"2026-11-26T11:20:00.123456Z","part":2,"last":true},"data":[` +
		string(m.AppendJSON(nil, "s")) + `]}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var v map[string]any
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if plain := AppendTransactionBody(nil, []*Message{m}, "s", nil); string(plain) != string(AppendBody(nil, []*Message{m}, "s")) || string(plain[:9]) != `{"data":[` {
		t.Fatalf("without a transaction: got %s", plain)
	}
}
