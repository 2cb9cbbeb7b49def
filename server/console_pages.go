package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
)

// The console's pages: each reads through the server's interfaces and
// renders one template of console/.

// overview is the data of the overview page.
type overview struct {
	Status    StatusReport
	Backfills []Backfill // running ones
}

func (s *Server) overviewPage(w http.ResponseWriter, r *http.Request) {
	p := s.page(r, "Overview", "overview")
	if s.opts.Status == nil {
		s.consoleError(w, r, http.StatusNotImplemented, "The status is not available in this walhook.")
		return
	}
	report, err := s.opts.Status.Status(r.Context())
	if err != nil {
		// A standby whose state database is unreachable still has a
		// page to show: what it knows, and why the rest is missing.
		p.Error = err.Error()
	}
	report = s.complete(report)
	ov := overview{Status: report}
	for _, b := range report.Backfills {
		if b.State == "running" {
			ov.Backfills = append(ov.Backfills, b)
		}
	}
	p.Data = ov
	s.render(w, http.StatusOK, "overview", p)
}

// sinkDetail is the data of a sink's page.
type sinkDetail struct {
	Sink     SinkStatus
	Settings []Setting
	// Backfills are the sink's, running or finished.
	Backfills []Backfill
}

func (s *Server) sinkPage(w http.ResponseWriter, r *http.Request) {
	name, ok := s.consoleSink(w, r)
	if !ok {
		return
	}
	if s.opts.Status == nil {
		s.consoleError(w, r, http.StatusNotImplemented, "The status is not available in this walhook.")
		return
	}
	report, err := s.opts.Status.Status(r.Context())
	if err != nil {
		s.consoleFail(w, r, err)
		return
	}
	report = s.complete(report)
	var d sinkDetail
	found := false
	for _, k := range report.Sinks {
		if k.Name == name {
			d.Sink, found = k, true
		}
	}
	if !found {
		s.consoleError(w, r, http.StatusNotFound, "No sink "+strconv.Quote(name)+" runs in this walhook (a standby runs none: the overview names the active instance).")
		return
	}
	for _, b := range report.Backfills {
		if b.Sink == name {
			d.Backfills = append(d.Backfills, b)
		}
	}
	if s.opts.SinkConfigs != nil {
		if d.Settings, err = s.opts.SinkConfigs.SinkConfig(r.Context(), name); err != nil {
			s.consoleFail(w, r, err)
			return
		}
	}
	p := s.page(r, "Sink "+name, "")
	p.Data = d
	s.render(w, http.StatusOK, "sink", p)
}

// deadLetterList is the data of a sink's dead letters page.
type deadLetterList struct {
	Sink        string
	DeadLetters []DeadLetter // this page's
	Total       int
	Page, Pages int
	From, To    int // 1-based positions of this page's first and last
}

func (s *Server) deadLettersPage(w http.ResponseWriter, r *http.Request) {
	name, ok := s.consoleSink(w, r)
	if !ok {
		return
	}
	if s.opts.DeadLetters == nil {
		s.consoleError(w, r, http.StatusNotImplemented, "The dead-letter store is not available in this walhook.")
		return
	}
	list, err := s.opts.DeadLetters.ListDeadLetters(r.Context(), name)
	if err != nil {
		s.consoleFail(w, r, err)
		return
	}
	d := deadLetterList{Sink: name, Total: len(list), Pages: max(1, (len(list)+deadLettersPerPage-1)/deadLettersPerPage)}
	d.Page, _ = strconv.Atoi(r.URL.Query().Get("page"))
	d.Page = min(max(d.Page, 1), d.Pages)
	from := (d.Page - 1) * deadLettersPerPage
	to := min(from+deadLettersPerPage, len(list))
	d.DeadLetters = list[from:to]
	d.From, d.To = from+1, to
	p := s.page(r, "Dead letters of "+name, "")
	p.Data = d
	s.render(w, http.StatusOK, "deadletters", p)
}

// deadLetterDetail is the data of one dead letter's page: its messages
// indented.
type deadLetterDetail struct {
	DeadLetter DeadLetter
	Messages   []string
}

func (s *Server) deadLetterPage(w http.ResponseWriter, r *http.Request) {
	name, ok := s.consoleSink(w, r)
	if !ok {
		return
	}
	if s.opts.DeadLetters == nil {
		s.consoleError(w, r, http.StatusNotImplemented, "The dead-letter store is not available in this walhook.")
		return
	}
	id, err := url.PathUnescape(chi.URLParam(r, "id"))
	if err != nil {
		s.consoleError(w, r, http.StatusBadRequest, "The dead letter ID in the path "+r.URL.EscapedPath()+" is not a valid path segment.")
		return
	}
	dl, err := s.opts.DeadLetters.DeadLetter(r.Context(), name, id)
	if err != nil {
		s.consoleFail(w, r, err)
		return
	}
	d := deadLetterDetail{DeadLetter: dl}
	for _, m := range dl.Messages {
		var buf bytes.Buffer
		if json.Indent(&buf, m, "", "  ") != nil {
			buf.Reset()
			buf.Write(m)
		}
		d.Messages = append(d.Messages, buf.String())
	}
	p := s.page(r, "Dead letter "+dl.ID, "")
	p.Data = d
	s.render(w, http.StatusOK, "deadletter", p)
}

// backfillPage is the data of the backfills page; Form holds what a
// refused start asked for, to show it again.
type backfillPage struct {
	Backfills []Backfill // newest first
	Sinks     []string
	Form      backfillForm
}

type backfillForm struct {
	Sink, Tables, Where string
}

func (s *Server) backfillsPage(w http.ResponseWriter, r *http.Request) {
	s.showBackfills(w, r, http.StatusOK, "", backfillForm{Sink: r.URL.Query().Get("sink")})
}

// showBackfills renders the backfills page, with errMsg above the form
// when a start was refused.
func (s *Server) showBackfills(w http.ResponseWriter, r *http.Request, status int, errMsg string, form backfillForm) {
	if s.opts.Backfills == nil {
		s.consoleError(w, r, http.StatusNotImplemented, "Backfill is not available in this walhook.")
		return
	}
	list, err := s.opts.Backfills.Backfills(r.Context())
	if err != nil {
		s.consoleFail(w, r, err)
		return
	}
	d := backfillPage{Form: form}
	for i := len(list) - 1; i >= 0; i-- {
		d.Backfills = append(d.Backfills, list[i])
	}
	d.Sinks = s.sinkNames(r)
	p := s.page(r, "Backfills", "backfills")
	if errMsg != "" {
		p.Flash = ""
		p.Error = errMsg
	}
	p.Data = d
	s.render(w, status, "backfills", p)
}

// sinkNames are the configured sinks, or those the status shows.
func (s *Server) sinkNames(r *http.Request) []string {
	if len(s.opts.SinkNames) > 0 || s.opts.Status == nil {
		return s.opts.SinkNames
	}
	report, err := s.opts.Status.Status(r.Context())
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(report.Sinks))
	for _, k := range report.Sinks {
		names = append(names, k.Name)
	}
	return names
}

// eta is how long a running backfill still needs at its current rate;
// 0 when that cannot be said.
func eta(b Backfill) time.Duration {
	if b.State != "running" || b.RowsPerSec <= 0 || b.RowsEstimate <= b.RowsDone {
		return 0
	}
	return time.Duration(float64(b.RowsEstimate-b.RowsDone) / b.RowsPerSec * float64(time.Second))
}
