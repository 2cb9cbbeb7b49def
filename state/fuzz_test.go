package state

import (
	"errors"
	"reflect"
	"testing"

	"github.com/walhook/walhook/change"
)

// The fuzz targets check that no input makes a decoder panic or allocate
// without bound, that every refusal wraps ErrCorrupt, and that what decodes
// encodes back to a record that decodes to the same value. go test runs the
// seeds; to search further:
//
//	go test -run '^$' -fuzz FuzzDecodeEntry -fuzztime 2m -parallel 1 ./state
//	go test -run '^$' -fuzz FuzzDecodeDeadLetter -fuzztime 2m -parallel 1 ./state
//	go test -run '^$' -fuzz FuzzDecodeBackfill -fuzztime 2m -parallel 1 ./state

func FuzzDecodeEntry(f *testing.F) {
	f.Add(AppendEntry(nil, Entry{Msg: fullMessage(), Group: 5, Barrier: true}))
	f.Add(AppendEntry(nil, Entry{Msg: &change.Message{Action: "x", Record: []byte{}}}))
	f.Add(AppendEntry(nil, Entry{Msg: &change.Message{Action: change.Emitted, Prefix: "p", Content: []byte(`"c"`)}}))
	f.Fuzz(func(t *testing.T, in []byte) {
		var d Decoder
		e, err := d.Entry(in)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want an error wrapping ErrCorrupt", err)
			}
			return
		}
		again, err := d.Entry(AppendEntry(nil, e))
		if err != nil {
			t.Fatalf("a decoded entry does not decode after encoding: %v", err)
		}
		if !reflect.DeepEqual(again, e) {
			t.Fatalf("got %+v after encoding, want %+v", again, e)
		}
	})
}

func FuzzDecodeDeadLetter(f *testing.F) {
	d := sampleDeadLetter(&testing.T{}, 2)
	f.Add(AppendDeadLetter(nil, &d))
	d = sampleDeadLetter(&testing.T{}, 1)
	d.LastError = ""
	f.Add(AppendDeadLetter(nil, &d))
	f.Fuzz(func(t *testing.T, in []byte) {
		var dec Decoder
		head, herr := dec.DeadLetter("id", in, false)
		dl, err := dec.DeadLetter("id", in, true)
		for _, e := range []error{herr, err} {
			if e != nil && !errors.Is(e, ErrCorrupt) {
				t.Fatalf("got %v, want an error wrapping ErrCorrupt", e)
			}
		}
		if err != nil {
			return
		}
		if herr != nil {
			t.Fatalf("the whole record decodes, its header does not: %v", herr)
		}
		if head.Count != len(dl.Entries) || head.First != dl.First || head.Last != dl.Last {
			t.Fatalf("header %d %s..%s, entries %d %s..%s", head.Count, head.First, head.Last, len(dl.Entries), dl.First, dl.Last)
		}
		again, err := dec.DeadLetter("id", AppendDeadLetter(nil, &dl), true)
		if err != nil {
			t.Fatalf("a decoded dead letter does not decode after encoding: %v", err)
		}
		if !reflect.DeepEqual(again, dl) {
			t.Fatalf("got %+v after encoding, want %+v", again, dl)
		}
	})
}

func FuzzDecodeBackfill(f *testing.F) {
	f.Add(AppendBackfill(nil, &Backfill{ID: "bf_1", Sink: "a", State: BackfillRunning,
		Tables: []BackfillTable{{Table: `"public"."t"`, Key: []byte{1}, Rows: 3, Estimate: -1}, {Table: "x", Done: true}}}))
	f.Fuzz(func(t *testing.T, in []byte) {
		bf, err := DecodeBackfill(in)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want an error wrapping ErrCorrupt", err)
			}
			return
		}
		again, err := DecodeBackfill(AppendBackfill(nil, &bf))
		if err != nil {
			t.Fatalf("a decoded backfill does not decode after encoding: %v", err)
		}
		if !reflect.DeepEqual(again, bf) {
			t.Fatalf("got %+v after encoding, want %+v", again, bf)
		}
	})
}
