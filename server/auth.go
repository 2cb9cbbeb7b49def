package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"
)

// requireToken lets a request through only when it carries
// "Authorization: Bearer <server.token>", or, for a GET or HEAD, the
// cookie of a console session (which only the token opens; the console's
// pages poll the status with it); without a token configured (only
// allowed on loopback) every request passes. A refusal is 401 with
// WWW-Authenticate: Bearer and a JSON error. The header and the token are
// never logged nor echoed.
func (s *Server) requireToken(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.cfg.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		given, ok := bearer(r.Header.Get("Authorization"))
		if !ok && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			if _, ok := s.sessions.get(r, time.Now()); ok {
				next.ServeHTTP(w, r)
				return
			}
		}
		if !ok {
			s.log.Warn("admin request without a bearer token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="walhook"`)
			s.writeError(w, http.StatusUnauthorized, "missing bearer token; send Authorization: Bearer followed by server.token")
			return
		}
		// Comparing hashes keeps the comparison constant-time whatever the
		// lengths, so a wrong token's timing says nothing about the right
		// one's length either.
		got := sha256.Sum256([]byte(given))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			s.log.Warn("admin request with a wrong bearer token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="walhook", error="invalid_token"`)
			s.writeError(w, http.StatusUnauthorized, "wrong bearer token; send the server.token of this walhook's configuration")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer returns the token of an "Authorization: Bearer <token>" header. The
// scheme is case-insensitive (RFC 9110, section 11.1).
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
