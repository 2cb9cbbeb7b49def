package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"time"
)

// Defaults for keys the file leaves out.
const (
	defaultSlot           = "walhook"
	defaultPublication    = "walhook"
	defaultReceiveTimeout = 30 * time.Second
	defaultHeartbeat      = 10 * time.Second
	defaultStatePath      = "walhook.state"
	defaultListen         = "127.0.0.1:9400"
	defaultLogFormat      = "auto"
	defaultLogLevel       = "info"
)

// Load reads, expands, defaults and validates the configuration file at
// path, taking ${VAR} values from the process environment. Problems with
// the file's content are returned as *Errors; a file that cannot be read
// gives the wrapped os error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse is Load for a file already read: path is used in messages and to
// resolve the relative paths of files the configuration names (a sink's
// tls files), and env looks up ${VAR} values (nil means no variable is
// set). It reports every
// problem it finds in one *Errors, each as "path:line: field: what is wrong;
// what would be right". Messages never show a sink secret, the server
// token, a header value or a URL, since those may hold credentials.
func Parse(path string, data []byte, env func(string) (string, bool)) (*Config, error) {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	d := newDecoder(path, env)
	root, ok := d.tree(data)
	if !ok {
		return nil, d.err()
	}
	doc := value{line: 1, node: root}
	if root != nil {
		doc.line = root.line
	}
	top := d.object(doc, "source", "state", "server", "log", "sinks", "events")
	c := &Config{Path: path}
	c.Source = d.source(top.field("source"))
	c.State = d.state(top.field("state"))
	c.Server = d.server(top.field("server"))
	c.Log = d.log(top.field("log"))
	c.Sinks = d.sinks(top.field("sinks"), c.Source)
	c.Events = d.events(top.field("events"))
	if err := d.err(); err != nil {
		return nil, err
	}
	return c, nil
}

func (d *decoder) source(v value) Source {
	o := d.object(v, "url", "slot", "publication", "tables", "receive_timeout", "heartbeat", "messages", "columns", "failover", "primary_url")
	s := Source{
		URL:            d.postgresURL(o.field("url")),
		Slot:           d.string(o.field("slot"), defaultSlot),
		Publication:    d.string(o.field("publication"), defaultPublication),
		Tables:         d.tables(o.field("tables"), nil, ""),
		ReceiveTimeout: d.positiveDuration(o.field("receive_timeout"), defaultReceiveTimeout),
		Heartbeat:      d.positiveDuration(o.field("heartbeat"), defaultHeartbeat),
		Failover:       d.bool(o.field("failover"), false),
	}
	if v := o.field("primary_url"); v.present() {
		s.PrimaryURL = d.postgresURL(v)
	}
	s.URL = withConnectTimeout(s.URL, s.ReceiveTimeout)
	s.PrimaryURL = withConnectTimeout(s.PrimaryURL, s.ReceiveTimeout)
	s.Columns = d.sourceColumns(o.field("columns"), s.Tables)
	// Slot names are restricted by PostgreSQL; the publication is held to
	// the same rule so it never needs quoting or case care.
	const nameRule = "use lower-case letters, digits and _, at most 63 characters"
	d.check(o.field("slot"), isSlotName(s.Slot), "%q is not a valid slot name; %s", s.Slot, nameRule)
	d.check(o.field("publication"), isSlotName(s.Publication), "%q is not a valid publication name; %s", s.Publication, nameRule)
	for _, item := range d.list(o.field("messages")) {
		prefix := d.string(item, "")
		d.check(item, prefix != "", "empty message prefix; write a prefix given to pg_logical_emit_message")
		s.Messages = append(s.Messages, prefix)
	}
	return s
}

// postgresURL returns a required PostgreSQL connection URL.
func (d *decoder) postgresURL(v value) string {
	s := d.string(v, "")
	d.check(v, s != "", "missing; set the PostgreSQL URL, such as postgres://walhook:${PGPASSWORD}@localhost:5432/app")
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	d.check(v, err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql"),
		"not a valid postgres:// or postgresql:// URL; write postgres://user:password@host:5432/dbname, percent-encoding special characters")
	return s
}

// withConnectTimeout returns the PostgreSQL URL raw with connect_timeout
// set to d (whole seconds, rounded up) unless raw sets one. Without it a
// connection to a server that accepts and then never answers (a hung
// server, a path blackholed after the handshake) waits forever, and
// walhook with it: every connection to the source gives up in
// receive_timeout, as a silent replication connection does, and is tried
// again with backoff. raw is returned as it is when it is empty or not a
// URL (the error is reported elsewhere).
func withConnectTimeout(raw string, d time.Duration) string {
	u, err := url.Parse(raw)
	if raw == "" || err != nil {
		return raw
	}
	if u.Query().Has("connect_timeout") {
		return raw
	}
	if u.RawQuery != "" {
		u.RawQuery += "&"
	}
	u.RawQuery += "connect_timeout=" + strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
	return u.String()
}

// isSlotName reports whether s is a valid replication slot name:
// [a-z0-9_], at most 63 bytes.
func isSlotName(s string) bool {
	if s == "" || len(s) > maxIdentifierLen {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// tables returns a list of table names; nil, meaning every table, when the
// list is absent, empty or ["*"]. When scope is not empty, every table must
// be in it; scopeName is where scope was written, for messages.
func (d *decoder) tables(v value, scope []Table, scopeName string) []Table {
	var tables []Table
	all := false
	for _, item := range d.list(v) {
		s := d.string(item, "")
		if s == "*" {
			all = true
			continue
		}
		t, err := ParseTable(s)
		switch {
		case err != nil:
			d.fail(item, "%v; %s", err, tableHint)
		case slices.Contains(tables, t):
			d.fail(item, "%s is listed twice; remove one", t)
		default:
			d.checkInScope(item, t, scope, scopeName)
			tables = append(tables, t)
		}
	}
	if all && len(tables) > 0 {
		d.fail(v, `"*" already means every table; remove it or the table names`)
	}
	if all {
		return nil
	}
	return tables
}

// tableHint says how to write a table name.
const tableHint = `write schema.table, such as public.orders or "Sales"."Order Items"`

// checkInScope records a problem when t is outside a non-empty scope.
func (d *decoder) checkInScope(v value, t Table, scope []Table, scopeName string) {
	d.check(v, len(scope) == 0 || slices.Contains(scope, t),
		"%s is not in %s, so it never has changes here; add it there or remove it here", t, scopeName)
}

func (d *decoder) state(v value) State {
	o := d.object(v, "path", "url")
	pathField, urlField := o.field("path"), o.field("url")
	if urlField.present() {
		d.check(urlField, !pathField.present(), "both path and url are set; keep path for the embedded store or url for the Postgres store")
		return State{URL: d.postgresURL(urlField)}
	}
	path := d.string(pathField, defaultStatePath)
	d.check(pathField, path != "", "empty; set a file path such as %s, or url for the Postgres store", defaultStatePath)
	return State{Path: path}
}

func (d *decoder) server(v value) Server {
	o := d.object(v, "listen", "token", "protect_metrics")
	s := Server{
		Listen:         d.string(o.field("listen"), defaultListen),
		Token:          d.string(o.field("token"), ""),
		ProtectMetrics: d.bool(o.field("protect_metrics"), false),
	}
	d.check(o.field("protect_metrics"), !s.ProtectMetrics || s.Token != "",
		"true needs a token to protect with; set server.token (such as ${WALHOOK_TOKEN}) or remove protect_metrics")
	if s.Listen == "" {
		return s
	}
	host, port, err := net.SplitHostPort(s.Listen)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		d.fail(o.field("listen"), "%q is not a host:port address; use one such as %s, or \"\" to turn the server off", s.Listen, defaultListen)
		return s
	}
	d.check(o.field("token"), s.Token != "" || isLoopback(host),
		"required because listen %q is not a loopback address; set a token (such as ${WALHOOK_TOKEN}) or listen on 127.0.0.1", s.Listen)
	return s
}

// isLoopback reports whether host only accepts connections from this
// machine: localhost, 127.0.0.0/8 or ::1. An empty host means every
// interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func (d *decoder) log(v value) Log {
	o := d.object(v, "format", "level")
	l := Log{
		Format: d.string(o.field("format"), defaultLogFormat),
		Level:  d.string(o.field("level"), defaultLogLevel),
	}
	d.check(o.field("format"), slices.Contains([]string{"auto", "text", "json"}, l.Format),
		"%q is not a log format; use auto, text or json", l.Format)
	d.check(o.field("level"), slices.Contains([]string{"debug", "info", "warn", "error"}, l.Level),
		"%q is not a log level; use debug, info, warn or error", l.Level)
	return l
}
