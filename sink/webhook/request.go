package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/walhook/walhook/change"
)

// ErrTimeout says the receiver did not answer an attempt within the sink's
// timeout. The attempt is retried like any other failure.
var ErrTimeout = errors.New("receiver did not answer in time")

// StatusError is a receiver's answer other than 2xx.
type StatusError struct {
	StatusCode int
	// Body is the start of the response body (at most 512 bytes, valid
	// UTF-8), for the log.
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("receiver answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// Retryable reports whether a delivery error is worth retrying. Every failed
// attempt is (non-2xx answers, timeouts, refused or reset connections), since
// giving up would lose data; only the end of the caller's context is not. A
// nil error is not.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	// An attempt's own timeout is reported as ErrTimeout, never as a
	// context error, so a context error here is the caller's.
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

const (
	// maxResponse is how much of a response body is read, so that the
	// connection can be reused; a longer body costs the connection.
	maxResponse = 64 << 10
	// maxLoggedResponse is how much of a failed attempt's response body
	// goes to the log and to StatusError.
	maxLoggedResponse = 512
)

// post makes one attempt at delivering the lane's current body with
// webhook-id id. It returns nil on a 2xx. On a 429 or 503 it also returns the
// wait the receiver asked for in Retry-After, or 0.
func (l *lane) post(ctx context.Context, id string) (time.Duration, error) {
	s := l.s
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, s.cfg.URL, nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", unwrapURLError(err))
	}
	body := &attemptBody{buf: l.body}
	defer body.end()
	req.Body = body.reader()
	req.GetBody = func() (io.ReadCloser, error) { return body.reader(), nil }
	req.ContentLength = int64(len(l.body))
	req.Header = s.header.Clone()
	if s.host != "" {
		req.Host = s.host
	}
	ts := strconv.FormatInt(s.now().Unix(), 10)
	req.Header.Set("Webhook-Id", id)
	req.Header.Set("Webhook-Timestamp", ts)
	if l.mac != nil {
		req.Header.Set("Webhook-Signature", l.sign(id, ts))
	}

	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if actx.Err() != nil || isTimeout(err) {
			return 0, fmt.Errorf("%w (timeout %s)", ErrTimeout, s.cfg.Timeout)
		}
		return 0, fmt.Errorf("post: %w", unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		// The answer is in: what the body holds, or whether it arrives,
		// changes nothing. Reading it lets the connection be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return 0, nil
	}
	buf := bytes.NewBuffer(l.resp[:0])
	_, _ = buf.ReadFrom(io.LimitReader(resp.Body, maxResponse))
	l.resp = buf.Bytes()
	serr := &StatusError{StatusCode: resp.StatusCode}
	if len(l.resp) > 0 {
		serr.Body = strings.ToValidUTF8(string(l.resp[:min(len(l.resp), maxLoggedResponse)]), "\uFFFD")
	}
	var wait time.Duration
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		wait = retryAfter(resp.Header.Get("Retry-After"), s.now())
	}
	return wait, serr
}

// retryAfter parses a Retry-After value, delay-seconds or an HTTP-date, into
// a wait from now. Anything else, and a time already past, is 0.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// unwrapURLError drops net/http's *url.Error wrapper, whose message repeats
// the URL: a URL may carry credentials, and the log names the sink anyway.
func unwrapURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

// isTimeout reports whether err is a network or client timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// attemptBody lends a lane's body buffer to the transport for one attempt.
// net/http may read a request body after Do has returned; once end is called
// reads fail instead of touching a buffer the lane has moved on to reuse.
type attemptBody struct {
	mu   sync.Mutex
	buf  []byte
	done bool
}

var errAttemptOver = errors.New("request body read after its attempt ended")

func (a *attemptBody) reader() io.ReadCloser { return &bodyReader{a: a} }

func (a *attemptBody) end() {
	a.mu.Lock()
	a.done = true
	a.mu.Unlock()
}

type bodyReader struct {
	a   *attemptBody
	off int
}

func (r *bodyReader) Read(p []byte) (int, error) {
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	if r.a.done {
		return 0, errAttemptOver
	}
	if r.off >= len(r.a.buf) {
		return 0, io.EOF
	}
	n := copy(p, r.a.buf[r.off:])
	r.off += n
	return n, nil
}

func (r *bodyReader) Close() error { return nil }

// BatchID is the webhook-id of a batch on the named sink: "msg_" and 32
// hex digits, the first 16 bytes of the SHA-256 of the sink name and every
// message's idempotency key, each followed by a zero byte. It is the same on
// every attempt at a batch and after a restart for a batch of the same
// messages, and differs for any batch that holds another message or lacks
// one, whatever its bounds (a change of max_in_flight, group_by or the
// filters regroups batches). buf is scratch space, returned for reuse.
func BatchID(sink string, batch []*change.Message, buf []byte) (string, []byte) {
	buf = append(buf[:0], sink...)
	buf = append(buf, 0)
	for _, m := range batch {
		buf = m.AppendIdempotencyKey(buf)
		buf = append(buf, 0)
	}
	sum := sha256.Sum256(buf)
	id := make([]byte, 4, 4+32)
	copy(id, "msg_")
	return string(hex.AppendEncode(id, sum[:16])), buf
}
