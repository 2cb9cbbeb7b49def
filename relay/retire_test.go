package relay

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/state"
)

// TestRemovedSinksAreRetired: the cursor of a sink that left the
// configuration, between two runs or live, is marked removed, kept for
// KeepRemoved and then deleted with its backlog; its dead letters stay.
// Configured sinks' cursors are never touched.
func TestRemovedSinksAreRetired(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, filepath.Join(t.TempDir(), "state"))
	defer store.Close()
	// "gone" was configured in an earlier run: a cursor, a backlog and a
	// dead letter.
	if err := store.SaveCursors(ctx, map[string]state.Cursor{"gone": {Acked: pos(0x50, 0)}, "a": {Acked: pos(0x40, 0)}}); err != nil {
		t.Fatal(err)
	}
	entries := []state.Entry{{Msg: &change.Message{Action: change.Insert, Schema: "public", Table: "t", Pos: pos(0x60, 0), Key: "1"}}}
	if err := store.Backlog("gone").Append(ctx, entries); err != nil {
		t.Fatal(err)
	}
	if _, err := store.DeadLetters("gone").Add(ctx, state.DeadLetter{Entries: entries, Reason: state.ReasonMaxAttempts}); err != nil {
		t.Fatal(err)
	}
	cursor := func(name string) (state.Cursor, bool) {
		c, err := store.Cursors(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := c[name]
		return got, ok
	}

	const keep = 300 * time.Millisecond
	started := time.Now()
	src := &fakeSource{start: 0x10, events: []replication.Event{insert("t", pos(0x100, 0)), commit(0x120)}}
	h := startRelayWith(t, src, store, map[string]config.Sink{"a": {}, "b": {}}, Options{KeepRemoved: keep})

	// Marked removed at start, not deleted before keep is up.
	var c state.Cursor
	var ok bool
	waitFor(t, "the removed sink's cursor marked", func() bool { c, ok = cursor("gone"); return !ok || !c.Removed.IsZero() })
	if !ok || c.Removed.IsZero() || c.Acked != pos(0x50, 0) {
		t.Fatalf("once the relay started, the removed sink's cursor is %+v (there: %v), want 0/50:0 with a removal time", c, ok)
	}
	if c.Removed.Before(started.Add(-time.Second)) {
		t.Errorf("removal time %s is before the run started (%s)", c.Removed, started)
	}
	waitFor(t, "the removed sink's cursor is deleted", func() bool { _, ok := cursor("gone"); return !ok })
	if since := time.Since(c.Removed); since < keep {
		t.Errorf("deleted %s after its removal, before KeepRemoved (%s)", since, keep)
	}
	if n := store.Backlog("gone").Stats().Count; n != 0 {
		t.Errorf("the removed sink's backlog still holds %d messages", n)
	}
	if n, err := store.DeadLetters("gone").Count(ctx); err != nil || n != 1 {
		t.Errorf("the removed sink's dead letters: %d, %v, want the 1 kept", n, err)
	}
	if c, ok := cursor("a"); !ok || !c.Removed.IsZero() {
		t.Errorf("a configured sink's cursor: %+v (there: %v), want it without a removal time", c, ok)
	}

	// A sink removed live is retired the same way; the other is untouched.
	h.sinks["a"].deliver(pos(0x100, 0))
	h.sinks["b"].deliver(pos(0x100, 0))
	waitFor(t, "both cursors saved", func() bool {
		a, _ := cursor("a")
		b, _ := cursor("b")
		return a.Acked == pos(0x100, 0) && b.Acked == pos(0x100, 0)
	})
	if err := h.relay.RemoveSink(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if c, ok := cursor("b"); !ok || c.Removed.IsZero() || c.Acked != pos(0x100, 0) {
		t.Fatalf("after RemoveSink, b's cursor is %+v (there: %v), want 0/100:0 with a removal time", c, ok)
	}
	waitFor(t, "b's cursor is deleted", func() bool { _, ok := cursor("b"); return !ok })
	if c, ok := cursor("a"); !ok || !c.Removed.IsZero() || c.Acked != pos(0x100, 0) {
		t.Errorf("a's cursor: %+v (there: %v), want 0/100:0 without a removal time", c, ok)
	}
}

// TestSinkAddedBackKeepsItsCursor: a sink that comes back before its time
// is up gets its cursor, and the removal time is cleared.
func TestSinkAddedBackKeepsItsCursor(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, filepath.Join(t.TempDir(), "state"))
	defer store.Close()
	removed := time.Now().Add(-time.Minute)
	if err := store.SaveCursors(ctx, map[string]state.Cursor{"back": {Acked: pos(0x100, 0), Removed: removed}}); err != nil {
		t.Fatal(err)
	}
	src := &fakeSource{start: 0x10, events: []replication.Event{insert("t", pos(0x100, 0)), insert("t", pos(0x100, 1)), commit(0x120)}}
	h := startRelayWith(t, src, store, map[string]config.Sink{"back": {}}, Options{KeepRemoved: time.Hour})
	d := h.sinks["back"]
	waitFor(t, "the message after the cursor", func() bool { return len(d.received()) == 1 })
	if got := d.received()[0]; got != pos(0x100, 1) {
		t.Fatalf("got %s, want only 0/100:1 (0/100:0 was delivered before the sink was removed)", got)
	}
	waitFor(t, "the removal time cleared", func() bool {
		c, err := store.Cursors(ctx)
		return err == nil && c["back"].Removed.IsZero() && c["back"].Acked == pos(0x100, 0)
	})
}
