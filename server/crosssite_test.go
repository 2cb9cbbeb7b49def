package server_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/admintest"
	"github.com/walhook/walhook/server"
)

// request is one request of the cross-site tests. Its zero value is a GET
// of /api/v1/status to the listener's own address, with no Origin, no
// Sec-Fetch-Site and no token.
type request struct {
	method, path string
	host         string // Host header; "" is the listener's address
	origin       string
	fetchSite    string // Sec-Fetch-Site
	contentType  string
	body         string
	token        string
}

// send sends req to the server on addr and returns its answer.
func send(t *testing.T, addr string, req request) answer {
	t.Helper()
	if req.method == "" {
		req.method = http.MethodGet
	}
	if req.path == "" {
		req.path = "/api/v1/status"
	}
	var body io.Reader
	if req.body != "" {
		body = strings.NewReader(req.body)
	}
	r, err := http.NewRequest(req.method, "http://"+addr+req.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if req.host != "" {
		r.Host = req.host
	}
	for name, v := range map[string]string{
		"Origin":         req.origin,
		"Sec-Fetch-Site": req.fetchSite,
		"Content-Type":   req.contentType,
	} {
		if v != "" {
			r.Header.Set(name, v)
		}
	}
	if req.token != "" {
		r.Header.Set("Authorization", "Bearer "+req.token)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", req.method, req.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", req.method, req.path, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: data}
}

// crossSiteCase is a request and the answer it must get: the status and,
// for an error, a part of its message.
type crossSiteCase struct {
	name      string
	req       request
	want      int
	wantError string
}

// runCrossSite sends every case to a fresh server with cfg and checks the
// answers. A refused request must not reach the interfaces.
func runCrossSite(t *testing.T, cfg config.Server, tests []crossSiteCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := admintest.NewFake(sinks...)
			addr := admintest.Start(t, server.New(cfg, fake.Options(sinks...)))
			req := tt.req
			// {port} in a header stands for the listener's port.
			_, port, _ := net.SplitHostPort(addr)
			req.host = strings.ReplaceAll(req.host, "{port}", port)
			req.origin = strings.ReplaceAll(req.origin, "{port}", port)
			a := send(t, addr, req)
			if a.status != tt.want {
				t.Fatalf("status: got %d, want %d: %s", a.status, tt.want, a.body)
			}
			if tt.want >= 400 {
				if msg := errorText(t, a); !strings.Contains(msg, tt.wantError) {
					t.Errorf("error:\n got %s\nwant substring %s", msg, tt.wantError)
				}
			}
			if refused[tt.want] {
				if calls := fake.Calls(); len(calls) != 0 {
					t.Errorf("a refused request reached the interfaces: %q", calls)
				}
			}
			if strings.Contains(string(a.body), "hunter2") {
				t.Errorf("answer shows the token: %s", a.body)
			}
		})
	}
}

const jsonType = "application/json"

// refused are the answers of the checks before the handlers.
var refused = map[int]bool{401: true, 403: true, 415: true, 421: true}

// TestContentType: a request under /api that may change state must say its
// body is JSON, which a web page cannot do without the browser asking the
// server first (a CORS preflight, which walhook never grants). A form post
// or a body-less POST is a "simple request" any page can send.
func TestContentType(t *testing.T) {
	pause := "/api/v1/sinks/orders/pause"
	runCrossSite(t, config.Server{Listen: "127.0.0.1:0"}, []crossSiteCase{
		{"JSON", request{method: "POST", path: pause, contentType: jsonType, body: "{}"}, 200, ""},
		{"JSON with a charset", request{method: "POST", path: pause, contentType: "application/json; charset=utf-8", body: "{}"}, 200, ""},
		{"JSON in upper case", request{method: "POST", path: pause, contentType: "Application/JSON", body: "{}"}, 200, ""},
		{"text/plain", request{method: "POST", path: pause, contentType: "text/plain", body: "{}"}, 415,
			`POST /api/v1/sinks/orders/pause needs Content-Type: application/json, not "text/plain"; send a JSON body`},
		{"text/plain with a charset", request{method: "POST", path: pause, contentType: "text/plain;charset=UTF-8", body: "{}"}, 415, `not "text/plain;charset=UTF-8"`},
		{"form-encoded", request{method: "POST", path: "/api/v1/sinks/orders/backfills", contentType: "application/x-www-form-urlencoded", body: "tables=public.orders"}, 415,
			`not "application/x-www-form-urlencoded"`},
		{"multipart form", request{method: "POST", path: pause, contentType: "multipart/form-data; boundary=x", body: "--x--"}, 415, `not "multipart/form-data; boundary=x"`},
		{"JSON as a suffix", request{method: "POST", path: pause, contentType: "application/vnd.api+json", body: "{}"}, 415, `not "application/vnd.api+json"`},
		{"a bad Content-Type", request{method: "POST", path: pause, contentType: "application/json; charset", body: "{}"}, 415, `not "application/json; charset"`},
		{"body-less POST", request{method: "POST", path: pause}, 415,
			`POST /api/v1/sinks/orders/pause has no Content-Type; send a JSON body with Content-Type: application/json ({} when there is nothing to say)`},
		{"body without a Content-Type", request{method: "POST", path: "/api/v1/sinks/orders/dlq/replay", body: `{"ids":["dl_1"]}`}, 415, "has no Content-Type"},
		{"body-less DELETE", request{method: "DELETE", path: "/api/v1/backfills/bf_1"}, 415, "DELETE /api/v1/backfills/bf_1 has no Content-Type"},
		{"DELETE with JSON", request{method: "DELETE", path: "/api/v1/backfills/bf_1", contentType: jsonType, body: "{}"}, 404, `no backfill "bf_1"`},
		{"PUT", request{method: "PUT", path: pause, contentType: "text/plain", body: "{}"}, 415, `PUT /api/v1/sinks/orders/pause needs Content-Type: application/json`},
		{"unknown path", request{method: "POST", path: "/api/v1/nothing", contentType: "text/plain", body: "x"}, 415, "needs Content-Type: application/json"},
		{"GET needs none", request{}, 200, ""},
		{"outside /api", request{method: "POST", path: "/healthz", contentType: "text/plain", body: "x"}, 405, "use GET"},
	})
}

// TestOrigin: a request under /api from a web page of another origin is
// refused, whatever its method: Origin names the page's origin, and
// Sec-Fetch-Site says how the browser sees the page against the server.
// The CLI and curl send neither.
func TestOrigin(t *testing.T) {
	pause := func(origin, site string) request {
		return request{method: "POST", path: "/api/v1/sinks/orders/pause", origin: origin, fetchSite: site, contentType: jsonType, body: "{}"}
	}
	runCrossSite(t, config.Server{Listen: "127.0.0.1:0"}, []crossSiteCase{
		{"no Origin", request{}, 200, ""},
		{"no Origin, POST", pause("", ""), 200, ""},
		{"same origin", request{origin: "http://127.0.0.1:{port}"}, 200, ""},
		{"same origin, POST", pause("http://127.0.0.1:{port}", "same-origin"), 200, ""},
		{"same origin over https", request{origin: "https://127.0.0.1:{port}"}, 200, ""},
		{"same origin through localhost", request{host: "localhost:{port}", origin: "http://localhost:{port}"}, 200, ""},
		{"same origin through ::1", request{host: "[::1]:{port}", origin: "http://[::1]:{port}"}, 200, ""},
		{"same origin, port forwarded", request{host: "localhost:8443", origin: "http://localhost:8443"}, 200, ""},
		{"foreign origin", request{origin: "http://evil.example"}, 403,
			`cross-origin request refused: Origin "http://evil.example" is not this server's own origin http://127.0.0.1:`},
		{"foreign origin, POST", pause("http://evil.example", ""), 403, `Origin "http://evil.example"`},
		{"another port of 127.0.0.1", pause("http://127.0.0.1:1", ""), 403, `Origin "http://127.0.0.1:1" is not`},
		{"localhost against 127.0.0.1", request{origin: "http://localhost:{port}"}, 403, "is not this server's own origin"},
		{"null origin", pause("null", ""), 403, `Origin "null"`},
		{"another scheme", request{origin: "file://127.0.0.1:{port}"}, 403, "is not this server's own origin"},
		{"Sec-Fetch-Site none", pause("", "none"), 200, ""},
		{"Sec-Fetch-Site same-origin", pause("", "same-origin"), 200, ""},
		{"Sec-Fetch-Site cross-site", pause("", "cross-site"), 403,
			"cross-site request refused (Sec-Fetch-Site: cross-site): the admin API answers only its own pages"},
		{"Sec-Fetch-Site cross-site, GET", request{fetchSite: "cross-site"}, 403, "Sec-Fetch-Site: cross-site"},
		{"Sec-Fetch-Site same-site", pause("", "same-site"), 403, "Sec-Fetch-Site: same-site"},
		{"cross-site with our own Origin", pause("http://127.0.0.1:{port}", "cross-site"), 403, "Sec-Fetch-Site: cross-site"},
		{"CORS preflight", request{method: "OPTIONS", origin: "http://evil.example"}, 403, "cross-origin request refused"},
		{"outside /api", request{path: "/healthz", origin: "http://evil.example", fetchSite: "cross-site"}, 200, ""},
	})
}

// TestHost: without a token, the server answers only requests addressed
// to a loopback name, so a page whose name was rebound to 127.0.0.1 (DNS
// rebinding: the page and the server then share an origin) gets nothing.
func TestHost(t *testing.T) {
	noToken := []crossSiteCase{
		{"127.0.0.1 with the port", request{host: "127.0.0.1:{port}"}, 200, ""},
		{"127.0.0.1 without a port", request{host: "127.0.0.1"}, 200, ""},
		{"another loopback address", request{host: "127.0.0.2:{port}"}, 200, ""},
		{"localhost with the port", request{host: "localhost:{port}"}, 200, ""},
		{"localhost without a port", request{host: "localhost"}, 200, ""},
		{"LOCALHOST", request{host: "LOCALHOST:{port}"}, 200, ""},
		{"::1 with the port", request{host: "[::1]:{port}"}, 200, ""},
		{"::1 without a port", request{host: "[::1]"}, 200, ""},
		{"IPv4-mapped loopback", request{host: "[::ffff:127.0.0.1]:{port}"}, 200, ""},
		{"another port", request{host: "127.0.0.1:8080"}, 200, ""},
		{"foreign name", request{host: "evil.example"}, 421,
			`Host "evil.example" is not an address of this server: without server.token it answers only to localhost or a loopback IP`},
		{"foreign name with the port", request{host: "evil.example:{port}"}, 421, `Host "evil.example:`},
		{"foreign name, same origin", request{method: "POST", path: "/api/v1/sinks/orders/pause", host: "evil.example:{port}", origin: "http://evil.example:{port}",
			contentType: "text/plain", body: "{}"}, 421, "is not an address of this server"},
		{"a name under localhost", request{host: "evil.localhost:{port}"}, 421, "is not an address of this server"},
		{"a public IP", request{host: "192.0.2.1:{port}"}, 421, "is not an address of this server"},
		{"health", request{path: "/healthz", host: "evil.example"}, 421, "is not an address of this server"},
		{"metrics", request{path: "/metrics", host: "evil.example"}, 421, "is not an address of this server"},
		{"readiness", request{path: "/readyz", host: "evil.example"}, 421, "is not an address of this server"},
		{"unknown path", request{path: "/nothing", host: "evil.example"}, 421, "is not an address of this server"},
	}
	runCrossSite(t, config.Server{Listen: "127.0.0.1:0"}, noToken)

	// A server listening on localhost answers to its listen address, the
	// loopback IPs and nothing else either.
	runCrossSite(t, config.Server{Listen: "localhost:0"}, []crossSiteCase{
		{"listen address", request{host: "localhost:{port}"}, 200, ""},
		{"loopback IP", request{host: "127.0.0.1:{port}"}, 200, ""},
		{"foreign name", request{host: "evil.example:{port}"}, 421, "is not an address of this server"},
	})

	// With a token, any name may reach the server (behind a proxy, in a
	// container): the token decides.
	t.Run("with a token", func(t *testing.T) {
		runCrossSite(t, config.Server{Listen: "0.0.0.0:0", Token: testToken}, []crossSiteCase{
			{"foreign name without the token", request{host: "walhook.example:9400"}, 401, "missing bearer token"},
			{"foreign name with the token", request{host: "walhook.example:9400", token: testToken}, 200, ""},
			{"health under a foreign name", request{path: "/healthz", host: "walhook.example"}, 200, ""},
			{"same origin under a foreign name", request{host: "walhook.example", origin: "https://walhook.example", token: testToken}, 200, ""},
		})
	})
}

// TestCrossSiteOrder: the checks come in a fixed order, Host (421), then
// origin (403), then the token (401), then the Content-Type (415), so that
// a page in a browser learns nothing, not even whether a token is set.
func TestCrossSiteOrder(t *testing.T) {
	form := request{method: "POST", path: "/api/v1/sinks/orders/backfills", contentType: "application/x-www-form-urlencoded", body: "x=1"}
	with := func(r request, f func(*request)) request { f(&r); return r }
	runCrossSite(t, config.Server{Listen: "127.0.0.1:0", Token: testToken}, []crossSiteCase{
		{"foreign origin before the token", with(form, func(r *request) { r.origin = "http://evil.example" }), 403, "cross-origin request refused"},
		{"cross-site before the token", with(form, func(r *request) { r.fetchSite = "cross-site" }), 403, "cross-site request refused"},
		{"token before the Content-Type", form, 401, "missing bearer token"},
		{"Content-Type with the token", with(form, func(r *request) { r.token = testToken }), 415, "needs Content-Type: application/json"},
		{"wrong token before the Content-Type", with(form, func(r *request) { r.token = "hunter2-wrong" }), 401, "wrong bearer token"},
		{"everything right", with(form, func(r *request) {
			r.token, r.contentType, r.body, r.origin, r.fetchSite = testToken, jsonType, "{}", "http://127.0.0.1:{port}", "same-origin"
		}), 202, ""},
	})
	runCrossSite(t, config.Server{Listen: "127.0.0.1:0"}, []crossSiteCase{
		{"Host before the origin", with(form, func(r *request) { r.host, r.origin = "evil.example", "http://evil.example:1" }), 421, "is not an address of this server"},
		{"origin before the Content-Type", with(form, func(r *request) { r.origin = "http://evil.example" }), 403, "cross-origin request refused"},
	})
}
