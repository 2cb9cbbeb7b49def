package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// message is a delivered message as the receiver decodes it: every field
// walhook sends for a bench_rows insert, so that a receiver's parsing cost
// is part of what is measured.
type message struct {
	Action string `json:"action"`
	Record struct {
		ID        int64           `json:"id"`
		Name      string          `json:"name"`
		Amount    string          `json:"amount"`
		Attrs     json.RawMessage `json:"attrs"`
		CreatedAt string          `json:"created_at"`
	} `json:"record"`
	Changes  json.RawMessage `json:"changes"`
	Metadata struct {
		TableSchema     string `json:"table_schema"`
		TableName       string `json:"table_name"`
		CommitLSN       string `json:"commit_lsn"`
		CommitIdx       uint32 `json:"commit_idx"`
		CommitTimestamp string `json:"commit_timestamp"`
		XID             uint32 `json:"xid"`
		IdempotencyKey  string `json:"idempotency_key"`
		Sink            string `json:"sink"`
	} `json:"metadata"`
}

// receiver is a webhook endpoint on 127.0.0.1 that unmarshals every body,
// answers 200, and counts the distinct ids of an expected range. It calls
// complete once, from the request that brought the last missing id, before
// answering it.
type receiver struct {
	URL string

	srv *http.Server
	ln  net.Listener

	parse bool // unmarshal every body; else only scan it for the ids

	mu         sync.Mutex
	firstID    int64
	seen       []bool
	distinct   int64
	deliveries int64
	bytes      int64     // of the bodies
	first      time.Time // when the first expected id arrived
	latency    bool      // record commit-to-receipt latencies of inserts
	latencies  []latencySample
	complete   func()
	errs       chan error // the first error, for the waiter
}

// newReceiver listens on a free loopback port. With parse, it unmarshals
// every body; without, it only scans bodies for the rows' ids, to show
// what walhook does when its receiver costs next to nothing.
func newReceiver(parse bool) (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("receiver: listen: %w", err)
	}
	r := &receiver{parse: parse, ln: ln, URL: "http://" + ln.Addr().String() + "/hooks", errs: make(chan error, 1)}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := r.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.fail(fmt.Errorf("receiver: serve: %w", err))
		}
	}()
	return r, nil
}

// expect resets the receiver for the ids firstID to firstID+n-1; complete
// is called when all of them have arrived.
func (r *receiver) expect(firstID, n int64, latency bool, complete func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.firstID, r.seen, r.distinct, r.deliveries, r.bytes, r.first = firstID, make([]bool, n), 0, 0, 0, time.Time{}
	r.latency, r.latencies, r.complete = latency, nil, complete
}

// counts returns the distinct ids, the messages and the body bytes received.
func (r *receiver) counts() (distinct, deliveries, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.distinct, r.deliveries, r.bytes
}

// latencySample is one insert's commit-to-receipt latency, and when its
// body was read.
type latencySample struct {
	At      time.Time
	Latency time.Duration
}

// firstArrival is when the first expected id arrived, zero before.
func (r *receiver) firstArrival() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first
}

// takeLatencies returns the latencies recorded since expect.
func (r *receiver) takeLatencies() []latencySample {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.latencies
	r.latencies = nil
	return l
}

func (r *receiver) close() {
	_ = r.srv.Close()
}

func (r *receiver) fail(err error) {
	select {
	case r.errs <- err:
	default:
	}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	received := time.Now()
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.bytes += int64(len(body))
	wantLatency := r.latency
	r.mu.Unlock()
	if !r.parse {
		r.count(scanIDs(body))
		w.WriteHeader(http.StatusOK)
		return
	}
	var batch struct {
		Data []message `json:"data"`
	}
	if err := json.Unmarshal(body, &batch); err != nil {
		r.fail(fmt.Errorf("receiver: a body is not the JSON walhook sends: %w", err))
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	var lat []latencySample
	if wantLatency {
		lat = make([]latencySample, 0, len(batch.Data))
		for _, m := range batch.Data {
			if m.Action != "insert" {
				continue // a backfill's read: its commit_timestamp is its high watermark's
			}
			ts, err := time.Parse(time.RFC3339Nano, m.Metadata.CommitTimestamp)
			if err != nil {
				r.fail(fmt.Errorf("receiver: commit_timestamp %q: %w", m.Metadata.CommitTimestamp, err))
				http.Error(w, "bad commit_timestamp", http.StatusBadRequest)
				return
			}
			lat = append(lat, latencySample{At: received, Latency: received.Sub(ts)})
		}
	}

	ids := make([]int64, 0, len(batch.Data))
	for _, m := range batch.Data {
		if m.Action == "insert" || m.Action == "read" {
			ids = append(ids, m.Record.ID)
		}
	}
	r.mu.Lock()
	r.latencies = append(r.latencies, lat...)
	r.mu.Unlock()
	r.count(ids)
	w.WriteHeader(http.StatusOK)
}

// count records the delivered rows' ids, and calls complete if they were
// the last ones missing.
func (r *receiver) count(ids []int64) {
	r.mu.Lock()
	r.deliveries += int64(len(ids))
	before := r.distinct
	for _, id := range ids {
		i := id - r.firstID
		if i < 0 || i >= int64(len(r.seen)) {
			continue // not a row of this measurement
		}
		if !r.seen[i] {
			r.seen[i] = true
			r.distinct++
			if r.first.IsZero() {
				r.first = time.Now()
			}
		}
	}
	var complete func()
	if r.distinct == int64(len(r.seen)) && before < r.distinct {
		complete = r.complete
	}
	r.mu.Unlock()
	if complete != nil {
		complete()
	}
}

// recordID is what precedes a row's id in walhook's JSON: bench_rows' first
// column is id, and walhook writes no spaces.
var recordID = []byte(`"record":{"id":`)

// scanIDs returns the ids of the rows in a body without parsing it.
func scanIDs(body []byte) []int64 {
	var ids []int64
	for {
		i := bytes.Index(body, recordID)
		if i < 0 {
			return ids
		}
		body = body[i+len(recordID):]
		var id int64
		for len(body) > 0 && body[0] >= '0' && body[0] <= '9' {
			id = id*10 + int64(body[0]-'0')
			body = body[1:]
		}
		ids = append(ids, id)
	}
}
