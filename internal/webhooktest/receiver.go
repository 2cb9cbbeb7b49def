// Package webhooktest is a real HTTP receiver for walhook's tests: it
// records every delivered message, checks signatures, and injects faults
// (errors, dropped connections, outages, slow answers) on request.
package webhooktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/walhook/walhook/sink/webhook"
)

// Message is a delivered message as a receiver sees it.
type Message struct {
	Action   string          `json:"action"`
	Record   json.RawMessage `json:"record"`
	Changes  json.RawMessage `json:"changes"`
	Prefix   string          `json:"prefix,omitempty"`
	Content  json.RawMessage `json:"content,omitempty"`
	Metadata Metadata        `json:"metadata"`
	Raw      json.RawMessage `json:"-"`
}

// Metadata is a message's metadata object.
type Metadata struct {
	TableSchema           string   `json:"table_schema"`
	TableName             string   `json:"table_name"`
	CommitLSN             string   `json:"commit_lsn"`
	CommitIdx             uint32   `json:"commit_idx"`
	CommitTimestamp       string   `json:"commit_timestamp"`
	XID                   uint32   `json:"xid"`
	IdempotencyKey        string   `json:"idempotency_key"`
	Sink                  string   `json:"sink"`
	UnchangedToastColumns []string `json:"unchanged_toast_columns"`
}

// Faults says how the receiver misbehaves. Ratios are in [0, 1].
type Faults struct {
	FailRatio float64       // answer 500
	DropRatio float64       // close the connection without an answer
	Down      bool          // answer 503 to everything
	Delay     time.Duration // wait before answering
	// Reject, when set, sees every well-formed batch before it is
	// accepted; a status it returns other than 0 is answered instead,
	// and the batch is not accepted.
	Reject func(batch []Message) int
}

// Request is one request the receiver answered (or dropped), for tests that
// look at retries: when it arrived, its webhook-id, and what it got.
type Request struct {
	Time     time.Time
	ID       string // webhook-id header
	Status   int    // the status answered; 0 for a dropped connection
	Messages int    // messages accepted with it (0 unless Status is 200)
}

// Receiver is a webhook endpoint on a loopback address.
type Receiver struct {
	URL    string
	Secret string

	srv *httptest.Server

	mu        sync.Mutex
	cond      *sync.Cond
	faults    Faults
	rng       *rand.Rand
	accepted  []Message // in the order their requests were answered 200, while the client still waited
	requests  int
	failures  int
	badSigs   []string
	headers   []http.Header
	log       []Request
	keepBody  bool     // record bodies
	bodies    [][]byte // every request body read while keepBody, whatever the answer
	lastError string
}

// New starts a receiver; it is closed when the test ends. If secret is not
// empty, every request's signature is verified and a bad one is answered
// 401 and recorded.
func New(t testing.TB, secret string) *Receiver {
	t.Helper()
	r := &Receiver{Secret: secret, rng: rand.New(rand.NewSource(time.Now().UnixNano()))}
	r.cond = sync.NewCond(&r.mu)
	r.srv = httptest.NewServer(r)
	r.URL = r.srv.URL + "/hooks"
	t.Cleanup(r.Close)
	return r
}

// Close stops the server.
func (r *Receiver) Close() {
	r.srv.CloseClientConnections()
	r.srv.Close()
}

// SetFaults changes how the receiver misbehaves from now on.
func (r *Receiver) SetFaults(f Faults) {
	r.mu.Lock()
	r.faults = f
	r.mu.Unlock()
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err == nil {
		// A compressed body is signed over its JSON: decode, then verify.
		body, err = webhook.Decode(req.Header, body, 1<<30)
	}
	arrived := time.Now()
	r.mu.Lock()
	r.requests++
	if err == nil && r.keepBody {
		r.bodies = append(r.bodies, body)
	}
	f := r.faults
	roll := r.rng.Float64()
	r.mu.Unlock()
	if err != nil {
		return
	}
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-req.Context().Done():
			return
		}
	}
	id := req.Header.Get("webhook-id")
	switch {
	case f.Down:
		r.fail(arrived, id, http.StatusServiceUnavailable)
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	case roll < f.DropRatio:
		r.fail(arrived, id, 0)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case roll < f.DropRatio+f.FailRatio:
		r.fail(arrived, id, http.StatusInternalServerError)
		http.Error(w, "injected failure", http.StatusInternalServerError)
		return
	}
	if r.Secret != "" {
		if err := webhook.Verify(r.Secret, req.Header, body, 5*time.Minute, time.Now()); err != nil {
			r.mu.Lock()
			r.badSigs = append(r.badSigs, err.Error())
			r.mu.Unlock()
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
	}
	msgs, err := decodeBatch(body)
	if err != nil {
		r.mu.Lock()
		r.lastError = fmt.Sprintf("bad body %q: %v", body, err)
		r.mu.Unlock()
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	if f.Reject != nil {
		if status := f.Reject(msgs); status != 0 {
			r.fail(arrived, id, status)
			http.Error(w, "rejected by the test", status)
			return
		}
	}
	r.mu.Lock()
	if req.Context().Err() != nil {
		// The client gave up on the request (its timeout, or a sink
		// stopped mid-flight): it never hears of this answer, so the
		// messages do not count as accepted. A real receiver might keep
		// them; walhook sends them again, or (a removed sink) not at all.
		r.mu.Unlock()
		return
	}
	r.accepted = append(r.accepted, msgs...)
	r.headers = append(r.headers, req.Header.Clone())
	r.log = append(r.log, Request{Time: arrived, ID: id, Status: http.StatusOK, Messages: len(msgs)})
	r.cond.Broadcast()
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// decodeBatch decodes a body's data array, each message with its own bytes
// as Raw. It reads the body once and decodes each message once: the
// receiver runs under the race detector in most tests, where every byte a
// JSON scan looks at costs a call, and unmarshalling the array and then
// each message scanned every byte four times.
func decodeBatch(body []byte) ([]Message, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	var msgs []Message
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if key != "data" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, err
			}
			continue
		}
		if err := expectDelim(dec, '['); err != nil {
			return nil, err
		}
		for dec.More() {
			from := dec.InputOffset()
			var m Message
			if err := dec.Decode(&m); err != nil {
				return nil, fmt.Errorf("message %d: %w", len(msgs), err)
			}
			// From the end of what came before: a comma, maybe space.
			m.Raw = bytes.TrimLeft(body[from:dec.InputOffset()], ", \t\r\n")
			msgs = append(msgs, m)
		}
		if err := expectDelim(dec, ']'); err != nil {
			return nil, err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the object (%v)", err)
	}
	return msgs, nil
}

// expectDelim reads the next token, which must be d.
func expectDelim(dec *json.Decoder, d json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != d {
		return fmt.Errorf("got %v, want %v", tok, d)
	}
	return nil
}

func (r *Receiver) fail(at time.Time, id string, status int) {
	r.mu.Lock()
	r.failures++
	r.log = append(r.log, Request{Time: at, ID: id, Status: status})
	r.mu.Unlock()
}

// Requests returns every request answered with 200 or an injected fault,
// in the order they were answered.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.log...)
}

// Messages returns every message answered 200, in the order received.
func (r *Receiver) Messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.accepted...)
}

// KeepBodies makes the receiver keep the body of every request it reads
// from now on, for Bodies. Tests with large backlogs leave it off.
func (r *Receiver) KeepBodies() {
	r.mu.Lock()
	r.keepBody = true
	r.mu.Unlock()
}

// Bodies returns the body of every request read since KeepBodies, accepted
// or not, in arrival order: the bytes walhook sent.
func (r *Receiver) Bodies() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...)
}

// Headers returns the headers of every accepted request.
func (r *Receiver) Headers() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.headers...)
}

// Stats returns the number of requests, failed (injected) answers, and
// signature failures.
func (r *Receiver) Stats() (requests, failures int, badSigs []string, lastError string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, r.failures, append([]string(nil), r.badSigs...), r.lastError
}

// WaitFor waits until cond holds for the accepted messages, or fails the
// test after timeout.
func (r *Receiver) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]Message) bool) []Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer timer.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for !cond(r.accepted) {
		if time.Now().After(deadline) {
			got := len(r.accepted)
			t.Fatalf("timed out after %v waiting for %s; got %d messages (requests %d, failures %d, bad signatures %d, last error %q)",
				timeout, what, got, r.requests, r.failures, len(r.badSigs), r.lastError)
		}
		r.cond.Wait()
	}
	return append([]Message(nil), r.accepted...)
}

// WaitCount waits for at least n accepted messages.
func (r *Receiver) WaitCount(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	return r.WaitFor(t, timeout, fmt.Sprintf("%d messages", n), func(m []Message) bool { return len(m) >= n })
}
