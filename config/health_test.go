package config

import (
	"slices"
	"testing"
	"time"
)

// TestParseHealth reads rate_limit, retry.schedule and events.
func TestParseHealth(t *testing.T) {
	yaml := `
source: {url: postgres://localhost/app}
sinks:
  - name: a
    url: http://localhost:8080/a
    rate_limit: 200/s
    retry: {schedule: [5s, 5m, 30m, 2h, 5h, 10h, 10h]}
  - name: b
    url: http://localhost:8080/b
    rate_limit: 10/m
events:
  url: http://localhost:9000/events
  secret: whsec_c2VjcmV0
  types: [dead_letter.created, sink.paused]
`
	c, err := Parse("health.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Sinks[0], c.Sinks[1]
	if got, want := a.RateLimit, (Rate{Count: 200, Per: time.Second}); got != want || got.PerSecond() != 200 || got.String() != "200/s" {
		t.Errorf("rate_limit: got %+v (%v/s, %q), want %+v", got, got.PerSecond(), got.String(), want)
	}
	if got := b.RateLimit; got.String() != "10/m" || got.PerSecond() != 10.0/60 {
		t.Errorf("rate_limit: got %+v, want 10/m", got)
	}
	want := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	if !slices.Equal(a.Retry.Schedule, want) || a.Retry.MaxAttempts != 8 {
		t.Errorf("retry: got schedule %v, max_attempts %d; want %v, 8", a.Retry.Schedule, a.Retry.MaxAttempts, want)
	}
	if b.Retry.Schedule != nil || b.Retry.MaxAttempts != 0 {
		t.Errorf("retry without schedule: got %+v", b.Retry)
	}
	e := c.Events
	if e.URL != "http://localhost:9000/events" || len(e.Secrets) != 1 || !slices.Equal(e.Types, []string{"dead_letter.created", "sink.paused"}) {
		t.Errorf("events: got %+v", e)
	}
	if !e.Wants("sink.paused") || e.Wants("sink.resumed") {
		t.Errorf("events.Wants: got paused %v, resumed %v; want true, false", e.Wants("sink.paused"), e.Wants("sink.resumed"))
	}
	if (Events{}).Wants("sink.paused") {
		t.Error("events without a url want events")
	}
}
