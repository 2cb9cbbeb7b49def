package config

import (
	"net/url"
	"strings"
)

// templatePlaceholders are what a subject, topic, stream or routing key
// template may hold besides literal text.
var templatePlaceholders = []string{"{schema}", "{table}", "{action}", "{sink}"}

// template returns a required name template; example is one to suggest.
// Every {...} must be a known placeholder.
func (d *decoder) template(v value, example string) string {
	s := d.string(v, "")
	d.check(v, s != "", "missing; write a template such as %q (placeholders: %s)", example, strings.Join(templatePlaceholders, " "))
	for rest := s; ; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			d.check(v, !strings.Contains(rest, "}"), "%q has a } without its {; placeholders are %s", s, strings.Join(templatePlaceholders, " "))
			break
		}
		d.check(v, !strings.Contains(rest[:open], "}"), "%q has a } without its {; placeholders are %s", s, strings.Join(templatePlaceholders, " "))
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			d.fail(v, "%q has a { without its }; placeholders are %s", s, strings.Join(templatePlaceholders, " "))
			break
		}
		p := rest[open : open+end+1]
		known := false
		for _, k := range templatePlaceholders {
			known = known || k == p
		}
		d.check(v, known, "%s in %q is not a placeholder; use %s", p, s, strings.Join(templatePlaceholders, " "))
		rest = rest[open+end+1:]
	}
	return s
}

// brokerURL returns a required URL whose scheme is one of schemes; one of
// comma-separated URLs when list is true. No message quotes the URL, which
// may hold a password.
func (d *decoder) brokerURL(v value, example string, list bool, schemes ...string) string {
	s := d.string(v, "")
	d.check(v, s != "", "missing; write the server's URL, such as %s", example)
	if s == "" {
		return ""
	}
	parts := []string{s}
	if list {
		parts = strings.Split(s, ",")
	}
	for _, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		ok := err == nil && u.Host != ""
		if ok {
			ok = false
			for _, scheme := range schemes {
				ok = ok || u.Scheme == scheme
			}
		}
		d.check(v, ok, "not a %s URL with a host; write one such as %s, percent-encoding special characters", orList(schemes), example)
	}
	return s
}

// nats reads a nats sink's keys.
func (d *decoder) nats(o object, s *Sink) {
	s.NATS = NATS{
		URL:       d.brokerURL(o.field("url"), "nats://127.0.0.1:4222", true, "nats", "tls"),
		Subject:   d.template(o.field("subject"), "walhook.{schema}.{table}"),
		CredsFile: d.existingFile(o.field("creds_file"), "a NATS credentials (.creds) file"),
		NKeyFile:  d.existingFile(o.field("nkey_file"), "an nkey seed file"),
		TLS:       d.tls(o.field("tls"), ""),
	}
	d.check(o.field("nkey_file"), s.NATS.CredsFile == "" || s.NATS.NKeyFile == "",
		"set, but creds_file is set too, and it holds the nkey; keep one of them")
}

// kafka reads a kafka sink's keys.
func (d *decoder) kafka(o object, s *Sink) {
	k := Kafka{
		Topic:  d.template(o.field("topic"), "walhook.{schema}.{table}"),
		SASL:   d.sasl(o.field("sasl")),
		TLS:    d.tls(o.field("tls"), ""),
		TLSSet: o.field("tls").present(),
	}
	items := d.list(o.field("brokers"))
	d.check(o.field("brokers"), len(items) > 0, "missing; list the brokers to start from, such as [127.0.0.1:9092]")
	for _, item := range items {
		b := d.hostPort(item)
		host, port, ok := strings.Cut(b, ":")
		d.check(item, ok && host != "" && port != "" && !strings.Contains(b, "/"), "%q is not host:port; write a broker such as 127.0.0.1:9092", b)
		k.Brokers = append(k.Brokers, b)
	}
	s.Kafka = k
}

// saslMechanisms are the SASL mechanisms a kafka sink may use.
var saslMechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

func (d *decoder) sasl(v value) SASL {
	o := d.object(v, "mechanism", "username", "password")
	if !v.present() {
		return SASL{}
	}
	a := SASL{
		Mechanism: d.string(o.field("mechanism"), ""),
		Username:  d.string(o.field("username"), ""),
		Password:  d.string(o.field("password"), ""),
	}
	known := false
	for _, m := range saslMechanisms {
		known = known || m == a.Mechanism
	}
	d.check(o.field("mechanism"), known, "%q is not a SASL mechanism; use %s", a.Mechanism, orList(saslMechanisms))
	d.check(o.field("username"), a.Username != "", "missing; give the user to authenticate as")
	d.check(o.field("password"), a.Password != "", "missing; give the user's password, such as ${KAFKA_PASSWORD}")
	return a
}

// redis reads a redis sink's keys.
func (d *decoder) redis(o object, s *Sink) {
	r := Redis{
		URL:    d.brokerURL(o.field("url"), "redis://127.0.0.1:6379/0", false, "redis", "rediss"),
		Stream: d.template(o.field("stream"), "walhook:{schema}.{table}"),
		MaxLen: int64(d.int(o.field("max_len"), 0)),
	}
	d.check(o.field("max_len"), r.MaxLen >= 0, "%d is negative; use 0 to keep the whole stream, or a length such as 1000000 to trim it to about that many entries", r.MaxLen)
	s.Redis = r
}

// rabbitmq reads a rabbitmq sink's keys.
func (d *decoder) rabbitmq(o object, s *Sink) {
	r := RabbitMQ{
		URL:        d.brokerURL(o.field("url"), "amqp://guest:guest@127.0.0.1:5672/", false, "amqp", "amqps"),
		Exchange:   d.string(o.field("exchange"), ""),
		RoutingKey: d.template(o.field("routing_key"), "{schema}.{table}.{action}"),
	}
	d.check(o.field("exchange"), r.Exchange != "", "missing; name the exchange to publish to, such as walhook (walhook does not create it)")
	s.RabbitMQ = r
}

// existingFile returns a file path resolved as tls resolves its files, or
// "" when v is absent; the file must be readable now. what says what the
// file holds.
func (d *decoder) existingFile(v value, what string) string {
	path := d.filePath(v)
	if path == "" {
		return ""
	}
	if _, ok := d.readFile(v, path, what); !ok {
		return ""
	}
	return path
}

// hostPort returns a host:port item. The YAML parser reads an unquoted
// 127.0.0.1:9092 inside [...] as a mapping of 127.0.0.1 to 9092; that
// mapping is taken for the host:port it was written as.
func (d *decoder) hostPort(v value) string {
	if n := v.node; n != nil && n.kind == mappingKind && len(n.fields) == 1 {
		if f := n.fields[0]; f.value != nil && f.value.kind == scalarKind {
			return f.key + ":" + f.value.text
		}
	}
	return d.string(v, "")
}
