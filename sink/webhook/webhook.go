// Package webhook is walhook's HTTP destination: it POSTs each batch the
// sink's pipeline hands it as a Standard Webhooks request and tells the
// pipeline how the receiver answered. Lanes, batching, retries, barriers
// and dead letters are the pipeline's (package sink).
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/walhook/walhook/config"
)

// Options are the parts of a webhook destination that come from its caller
// rather than from the configuration file.
type Options struct {
	// Version is walhook's version, sent as User-Agent: walhook/<version>.
	Version string
	// Logger; nil discards.
	Logger *slog.Logger
	// Client sends the requests; nil uses a client that does not follow
	// redirects, keeps max_in_flight idle connections to the receiver,
	// speaks TLS as the sink's tls settings say and gives up on an attempt
	// after the sink's timeout. The sink applies the timeout to every
	// attempt through its context in any case; the tls settings are the
	// given client's business.
	Client *http.Client
	// Now is the clock for webhook-timestamp and Retry-After dates; nil
	// uses time.Now.
	Now func() time.Time
}

// Sink posts batches to one webhook endpoint. It is safe for concurrent
// use: the pipeline's lanes call Deliver at once.
type Sink struct {
	cfg       config.Sink
	log       *slog.Logger
	client    *http.Client
	transport *http.Transport // set when the sink built client itself
	now       func() time.Time
	header    http.Header // Content-Type, User-Agent and the static headers
	host      string      // a static Host header, which net/http takes apart
	signers   sync.Pool   // of *signer, one HMAC per secret; empty when unsigned
	signed    bool
	gzip      *compressor // nil unless compression: gzip
}

// signer holds an HMAC keyed with each of a sink's secrets, in order, and a
// buffer for the signatures.
type signer struct {
	macs []hash.Hash
	buf  []byte
}

// New checks cfg and builds a destination for it.
func New(cfg config.Sink, opts Options) (*Sink, error) {
	if err := validate(cfg); err != nil {
		return nil, fmt.Errorf("sink %q: %w", cfg.Name, err)
	}
	s := &Sink{cfg: cfg, log: opts.Logger, client: opts.Client, now: opts.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("sink", cfg.Name)
	if s.now == nil {
		s.now = time.Now
	}
	keys := make([][]byte, len(cfg.Webhook.Secrets))
	for i, secret := range cfg.Webhook.Secrets {
		key, err := decodeSecret(secret)
		if err != nil {
			return nil, fmt.Errorf("sink %q: secret %d of %d: %w", cfg.Name, i+1, len(cfg.Webhook.Secrets), err)
		}
		keys[i] = key
	}
	if len(keys) > 0 {
		s.signed = true
		s.signers.New = func() any {
			sg := &signer{macs: make([]hash.Hash, len(keys)), buf: make([]byte, 0, len(keys)*48)}
			for i, key := range keys {
				sg.macs[i] = hmac.New(sha256.New, key)
			}
			return sg
		}
	}
	if cfg.Webhook.Compression == "gzip" {
		s.gzip = newCompressor(4 * int(max(cfg.BatchBytes, 1<<20)))
	}
	if s.client == nil {
		tlsConfig, err := cfg.Webhook.TLS.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("sink %q: %w", cfg.Name, err)
		}
		if t, ok := http.DefaultTransport.(*http.Transport); ok {
			s.transport = t.Clone()
		} else {
			s.transport = &http.Transport{Proxy: http.ProxyFromEnvironment}
		}
		// One connection per lane stays open between batches, and no
		// more are opened: a lane whose connection is on its way back to
		// the idle pool waits for it rather than dialling another.
		s.transport.MaxIdleConnsPerHost = cfg.MaxInFlight
		s.transport.MaxIdleConns = max(s.transport.MaxIdleConns, cfg.MaxInFlight)
		s.transport.MaxConnsPerHost = cfg.MaxInFlight
		if tlsConfig != nil {
			s.transport.TLSClientConfig = tlsConfig
		}
		if cfg.Webhook.TLS.InsecureSkipVerify {
			s.log.Warn("tls.insecure_skip_verify is true: the receiver's certificate is not checked, so anyone on the way " +
				"can pose as the receiver and read every change sent to it; trust its CA with tls.ca_file instead")
		}
		s.client = &http.Client{
			Transport: s.transport,
			Timeout:   cfg.Timeout,
			// Only a 2xx acknowledges: a redirect is a failed attempt the
			// log shows, not a POST silently turned into a GET.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	s.header = http.Header{
		"Content-Type": {"application/json"},
		"User-Agent":   {"walhook/" + opts.Version},
	}
	for name, value := range cfg.Webhook.Headers {
		if http.CanonicalHeaderKey(name) == "Host" {
			s.host = value
			continue
		}
		s.header.Set(name, value)
	}
	return s, nil
}

func validate(cfg config.Sink) error {
	u, err := url.Parse(cfg.Webhook.URL)
	switch {
	case cfg.Webhook.URL == "":
		return errors.New("url is missing (e.g. https://example.com/hooks)")
	case err != nil:
		// The URL may hold credentials: name the problem, not the text.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("url is not a valid URL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("url: scheme %q is not http or https", u.Scheme)
	case u.Host == "":
		return errors.New("url has no host (e.g. https://example.com/hooks)")
	case cfg.Timeout <= 0:
		return fmt.Errorf("timeout must be positive, got %s", cfg.Timeout)
	case cfg.Webhook.Compression != "" && cfg.Webhook.Compression != "gzip":
		return fmt.Errorf("compression %q is not supported; use gzip or none", cfg.Webhook.Compression)
	}
	for name, value := range cfg.Webhook.Headers {
		if !validHeaderName(name) {
			return fmt.Errorf("headers: %q is not a valid header name", name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			// Never print a header value: it is often a credential.
			return fmt.Errorf("headers: the value of %q holds a line break or NUL", name)
		}
	}
	return nil
}

// validHeaderName reports whether name is an RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Name is the sink's configured name.
func (s *Sink) Name() string { return s.cfg.Name }

// Close closes idle connections.
func (s *Sink) Close() error {
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	return nil
}

// sign is the webhook-signature of body: a v1 signature under each secret,
// newest first, separated by spaces.
func (s *Sink) sign(id, ts string, body []byte) string {
	sg := s.signers.Get().(*signer)
	sg.buf = sg.buf[:0]
	for i, mac := range sg.macs {
		if i > 0 {
			sg.buf = append(sg.buf, ' ')
		}
		sg.buf = appendSignature(sg.buf, mac, id, ts, body)
	}
	sig := string(sg.buf)
	s.signers.Put(sg)
	return sig
}
