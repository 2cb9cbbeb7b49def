package sink

import (
	"hash/fnv"
	"strings"
	"testing"

	"github.com/walhook/walhook/change"
)

// TestBatchID: the id names the batch's messages, not its bounds: two
// batches with the same first and last positions but other messages in
// between (a regrouping after a config change) get different ids.
func TestBatchID(t *testing.T) {
	msg := func(idx ...uint32) []*change.Message {
		var out []*change.Message
		for _, i := range idx {
			out = append(out, &change.Message{Pos: change.Position{CommitLSN: 0x16B3748, Idx: i}})
		}
		return out
	}
	id, _ := BatchID("orders", msg(1, 5, 9), nil)
	for name, other := range map[string][]string{
		"same bounds, other middle": {first(BatchID("orders", msg(1, 6, 9), nil))},
		"same bounds, no middle":    {first(BatchID("orders", msg(1, 9), nil))},
		"one more message":          {first(BatchID("orders", msg(1, 5, 9, 10), nil))},
		"first message only":        {first(BatchID("orders", msg(1), nil))},
		"other sink":                {first(BatchID("orders2", msg(1, 5, 9), nil))},
		"sink name prefix":          {first(BatchID("order", msg(1, 5, 9), nil))},
	} {
		if other[0] == id {
			t.Errorf("%s: BatchID collides: %s", name, id)
		}
	}
	buf := make([]byte, 0, 8)
	again, buf := BatchID("orders", msg(1, 5, 9), buf)
	if again != id {
		t.Errorf("got %s, then %s: want the same id for the same batch", id, again)
	}
	if again, _ := BatchID("orders", msg(1, 5, 9), buf); again != id {
		t.Errorf("with a reused buffer: got %s, want %s", again, id)
	}
	if !strings.HasPrefix(id, "msg_") || len(id) != 36 {
		t.Errorf("got %q, want msg_ and 32 hex digits", id)
	}
}

func first(s string, _ []byte) string { return s }

// TestHashKeyIsFNV1a: lanes are chosen by FNV-1a (64 bit) of the key, the
// same in every process.
func TestHashKeyIsFNV1a(t *testing.T) {
	for _, key := range []string{"", "public.t:1", "public.orders:42", "ünïcode"} {
		h := fnv.New64a()
		h.Write([]byte(key))
		if got, want := HashKey(key), h.Sum64(); got != want {
			t.Errorf("HashKey(%q): got %d, want %d", key, got, want)
		}
	}
}
