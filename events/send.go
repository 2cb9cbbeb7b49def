package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink/webhook"
	"github.com/walhook/walhook/state"
)

// attemptTimeout bounds one attempt at sending an event.
const attemptTimeout = 10 * time.Second

// sender POSTs events to the endpoint.
type sender struct {
	url     string
	secrets []string
	agent   string
	client  *http.Client
}

func newSender(cfg config.Events, version string) (*sender, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The URL may hold credentials: do not print it.
		return nil, errors.New("events.url is not an http:// or https:// URL with a host (e.g. https://ops.example.com/walhook-events)")
	}
	for i, s := range cfg.Secrets {
		if _, err := webhook.Sign(s, "", 0, nil); err != nil {
			return nil, fmt.Errorf("events.secret %d of %d: %w", i+1, len(cfg.Secrets), err)
		}
	}
	return &sender{
		url: cfg.URL, secrets: cfg.Secrets, agent: "walhook/" + version,
		client: &http.Client{
			Timeout:       attemptTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// post makes one attempt at sending ev, signed at now; nil on a 2xx.
func (s *sender) post(ctx context.Context, ev state.Event, attempt int, now time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(ev.Body))
	if err != nil {
		return fmt.Errorf("build request: %w", unwrapURLError(err))
	}
	ts := now.Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.agent)
	req.Header.Set("Webhook-Id", ev.ID)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("Webhook-Attempt", strconv.Itoa(attempt))
	if len(s.secrets) > 0 {
		sigs := make([]string, len(s.secrets))
		for i, secret := range s.secrets {
			if sigs[i], err = webhook.Sign(secret, ev.ID, ts, ev.Body); err != nil {
				return err
			}
		}
		req.Header.Set("Webhook-Signature", strings.Join(sigs, " "))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("post: %w", unwrapURLError(err))
	}
	defer resp.Body.Close()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the events endpoint answered %d %s: %q", resp.StatusCode, http.StatusText(resp.StatusCode), excerpt)
	}
	return nil
}

// unwrapURLError drops net/http's *url.Error wrapper, whose message
// repeats the URL, which may carry credentials.
func unwrapURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}
