package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Snapshotter gives the numbers /metrics exposes; it is read at every
// scrape, so the packages that count do not import Prometheus.
type Snapshotter interface {
	Snapshot() Snapshot
}

// Snapshot is walhook's counters and gauges at one moment.
type Snapshot struct {
	// Received counts change messages read from the replication stream.
	Received uint64
	// ReplicationLagBytes is the server's WAL end minus the confirmed
	// flush LSN; Known is false before the first heartbeat.
	ReplicationLagBytes int64
	LagKnown            bool
	LastHeartbeat       time.Time
	Sinks               []SinkSnapshot
	Backfills           []BackfillSnapshot
	BackfillsRunning    int
	// Standby: this instance stands by in an active/passive group
	// (state.url) and relays nothing.
	Standby bool
	// EventsPending counts operational events queued and not yet taken
	// by the events endpoint.
	EventsPending int
}

// SinkSnapshot is one sink's numbers.
type SinkSnapshot struct {
	Name           string
	Delivered      uint64
	DeadLettered   uint64
	Attempts       uint64 // that succeeded
	FailedAttempts uint64
	// Durations[i] counts attempts that took at most DurationBuckets[i]
	// seconds (not cumulative); the last element those that took longer.
	Durations       []uint64
	DurationBuckets []float64
	DurationSum     float64
	LagBytes        int64
	LagSeconds      float64
	DeadLetters     int
	BacklogBytes    int64
	// Paused: the sink is paused, by the operator, a 410, or pause_after:
	// PausedReason says which ("operator", "gone", "pause_after").
	Paused       bool
	PausedReason string
	FilterErrors uint64 // messages the sink's filter failed on
}

// BackfillSnapshot is the rows a backfill sent for one table.
type BackfillSnapshot struct {
	Sink, Table string
	Rows        uint64
}

// Collector is a Prometheus collector over a Snapshotter.
type Collector struct {
	src Snapshotter

	received, delivered, attempts, duration, replLag, sinkLag, sinkLagSec *prometheus.Desc
	deadLetters, heartbeat, backlog, backfillRows, backfillsRunning       *prometheus.Desc
	active, paused, filterErrors, eventsPending                           *prometheus.Desc
}

// NewCollector returns the collector of walhook's metrics over src.
func NewCollector(src Snapshotter) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &Collector{
		src:              src,
		received:         d("walhook_messages_received_total", "Change messages read from the replication stream."),
		delivered:        d("walhook_messages_delivered_total", "Messages a sink delivered (acknowledged by the destination).", "sink"),
		attempts:         d("walhook_delivery_attempts_total", "Delivery attempts by outcome: success, error, or dead_letter for messages moved to the dead letters.", "sink", "outcome"),
		duration:         d("walhook_delivery_duration_seconds", "How long delivery attempts took.", "sink"),
		replLag:          d("walhook_replication_lag_bytes", "The server's WAL end minus the flush LSN walhook confirmed: WAL the slot holds."),
		sinkLag:          d("walhook_sink_lag_bytes", "The server's WAL end minus the LSN up to which the sink has delivered.", "sink"),
		sinkLagSec:       d("walhook_sink_lag_seconds", "Age of the oldest commit the sink has not delivered; 0 when it is caught up.", "sink"),
		deadLetters:      d("walhook_dead_letters", "Dead letters (batches) waiting in the sink's dead-letter store.", "sink"),
		heartbeat:        d("walhook_last_heartbeat_timestamp_seconds", "When walhook last wrote its heartbeat message, Unix seconds."),
		backlog:          d("walhook_sink_backlog_bytes", "Bytes in the sink's durable backlog.", "sink"),
		backfillRows:     d("walhook_backfill_rows_total", "Rows a backfill sent, per sink and table.", "sink", "table"),
		backfillsRunning: d("walhook_backfills_running", "Backfills running now."),
		filterErrors:     d("walhook_filter_errors_total", "Messages the sink's filter failed on: left out (filter_errors: skip) or kept in the dead letters (dead_letter).", "sink"),
		eventsPending:    d("walhook_events_pending", "Operational events queued and not yet taken by the events endpoint; 0 without events."),
		active:           d("walhook_active", "1 while this instance relays the slot, 0 while it stands by (state.url): the sum over a group is 1."),
		paused:           d("walhook_sink_paused", "1 while the sink is paused, else 0; reason is operator, gone (a 410 Gone) or pause_after, empty while not paused.", "sink", "reason"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.received, c.delivered, c.attempts, c.duration, c.replLag, c.sinkLag,
		c.sinkLagSec, c.deadLetters, c.heartbeat, c.backlog, c.backfillRows, c.backfillsRunning, c.active, c.paused, c.filterErrors, c.eventsPending} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Snapshot()
	active := 1.0
	if s.Standby {
		active = 0
	}
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, active)
	ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(s.Received))
	if s.LagKnown {
		ch <- prometheus.MustNewConstMetric(c.replLag, prometheus.GaugeValue, float64(s.ReplicationLagBytes))
	}
	if !s.LastHeartbeat.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.heartbeat, prometheus.GaugeValue, float64(s.LastHeartbeat.UnixNano())/1e9)
	}
	for _, k := range s.Sinks {
		ch <- prometheus.MustNewConstMetric(c.delivered, prometheus.CounterValue, float64(k.Delivered), k.Name)
		ch <- prometheus.MustNewConstMetric(c.attempts, prometheus.CounterValue, float64(k.Attempts), k.Name, "success")
		ch <- prometheus.MustNewConstMetric(c.attempts, prometheus.CounterValue, float64(k.FailedAttempts), k.Name, "error")
		ch <- prometheus.MustNewConstMetric(c.attempts, prometheus.CounterValue, float64(k.DeadLettered), k.Name, "dead_letter")
		buckets := make(map[float64]uint64, len(k.DurationBuckets))
		var count uint64
		for i, ub := range k.DurationBuckets {
			if i < len(k.Durations) {
				count += k.Durations[i]
			}
			buckets[ub] = count
		}
		if len(k.Durations) > len(k.DurationBuckets) {
			count += k.Durations[len(k.DurationBuckets)]
		}
		ch <- prometheus.MustNewConstHistogram(c.duration, count, k.DurationSum, buckets, k.Name)
		ch <- prometheus.MustNewConstMetric(c.sinkLag, prometheus.GaugeValue, float64(k.LagBytes), k.Name)
		ch <- prometheus.MustNewConstMetric(c.sinkLagSec, prometheus.GaugeValue, k.LagSeconds, k.Name)
		ch <- prometheus.MustNewConstMetric(c.deadLetters, prometheus.GaugeValue, float64(k.DeadLetters), k.Name)
		ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(k.BacklogBytes), k.Name)
		paused := 0.0
		if k.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, paused, k.Name, k.PausedReason)
		ch <- prometheus.MustNewConstMetric(c.filterErrors, prometheus.CounterValue, float64(k.FilterErrors), k.Name)
	}
	for _, b := range s.Backfills {
		ch <- prometheus.MustNewConstMetric(c.backfillRows, prometheus.CounterValue, float64(b.Rows), b.Sink, b.Table)
	}
	ch <- prometheus.MustNewConstMetric(c.backfillsRunning, prometheus.GaugeValue, float64(s.BackfillsRunning))
	ch <- prometheus.MustNewConstMetric(c.eventsPending, prometheus.GaugeValue, float64(s.EventsPending))
}
