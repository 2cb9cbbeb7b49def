package replication

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/pgvalue"
)

// Decoder tests from protocol bytes built in code; no server.

var t0 = time.Date(2026, 11, 26, 11, 20, 0, 123456000, time.UTC)

// testCatalog stands for pg_type and pg_attribute: a few user types at
// fixed OIDs, and, for any other user OID, one of them picked by the OID,
// so that fuzzed Relation messages reach every kind.
func testCatalog(_ context.Context, oid uint32) (pgvalue.CatalogType, error) {
	const (
		enumOID      = 20000
		domainOID    = 20001
		compositeOID = 20002
		arrayOID     = 20003
		domArrayOID  = 20004
		missingOID   = 20005
	)
	if oid < enumOID || oid > missingOID {
		oid = enumOID + oid%(missingOID-enumOID+1)
	}
	switch oid {
	case enumOID:
		return pgvalue.CatalogType{Typtype: 'e', Category: 'E'}, nil
	case domainOID:
		return pgvalue.CatalogType{Typtype: 'd', Category: 'N', Base: pgtype.Int4OID}, nil
	case compositeOID:
		return pgvalue.CatalogType{Typtype: 'c', Category: 'C', Attrs: []pgvalue.Attr{
			{Name: "a", OID: pgtype.Int4OID}, {Name: "b", OID: pgtype.TextArrayOID}, {Name: "m", OID: enumOID}, {Name: "j", OID: pgtype.JSONBOID},
		}}, nil
	case arrayOID:
		return pgvalue.CatalogType{Typtype: 'b', Category: 'A', Elem: compositeOID, Delim: ','}, nil
	case domArrayOID:
		return pgvalue.CatalogType{Typtype: 'd', Category: 'A', Base: arrayOID}, nil
	default:
		return pgvalue.CatalogType{}, pgvalue.ErrNoType
	}
}

func newTestDecoder() *decoder {
	return newDecoder(pgvalue.NewTypes(testCatalog), func(context.Context, uint32) ([]string, error) { return []string{"id"}, nil }, []string{"app"})
}

// decodeAll feeds msgs to d and returns the rendered change messages and
// the first error.
func decodeAll(d *decoder, msgs ...[]byte) ([]string, error) {
	var out []string
	for _, m := range msgs {
		err := d.decode(context.Background(), m, 0x100, t0, func(ev Event) error {
			if ev.Kind == EventChange {
				out = append(out, render(ev.Msg))
				return checkFields(ev.Msg)
			}
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func TestDecode(t *testing.T) {
	const rel = 16500
	cols := []relCol{{"id", pgtype.Int4OID, true}, {"body", pgtype.TextOID, false}, {"n", pgtype.Int8OID, false}}
	relDefault := relationMsg(rel, "public", "t", 'd', cols...)
	relNoKey := relationMsg(rel, "public", "t", 'd', relCol{"id", pgtype.Int4OID, false}, relCol{"body", pgtype.TextOID, false}, relCol{"n", pgtype.Int8OID, false})
	relFull := relationMsg(rel, "public", "t", 'f', relCol{"id", pgtype.Int4OID, true}, relCol{"body", pgtype.TextOID, true}, relCol{"n", pgtype.Int8OID, true})
	begin, commit := beginMsg(0x200, t0, 7), commitMsg(0x200, 0x210, t0)
	tests := []struct {
		name string
		msgs [][]byte
		want []string
		err  string
	}{
		{
			name: "insert, update with unchanged TOAST, key change, delete",
			msgs: [][]byte{begin, relDefault,
				insertMsg(rel, text("1"), text("big"), text("10")),
				updateMsg(rel, 0, nil, text("1"), toast, text("11")),
				updateMsg(rel, 'K', []tupleVal{text("1"), nil, nil}, text("2"), toast, nil),
				deleteMsg(rel, 'K', text("2"), nil, nil),
				commit},
			want: []string{
				`{"action":"insert","table":"public.t","record":{"id":1,"body":"big","n":10},"changes":null}`,
				`{"action":"update","table":"public.t","record":{"id":1,"n":11},"changes":{},"unchanged_toast_columns":["body"]}`,
				`{"action":"update","table":"public.t","record":{"id":2,"n":null},"changes":{"id":1},"unchanged_toast_columns":["body"]}`,
				`{"action":"delete","table":"public.t","record":{"id":2},"changes":null}`,
			},
		},
		{
			name: "FULL fills unchanged TOAST from the old row",
			msgs: [][]byte{begin, relFull,
				updateMsg(rel, 'O', []tupleVal{text("1"), text("big"), text("10")}, text("1"), toast, text("11")),
				deleteMsg(rel, 'O', text("1"), text("big"), text("11")),
				commit},
			want: []string{
				`{"action":"update","table":"public.t","record":{"id":1,"body":"big","n":11},"changes":{"n":10}}`,
				`{"action":"delete","table":"public.t","record":{"id":1,"body":"big","n":11},"changes":null}`,
			},
		},
		{
			name: "truncate of several tables",
			msgs: [][]byte{begin, relDefault, relationMsg(rel+1, "s", "u", 'd', cols...), truncateMsg(3, rel, rel+1), commit},
			want: []string{
				`{"action":"truncate","table":"public.t","record":null,"changes":null}`,
				`{"action":"truncate","table":"s.u","record":null,"changes":null}`,
			},
		},
		{
			name: "logical messages",
			msgs: [][]byte{
				logicalMsg(false, 0x150, "app", []byte("hi")),
				logicalMsg(false, 0x151, "walhook.heartbeat", nil),
				logicalMsg(false, 0x152, "other", []byte("x")),
				begin,
				logicalMsg(true, 0x160, "app", []byte{0xff, 0}),
				commit},
			want: []string{
				`{"action":"message","prefix":"app","content":"hi","record":null,"changes":null}`,
				`{"action":"message","prefix":"app","content":{"base64":"/wA="},"record":null,"changes":null}`,
			},
		},
		{
			name: "user types from the catalog",
			msgs: [][]byte{begin, typeMsg(20002, "public", "c"),
				relationMsg(rel, "public", "t", 'd', relCol{"id", 20001, true}, relCol{"m", 20000, false}, relCol{"c", 20002, false}, relCol{"cs", 20004, false}, relCol{"gone", 20005, false}),
				insertMsg(rel, text("5"), text("happy"), text(`(1,"{a,""b c""}",sad,"{""k"": 1}")`), text(`{"(2,{},,)",NULL}`), text("(x)")),
				commit},
			want: []string{
				`{"action":"insert","table":"public.t","record":{"id":5,"m":"happy","c":{"a":1,"b":["a","b c"],"m":"sad","j":{"k": 1}},"cs":[{"a":2,"b":[],"m":null,"j":null},null],"gone":"(x)"},"changes":null}`,
			},
		},
		{
			name: "pg_catalog, which pgoutput sends as an empty namespace",
			msgs: [][]byte{begin, relationMsg(rel, "", "t", 'd', cols...), insertMsg(rel, text("1"), nil, nil), commit},
			want: []string{`{"action":"insert","table":"pg_catalog.t","record":{"id":1,"body":null,"n":null},"changes":null}`},
		},
		{
			// A root without identity: no column flagged, old rows as 'K'
			// holding what the partition's identity logged.
			name: "old rows of partitions under a root without identity",
			msgs: [][]byte{begin, relNoKey,
				updateMsg(rel, 'K', []tupleVal{text("1"), nil, nil}, text("2"), text("b"), nil),
				deleteMsg(rel, 'K', text("2"), nil, nil),
				deleteMsg(rel, 'K', text("3"), text("c"), nil),
				deleteMsg(rel, 'K', nil, nil, nil),
				commit},
			want: []string{
				`{"action":"update","table":"public.t","record":{"id":2,"body":"b","n":null},"changes":{"id":1}}`,
				`{"action":"delete","table":"public.t","record":{"id":2},"changes":null}`,
				`{"action":"delete","table":"public.t","record":{"id":3,"body":"c"},"changes":null}`,
				`{"action":"delete","table":"public.t","record":{"id":null,"body":null,"n":null},"changes":null}`,
			},
		},
		{name: "delete without a logged value", msgs: [][]byte{begin, relNoKey, deleteMsg(rel, 'K', toast, toast, toast)},
			err: "delete from public.t at 0/200:0: its old row holds no value PostgreSQL logged"},
		{name: "row outside a transaction", msgs: [][]byte{relDefault, insertMsg(rel, text("1"), nil, nil)}, err: "outside a transaction"},
		{name: "unknown relation", msgs: [][]byte{begin, insertMsg(rel, text("1"))}, err: "before its Relation message"},
		{name: "too few columns", msgs: [][]byte{begin, relDefault, insertMsg(rel, text("1"))}, err: "tuple has 1 columns, relation 3"},
		{name: "trailing bytes", msgs: [][]byte{begin, relDefault, append(insertMsg(rel, text("1"), nil, nil), 'x')}, err: "1 bytes after the tuple"},
		{name: "truncated tuple", msgs: [][]byte{begin, relDefault, insertMsg(rel, text("1"), nil, nil)[:12]}, err: "message truncated"},
		{name: "delete without old tuple", msgs: [][]byte{begin, relDefault, msgBuilder{'D'}.u32(rel).u8('N').u16(0)}, err: "delete without old tuple"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAll(newTestDecoder(), tt.msgs...)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got error %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestDecodePositions(t *testing.T) {
	const rel = 16500
	d := newTestDecoder()
	var msgs []*change.Message
	var commits []pglogrepl.LSN
	emit := func(ev Event) error {
		switch ev.Kind {
		case EventChange:
			msgs = append(msgs, ev.Msg)
		case EventCommit:
			commits = append(commits, ev.LSN)
		}
		return nil
	}
	in := [][]byte{beginMsg(0x200, t0, 7), relationMsg(rel, "public", "t", 'd', relCol{"id", pgtype.Int4OID, true})}
	for i := 0; i < 3; i++ {
		in = append(in, insertMsg(rel, text("1")))
	}
	in = append(in, commitMsg(0x200, 0x210, t0), beginMsg(0x300, t0.Add(time.Second), 8), insertMsg(rel, text("2")), commitMsg(0x300, 0x310, t0))
	for _, m := range in {
		if err := d.decode(context.Background(), m, 0, t0, emit); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, m := range msgs {
		got = append(got, fmt.Sprintf("%s %s xid=%d", m.IdempotencyKey(), change.AppendTimestamp(nil, m.CommitTime), m.XID))
	}
	want := []string{
		"0/200:0 2026-11-26T11:20:00.123456Z xid=7",
		"0/200:1 2026-11-26T11:20:00.123456Z xid=7",
		"0/200:2 2026-11-26T11:20:00.123456Z xid=7",
		"0/300:0 2026-11-26T11:20:01.123456Z xid=8",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(commits) != 2 || commits[0] != 0x210 || commits[1] != 0x310 {
		t.Errorf("got commit events %v, want the end LSNs 0/210 and 0/310", commits)
	}
}

// TestDecodeBarriers checks which messages must be ordered against all
// others: truncates, and updates that move a row to another key.
func TestDecodeBarriers(t *testing.T) {
	const rel = 16500
	cols := []relCol{{"id", pgtype.Int4OID, true}, {"body", pgtype.TextOID, false}, {"n", pgtype.Int8OID, false}}
	fullCols := []relCol{{"id", pgtype.Int4OID, true}, {"body", pgtype.TextOID, true}, {"n", pgtype.Int8OID, true}}
	msgs := [][]byte{beginMsg(0x200, t0, 7), relationMsg(rel, "public", "t", 'd', cols...),
		insertMsg(rel, text("1"), text("a"), text("1")),
		updateMsg(rel, 0, nil, text("1"), text("b"), text("1")),                               // same key
		updateMsg(rel, 'K', []tupleVal{text("1"), nil, nil}, text("2"), text("b"), text("1")), // key 1 -> 2
		relationMsg(rel, "public", "t", 'f', fullCols...),
		updateMsg(rel, 'O', []tupleVal{text("2"), text("b"), text("1")}, text("2"), text("c"), text("1")), // FULL, same key
		updateMsg(rel, 'O', []tupleVal{text("2"), text("c"), text("1")}, text("3"), text("c"), text("1")), // FULL, key 2 -> 3
		truncateMsg(0, rel),
		commitMsg(0x200, 0x210, t0)}
	want := []bool{false, false, true, false, true, true}
	d := newTestDecoder()
	var got []bool
	for _, m := range msgs {
		err := d.decode(context.Background(), m, 0x100, t0, func(ev Event) error {
			if ev.Kind == EventChange {
				got = append(got, ev.Msg.Barrier)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got barriers %v, want %v", got, want)
	}
}

// TestNonTransactionalMessageBeforeCommit: pgoutput gives a
// non-transactional message the end of its WAL record, where the next
// transaction's commit record may begin. The message and that
// transaction's first change must not share a position.
func TestNonTransactionalMessageBeforeCommit(t *testing.T) {
	const rel = 16500
	d := newTestDecoder()
	var pos []change.Position
	msgs := [][]byte{
		logicalMsg(false, 0x200, "app", []byte("x")),
		beginMsg(0x200, t0, 7), relationMsg(rel, "public", "t", 'd', relCol{"id", pgtype.Int4OID, true}),
		insertMsg(rel, text("1")),
		commitMsg(0x200, 0x210, t0),
	}
	for _, m := range msgs {
		err := d.decode(context.Background(), m, 0x100, t0, func(ev Event) error {
			if ev.Kind == EventChange {
				pos = append(pos, ev.Msg.Pos)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(pos) != 2 || !pos[0].Less(pos[1]) {
		t.Fatalf("got positions %v, want two, strictly increasing", pos)
	}
}

// TestPositionsIgnoreMessageConfig: a transactional logical message takes
// its index in the transaction whether or not its prefix is passed on, so
// removing a prefix from source.messages between two runs does not renumber
// the transaction's changes.
func TestPositionsIgnoreMessageConfig(t *testing.T) {
	const rel = 16500
	in := [][]byte{
		beginMsg(0x200, t0, 7), relationMsg(rel, "public", "t", 'd', relCol{"id", pgtype.Int4OID, true}),
		logicalMsg(true, 0x1f0, "audit", []byte("a")),
		insertMsg(rel, text("1")),
		logicalMsg(true, 0x1f8, "audit", []byte("b")),
		logicalMsg(true, 0x1f9, heartbeatPrefix, nil),
		insertMsg(rel, text("2")),
		commitMsg(0x200, 0x210, t0),
	}
	rows := func(prefixes []string) map[string]string {
		d := newDecoder(pgvalue.NewTypes(testCatalog), nil, prefixes)
		got := map[string]string{}
		for _, m := range in {
			err := d.decode(context.Background(), m, 0x100, t0, func(ev Event) error {
				if ev.Kind == EventChange {
					got[ev.Msg.IdempotencyKey()] = string(ev.Msg.Action) + " " + string(ev.Msg.Record) + string(ev.Msg.Content)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return got
	}
	with, without := rows([]string{"audit"}), rows(nil)
	want := map[string]string{"0/200:1": `insert {"id":1}`, "0/200:4": `insert {"id":2}`}
	for k, v := range want {
		if with[k] != v || without[k] != v {
			t.Errorf("position %s: got %q with messages passed and %q without, want %q in both", k, with[k], without[k], v)
		}
	}
	if with["0/200:0"] != `message "a"` || with["0/200:2"] != `message "b"` || len(with) != 4 || len(without) != 2 {
		t.Errorf("got %v with messages passed and %v without", with, without)
	}
}

// TestDecodeSkipSchemas: changes of a skipped schema (walhook's own state,
// in the source database) are dropped, and keep their place in their
// transaction, so the others' positions are as without the skip.
func TestDecodeSkipSchemas(t *testing.T) {
	const app, own = 16500, 16501
	d := newDecoder(pgvalue.NewTypes(testCatalog), func(context.Context, uint32) ([]string, error) { return []string{"id"}, nil }, nil, "walhook")
	var got []string
	commits := 0
	emit := func(ev Event) error {
		switch ev.Kind {
		case EventChange:
			got = append(got, ev.Msg.Schema+"."+ev.Msg.Table+" "+ev.Msg.IdempotencyKey())
		case EventCommit:
			commits++
		}
		return nil
	}
	in := [][]byte{
		beginMsg(0x200, t0, 7),
		relationMsg(app, "public", "t", 'd', relCol{"id", pgtype.Int4OID, true}),
		relationMsg(own, "walhook", "cursors", 'd', relCol{"id", pgtype.Int4OID, true}),
		insertMsg(own, text("1")),
		insertMsg(app, text("1")),
		insertMsg(own, text("2")),
		insertMsg(app, text("2")),
		commitMsg(0x200, 0x210, t0),
		beginMsg(0x300, t0, 8), insertMsg(own, text("3")), commitMsg(0x300, 0x310, t0),
	}
	for _, m := range in {
		if err := d.decode(context.Background(), m, 0, t0, emit); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"public.t 0/200:1", "public.t 0/200:3"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("got %v, want %v", got, want)
	}
	if commits != 2 {
		t.Errorf("got %d commits, want 2: a transaction of skipped changes still moves the position", commits)
	}
}

// TestWatermark: a backfill watermark is its own event, with its place in
// the transaction and its raw payload, even when source.messages names its
// prefix; it is never a change for a sink.
func TestWatermark(t *testing.T) {
	const rel = 16500
	in := [][]byte{
		logicalMsg(false, 0x1e0, WatermarkPrefix, []byte("outside")),
		beginMsg(0x200, t0, 7), relationMsg(rel, "public", "t", 'd', relCol{"id", pgtype.Int4OID, true}),
		insertMsg(rel, text("1")),
		logicalMsg(true, 0x1f0, WatermarkPrefix, []byte("bf_1 3 high")),
		insertMsg(rel, text("2")),
		commitMsg(0x200, 0x210, t0),
	}
	d := newDecoder(pgvalue.NewTypes(testCatalog), nil, []string{WatermarkPrefix})
	var got []string
	for _, m := range in {
		err := d.decode(context.Background(), m, 0x100, t0, func(ev Event) error {
			switch ev.Kind {
			case EventChange:
				got = append(got, "change "+ev.Msg.IdempotencyKey()+" "+string(ev.Msg.Action))
			case EventWatermark:
				got = append(got, "watermark "+ev.Msg.Pos.String()+" "+string(ev.Msg.Content)+" xid "+fmt.Sprint(ev.Msg.XID))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"change 0/200:0 insert", "watermark 0/200:1 bf_1 3 high xid 7", "change 0/200:2 insert"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
