package server

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// healthz answers 200 while the process is alive: it only checks that the
// server can answer.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	s.writeJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
	}{"ok"})
}

// readyz answers 200 when Health says walhook is ready, else 503 with the
// reason and the role.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	rd := s.readiness()
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
	}
	s.writeJSON(w, status, rd)
}

// readiness asks Health; without one, walhook cannot say it is ready.
func (s *Server) readiness() Readiness {
	if s.opts.Health == nil {
		return Readiness{Reason: "readiness is not reported by this walhook"}
	}
	ok, reason, role := s.opts.Health.Ready()
	if !ok && reason == "" {
		reason = "not ready"
	}
	if ok {
		reason = ""
	}
	return Readiness{Ready: ok, Role: role, Reason: reason}
}

// metricsHandler serves the Go runtime and process collectors together with
// Options.Metrics. A collector that fails is logged and its metrics left out;
// the others are still served.
func (s *Server) metricsHandler() http.Handler {
	runtime := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := runtime.Register(c); err != nil {
			s.log.Warn("admin server: register runtime metrics", "err", err)
		}
	}
	gatherers := prometheus.Gatherers{runtime}
	if s.opts.Metrics != nil {
		gatherers = append(gatherers, s.opts.Metrics)
	}
	return promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{
		ErrorLog:      promLogger{s},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// promLogger passes promhttp's errors on to the server's log.
type promLogger struct{ s *Server }

func (l promLogger) Println(v ...any) {
	l.s.log.Warn("admin server: gather metrics", "err", fmt.Sprint(v...))
}
