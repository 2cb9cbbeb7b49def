// Package adminclient is the CLI's side of walhook's admin API: the commands
// that act on a running daemon (status, pause, resume, dlq, backfill) call
// it with the same configuration the daemon runs with, since the daemon
// holds the state file's lock.
package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/server"
)

// DefaultTimeout bounds one request, connecting included.
const DefaultTimeout = 10 * time.Second

// maxAnswer bounds an answer's body; a dead letter with its messages is the
// largest (about a batch's batch_bytes).
const maxAnswer = 64 << 20

// ErrOff is returned by New when server.listen is "", so no daemon can be
// reached.
var ErrOff = errors.New(`the admin server is off (server.listen is ""); set server.listen, such as 127.0.0.1:9400, and restart walhook`)

// ErrNotRunning is what a NotRunningError is: errors.Is(err, ErrNotRunning)
// tells "no walhook answers" apart from every other failure.
var ErrNotRunning = errors.New("walhook is not running")

// NotRunningError says that nothing answers on the admin address: the
// connection was refused or could not be made in time.
type NotRunningError struct {
	Addr string // host:port dialled
	Err  error  // the dial error
}

func (e *NotRunningError) Error() string {
	return fmt.Sprintf("walhook is not running: nothing answers on %s (server.listen)", e.Addr)
}

func (e *NotRunningError) Unwrap() []error { return []error{ErrNotRunning, e.Err} }

// APIError is an error answer from the admin API.
type APIError struct {
	Status  int    // HTTP status
	Message string // the answer's "error", or a description of a non-JSON answer
}

func (e *APIError) Error() string { return e.Message }

// Client calls a running walhook's admin API.
type Client struct {
	addr    string // host:port
	base    string // http://addr/api/v1/
	token   string
	timeout time.Duration
	hc      *http.Client
}

// New returns a client for the daemon that runs with cfg: it dials
// server.listen (an unspecified address such as 0.0.0.0 or :: becomes the
// loopback address of its family) and sends server.token. It returns ErrOff
// when server.listen is "".
func New(cfg *config.Config) (*Client, error) {
	addr, err := dialAddr(cfg.Server.Listen)
	if err != nil {
		return nil, err
	}
	return &Client{
		addr:    addr,
		base:    "http://" + addr + "/api/v1/",
		token:   cfg.Server.Token,
		timeout: DefaultTimeout,
		hc: &http.Client{
			Transport: &http.Transport{
				// Never through a proxy: the daemon is reached directly, and
				// the token must not go anywhere else.
				Proxy:               nil,
				DialContext:         (&net.Dialer{}).DialContext,
				MaxIdleConns:        2,
				IdleConnTimeout:     30 * time.Second,
				TLSHandshakeTimeout: DefaultTimeout,
			},
			// Nor to wherever a redirect points.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// SetTimeout changes how long one request may take (DefaultTimeout unless
// set); d must be more than 0.
func (c *Client) SetTimeout(d time.Duration) {
	if d > 0 {
		c.timeout = d
	}
}

// Addr is the host:port the client dials.
func (c *Client) Addr() string { return c.addr }

// dialAddr turns server.listen into the address to dial.
func dialAddr(listen string) (string, error) {
	if listen == "" {
		return "", ErrOff
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("server.listen %q is not a host:port address: %w", listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (server.StatusReport, error) {
	var report server.StatusReport
	err := c.do(ctx, http.MethodGet, "status", nil, &report)
	return report, err
}

// Pause pauses a sink.
func (c *Client) Pause(ctx context.Context, sink string) error {
	return c.do(ctx, http.MethodPost, sinkPath(sink, "pause"), nil, nil)
}

// Resume resumes a paused sink.
func (c *Client) Resume(ctx context.Context, sink string) error {
	return c.do(ctx, http.MethodPost, sinkPath(sink, "resume"), nil, nil)
}

// DeadLetters lists a sink's dead letters, without their messages.
func (c *Client) DeadLetters(ctx context.Context, sink string) ([]server.DeadLetter, error) {
	var list server.DeadLetterList
	err := c.do(ctx, http.MethodGet, sinkPath(sink, "dlq"), nil, &list)
	return list.DeadLetters, err
}

// DeadLetter returns one dead letter with its messages.
func (c *Client) DeadLetter(ctx context.Context, sink, id string) (server.DeadLetter, error) {
	var dl server.DeadLetter
	err := c.do(ctx, http.MethodGet, sinkPath(sink, "dlq", id), nil, &dl)
	return dl, err
}

// ReplayDeadLetters queues dead letters for redelivery (no id: all of the
// sink's) and returns the IDs queued.
func (c *Client) ReplayDeadLetters(ctx context.Context, sink string, ids ...string) ([]string, error) {
	var res server.ReplayResult
	err := c.do(ctx, http.MethodPost, sinkPath(sink, "dlq", "replay"), server.ReplayRequest{IDs: ids}, &res)
	return res.Replaying, err
}

// DropDeadLetters deletes dead letters without delivering them, one request
// each, in order. It stops at the first failure; the error says how many
// were dropped before it.
func (c *Client) DropDeadLetters(ctx context.Context, sink string, ids ...string) error {
	if len(ids) == 0 {
		return errors.New("no dead letter to drop; give the IDs that dlq list shows")
	}
	for i, id := range ids {
		if err := c.do(ctx, http.MethodDelete, sinkPath(sink, "dlq", id), nil, nil); err != nil {
			if i > 0 {
				return fmt.Errorf("dropped %d of %d dead letters, then %s: %w", i, len(ids), id, err)
			}
			return err
		}
	}
	return nil
}

// StartBackfill asks for a backfill of a sink's tables (none: every table of
// the sink) and returns it as accepted.
func (c *Client) StartBackfill(ctx context.Context, sink string, req server.BackfillRequest) (server.Backfill, error) {
	var bf server.Backfill
	err := c.do(ctx, http.MethodPost, sinkPath(sink, "backfills"), req, &bf)
	return bf, err
}

// Backfills lists every backfill, running or finished.
func (c *Client) Backfills(ctx context.Context) ([]server.Backfill, error) {
	var list server.BackfillList
	err := c.do(ctx, http.MethodGet, "backfills", nil, &list)
	return list.Backfills, err
}

// CancelBackfill stops a running backfill.
func (c *Client) CancelBackfill(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "backfills/"+url.PathEscape(id), nil, nil)
}

// sinkPath is "sinks/{sink}/..." with every segment escaped.
func sinkPath(sink string, rest ...string) string {
	parts := []string{"sinks", url.PathEscape(sink)}
	for _, r := range rest {
		parts = append(parts, url.PathEscape(r))
	}
	return strings.Join(parts, "/")
}

// do sends one request and decodes a 2xx answer's JSON into out (when not
// nil). A request that may change state (any but GET) always carries a
// JSON body, {} when in is nil: the server refuses a POST or DELETE that is
// not Content-Type: application/json (a web page's form could send it). An
// error answer becomes an *APIError; no answer at all, a *NotRunningError
// or a wrapped transport error. No error holds the token.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	if in == nil && method != http.MethodGet {
		in = struct{}{}
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	// path is escaped already, segment by segment.
	u, err := url.Parse(c.base + path)
	if err != nil {
		return fmt.Errorf("admin API request %s %s: %w", method, path, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("admin API request %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}

	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(ctx, method, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return c.transportError(ctx, method, u, err)
	}
	if len(data) > maxAnswer {
		return fmt.Errorf("admin API %s %s: the answer is larger than %d bytes", method, u.Path, maxAnswer)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.answerError(resp, data)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API %s %s: the answer is not the JSON expected (is %s a walhook?): %w", method, u.Path, c.addr, err)
	}
	return nil
}

// transportError explains a request that got no complete answer.
func (c *Client) transportError(ctx context.Context, method string, u *url.URL, err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return &NotRunningError{Addr: c.addr, Err: err}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("walhook on %s (server.listen) did not answer %s %s within %s", c.addr, method, u.Path, c.timeout)
	}
	// *url.Error repeats the URL, which holds no credential.
	return fmt.Errorf("admin API on %s (server.listen): %w", c.addr, err)
}

// answerError turns an error answer into an *APIError.
func (c *Client) answerError(resp *http.Response, data []byte) error {
	var e server.Error
	msg := ""
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		msg = e.Error
	} else {
		msg = fmt.Sprintf("walhook on %s answered %s, without the JSON error expected (is %s a walhook?)", c.addr, resp.Status, c.addr)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		if c.token == "" {
			msg += "; the daemon has a token but this configuration sets no server.token"
		} else {
			msg += "; this configuration's server.token differs from the running walhook's"
		}
	}
	return &APIError{Status: resp.StatusCode, Message: msg}
}
