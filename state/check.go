package state

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/walhook/walhook/change"
)

// CheckEntries reports what makes entries unfit to append to a backlog
// whose newest entry is at last (zero when it is empty): a missing message,
// one the decoder would refuse (CheckMessage), or positions that do not
// increase strictly from above last.
func CheckEntries(entries []Entry, last change.Position) error {
	for i, e := range entries {
		if e.Msg == nil {
			return fmt.Errorf("entry %d has no message", i)
		}
		if err := CheckMessage(e.Msg); err != nil {
			return fmt.Errorf("entry %d at %s: %w", i, e.Msg.Pos, err)
		}
		if !last.Less(e.Msg.Pos) {
			if i == 0 {
				return fmt.Errorf("entry 0 at %s is not above the backlog's newest entry %s", e.Msg.Pos, last)
			}
			return fmt.Errorf("entry %d at %s is not above entry %d at %s: positions must increase", i, e.Msg.Pos, i-1, last)
		}
		last = e.Msg.Pos
	}
	return nil
}

// PrepareDeadLetter returns d as a store keeps it: its entries checked
// (at least one, in increasing positions, as CheckEntries wants them),
// Count, First and Last computed from them, LastError cut to MaxErrorLen
// and Created set to now when it is zero; its times are as StoredTime
// keeps them. Its ID is left for the store.
func PrepareDeadLetter(d DeadLetter, now time.Time) (DeadLetter, error) {
	if len(d.Entries) == 0 {
		return DeadLetter{}, fmt.Errorf("a dead letter needs at least one message")
	}
	if err := CheckEntries(d.Entries, change.Position{}); err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter: %w", err)
	}
	d.ID = ""
	d.Count = len(d.Entries)
	d.First, d.Last = d.Entries[0].Msg.Pos, d.Entries[len(d.Entries)-1].Msg.Pos
	if len(d.LastError) > MaxErrorLen {
		i := MaxErrorLen
		for i > 0 && !utf8.RuneStart(d.LastError[i]) {
			i--
		}
		d.LastError = d.LastError[:i]
	}
	if d.Created.IsZero() {
		d.Created = now
	}
	// As the record keeps them, so that d equals what a Get returns.
	d.FirstAttempt, d.LastAttempt, d.Created = StoredTime(d.FirstAttempt), StoredTime(d.LastAttempt), StoredTime(d.Created)
	return d, nil
}

// StoredTime is t as a record keeps it: in UTC, to the microsecond (as
// PostgreSQL keeps times), without a monotonic reading.
func StoredTime(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }
