// Package redact keeps secrets out of what walhook prints: it knows the
// secrets of a configuration (passwords in URLs, sink secrets, the admin
// token, header values) and replaces them wherever they appear, in log
// records and in error text.
package redact

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/walhook/walhook/config"
)

// Mask replaces a secret.
const Mask = "[redacted]"

// minLen is the shortest value treated as a secret: masking every "1" or
// "ab" in a log would make it unreadable, and values that short protect
// nothing.
const minLen = 4

// Redactor replaces known secrets in text.
type Redactor struct {
	mu      sync.RWMutex
	secrets []string // longest first, so that a secret's parts are not masked alone
}

// New returns a redactor of the given secrets.
func New(secrets ...string) *Redactor {
	r := &Redactor{}
	r.add(secrets)
	return r
}

func (r *Redactor) add(secrets []string) {
	for _, s := range secrets {
		if len(s) >= minLen && !slices.Contains(r.secrets, s) {
			r.secrets = append(r.secrets, s)
		}
	}
	slices.SortFunc(r.secrets, func(a, b string) int { return len(b) - len(a) })
}

// Merge adds other's secrets to r's: after a reload, the old configuration's
// secrets stay masked along with the new one's.
func (r *Redactor) Merge(other *Redactor) {
	other.mu.RLock()
	s := slices.Clone(other.secrets)
	other.mu.RUnlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.add(s)
}

// ForConfig returns a redactor of every secret cfg holds: the passwords
// of source.url and state.url, every sink's secret and header values, the
// password or query of its URL (a webhook's or a broker's) and its Kafka
// SASL password, server.token, and the events endpoint's secrets and
// URL password.
func ForConfig(cfg *config.Config) *Redactor {
	var s []string
	s = append(s, urlSecrets(cfg.Source.URL)...)
	s = append(s, urlSecrets(cfg.Source.PrimaryURL)...)
	s = append(s, urlSecrets(cfg.State.URL)...)
	s = append(s, cfg.Server.Token)
	s = append(s, urlSecrets(cfg.Events.URL)...)
	for _, secret := range cfg.Events.Secrets {
		s = append(s, secret, strings.TrimPrefix(secret, "whsec_"))
	}
	for _, k := range cfg.Sinks {
		s = append(s, urlSecrets(k.Webhook.URL)...)
		for _, u := range strings.Split(k.NATS.URL, ",") {
			s = append(s, urlSecrets(strings.TrimSpace(u))...)
		}
		s = append(s, urlSecrets(k.Redis.URL)...)
		s = append(s, urlSecrets(k.RabbitMQ.URL)...)
		s = append(s, k.Kafka.SASL.Password)
		for _, secret := range k.Webhook.Secrets {
			s = append(s, secret)
			if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
				s = append(s, rest)
			}
		}
		for _, v := range k.Webhook.Headers {
			s = append(s, v)
			if _, cred, ok := strings.Cut(v, " "); ok { // "Bearer xyz": xyz alone too
				s = append(s, cred)
			}
		}
	}
	return New(s...)
}

// urlSecrets returns the password of a URL and its query values named like
// credentials, raw and decoded.
func urlSecrets(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return nil
	}
	var out []string
	if pw, ok := u.User.Password(); ok {
		out = append(out, pw, url.PathEscape(pw), url.QueryEscape(pw))
	}
	for k, vs := range u.Query() {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "pass") || strings.Contains(lk, "token") || strings.Contains(lk, "secret") || strings.Contains(lk, "key") || lk == "sig" {
			for _, v := range vs {
				out = append(out, v, url.QueryEscape(v))
			}
		}
	}
	return out
}

// String returns s with every secret masked.
func (r *Redactor) String(s string) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, secret := range r.secrets {
		if strings.Contains(s, secret) {
			s = strings.ReplaceAll(s, secret, Mask)
		}
	}
	return s
}

// Error returns err with every secret masked in its text, or nil.
func (r *Redactor) Error(err error) error {
	if err == nil || r == nil {
		return err
	}
	msg := err.Error()
	if clean := r.String(msg); clean != msg {
		return redacted{msg: clean, err: err}
	}
	return err
}

// redacted is an error whose text had secrets masked; it still unwraps to
// the original, so errors.Is and As work.
type redacted struct {
	msg string
	err error
}

func (e redacted) Error() string { return e.msg }
func (e redacted) Unwrap() error { return e.err }

// Handler returns a slog handler that masks secrets in the message and in
// every attribute (strings, errors and anything printed with %v) before
// passing records on to h.
func (r *Redactor) Handler(h slog.Handler) slog.Handler {
	return &handler{r: r, next: h}
}

type handler struct {
	r    *Redactor
	next slog.Handler
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.attr(a)
	}
	return &handler{r: h.r, next: h.next.WithAttrs(clean)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{r: h.r, next: h.next.WithGroup(name)}
}

func (h *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.String(v.String()))
	case slog.KindGroup:
		group := v.Group()
		clean := make([]any, len(group))
		for i, g := range group {
			clean[i] = h.attr(g)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.r.String(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, h.r.String(x.String()))
		default:
			s := fmt.Sprint(x)
			if clean := h.r.String(s); clean != s {
				return slog.String(a.Key, clean)
			}
		}
	}
	return a
}
