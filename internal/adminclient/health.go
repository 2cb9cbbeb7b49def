package adminclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// Health asks the daemon's /healthz whether it is alive, sending the token
// (needed with server.protect_metrics). It returns nil on 200, else an
// error as the API calls return them: a *NotRunningError when nothing
// answers, an *APIError for another status.
func (c *Client) Health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := &url.URL{Scheme: "http", Host: c.addr, Path: "/healthz"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("health request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(ctx, http.MethodGet, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return c.transportError(ctx, http.MethodGet, u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return c.answerError(resp, data)
	}
	return nil
}
