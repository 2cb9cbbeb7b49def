package sink

import (
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/config"
)

func TestNewRejectsBadSettings(t *testing.T) {
	good := config.Sink{Name: "s", BatchSize: 10, MaxInFlight: 2, Retry: config.Retry{Initial: time.Millisecond, Max: time.Second}}
	if _, err := New(good, nil, Options{}); err != nil {
		t.Fatalf("New with good settings: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*config.Sink)
		want   string
	}{
		{"batch size", func(c *config.Sink) { c.BatchSize = 0 }, "batch_size"},
		{"batch wait", func(c *config.Sink) { c.BatchWait = -time.Second }, "batch_wait"},
		{"lanes", func(c *config.Sink) { c.MaxInFlight = 0 }, "max_in_flight"},
		{"retry initial", func(c *config.Sink) { c.Retry.Initial = 0 }, "retry.initial"},
		{"retry max", func(c *config.Sink) { c.Retry.Max = time.Microsecond }, "retry.max"},
		{"max attempts", func(c *config.Sink) { c.Retry.MaxAttempts = -1 }, "retry.max_attempts"},
	} {
		cfg := good
		tc.change(&cfg)
		if _, err := New(cfg, nil, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %s", tc.name, err, tc.want)
		}
	}
}
