package main

import (
	"slices"
	"testing"
	"time"

	"github.com/walhook/walhook/config"
)

// TestLiveRefusals: every key that cannot change while walhook runs is
// refused by name, source keys added after the list was written (failover)
// and the events endpoint included; what can change is not.
func TestLiveRefusals(t *testing.T) {
	t.Parallel()
	base := func() *config.Config {
		return &config.Config{
			Source: config.Source{URL: "postgres://a", Slot: "walhook", Publication: "walhook", Heartbeat: 10 * time.Second},
			Sinks:  []config.Sink{{Name: "s", Type: "webhook", MaxInFlight: 16, BatchSize: 100}},
		}
	}
	for _, tt := range []struct {
		change func(*config.Config)
		want   []string
	}{
		{func(c *config.Config) { c.Source.Failover = true }, []string{"source.failover"}},
		{func(c *config.Config) { c.Source.ReceiveTimeout = time.Minute }, []string{"source.receive_timeout"}},
		{func(c *config.Config) { c.Source.Slot = "other" }, []string{"source.slot"}},
		{func(c *config.Config) { c.Events.URL = "http://127.0.0.1:1/events" }, []string{"events"}},
		{func(c *config.Config) { c.Sinks[0].MaxInFlight = 4 }, []string{"sinks[0] (s).max_in_flight"}},
		{func(c *config.Config) { c.Sinks[0].BatchBy = config.BatchByTransaction }, []string{"sinks[0] (s).batch_by"}},
		{func(c *config.Config) { c.Sinks[0].BatchSize = 10 }, nil},
	} {
		next := base()
		tt.change(next)
		if got := liveRefusals(base(), next); !slices.Equal(got, tt.want) {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}
