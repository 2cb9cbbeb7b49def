package replication

import (
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
)

// Progress is what a source's streams report as they go, for status and
// metrics: cheap to write from the receive loop (one atomic store per
// message), read from anywhere.
type Progress struct {
	connected   atomic.Bool
	received    atomic.Uint64 // the last WAL position received
	handed      atomic.Uint64 // the highest LSN of an event handed on
	serverEnd   atomic.Uint64 // the server's WAL end, as the last heartbeat saw it
	heartbeatAt atomic.Int64  // Unix nanoseconds of the last heartbeat written
	reconnects  atomic.Uint64
}

// ProgressReport is a snapshot of Progress.
type ProgressReport struct {
	Connected    bool
	Received     pglogrepl.LSN
	ServerWALEnd pglogrepl.LSN
	// HandedOn is the highest LSN any event handed to the consumers
	// carried (a change's commit LSN, a commit's end): nothing above it
	// can have reached a sink.
	HandedOn      pglogrepl.LSN
	LastHeartbeat time.Time // zero if none yet
	Reconnects    uint64
}

// Report returns a snapshot.
func (p *Progress) Report() ProgressReport {
	r := ProgressReport{
		Connected:    p.connected.Load(),
		Received:     pglogrepl.LSN(p.received.Load()),
		ServerWALEnd: pglogrepl.LSN(p.serverEnd.Load()),
		HandedOn:     pglogrepl.LSN(p.handed.Load()),
		Reconnects:   p.reconnects.Load(),
	}
	if ns := p.heartbeatAt.Load(); ns != 0 {
		r.LastHeartbeat = time.Unix(0, ns)
	}
	return r
}

func (p *Progress) receivedAt(lsn pglogrepl.LSN) {
	if p != nil {
		p.received.Store(uint64(lsn))
	}
}

// handedOn raises HandedOn to the highest LSN batch carries. The batch is
// in stream order, so its last event carries it, but a commit's end LSN
// lies above its changes' commit LSN: look at each kind once.
func (p *Progress) handedOn(batch []Event) {
	if p == nil {
		return
	}
	var top pglogrepl.LSN
	for i := len(batch) - 1; i >= 0; i-- {
		ev := batch[i]
		top = max(top, ev.LSN)
		if ev.Msg != nil {
			top = max(top, ev.Msg.Pos.CommitLSN)
			break
		}
	}
	for {
		old := p.handed.Load()
		if uint64(top) <= old || p.handed.CompareAndSwap(old, uint64(top)) {
			return
		}
	}
}
