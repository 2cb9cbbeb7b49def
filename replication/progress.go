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
	serverEnd   atomic.Uint64 // the server's WAL end, as the last heartbeat saw it
	heartbeatAt atomic.Int64  // Unix nanoseconds of the last heartbeat written
	reconnects  atomic.Uint64
}

// ProgressReport is a snapshot of Progress.
type ProgressReport struct {
	Connected     bool
	Received      pglogrepl.LSN
	ServerWALEnd  pglogrepl.LSN
	LastHeartbeat time.Time // zero if none yet
	Reconnects    uint64
}

// Report returns a snapshot.
func (p *Progress) Report() ProgressReport {
	r := ProgressReport{
		Connected:    p.connected.Load(),
		Received:     pglogrepl.LSN(p.received.Load()),
		ServerWALEnd: pglogrepl.LSN(p.serverEnd.Load()),
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
