package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/sink"
)

// ErrTimeout says the receiver did not answer an attempt within the sink's
// timeout. The attempt is retried like any other failure.
var ErrTimeout = errors.New("receiver did not answer in time")

// StatusError is a receiver's answer other than 2xx.
type StatusError struct {
	StatusCode int
	// Body is the start of the response body (at most 512 bytes of valid
	// UTF-8, cut between characters), for the log.
	Body string
	// Truncated says the body was longer than Body.
	Truncated bool
	// Wait is what Retry-After asked for on a 429 or 503, or 0.
	Wait time.Duration
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("receiver answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		msg += ": " + strconv.Quote(e.Body)
		if e.Truncated {
			msg += " (truncated)"
		}
	}
	return msg
}

// Status is the HTTP status code.
func (e *StatusError) Status() int { return e.StatusCode }

// RetryAfter is the wait the receiver asked for, or 0.
func (e *StatusError) RetryAfter() time.Duration { return e.Wait }

// Pause reports whether the answer asks the sink to stop until it is
// resumed: 410 Gone says the endpoint is no more, and retrying it would
// only fill the log. The pipeline pauses the sink and drops nothing.
func (e *StatusError) Pause() bool { return e.StatusCode == http.StatusGone }

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
	// inlineBody is the largest body sent as a copy of its own, in the
	// headers' write: the transport's write buffer is 4 KiB.
	inlineBody = 4 << 10
)

// Deliver makes one attempt at POSTing b: its body (built on the first
// attempt, kept in b.Body for retries; gzipped on every attempt when the
// sink compresses and the body is large enough), the Standard Webhooks
// headers with webhook-id b.ID, and webhook-attempt b.Attempt. The
// signature covers the JSON, not the compressed bytes. It returns nil on a
// 2xx and a *StatusError for any other answer.
func (s *Sink) Deliver(ctx context.Context, b *sink.Batch) error {
	// First: webhook-timestamp says when the attempt began, right after
	// the lane asked the lease for it.
	ts := strconv.FormatInt(s.now().Unix(), 10)
	if len(b.Body) == 0 {
		b.Body = change.AppendTransactionBody(b.Body[:0], b.Messages, s.cfg.Name, b.Tx)
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, s.cfg.Webhook.URL, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", unwrapURLError(err))
	}
	wire, compressed := b.Body, false
	if s.gzip != nil {
		var buf *bytes.Buffer
		if buf, compressed = s.gzip.compress(b.Body); compressed {
			// Deferred before body.end, so it runs after: once the
			// transport can no longer read the buffer.
			defer s.gzip.release(buf)
			wire = buf.Bytes()
		}
	}
	if len(wire) <= inlineBody {
		// net/http writes the headers and a body that fits beside them
		// in its write buffer in one write (one TCP segment) only when it
		// knows the body is in memory (a *bytes.Reader); any other body
		// gets the headers flushed first and a second write, which costs
		// both ends a syscall and a wakeup per request. A small body is
		// copied, so the transport may read the copy for as long as it
		// likes.
		own := bytes.Clone(wire)
		req.Body = io.NopCloser(bytes.NewReader(own))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(own)), nil }
	} else {
		body := &attemptBody{buf: wire}
		defer body.end()
		req.Body = body.reader()
		req.GetBody = func() (io.ReadCloser, error) { return body.reader(), nil }
	}
	req.ContentLength = int64(len(wire))
	req.Header = s.header.Clone()
	if compressed {
		req.Header.Set("Content-Encoding", "gzip")
	}
	if s.host != "" {
		req.Host = s.host
	}
	req.Header.Set("Webhook-Id", b.ID)
	req.Header.Set("Webhook-Timestamp", ts)
	req.Header.Set("Webhook-Attempt", strconv.Itoa(max(b.Attempt, 1)))
	if s.signed {
		req.Header.Set("Webhook-Signature", s.sign(b.ID, ts, b.Body))
	}

	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if actx.Err() != nil || isTimeout(err) {
			return fmt.Errorf("%w (timeout %s)", ErrTimeout, s.cfg.Timeout)
		}
		return fmt.Errorf("post: %w", explainTLS(unwrapURLError(err)))
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		// The answer is in: what the body holds, or whether it arrives,
		// changes nothing. Reading it lets the connection be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return nil
	}
	// Read on past what is logged, so that the connection can be reused.
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(io.LimitReader(resp.Body, maxResponse))
	serr := &StatusError{StatusCode: resp.StatusCode}
	serr.Body, serr.Truncated = excerpt(buf.Bytes(), maxLoggedResponse)
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		serr.Wait = retryAfter(resp.Header.Get("Retry-After"), s.now())
	}
	return serr
}

// excerpt is the start of b as valid UTF-8 of at most limit bytes, cut
// between characters, each invalid byte replaced by U+FFFD; truncated says
// that b held more.
func excerpt(b []byte, limit int) (s string, truncated bool) {
	out := make([]byte, 0, min(len(b), limit))
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		n := utf8.RuneLen(r) // 3 for the replacement of an invalid byte
		if len(out)+n > limit {
			return string(out), true
		}
		out = utf8.AppendRune(out, r)
		b = b[size:]
	}
	return string(out), false
}

// retryAfter parses a Retry-After value, delay-seconds or an HTTP-date, into
// a wait from now. Anything else, and a time already past, is 0.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		// delay-seconds; a value too large to hold means a long wait,
		// which the pipeline caps at retry.max.
		secs, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			secs = math.MaxUint32
		}
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
