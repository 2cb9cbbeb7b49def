package server

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/walhook/walhook/config"
)

// Field lists shown when a request body is wrong.
const (
	replayFields   = `{"ids": ["..."]} (no ids: every dead letter)`
	backfillFields = `{"tables": ["public.orders"], "where": "id > 100"} (no tables: every table of the sink)`
)

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if s.opts.Status == nil {
		s.notImplemented(w, "status is")
		return
	}
	report, err := s.opts.Status.Status(r.Context())
	if err != nil {
		s.fail(w, r, fmt.Errorf("status: %w", err))
		return
	}
	s.writeJSON(w, http.StatusOK, s.complete(report))
}

// complete fills in what the server knows of a status report: readiness,
// this process, the heartbeat's age and the slot's lag in seconds.
func (s *Server) complete(report StatusReport) StatusReport {
	rd := s.readiness()
	report.Ready, report.Reason, report.Role = rd.Ready, rd.Reason, rd.Role
	if report.Sinks == nil {
		report.Sinks = []SinkStatus{}
	}
	report.Instance = &s.instance
	if report.LastHeartbeat != nil {
		age := max(time.Since(*report.LastHeartbeat).Seconds(), 0)
		report.HeartbeatAgeSeconds = &age
	}
	for _, k := range report.Sinks {
		report.LagSeconds = max(report.LagSeconds, k.LagSeconds)
	}
	return report
}

func (s *Server) pauseSink(w http.ResponseWriter, r *http.Request) {
	s.setPaused(w, r, true)
}

func (s *Server) resumeSink(w http.ResponseWriter, r *http.Request) {
	s.setPaused(w, r, false)
}

func (s *Server) setPaused(w http.ResponseWriter, r *http.Request, pause bool) {
	if s.opts.Sinks == nil {
		s.notImplemented(w, "pausing and resuming sinks is")
		return
	}
	sink, ok := s.sinkParam(w, r)
	if !ok {
		return
	}
	var err error
	if pause {
		err = s.opts.Sinks.PauseSink(r.Context(), sink)
	} else {
		err = s.opts.Sinks.ResumeSink(r.Context(), sink)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, SinkState{Sink: sink, Paused: pause})
}

func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	if s.opts.DeadLetters == nil {
		s.notImplemented(w, "the dead-letter store is")
		return
	}
	sink, ok := s.sinkParam(w, r)
	if !ok {
		return
	}
	list, err := s.opts.DeadLetters.ListDeadLetters(r.Context(), sink)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if list == nil {
		list = []DeadLetter{}
	}
	for i := range list {
		list[i].Messages = nil
	}
	s.writeJSON(w, http.StatusOK, DeadLetterList{Sink: sink, DeadLetters: list})
}

func (s *Server) deadLetter(w http.ResponseWriter, r *http.Request) {
	if s.opts.DeadLetters == nil {
		s.notImplemented(w, "the dead-letter store is")
		return
	}
	sink, id, ok := s.sinkAndID(w, r)
	if !ok {
		return
	}
	dl, err := s.opts.DeadLetters.DeadLetter(r.Context(), sink, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, dl)
}

func (s *Server) dropDeadLetter(w http.ResponseWriter, r *http.Request) {
	if s.opts.DeadLetters == nil {
		s.notImplemented(w, "the dead-letter store is")
		return
	}
	sink, id, ok := s.sinkAndID(w, r)
	if !ok {
		return
	}
	if err := s.opts.DeadLetters.DropDeadLetter(r.Context(), sink, id); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) replayDeadLetters(w http.ResponseWriter, r *http.Request) {
	if s.opts.DeadLetters == nil {
		s.notImplemented(w, "the dead-letter store is")
		return
	}
	sink, ok := s.sinkParam(w, r)
	if !ok {
		return
	}
	var req ReplayRequest
	if err := decodeBody(r, &req, replayFields); err != nil {
		s.writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	for i, id := range req.IDs {
		switch {
		case id == "":
			s.writeError(w, http.StatusBadRequest, "ids[%d] is empty; give the ID of a dead letter, as dlq list shows it", i)
			return
		case slices.Contains(req.IDs[:i], id):
			s.writeError(w, http.StatusBadRequest, "ids[%d]: %q is listed twice; list each dead letter once", i, id)
			return
		}
	}
	ids, err := s.opts.DeadLetters.ReplayDeadLetters(r.Context(), sink, req.IDs)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if ids == nil {
		ids = []string{}
	}
	s.writeJSON(w, http.StatusAccepted, ReplayResult{Sink: sink, Replaying: ids})
}

func (s *Server) startBackfill(w http.ResponseWriter, r *http.Request) {
	if s.opts.Backfills == nil {
		s.notImplemented(w, "backfill is")
		return
	}
	sink, ok := s.sinkParam(w, r)
	if !ok {
		return
	}
	var req BackfillRequest
	if err := decodeBody(r, &req, backfillFields); err != nil {
		s.writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	tables := make([]config.Table, 0, len(req.Tables))
	for i, name := range req.Tables {
		t, err := config.ParseTable(name)
		switch {
		case err != nil:
			s.writeError(w, http.StatusBadRequest, `tables[%d]: %v; write schema.table, such as public.orders or "Sales"."Order Items"`, i, err)
			return
		case slices.Contains(tables, t):
			s.writeError(w, http.StatusBadRequest, "tables[%d]: %s is listed twice; list each table once", i, t)
			return
		}
		tables = append(tables, t)
	}
	bf, err := s.opts.Backfills.StartBackfill(r.Context(), sink, tables, strings.TrimSpace(req.Where))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusAccepted, bf)
}

func (s *Server) backfills(w http.ResponseWriter, r *http.Request) {
	if s.opts.Backfills == nil {
		s.notImplemented(w, "backfill is")
		return
	}
	list, err := s.opts.Backfills.Backfills(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if list == nil {
		list = []Backfill{}
	}
	s.writeJSON(w, http.StatusOK, BackfillList{Backfills: list})
}

func (s *Server) cancelBackfill(w http.ResponseWriter, r *http.Request) {
	if s.opts.Backfills == nil {
		s.notImplemented(w, "backfill is")
		return
	}
	id, ok := s.pathParam(w, r, "id")
	if !ok {
		return
	}
	if err := s.opts.Backfills.CancelBackfill(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// sinkParam returns the {sink} of the path, answering 404 when it is not a
// configured sink.
func (s *Server) sinkParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	sink, ok := s.pathParam(w, r, "sink")
	if !ok {
		return "", false
	}
	if len(s.opts.SinkNames) > 0 && !slices.Contains(s.opts.SinkNames, sink) {
		s.writeError(w, http.StatusNotFound, "unknown sink %q; the configured sinks are %s", sink, strings.Join(s.opts.SinkNames, ", "))
		return "", false
	}
	return sink, true
}

// sinkAndID returns the {sink} and {id} of the path.
func (s *Server) sinkAndID(w http.ResponseWriter, r *http.Request) (sink, id string, ok bool) {
	if sink, ok = s.sinkParam(w, r); !ok {
		return "", "", false
	}
	if id, ok = s.pathParam(w, r, "id"); !ok {
		return "", "", false
	}
	return sink, id, true
}

// pathParam returns a path parameter, unescaped: chi matches the escaped
// path when the request has one.
func (s *Server) pathParam(w http.ResponseWriter, r *http.Request, name string) (string, bool) {
	v, err := url.PathUnescape(chi.URLParam(r, name))
	if err != nil || v == "" {
		s.writeError(w, http.StatusBadRequest, "the %s in the path %s is not a valid path segment", name, r.URL.EscapedPath())
		return "", false
	}
	return v, true
}
