// Package server is walhook's admin HTTP surface: /healthz, /readyz and
// /metrics at the root, the admin API under /api/v1, and the operator
// console at / and under /console (console*.go).
//
// The server owns no state of its own. It reads and acts through the small
// interfaces of api.go (Health, Status, Sinks, DeadLetters, Backfills), which
// the components that own the state implement; any of them may be nil, and
// its endpoints then answer 501. Every answer is JSON, and every error is
// {"error": "..."}. Before any of it, the checks of crosssite.go refuse what
// a web page in the operator's browser could send.
package server

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/walhook/walhook/config"
)

// shutdownTimeout bounds how long Run waits for requests in progress once its
// context ends. Admin requests are short; a slow one is cut off.
const shutdownTimeout = 2 * time.Second

// Options are what the server serves. Every field may be left out: a nil
// interface makes its endpoints answer 501 with a JSON error, a nil Health
// makes /readyz answer 503, and a nil Metrics serves only the Go and process
// metrics.
type Options struct {
	// SinkNames are the configured sinks. A sink name in a path that is not
	// one of them is answered 404 before any interface is called. Empty
	// means names are not checked here (the interfaces' ErrNotFound still
	// gives 404).
	SinkNames []string

	Health      Health
	Status      Status
	Sinks       Sinks
	DeadLetters DeadLetters
	Backfills   Backfills
	// SinkConfigs shows a sink's configuration on the console's sink page;
	// nil leaves it out.
	SinkConfigs SinkConfigs

	// Metrics gathers walhook's own collectors for /metrics. The server adds
	// the Go runtime and process collectors itself, so Metrics must not hold
	// them: use a prometheus.NewRegistry(), not the default registry.
	Metrics prometheus.Gatherer

	// Log receives the server's own messages (a failed request, a failed
	// authentication); nil discards them. No message holds a token or an
	// Authorization header.
	Log *slog.Logger
}

// Server is the admin HTTP server.
type Server struct {
	cfg     config.Server
	opts    Options
	log     *slog.Logger
	router  *chi.Mux
	metrics http.Handler
	// instance is this process, as the status shows it.
	instance Instance
	// sessions and pages are the console's (console.go).
	sessions *sessions
	pages    map[string]*template.Template
}

// New builds the server for cfg. It does not listen until Run or Serve.
func New(cfg config.Server, opts Options) *Server {
	s := &Server{cfg: cfg, opts: opts, log: opts.Log, instance: Instance{PID: os.Getpid(), Since: time.Now().UTC()}}
	s.instance.Host, _ = os.Hostname()
	s.sessions = newSessions()
	s.pages = consolePages()
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.metrics = s.metricsHandler()
	s.router = s.routes()
	return s
}

// Handler is the server's router, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.router }

// Run listens on server.listen and serves until ctx ends, then shuts down,
// giving requests in progress a short grace period. With server.listen ""
// the server is off and Run returns nil at once. An address that cannot be
// listened on is an error naming it and server.listen.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Listen == "" {
		return nil
	}
	ln, err := s.Listen()
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Listen opens server.listen, with an error that names the key when the
// address is taken; Serve then serves on it.
func (s *Server) Listen() (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", s.cfg.Listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("admin server: %s (server.listen) is already in use, perhaps by another walhook; stop that process or set server.listen to a free address: %w", s.cfg.Listen, err)
		}
		return nil, fmt.Errorf("admin server: listen on %s (server.listen): %w", s.cfg.Listen, err)
	}
	return ln, nil
}

// Serve serves on ln until ctx ends, then shuts down like Run. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.router,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("admin server listening", "addr", ln.Addr().String())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("admin server on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Requests still running after the grace period are cut off; that
		// is what the grace period is for, not a failure.
		s.log.Debug("admin server: closing requests still running", "err", err)
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server on %s: %w", ln.Addr(), err)
	}
	return nil
}

// routes builds the router: health, readiness and metrics at the root
// (behind the token with server.protect_metrics), the API under /api behind
// the token whenever one is set. Every path first passes checkHost, and the
// API passes the cross-site checks of crosssite.go in this order: Host
// (421), origin (403), token (401), Content-Type (415), so that a web page
// learns nothing, not even whether a token is set.
func (s *Server) routes() *chi.Mux {
	r := chi.NewRouter()
	r.Use(s.checkHost)
	// Set before any subrouter is made, so that every subrouter answers an
	// unknown path or method in JSON too.
	r.NotFound(s.notFound)
	r.MethodNotAllowed(s.methodNotAllowed)

	r.Group(func(r chi.Router) {
		if s.cfg.ProtectMetrics {
			r.Use(s.requireToken)
		}
		r.Get("/healthz", s.healthz)
		r.Get("/readyz", s.readyz)
		r.Method(http.MethodGet, "/metrics", s.metrics)
	})

	// The whole /api tree is behind the token, so that an unauthenticated
	// request learns nothing, not even which paths exist.
	r.Route("/api", func(r chi.Router) {
		r.Use(s.sameOrigin, s.requireToken, s.requireJSON)
		r.Route("/v1", func(r chi.Router) {
			r.Get("/status", s.status)
			r.Post("/sinks/{sink}/pause", s.pauseSink)
			r.Post("/sinks/{sink}/resume", s.resumeSink)
			r.Get("/sinks/{sink}/dlq", s.listDeadLetters)
			r.Post("/sinks/{sink}/dlq/replay", s.replayDeadLetters)
			r.Get("/sinks/{sink}/dlq/{id}", s.deadLetter)
			r.Delete("/sinks/{sink}/dlq/{id}", s.dropDeadLetter)
			r.Post("/sinks/{sink}/backfills", s.startBackfill)
			r.Get("/backfills", s.backfills)
			r.Delete("/backfills/{id}", s.cancelBackfill)
		})
	})

	s.consoleRoutes(r)
	return r
}
