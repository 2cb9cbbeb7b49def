package server

import (
	"bytes"
	"context"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// The console: server-rendered pages at / and under /console, over the
// same interfaces as the API. Pages are GETs that change nothing; every
// action is a form POST under /console that passes the Host and Origin
// checks of crosssite.go and carries the session's CSRF token
// (console_session.go). The only script, console/static/console.js,
// polls /api/v1/status to refresh the numbers in place.

//go:embed console
var consoleFiles embed.FS

// deadLettersPerPage is how many dead letters one page of the list shows.
const deadLettersPerPage = 50

// consoleCSP lets the pages load only the server's own stylesheet and
// script, post forms only to the server, and be framed by nobody.
const consoleCSP = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// consolePages parses each page with the layout around it.
func consolePages() map[string]*template.Template {
	pages := map[string]*template.Template{}
	names, _ := fs.Glob(consoleFiles, "console/*.html")
	for _, name := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(name, "console/"), ".html")
		if base == "layout" {
			continue
		}
		pages[base] = template.Must(template.New("layout.html").Funcs(consoleFuncs).ParseFS(consoleFiles, "console/layout.html", name))
	}
	return pages
}

// consolePage is what every page's template gets.
type consolePage struct {
	Title string
	Nav   string // "overview", "backfills" or ""
	CSRF  string
	// Logout is shown when a token guards the console.
	Logout bool
	Flash  string
	Error  string
	Data   any
}

type sessionKey struct{}

// consoleRoutes adds the console to r: / and /console/...
func (s *Server) consoleRoutes(r chi.Router) {
	static, _ := fs.Sub(consoleFiles, "console/static")
	r.Group(func(r chi.Router) {
		r.Use(s.consoleHeaders)
		r.Handle("/console/static/*", staticFiles(static))
		r.Get("/console/login", s.loginPage)
		r.With(s.sameOrigin).Post("/console/login", s.login)
		r.Group(func(r chi.Router) {
			r.Use(s.consoleSession)
			r.Get("/", s.overviewPage)
			r.Get("/console/sinks/{sink}", s.sinkPage)
			r.Get("/console/sinks/{sink}/dlq", s.deadLettersPage)
			r.Get("/console/sinks/{sink}/dlq/{id}", s.deadLetterPage)
			r.Get("/console/backfills", s.backfillsPage)
		})
		r.Group(func(r chi.Router) {
			r.Use(s.sameOrigin, s.consoleCSRF)
			r.Post("/console/logout", s.logout)
			r.Post("/console/sinks/{sink}/pause", s.consolePause)
			r.Post("/console/sinks/{sink}/resume", s.consoleResume)
			r.Post("/console/sinks/{sink}/dlq/confirm", s.confirmDeadLetters)
			r.Post("/console/sinks/{sink}/dlq/replay", s.consoleReplay)
			r.Post("/console/sinks/{sink}/dlq/drop", s.consoleDrop)
			r.Post("/console/backfills", s.consoleStartBackfill)
			r.Post("/console/backfills/{id}/cancel", s.consoleCancelBackfill)
		})
	})
}

// staticFiles serves the stylesheet and the script, and no directory
// listing.
func staticFiles(static fs.FS) http.Handler {
	files := http.StripPrefix("/console/static/", http.FileServerFS(static))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
}

// consoleHeaders sets what every console answer carries: the content
// security policy, no framing, no caching, and no referrer to other
// sites. The policy is same-origin, not no-referrer: under no-referrer
// Chromium sends "Origin: null" with the console's own form posts, which
// sameOrigin must refuse.
func (s *Server) consoleHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", consoleCSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// consoleSession lets a page through with a session: the cookie's, or,
// without server.token, a new one. With a token and no session, the
// browser is sent to the login form, which sends it back.
func (s *Server) consoleSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		sess, ok := s.sessions.get(r, now)
		if !ok {
			if s.cfg.Token != "" {
				http.Redirect(w, r, "/console/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			sess = s.sessions.create(w, r, now)
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
	})
}

// consoleCSRF lets an action through only with a session and the form
// field csrf holding its token: 403 otherwise, before anything is read
// or changed.
func (s *Server) consoleCSRF(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, ok := s.sessions.get(r, time.Now())
		if !ok {
			s.log.Warn("console action refused: no session", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			s.consoleError(w, r, http.StatusForbidden, "This action needs a console session, and the request had none (or it expired). Load the page again"+s.loginHint()+", then repeat the action.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if err := r.ParseForm(); err != nil {
			s.consoleError(w, r, http.StatusBadRequest, "The form could not be read: "+err.Error()+". Send the console's own form.")
			return
		}
		if !s.sessions.checkCSRF(sess, r.PostForm.Get("csrf")) {
			s.log.Warn("console action refused: missing or wrong CSRF token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			s.consoleError(w, r, http.StatusForbidden, "This action did not carry the console's CSRF token for this session, so nothing was done. Use the console's own buttons; if the page is old, load it again.")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
	})
}

func (s *Server) loginHint() string {
	if s.cfg.Token != "" {
		return " and log in with server.token"
	}
	return ""
}

// page returns the page frame of a request that has a session.
func (s *Server) page(r *http.Request, title, nav string) consolePage {
	p := consolePage{Title: title, Nav: nav, Logout: s.cfg.Token != ""}
	if sess, ok := r.Context().Value(sessionKey{}).(session); ok {
		p.CSRF = s.sessions.csrf(sess)
	}
	p.Flash = flash(r.URL.Query())
	return p
}

// render executes a page into a buffer, so a failing template never sends
// half a page, and answers it with status.
func (s *Server) render(w http.ResponseWriter, status int, name string, p consolePage) {
	var buf bytes.Buffer
	if err := s.pages[name].Execute(&buf, p); err != nil {
		s.log.Error("console: render page", "page", name, "err", err)
		http.Error(w, "the console could not render this page; the log has the error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// consoleError answers an HTML error page that says what went wrong.
func (s *Server) consoleError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	p := s.page(r, http.StatusText(status), "")
	p.Flash = ""
	p.Error = msg
	s.render(w, status, "error", p)
}

// consoleFail answers an error an interface method returned, by kind as
// the API does.
func (s *Server) consoleFail(w http.ResponseWriter, r *http.Request, err error) {
	status, ok := s.failStatus(r, err, "console request failed")
	if !ok {
		return
	}
	s.consoleError(w, r, status, err.Error())
}

// consoleSink returns the {sink} of the path, answering 404 when it is not
// a configured sink.
func (s *Server) consoleSink(w http.ResponseWriter, r *http.Request) (string, bool) {
	sink, err := url.PathUnescape(chi.URLParam(r, "sink"))
	if err != nil || sink == "" {
		s.consoleError(w, r, http.StatusBadRequest, "The sink in the path "+r.URL.EscapedPath()+" is not a valid path segment.")
		return "", false
	}
	if len(s.opts.SinkNames) > 0 && !slices.Contains(s.opts.SinkNames, sink) {
		s.consoleError(w, r, http.StatusNotFound, "There is no sink "+strconv.Quote(sink)+"; the configured sinks are "+strings.Join(s.opts.SinkNames, ", ")+".")
		return "", false
	}
	return sink, true
}

// flashes are the messages an action's redirect may ask the next page to
// show; anything else in the query is ignored.
var flashes = map[string]string{
	"paused":    "The sink is paused: it delivers nothing until it is resumed.",
	"resumed":   "The sink is resumed.",
	"replayed":  "Replay queued for %n dead letter(s); each one is removed once its redelivery is acknowledged.",
	"dropped":   "Dropped %n dead letter(s).",
	"started":   "The backfill has started.",
	"cancelled": "The backfill is cancelled.",
}

// flash is the message of the query's done= and n=.
func flash(q url.Values) string {
	msg, ok := flashes[q.Get("done")]
	if !ok {
		return ""
	}
	n, _ := strconv.Atoi(q.Get("n"))
	return strings.ReplaceAll(msg, "%n", strconv.Itoa(max(n, 0)))
}

// redirectDone sends the browser to path after an action, with the flash
// done= names.
func redirectDone(w http.ResponseWriter, r *http.Request, path, done string, n int) {
	q := url.Values{"done": {done}}
	if n >= 0 {
		q.Set("n", strconv.Itoa(n))
	}
	http.Redirect(w, r, path+"?"+q.Encode(), http.StatusSeeOther)
}
