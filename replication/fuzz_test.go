package replication

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// The fuzz targets check that no input makes the decoder panic, loop or
// write invalid JSON. Their seed corpora are in testdata/fuzz: protocol
// messages built here, and (FuzzDecode/golden_*) the raw pgoutput
// transactions of the golden families, written by go test -run TestGolden
// -update.
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 5m -parallel 1 ./replication
//	go test -run '^$' -fuzz FuzzValue -fuzztime 5m -parallel 1 ./pgvalue

// FuzzDecode feeds a framed sequence of pgoutput messages (4-byte length,
// message) to a fresh decoder, up to the first error.
func FuzzDecode(f *testing.F) {
	const rel = 16500
	cols := []relCol{{"id", pgtype.Int4OID, true}, {"body", pgtype.TextOID, false}, {"j", pgtype.JSONBOID, false}, {"c", 20003, false}}
	begin, commit := beginMsg(0x200, t0, 7), commitMsg(0x200, 0x210, t0)
	f.Add(frame(begin, relationMsg(rel, "public", "t", 'd', cols...),
		insertMsg(rel, text("1"), text("a"), text(`{"k": [1]}`), text(`{"(1,{x},happy,null)"}`)),
		updateMsg(rel, 'K', []tupleVal{text("1"), nil, nil, nil}, text("2"), toast, nil, text("{}")),
		deleteMsg(rel, 'K', text("2"), nil, nil, nil),
		truncateMsg(1, rel),
		logicalMsg(true, 0x1f0, "app", []byte("content")),
		commit))
	f.Add(frame(begin, relationMsg(rel, "public", "t", 'f', cols...),
		updateMsg(rel, 'O', []tupleVal{text("1"), text("a"), nil, nil}, text("1"), toast, text("[]"), nil),
		deleteMsg(rel, 'O', text("1"), text("b"), nil, text(`{NULL}`)),
		commit))
	f.Add(frame(logicalMsg(false, 0x100, "app", []byte{0xff}), logicalMsg(false, 0x101, heartbeatPrefix, nil), typeMsg(20002, "s", "c")))
	f.Fuzz(func(t *testing.T, in []byte) {
		d := newTestDecoder()
		emit := func(ev Event) error {
			if ev.Kind != EventChange {
				return nil
			}
			m := ev.Msg
			for _, part := range []struct {
				name string
				json []byte
			}{{"record", m.Record}, {"changes", m.Changes}, {"content", m.Content}} {
				if part.json != nil && !json.Valid(part.json) {
					t.Fatalf("%s %s is not valid JSON: %q", m.Action, part.name, part.json)
				}
			}
			if m.Key == "" {
				t.Fatalf("%s without a key", m.Action)
			}
			if err := checkFields(m); err != nil {
				t.Fatal(err)
			}
			if !d.values.Idle() {
				t.Fatal("the value encoder holds scratch data after a message")
			}
			return nil
		}
		for len(in) >= 4 {
			n := binary.BigEndian.Uint32(in)
			in = in[4:]
			if uint64(n) > uint64(len(in)) {
				n = uint32(len(in))
			}
			msg := in[:n:n]
			in = in[n:]
			if err := d.decode(context.Background(), msg, 0x100, t0, emit); err != nil {
				return
			}
		}
	})
}
