package config

import (
	"encoding/base64"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sink defaults.
const (
	defaultSinkType     = "webhook"
	defaultBatchSize    = 100
	defaultBatchWait    = 50 * time.Millisecond
	defaultMaxInFlight  = 16
	defaultTimeout      = 30 * time.Second
	defaultRetryInitial = time.Second
	defaultRetryMax     = 5 * time.Minute
	defaultWindowMsgs   = 10000
	defaultBatchBytes   = 1 << 20
	defaultBacklogSize  = 1 << 30
	defaultWindowBytes  = 64 << 20
)

// validActions are the values a sink's actions list may hold.
var validActions = []string{"insert", "update", "delete", "truncate", "read", "message"}

// reservedHeaders are set by walhook on every request, so a sink's headers
// may not replace them (lower case).
var reservedHeaders = []string{
	"content-type", "content-length", "content-encoding",
	"webhook-id", "webhook-timestamp", "webhook-signature", "webhook-attempt",
}

// sinkKeys are the keys every type of sink takes.
var sinkKeys = []string{
	"name", "type", "tables", "actions", "filter", "filter_errors", "group_by",
	"batch_size", "batch_wait", "max_in_flight", "timeout", "retry",
	"window", "batch_bytes", "columns", "backlog", "backfill", "max_lag",
	"rate_limit", "pause_after", "batch_by",
}

// sinkTypes are the values of a sink's type, each with the keys only it
// takes (besides sinkKeys), and the function that reads them.
var sinkTypes = []sinkKind{
	{"webhook", []string{"url", "secret", "headers", "compression", "tls"}, (*decoder).webhook},
	{"nats", []string{"url", "subject", "creds_file", "nkey_file", "tls"}, (*decoder).nats},
	{"kafka", []string{"brokers", "topic", "sasl", "tls"}, (*decoder).kafka},
	{"redis", []string{"url", "stream", "max_len"}, (*decoder).redis},
	{"rabbitmq", []string{"url", "exchange", "routing_key"}, (*decoder).rabbitmq},
}

// sinkKind is one type of sink: its name, the keys only it takes, and how
// they are read into a Sink.
type sinkKind struct {
	name string
	keys []string
	read func(d *decoder, o object, s *Sink)
}

// allSinkKeys are the keys some type of sink takes.
var allSinkKeys = func() []string {
	keys := slices.Clone(sinkKeys)
	for _, t := range sinkTypes {
		for _, k := range t.keys {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	return keys
}()

func (d *decoder) sinks(v value, src Source) []Sink {
	items := d.list(v)
	d.check(v, len(items) > 0, "no sinks; add at least one, such as - {name: orders, url: http://localhost:8080/hooks}")
	sinks := make([]Sink, 0, len(items))
	names := make(map[string]value) // first use of each name
	for _, item := range items {
		o := d.object(item, allSinkKeys...)
		s := d.sink(o, src)
		nameField := o.field("name")
		if first, dup := names[s.Name]; dup {
			d.fail(nameField, "%q is already the name of %s (line %d); sink names must be unique", s.Name, parentPath(first.path), first.line)
		} else if s.Name != "" {
			names[s.Name] = nameField
		}
		sinks = append(sinks, s)
	}
	return sinks
}

func (d *decoder) sink(o object, src Source) Sink {
	s := Sink{
		Name:         d.sinkName(o.field("name")),
		Type:         d.string(o.field("type"), defaultSinkType),
		Tables:       d.tables(o.field("tables"), src.Tables, "source.tables"),
		Actions:      d.actions(o.field("actions")),
		Filter:       d.string(o.field("filter"), ""),
		FilterErrors: d.string(o.field("filter_errors"), "skip"),
		BatchSize:    d.positiveInt(o.field("batch_size"), defaultBatchSize),
		BatchWait:    d.duration(o.field("batch_wait"), defaultBatchWait),
		MaxInFlight:  d.positiveInt(o.field("max_in_flight"), defaultMaxInFlight),
		Timeout:      d.positiveDuration(o.field("timeout"), defaultTimeout),
		Retry:        d.retry(o.field("retry")),
		Window:       d.window(o.field("window")),
		Backlog:      d.backlog(o.field("backlog")),
		Backfill:     d.backfill(o.field("backfill")),
		BatchBytes:   d.size(o.field("batch_bytes"), defaultBatchBytes),
		RateLimit:    d.rate(o.field("rate_limit")),
		BatchBy:      d.string(o.field("batch_by"), BatchByMessage),
	}
	s.MaxLag, s.MaxLagBytes = d.maxLag(o.field("max_lag"))
	s.PauseAfter = d.pauseAfter(o.field("pause_after"))
	s.FilterOrigin = d.origin(o.field("filter"), s.Filter)
	d.check(o.field("filter_errors"), s.FilterErrors == "skip" || s.FilterErrors == "dead_letter",
		"%q is not a filter error policy; use skip (leave the message out, counted and logged) or dead_letter (keep it in the sink's dead letters)", s.FilterErrors)
	d.check(o.field("batch_by"), s.BatchBy == BatchByMessage || s.BatchBy == BatchByTransaction,
		"%q is not a way to batch; use message (batches of any messages, the default) or transaction (each request holds one transaction's changes)", s.BatchBy)
	d.check(o.field("batch_by"), s.BatchBy != BatchByTransaction || s.Backlog.WhenFull != "dead_letter",
		"transaction cannot go with backlog.when_full: dead_letter, which moves a full backlog's oldest batches to the dead letters and would split transactions; use backlog.when_full: block with batch_by: transaction, or batch_by: message")
	d.sinkType(o, &s)
	if len(s.Tables) > 0 {
		s.GroupBy = d.groupBy(o.field("group_by"), s.Tables, join(o.path, "tables"))
		s.Columns = d.columns(o.field("columns"), s.Tables, join(o.path, "tables"))
	} else {
		s.GroupBy = d.groupBy(o.field("group_by"), src.Tables, "source.tables")
		s.Columns = d.columns(o.field("columns"), src.Tables, "source.tables")
	}
	d.checkGroupByColumns(o.field("group_by"), s, src)
	return s
}

// sinkType reads the keys of s's type and refuses those of other types,
// naming the types that take them. An unknown type is a problem, and the
// keys are then read as the default type's.
func (d *decoder) sinkType(o object, s *Sink) {
	i := slices.IndexFunc(sinkTypes, func(k sinkKind) bool { return k.name == s.Type })
	if i < 0 {
		names := make([]string, len(sinkTypes))
		for j, k := range sinkTypes {
			names[j] = k.name
		}
		d.fail(o.field("type"), "%q is not a sink type; use %s", s.Type, orList(names))
		// Check the rest as the default type, so one pass still finds
		// every other problem.
		i = slices.IndexFunc(sinkTypes, func(k sinkKind) bool { return k.name == defaultSinkType })
	}
	own := sinkTypes[i]
	for _, key := range allSinkKeys {
		if slices.Contains(sinkKeys, key) || slices.Contains(own.keys, key) || !o.field(key).present() {
			continue
		}
		var takers []string
		for _, t := range sinkTypes {
			if slices.Contains(t.keys, key) {
				takers = append(takers, t.name)
			}
		}
		d.fail(o.field(key), "only sinks of type %s take %s", orList(takers), key)
	}
	own.read(d, o, s)
}

// orList joins words as "a", "a or b", "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// webhook reads a webhook sink's keys.
func (d *decoder) webhook(o object, s *Sink) {
	w := Webhook{
		URL:         d.httpURL(o.field("url")),
		Secrets:     d.secrets(o.field("secret")),
		Headers:     d.headers(o.field("headers")),
		Compression: d.compression(o.field("compression")),
	}
	w.TLS = d.tls(o.field("tls"), w.URL)
	s.Webhook = w
}

// maxLag returns a sink's max_lag: a duration (15m) or a size of WAL
// (512MiB), whichever it is; both 0 when absent.
func (d *decoder) maxLag(v value) (time.Duration, int64) {
	s, ok := d.text(v)
	if !ok {
		return 0, 0
	}
	if dur, err := time.ParseDuration(s); err == nil && dur >= 0 {
		return dur, 0
	}
	if n, err := ParseSize(s); err == nil {
		return 0, n
	}
	d.fail(v, "%q is neither a duration nor a size; give the age (such as 15m) or the WAL behind the server's end (such as 512MiB) past which a failing batch goes to the dead letters, or 0 for no bound", s)
	return 0, 0
}

// sinkName returns a required sink name made of [A-Za-z0-9_.-].
func (d *decoder) sinkName(v value) string {
	name := d.string(v, "")
	d.check(v, name != "", "missing; give the sink a unique name such as orders")
	valid := strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == ""
	d.check(v, valid, "%q may only contain letters, digits, _, . and -; use a name such as orders-v2", name)
	return name
}

// httpURL returns a required http:// or https:// URL.
func (d *decoder) httpURL(v value) string {
	s := d.string(v, "")
	d.check(v, s != "", "missing; set the URL to POST to, such as https://example.com/hooks")
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	d.check(v, err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Hostname() != "",
		"not a valid http:// or https:// URL with a host; write one such as https://example.com/hooks, percent-encoding special characters")
	return s
}

// actions returns the listed actions; nil, meaning every action, when the
// list is absent or empty.
func (d *decoder) actions(v value) []string {
	var actions []string
	for _, item := range d.list(v) {
		a := d.string(item, "")
		switch {
		case !slices.Contains(validActions, a):
			d.fail(item, "%q is not an action; use %s", a, strings.Join(validActions, ", "))
		case slices.Contains(actions, a):
			d.fail(item, "%s is listed twice; remove one", a)
		default:
			actions = append(actions, a)
		}
	}
	return actions
}

// groupBy returns the ordering columns per table. Tables must be in scope;
// columns are taken as written, since they name keys of the record.
func (d *decoder) groupBy(v value, scope []Table, scopeName string) map[Table][]string {
	entries := d.entries(v)
	if len(entries) == 0 {
		return nil
	}
	groups := make(map[Table][]string, len(entries))
	for _, e := range entries {
		t, err := ParseTable(e.key)
		if err != nil {
			d.fail(e.value, "%v; %s", err, tableHint)
			continue
		}
		if _, dup := groups[t]; dup {
			d.fail(e.value, "%s is listed twice; keep one", t)
			continue
		}
		d.checkInScope(e.value, t, scope, scopeName)
		var columns []string
		for _, item := range d.list(e.value) {
			column := d.string(item, "")
			d.check(item, column != "", "empty column name; write a column of %s", t)
			columns = append(columns, column)
		}
		d.check(e.value, len(columns) > 0, "no columns; list the columns that order messages, such as [customer_id]")
		groups[t] = columns
	}
	return groups
}

func (d *decoder) backlog(v value) Backlog {
	o := d.object(v, "max_size", "when_full")
	b := Backlog{
		MaxSize:  d.size(o.field("max_size"), defaultBacklogSize),
		WhenFull: d.string(o.field("when_full"), "block"),
	}
	d.check(o.field("when_full"), b.WhenFull == "block" || b.WhenFull == "dead_letter",
		"%q is not a backlog policy; use block (stop reading the slot) or dead_letter (move the oldest batches to the dead letters)", b.WhenFull)
	return b
}

func (d *decoder) backfill(v value) Backfill {
	o := d.object(v, "on_create")
	return Backfill{OnCreate: d.bool(o.field("on_create"), false)}
}

func (d *decoder) window(v value) Window {
	o := d.object(v, "messages", "bytes")
	return Window{
		Messages: d.positiveInt(o.field("messages"), defaultWindowMsgs),
		Bytes:    d.size(o.field("bytes"), defaultWindowBytes),
	}
}

func (d *decoder) retry(v value) Retry {
	o := d.object(v, "initial", "max", "max_attempts", "schedule")
	r := Retry{
		Initial:     d.positiveDuration(o.field("initial"), defaultRetryInitial),
		Max:         d.positiveDuration(o.field("max"), defaultRetryMax),
		MaxAttempts: d.int(o.field("max_attempts"), 0),
	}
	d.check(o.field("initial"), r.Initial <= r.Max,
		"%s is longer than max (%s); make initial at most max", shortDuration(r.Initial), shortDuration(r.Max))
	d.check(o.field("max_attempts"), r.MaxAttempts >= 0,
		"%d is negative; use 0 to retry forever, or a limit such as 10", r.MaxAttempts)
	sched := o.field("schedule")
	if !sched.present() {
		return r
	}
	// A schedule is the whole policy: the exponential settings and the
	// number of attempts would contradict it, so they are refused with it.
	for _, key := range []string{"initial", "max", "max_attempts"} {
		d.check(o.field(key), !o.field(key).present(),
			"cannot be set with retry.schedule, which fixes every wait and the number of attempts (one more than its waits); remove %s or remove schedule", key)
	}
	items := d.list(sched)
	d.check(sched, sched.node.kind != listKind || len(items) > 0,
		"empty list; list the waits between attempts, such as [5s, 5m, 30m, 2h, 5h, 10h, 10h], or remove schedule")
	for _, item := range items {
		s, ok := d.text(item)
		if !ok {
			continue
		}
		w, err := time.ParseDuration(s)
		if err != nil || w <= 0 {
			d.fail(item, "%q is not a positive duration; write a wait such as 5m", s)
			continue
		}
		r.Schedule = append(r.Schedule, w)
	}
	if len(r.Schedule) > 0 {
		r.MaxAttempts = len(r.Schedule) + 1
	}
	return r
}

// rate returns a rate limit written as N/s or N/m (messages a second or
// a minute); the zero Rate when absent.
func (d *decoder) rate(v value) Rate {
	s, ok := d.text(v)
	if !ok {
		return Rate{}
	}
	num, unit, found := strings.Cut(strings.TrimSpace(s), "/")
	n, err := strconv.Atoi(strings.TrimSpace(num))
	per := map[string]time.Duration{"s": time.Second, "m": time.Minute}[strings.TrimSpace(unit)]
	if !found || err != nil || n <= 0 || per == 0 {
		d.fail(v, "%q is not a rate; write messages per second or per minute as a whole number above 0, such as 200/s or 10/m", s)
		return Rate{}
	}
	return Rate{Count: n, Per: per}
}

// secrets returns a sink's signing secrets, newest first: one secret, or a
// list of them while a receiver rotates. nil when absent.
func (d *decoder) secrets(v value) []string {
	if !v.present() {
		return nil
	}
	switch v.node.kind {
	case scalarKind:
		if s, ok := d.secret(v); ok {
			return []string{s}
		}
		return nil
	case listKind:
	default:
		d.fail(v, "got %s; want a secret (whsec_...) or a list of them, newest first", v.node.kind.describe())
		return nil
	}
	items := d.list(v)
	d.check(v, len(items) > 0, "empty list; list at least one secret, or remove secret to send unsigned requests")
	var secrets []string
	for _, item := range items {
		s, ok := d.secret(item)
		switch {
		case !ok:
		case slices.Contains(secrets, s):
			d.fail(item, "the same secret as an earlier item; list each secret once")
		default:
			secrets = append(secrets, s)
		}
	}
	return secrets
}

// secret returns a Standard Webhooks signing secret: "whsec_" followed by
// the key in standard base64. ok is false when v is absent or has a
// problem. No message shows the value.
func (d *decoder) secret(v value) (s string, ok bool) {
	s, ok = d.text(v)
	if !ok {
		return "", false
	}
	const hint = "generate one with: echo whsec_$(openssl rand -base64 32)"
	encoded, found := strings.CutPrefix(s, "whsec_")
	key, err := base64.StdEncoding.DecodeString(encoded)
	d.check(v, found, "does not start with whsec_; %s", hint)
	d.check(v, err == nil && len(key) > 0, "not whsec_ followed by standard base64; %s", hint)
	return s, found && err == nil && len(key) > 0
}

// compression returns a sink's request compression: "gzip", or "" for none
// (the default, also written as none).
func (d *decoder) compression(v value) string {
	c := d.string(v, "none")
	d.check(v, c == "none" || c == "gzip", "%q is not a compression; use gzip, or none (the default)", c)
	if c != "gzip" {
		return ""
	}
	return c
}

// headers returns a sink's static request headers, keyed as written.
func (d *decoder) headers(v value) map[string]string {
	entries := d.entries(v)
	if len(entries) == 0 {
		return nil
	}
	headers := make(map[string]string, len(entries))
	seen := make(map[string]bool) // lower-case names
	for _, e := range entries {
		lower := strings.ToLower(e.key)
		switch {
		case !isHeaderName(e.key):
			d.fail(e.value, "%q is not a valid header name; use letters, digits and -, such as X-Api-Key", e.key)
		case slices.Contains(reservedHeaders, lower):
			d.fail(e.value, "%s is set by walhook on every request; remove it", e.key)
		case seen[lower]:
			d.fail(e.value, "%s is set twice (header names ignore case); keep one", e.key)
		}
		seen[lower] = true
		val := d.string(e.value, "")
		d.check(e.value, !strings.ContainsAny(val, "\r\n\x00"), "value has a line break or NUL; a header value must be one line")
		headers[e.key] = val
	}
	return headers
}

// isHeaderName reports whether s is an HTTP field name: one or more tchar
// (RFC 9110, section 5.6.2).
func isHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// parentPath strips the last field from a path: "sinks[0].name" gives
// "sinks[0]".
func parentPath(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return path
}

// pauseAfter returns a sink's pause_after: how long the sink may fail
// without one success before it is paused; 0 (the default) never.
func (d *decoder) pauseAfter(v value) time.Duration {
	s, ok := d.text(v)
	if !ok || s == "0" {
		return 0
	}
	dur, err := time.ParseDuration(s)
	if err != nil || dur < 0 {
		d.fail(v, "%q is not a duration; give how long the sink may fail without one success before it is paused (such as 1h), or 0 for never", s)
		return 0
	}
	return dur
}
