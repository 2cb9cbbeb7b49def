package server

import (
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// The admin server's defences against web pages. A browser on the
// operator's machine can reach 127.0.0.1, so any page it shows could send
// requests to the admin server; these checks refuse what a page could send,
// while walhook's CLI, curl and the server's own pages pass:
//
//   - checkHost (421, every path, only without server.token): the Host must
//     be localhost, a loopback IP or the listen host, so that a page whose
//     own name was rebound to 127.0.0.1 (DNS rebinding, which makes the page
//     and the server one origin to the browser) gets no answer to read;
//   - sameOrigin (403): a request sent by a page of another origin, as its
//     Origin or Sec-Fetch-Site header shows;
//   - requireJSON (415, /api only): a request that may change state must
//     carry Content-Type: application/json, which a page can only send
//     after a CORS preflight that this server never grants; form posts and
//     body-less POSTs are "simple requests" that skip the preflight.
//
// routes applies checkHost to the whole router and sameOrigin, the token,
// then requireJSON to /api. A route for the console's own pages outside
// /api takes sameOrigin and its own CSRF check instead of requireJSON.

// checkHost answers 421 Misdirected Request, on every path, when no token
// is configured and the request's Host is not localhost, a loopback IP or
// the host of server.listen (with any port, or none: a forwarded port
// keeps working). With a token, any name may reach the server (behind a
// proxy, in a container) and the token decides.
func (s *Server) checkHost(next http.Handler) http.Handler {
	if s.cfg.Token != "" {
		return next
	}
	listenHost := ""
	if h, _, err := net.SplitHostPort(s.cfg.Listen); err == nil {
		listenHost = h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := hostname(r.Host)
		if isLoopbackName(host) || (listenHost != "" && strings.EqualFold(host, listenHost)) {
			next.ServeHTTP(w, r)
			return
		}
		s.log.Warn("admin request refused: Host is not a loopback name", "method", r.Method, "path", r.URL.Path, "host", r.Host, "remote", r.RemoteAddr)
		s.writeError(w, http.StatusMisdirectedRequest,
			"Host %q is not an address of this server: without server.token it answers only to localhost or a loopback IP such as 127.0.0.1 or [::1], with any port "+
				"(so that a web page that reached it under another name, as DNS rebinding does, gets nothing); "+
				"address it as localhost or 127.0.0.1, or set server.token to serve other names", r.Host)
	})
}

// hostname is the host of a Host header, without the port and without the
// brackets of an IPv6 address.
func hostname(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// isLoopbackName reports whether host names this machine's loopback:
// localhost, 127.0.0.0/8 or ::1 (also as an IPv4-mapped address).
func isLoopbackName(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// sameOrigin answers 403 for a request that a web page of another origin
// sent: one whose Sec-Fetch-Site is anything but same-origin or none, or
// whose Origin is not this server's own. The server's own origin is the one
// the browser addressed: http (or https, behind a TLS-terminating proxy)
// and the request's Host, port included; so a page of another port of
// 127.0.0.1 is another origin, and so is http://localhost:9400 to a request
// sent to http://127.0.0.1:9400, as the browser sees them. A request with
// neither header (the CLI, curl) passes.
func (s *Server) sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch site := r.Header.Get("Sec-Fetch-Site"); site {
		case "", "same-origin", "none":
		default:
			// same-site too: a site is every port of a host, and another
			// port is another origin.
			s.log.Warn("admin request refused: cross-site", "method", r.Method, "path", r.URL.Path, "sec_fetch_site", site, "remote", r.RemoteAddr)
			s.writeError(w, http.StatusForbidden,
				"cross-site request refused (Sec-Fetch-Site: %s): the admin API answers only its own pages (same-origin) "+
					"and requests no web page made (none, or no Sec-Fetch-Site, as walhook's CLI and curl send)", site)
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" && !ownOrigin(origin, r.Host) {
			s.log.Warn("admin request refused: cross-origin", "method", r.Method, "path", r.URL.Path, "origin", origin, "remote", r.RemoteAddr)
			s.writeError(w, http.StatusForbidden,
				"cross-origin request refused: Origin %q is not this server's own origin http://%s; the admin API answers only "+
					"its own pages and clients that send no Origin (such as walhook's CLI or curl)", origin, r.Host)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ownOrigin reports whether origin (an Origin header) is http or https
// with exactly the host and port of host (the request's Host). "null", an
// opaque origin, is never.
func ownOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.Path != "" || u.RawQuery != "" {
		return false
	}
	return u.Host != "" && strings.EqualFold(u.Host, host)
}

// requireJSON answers 415 for a request that may change state (any method
// but GET, HEAD and OPTIONS) unless its Content-Type is application/json,
// parameters such as charset allowed. A body-less request has no
// Content-Type and is refused too: walhook's CLI sends {} when it has
// nothing to say.
func (s *Server) requireJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		ct := r.Header.Get("Content-Type")
		if ct == "" {
			s.writeError(w, http.StatusUnsupportedMediaType,
				"%s %s has no Content-Type; send a JSON body with Content-Type: application/json ({} when there is nothing to say)", r.Method, r.URL.Path)
			return
		}
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			s.writeError(w, http.StatusUnsupportedMediaType,
				"%s %s needs Content-Type: application/json, not %q (which cannot be parsed: %v); send a JSON body", r.Method, r.URL.Path, ct, err)
			return
		case mt != "application/json":
			s.writeError(w, http.StatusUnsupportedMediaType,
				"%s %s needs Content-Type: application/json, not %q; send a JSON body ({} when there is nothing to say)", r.Method, r.URL.Path, ct)
			return
		}
		next.ServeHTTP(w, r)
	})
}
