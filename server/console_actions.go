package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/walhook/walhook/config"
)

// The console's actions: form POSTs that consoleCSRF has let through. Each
// answers with a redirect to the page that shows the result (303, so a
// reload does not post again), or with the page and what was wrong.

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Token == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	p := consolePage{Title: "Log in", Data: localPath(r.URL.Query().Get("next"))}
	s.render(w, http.StatusOK, "login", p)
}

// login checks the token of the login form and, when it is server.token,
// opens a session and sends the browser where it was going. The token is
// never logged nor shown again.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Token == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		s.consoleError(w, r, http.StatusBadRequest, "The login form could not be read: "+err.Error()+".")
		return
	}
	next := localPath(r.PostForm.Get("next"))
	if !tokenMatches(r.PostForm.Get("token"), s.cfg.Token) {
		s.log.Warn("console login with a wrong token", "remote", r.RemoteAddr)
		p := consolePage{Title: "Log in", Data: next, Error: "That is not this walhook's token: enter the value of server.token from its configuration."}
		s.render(w, http.StatusUnauthorized, "login", p)
		return
	}
	s.sessions.create(w, r, time.Now())
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	s.sessions.end(w, r)
	target := "/console/login"
	if s.cfg.Token == "" {
		target = "/"
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// localPath is next if it is a path of this server, else "/": the login
// form never sends the browser to another site.
func localPath(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return next
}

func (s *Server) consolePause(w http.ResponseWriter, r *http.Request) {
	s.consoleSetPaused(w, r, true)
}

func (s *Server) consoleResume(w http.ResponseWriter, r *http.Request) {
	s.consoleSetPaused(w, r, false)
}

func (s *Server) consoleSetPaused(w http.ResponseWriter, r *http.Request, pause bool) {
	name, ok := s.consoleSink(w, r)
	if !ok {
		return
	}
	if s.opts.Sinks == nil {
		s.consoleError(w, r, http.StatusNotImplemented, "Pausing and resuming sinks is not available in this walhook.")
		return
	}
	var err error
	done := "paused"
	if pause {
		err = s.opts.Sinks.PauseSink(r.Context(), name)
	} else {
		err, done = s.opts.Sinks.ResumeSink(r.Context(), name), "resumed"
	}
	if err != nil {
		s.consoleFail(w, r, err)
		return
	}
	redirectDone(w, r, "/console/sinks/"+url.PathEscape(name), done, -1)
}

// deadLetterAction is what the confirmation page shows and posts on.
type deadLetterAction struct {
	Sink   string
	Action string // "replay" or "drop"
	All    bool
	IDs    []string
	Count  int
}

// deadLetterSelection reads which dead letters a form names: every one
// with all=1, else the id fields.
func (s *Server) deadLetterSelection(w http.ResponseWriter, r *http.Request) (deadLetterAction, bool) {
	name, ok := s.consoleSink(w, r)
	if !ok {
		return deadLetterAction{}, false
	}
	if s.opts.DeadLetters == nil {
		s.consoleError(w, r, http.StatusNotImplemented, "The dead-letter store is not available in this walhook.")
		return deadLetterAction{}, false
	}
	a := deadLetterAction{Sink: name, All: r.PostForm.Get("all") == "1"}
	if !a.All {
		for _, id := range r.PostForm["id"] {
			if id != "" && !slices.Contains(a.IDs, id) {
				a.IDs = append(a.IDs, id)
			}
		}
		if len(a.IDs) == 0 {
			s.consoleError(w, r, http.StatusBadRequest, "No dead letter was selected: tick the ones to act on, or use the buttons for all of them.")
			return deadLetterAction{}, false
		}
	}
	return a, true
}

// confirmDeadLetters shows what a replay or drop would do and asks to
// confirm it; it changes nothing.
func (s *Server) confirmDeadLetters(w http.ResponseWriter, r *http.Request) {
	a, ok := s.deadLetterSelection(w, r)
	if !ok {
		return
	}
	a.Action = r.PostForm.Get("action")
	if a.Action != "replay" && a.Action != "drop" {
		s.consoleError(w, r, http.StatusBadRequest, fmt.Sprintf("Unknown action %q: the console replays or drops dead letters.", a.Action))
		return
	}
	a.Count = len(a.IDs)
	if a.All {
		list, err := s.opts.DeadLetters.ListDeadLetters(r.Context(), a.Sink)
		if err != nil {
			s.consoleFail(w, r, err)
			return
		}
		a.Count = len(list)
	}
	p := s.page(r, "Confirm", "")
	p.Data = a
	s.render(w, http.StatusOK, "confirm", p)
}

func (s *Server) consoleReplay(w http.ResponseWriter, r *http.Request) {
	a, ok := s.deadLetterSelection(w, r)
	if !ok {
		return
	}
	queued, err := s.opts.DeadLetters.ReplayDeadLetters(r.Context(), a.Sink, a.IDs)
	if err != nil {
		s.consoleFail(w, r, err)
		return
	}
	redirectDone(w, r, "/console/sinks/"+url.PathEscape(a.Sink)+"/dlq", "replayed", len(queued))
}

// consoleDrop drops the selected dead letters one by one, stopping at the
// first failure and saying how many were dropped before it.
func (s *Server) consoleDrop(w http.ResponseWriter, r *http.Request) {
	a, ok := s.deadLetterSelection(w, r)
	if !ok {
		return
	}
	ids := a.IDs
	if a.All {
		list, err := s.opts.DeadLetters.ListDeadLetters(r.Context(), a.Sink)
		if err != nil {
			s.consoleFail(w, r, err)
			return
		}
		for _, d := range list {
			ids = append(ids, d.ID)
		}
	}
	for i, id := range ids {
		if err := s.opts.DeadLetters.DropDeadLetter(r.Context(), a.Sink, id); err != nil {
			s.consoleFail(w, r, fmt.Errorf("dropped %d of %d dead letters, then %s: %w", i, len(ids), id, err))
			return
		}
	}
	redirectDone(w, r, "/console/sinks/"+url.PathEscape(a.Sink)+"/dlq", "dropped", len(ids))
}

// consoleStartBackfill starts a backfill from the form: sink, tables (one
// per line, or separated by commas; none for every table of the sink) and
// where. A refusal shows the page again with the form as it was.
func (s *Server) consoleStartBackfill(w http.ResponseWriter, r *http.Request) {
	form := backfillForm{Sink: r.PostForm.Get("sink"), Tables: r.PostForm.Get("tables"), Where: r.PostForm.Get("where")}
	if s.opts.Backfills == nil {
		s.consoleError(w, r, http.StatusNotImplemented, "Backfill is not available in this walhook.")
		return
	}
	if form.Sink == "" {
		s.showBackfills(w, r, http.StatusBadRequest, "Choose the sink to backfill.", form)
		return
	}
	var tables []config.Table
	for i, name := range splitTables(form.Tables) {
		t, err := config.ParseTable(name)
		switch {
		case err != nil:
			s.showBackfills(w, r, http.StatusBadRequest, fmt.Sprintf(`Table %d (%s): %v; write schema.table, such as public.orders or "Sales"."Order Items".`, i+1, name, err), form)
			return
		case slices.Contains(tables, t):
			s.showBackfills(w, r, http.StatusBadRequest, fmt.Sprintf("%s is listed twice; list each table once.", t), form)
			return
		}
		tables = append(tables, t)
	}
	if _, err := s.opts.Backfills.StartBackfill(r.Context(), form.Sink, tables, strings.TrimSpace(form.Where)); err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, ErrInvalid):
			status = http.StatusBadRequest
		case errors.Is(err, ErrConflict):
			status = http.StatusConflict
		case errors.Is(err, ErrUnavailable):
			status = http.StatusServiceUnavailable
		default:
			s.log.Error("console: start backfill", "sink", form.Sink, "err", err)
		}
		s.showBackfills(w, r, status, err.Error(), form)
		return
	}
	redirectDone(w, r, "/console/backfills", "started", -1)
}

// splitTables splits the form's tables at line breaks and at commas
// outside double quotes.
func splitTables(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	flush := func() {
		if t := strings.TrimSpace(cur.String()); t != "" {
			out = append(out, t)
		}
		cur.Reset()
	}
	for _, c := range s {
		switch {
		case c == '"':
			quoted = !quoted
			cur.WriteRune(c)
		case (c == ',' && !quoted) || c == '\n' || c == '\r':
			flush()
		default:
			cur.WriteRune(c)
		}
	}
	flush()
	return out
}

func (s *Server) consoleCancelBackfill(w http.ResponseWriter, r *http.Request) {
	if s.opts.Backfills == nil {
		s.consoleError(w, r, http.StatusNotImplemented, "Backfill is not available in this walhook.")
		return
	}
	id, err := url.PathUnescape(chi.URLParam(r, "id"))
	if err != nil || id == "" {
		s.consoleError(w, r, http.StatusBadRequest, "The backfill ID in the path is not a valid path segment.")
		return
	}
	if err := s.opts.Backfills.CancelBackfill(r.Context(), id); err != nil {
		s.consoleFail(w, r, err)
		return
	}
	redirectDone(w, r, "/console/backfills", "cancelled", -1)
}
