// Package webhook is walhook's HTTP sink. It spreads messages over parallel
// lanes by key, batches each lane's messages, POSTs every batch as a
// Standard Webhooks request, retries it until the receiver answers 2xx, and
// only then acknowledges the positions of its messages.
//
// Order: messages with equal lane keys always share a lane, and a lane
// delivers one batch at a time, in submission order, retrying it until it is
// acknowledged (or taken by the dead-letter store) before it takes the next.
// Messages with different keys may travel in parallel lanes.
//
// Memory: each lane queues at most 2*batch_size messages besides the batch it
// is delivering. Submit blocks while its lane's queue is full, which is how a
// slow or dead receiver holds back the stream.
//
// A message leaves the sink only through Options.Ack: after its batch got a
// 2xx, or after Options.DeadLetter accepted it. A hard stop (Run's context
// ends) abandons in-flight requests and leaves their messages unacknowledged,
// to be delivered again after a restart.
package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
)

// Options are the parts of a sink that come from its caller rather than from
// the configuration file.
type Options struct {
	// Version is walhook's version, sent as User-Agent: walhook/<version>.
	Version string
	// Logger receives a warning for every failed attempt; nil discards.
	Logger *slog.Logger
	// Ack is called once per message after its batch got a 2xx (or the
	// dead-letter store took it), in position order within a lane. Lanes
	// call it concurrently, so it must be safe for concurrent use. Nil
	// acknowledges nothing.
	Ack func(change.Position)
	// Route gives a message's ordering group, as a hash, and whether it is
	// a barrier; nil uses the hash of m.Key and m.Barrier. Messages of one
	// group are delivered one batch at a time, in order; a barrier is
	// delivered after everything submitted before it and before anything
	// after it.
	Route func(*change.Message) (group uint64, barrier bool)
	// DeadLetter receives a batch whose delivery failed retry.max_attempts
	// times (when that is above 0), with the last attempt's error. When it
	// returns nil the messages are acknowledged; when it fails, delivery
	// goes on and the batch is offered again after the next failed attempt.
	// msgs is a copy the function may keep. With a nil DeadLetter the sink
	// retries forever: it never drops a message.
	DeadLetter func(ctx context.Context, msgs []*change.Message, lastErr error) error
	// Client sends the requests; nil uses a client that does not follow
	// redirects, keeps max_in_flight idle connections to the receiver and
	// gives up on an attempt after the sink's timeout. The sink applies the
	// timeout to every attempt through its context in any case.
	Client *http.Client
	// Now is the clock for webhook-timestamp and Retry-After dates; nil
	// uses time.Now.
	Now func() time.Time
}

// ErrDraining is returned by Submit once Drain has begun.
var ErrDraining = errors.New("sink is draining")

// ErrStopped is returned by Submit and Drain once Run has returned.
var ErrStopped = errors.New("sink has stopped")

// Sink delivers messages to one webhook endpoint. Create it with New, start
// it with Run, feed it with Submit and finish it with Drain.
type Sink struct {
	cfg        config.Sink
	log        *slog.Logger
	ack        func(change.Position)
	route      func(*change.Message) (uint64, bool)
	deadLetter func(context.Context, []*change.Message, error) error
	client     *http.Client
	transport  *http.Transport // set when the sink built client itself
	now        func() time.Time
	key        []byte      // decoded secret; nil when requests are unsigned
	header     http.Header // Content-Type, User-Agent and the static headers
	host       string      // a static Host header, which net/http takes apart

	lanes []*lane

	running  atomic.Bool
	stopped  chan struct{} // closed when Run returns
	draining chan struct{} // closed when Drain begins
	drain    sync.Once
	idle     chan struct{} // poked when pending drops to zero

	pending        atomic.Int64 // submitted and not yet acknowledged
	inFlight       atomic.Int64
	delivered      atomic.Uint64
	deadLettered   atomic.Uint64
	failedAttempts atomic.Uint64
}

// Stats are a sink's counters since New.
type Stats struct {
	Queued         int64  // messages submitted and not yet acknowledged
	InFlight       int64  // batches being delivered, retries included
	Delivered      uint64 // messages acknowledged after a 2xx
	DeadLettered   uint64 // messages acknowledged after the dead-letter store took them
	FailedAttempts uint64 // attempts that did not get a 2xx
}

// New checks cfg and builds a sink for it. It starts nothing: see Run.
func New(cfg config.Sink, opts Options) (*Sink, error) {
	if err := validate(cfg); err != nil {
		return nil, fmt.Errorf("sink %q: %w", cfg.Name, err)
	}
	s := &Sink{
		cfg:        cfg,
		log:        opts.Logger,
		ack:        opts.Ack,
		route:      opts.Route,
		deadLetter: opts.DeadLetter,
		client:     opts.Client,
		now:        opts.Now,
		stopped:    make(chan struct{}),
		draining:   make(chan struct{}),
		idle:       make(chan struct{}, 1),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("sink", cfg.Name)
	if s.now == nil {
		s.now = time.Now
	}
	if cfg.Secret != "" {
		key, err := decodeSecret(cfg.Secret)
		if err != nil {
			return nil, fmt.Errorf("sink %q: secret: %w", cfg.Name, err)
		}
		s.key = key
	}
	if s.client == nil {
		if t, ok := http.DefaultTransport.(*http.Transport); ok {
			s.transport = t.Clone()
		} else {
			s.transport = &http.Transport{Proxy: http.ProxyFromEnvironment}
		}
		// One connection per lane stays open between batches.
		s.transport.MaxIdleConnsPerHost = cfg.MaxInFlight
		s.transport.MaxIdleConns = max(s.transport.MaxIdleConns, cfg.MaxInFlight)
		s.client = &http.Client{
			Transport: s.transport,
			Timeout:   cfg.Timeout,
			// Only a 2xx acknowledges: a redirect is a failed attempt the
			// log shows, not a POST silently turned into a GET.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	s.header = http.Header{
		"Content-Type": {"application/json"},
		"User-Agent":   {"walhook/" + opts.Version},
	}
	for name, value := range cfg.Headers {
		if http.CanonicalHeaderKey(name) == "Host" {
			s.host = value
			continue
		}
		s.header.Set(name, value)
	}
	if cfg.Retry.MaxAttempts > 0 && s.deadLetter == nil {
		s.log.Warn("retry.max_attempts is set but there is no dead-letter store: retrying forever",
			"max_attempts", cfg.Retry.MaxAttempts)
	}
	s.lanes = make([]*lane, cfg.MaxInFlight)
	for i := range s.lanes {
		s.lanes[i] = newLane(s, i)
	}
	return s, nil
}

func validate(cfg config.Sink) error {
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		return errors.New("url is missing (e.g. https://example.com/hooks)")
	case err != nil:
		// The URL may hold credentials: name the problem, not the text.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("url is not a valid URL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("url: scheme %q is not http or https", u.Scheme)
	case u.Host == "":
		return errors.New("url has no host (e.g. https://example.com/hooks)")
	case cfg.BatchSize < 1:
		return fmt.Errorf("batch_size must be at least 1, got %d", cfg.BatchSize)
	case cfg.BatchWait < 0:
		return fmt.Errorf("batch_wait must not be negative, got %s", cfg.BatchWait)
	case cfg.MaxInFlight < 1:
		return fmt.Errorf("max_in_flight must be at least 1, got %d", cfg.MaxInFlight)
	case cfg.Timeout <= 0:
		return fmt.Errorf("timeout must be positive, got %s", cfg.Timeout)
	case cfg.Retry.Initial <= 0:
		return fmt.Errorf("retry.initial must be positive, got %s", cfg.Retry.Initial)
	case cfg.Retry.Max < cfg.Retry.Initial:
		return fmt.Errorf("retry.max (%s) must not be below retry.initial (%s)", cfg.Retry.Max, cfg.Retry.Initial)
	case cfg.Retry.MaxAttempts < 0:
		return fmt.Errorf("retry.max_attempts must not be negative, got %d (0 means forever)", cfg.Retry.MaxAttempts)
	}
	for name, value := range cfg.Headers {
		if !validHeaderName(name) {
			return fmt.Errorf("headers: %q is not a valid header name", name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			// Never print a header value: it is often a credential.
			return fmt.Errorf("headers: the value of %q holds a line break or NUL", name)
		}
	}
	return nil
}

// validHeaderName reports whether name is an RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Name is the sink's configured name.
func (s *Sink) Name() string { return s.cfg.Name }

// Run runs the lanes until ctx ends, then returns nil once every lane has
// stopped. Ending ctx is a hard stop: requests in flight and retry waits are
// abandoned and their messages stay unacknowledged. Use Drain first for a
// graceful stop. A sink runs once; a second call returns an error.
func (s *Sink) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return fmt.Errorf("run sink %q: it has already run", s.cfg.Name)
	}
	var wg sync.WaitGroup
	for _, l := range s.lanes {
		wg.Go(func() { l.run(ctx) })
	}
	wg.Wait()
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	close(s.stopped)
	return nil
}

// Submit queues m on its lane. It blocks while that lane's queue is full,
// also before Run has started, and returns ctx.Err() if ctx ends first,
// ErrDraining once Drain has begun and ErrStopped once Run has returned. m
// must not change after Submit returned nil.
//
// A barrier message (see Options.Route) waits until everything submitted
// before it is acknowledged, and Submit returns only once it is
// acknowledged itself.
func (s *Sink) Submit(ctx context.Context, m *change.Message) error {
	group, barrier := s.routeOf(m)
	l := s.lanes[group%uint64(len(s.lanes))]
	if barrier {
		if err := s.waitIdle(ctx); err != nil {
			return err
		}
		if err := s.submit(ctx, l, m); err != nil {
			return err
		}
		return s.waitIdle(ctx)
	}
	return s.submit(ctx, l, m)
}

// waitIdle waits until every submitted message is acknowledged. It returns
// ctx.Err() if ctx ends first and ErrStopped if Run returns first.
func (s *Sink) waitIdle(ctx context.Context) error {
	for s.pending.Load() != 0 {
		select {
		case <-s.idle:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopped:
			if s.pending.Load() == 0 {
				return nil
			}
			return ErrStopped
		}
	}
	// Pass the wake-up on to any other waiter.
	s.poke()
	return nil
}

func (s *Sink) submit(ctx context.Context, l *lane, m *change.Message) error {
	// Count m before looking at draining, so that Drain, which closes
	// draining before reading pending, either sees m counted or makes us
	// refuse it.
	s.pending.Add(1)
	select {
	case <-s.draining:
		s.release(1)
		return ErrDraining
	case <-s.stopped:
		s.release(1)
		return ErrStopped
	default:
	}
	select {
	case l.queue <- m:
		return nil
	case <-ctx.Done():
		s.release(1)
		return ctx.Err()
	case <-s.draining:
		s.release(1)
		return ErrDraining
	case <-s.stopped:
		s.release(1)
		return ErrStopped
	}
}

// Drain stops Submit and delivers everything already queued, sending partial
// batches at once rather than after batch_wait. It returns nil when every
// submitted message is acknowledged, an error wrapping ctx.Err() if ctx ends
// first, and one wrapping ErrStopped if Run returns first. Drain needs Run to
// be running; it may be called more than once.
func (s *Sink) Drain(ctx context.Context) error {
	s.drain.Do(func() { close(s.draining) })
	if err := s.waitIdle(ctx); err != nil {
		return fmt.Errorf("drain sink %q: %d messages not acknowledged: %w", s.cfg.Name, s.pending.Load(), err)
	}
	return nil
}

// Stats returns the sink's counters.
func (s *Sink) Stats() Stats {
	return Stats{
		Queued:         s.pending.Load(),
		InFlight:       s.inFlight.Load(),
		Delivered:      s.delivered.Load(),
		DeadLettered:   s.deadLettered.Load(),
		FailedAttempts: s.failedAttempts.Load(),
	}
}

// release forgets n submitted messages and wakes Drain when none is left.
func (s *Sink) release(n int) {
	if s.pending.Add(-int64(n)) == 0 {
		s.poke()
	}
}

func (s *Sink) poke() {
	select {
	case s.idle <- struct{}{}:
	default:
	}
}

// routeOf gives m's ordering group and whether it is a barrier.
func (s *Sink) routeOf(m *change.Message) (uint64, bool) {
	if s.route != nil {
		return s.route(m)
	}
	return sink.HashKey(m.Key), m.Barrier
}

// laneOf is the index of m's lane.
func (s *Sink) laneOf(m *change.Message) int {
	group, _ := s.routeOf(m)
	return int(group % uint64(len(s.lanes)))
}
