package events

import (
	"context"
	"fmt"
	"net"
	"net/url"

	"github.com/walhook/walhook/config"
)

// Check tells whether the events endpoint of cfg could be used: its URL
// and secrets are valid (an error, as walhook run would refuse them) and
// its host answers a TCP connection (a warning: events wait in the queue
// until it does). It sends nothing. It names the host, never the whole
// URL, which may hold credentials.
func Check(ctx context.Context, cfg config.Events) (summary, warning string, err error) {
	if cfg.URL == "" {
		return "events: off (no events section)", "", nil
	}
	if _, err := newSender(cfg, ""); err != nil {
		return "", "", err
	}
	u, _ := url.Parse(cfg.URL) // newSender parsed it
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	summary = fmt.Sprintf("events: %s://%s, %d secret(s), types %v", u.Scheme, addr, len(cfg.Secrets), typesOf(cfg))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return summary, fmt.Sprintf("the events endpoint %s does not answer (%v); events wait in the queue until it does", addr, err), nil
	}
	conn.Close()
	return summary, "", nil
}

func typesOf(cfg config.Events) []string {
	if len(cfg.Types) == 0 {
		return config.EventTypes
	}
	return cfg.Types
}
