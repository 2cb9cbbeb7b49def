package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"strings"
	"time"
)

// The console's sessions. A session is a cookie the server signs with a
// key of its own, drawn at random when the process starts (a restart ends
// every session): the cookie holds its expiry and a random nonce, and the
// HMAC of both. The session's CSRF token is another HMAC of the same
// payload, so it needs no store either, and a token of one session is
// worth nothing in another. With server.token set, a session is made only
// by the login form, against the token; without one (the server is then
// on loopback only), the first page a browser loads makes one, for the
// CSRF token.

const (
	sessionCookie = "walhook_console"
	// sessionTTL is how long a session lasts: a working day.
	sessionTTL = 12 * time.Hour
	nonceLen   = 16
)

// sessions signs and checks the console's session cookies.
type sessions struct {
	key [32]byte
}

func newSessions() *sessions {
	s := &sessions{}
	_, _ = rand.Read(s.key[:]) // crypto/rand.Read never fails
	return s
}

// session is a valid session cookie's payload.
type session struct {
	payload []byte
}

// mac is the HMAC of the payload for one purpose ("session" or "csrf").
func (s *sessions) mac(purpose string, payload []byte) []byte {
	h := hmac.New(sha256.New, s.key[:])
	h.Write([]byte(purpose))
	h.Write([]byte{0})
	h.Write(payload)
	return h.Sum(nil)
}

// create makes a new session and sets its cookie on w.
func (s *sessions) create(w http.ResponseWriter, r *http.Request, now time.Time) session {
	payload := make([]byte, 8+nonceLen)
	binary.BigEndian.PutUint64(payload, uint64(now.Add(sessionTTL).Unix()))
	_, _ = rand.Read(payload[8:])
	enc := base64.RawURLEncoding
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    enc.EncodeToString(payload) + "." + enc.EncodeToString(s.mac("session", payload)),
		Path:     "/",
		MaxAge:   int(sessionTTL / time.Second),
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		Secure:   isHTTPS(r),
	})
	return session{payload: payload}
}

// end clears the session cookie.
func (s *sessions) end(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: isHTTPS(r)})
}

// get returns the request's session, if its cookie is one this server
// signed and has not expired.
func (s *sessions) get(r *http.Request, now time.Time) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	p, m, ok := strings.Cut(c.Value, ".")
	if !ok {
		return session{}, false
	}
	enc := base64.RawURLEncoding
	payload, err1 := enc.DecodeString(p)
	mac, err2 := enc.DecodeString(m)
	if err1 != nil || err2 != nil || len(payload) != 8+nonceLen || !hmac.Equal(mac, s.mac("session", payload)) {
		return session{}, false
	}
	if now.Unix() >= int64(binary.BigEndian.Uint64(payload)) {
		return session{}, false
	}
	return session{payload: payload}, true
}

// csrf is the session's CSRF token, which every console form carries.
func (s *sessions) csrf(sess session) string {
	return base64.RawURLEncoding.EncodeToString(s.mac("csrf", sess.payload))
}

// checkCSRF reports whether token is the session's CSRF token, comparing
// in constant time.
func (s *sessions) checkCSRF(sess session, token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.csrf(sess))) == 1
}

// isHTTPS reports whether the browser reached the server over TLS: the
// server's own, or a proxy's that says so. The cookie is then Secure.
func isHTTPS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// tokenMatches compares a token given to the login form with server.token,
// as SHA-256 digests in constant time (requireToken does the same).
func tokenMatches(given, want string) bool {
	g, w := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}
