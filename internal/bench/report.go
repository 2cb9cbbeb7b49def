package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one benchmark run measured; -json writes it as is.
type Report struct {
	Date       string `json:"date"`
	Walhook    string `json:"walhook"`
	PostgreSQL string `json:"postgresql"`
	Go         string `json:"go"`
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model"`
	LoadStart  string `json:"load_average_start"`
	Seconds    int    `json:"seconds"`

	Backlog      backlog  `json:"backlog"`
	SinkSettings []string `json:"sink_settings"`
	Receiver     string   `json:"receiver"` // parse or count
	Drain        Drain    `json:"drain"`
	Fanout       []Fanout `json:"fanout"`
	Latency      *Latency `json:"latency,omitempty"`
	// LatencySettings are the latency measurement's sink settings; none
	// means the defaults.
	LatencySettings []string `json:"latency_sink_settings"`
	// LatencyHigh is the same measurement at -latency-high-rate.
	LatencyHigh *Latency  `json:"latency_high,omitempty"`
	Backfill    *Backfill `json:"backfill,omitempty"`
	Memory      *Memory   `json:"memory,omitempty"`
}

// Backfill is a backfill on the sink that carries live changes.
type Backfill struct {
	Rows       int64   `json:"rows"`
	Seconds    float64 `json:"seconds"` // from the request until the last row arrived
	RowsPerSec float64 `json:"rows_per_s"`
	// DrainRowsPerSec is walhook's drain of the backlog (the same number of
	// rows of the same shape) to the same kind of receiver; Ratio the
	// backfill's rate over it.
	DrainRowsPerSec float64 `json:"drain_rows_per_s"`
	Ratio           float64 `json:"ratio"`
	// PostgreSQL's own rates for the table: row_to_json through psql, and
	// COPY, each to /dev/null.
	PsqlJSONRowsPerSec float64 `json:"psql_row_to_json_rows_per_s"`
	CopyRowsPerSec     float64 `json:"copy_rows_per_s"`
	// The live changes: their rate, and their latency before the backfill
	// (alone) and while it ran.
	LiveRate     int     `json:"live_rate"`
	AchievedRate float64 `json:"live_achieved_rate"`
	AloneP50ms   float64 `json:"alone_p50_ms"`
	AloneP99ms   float64 `json:"alone_p99_ms"`
	LiveDuring   int64   `json:"live_during"` // live changes received while it ran
	P50ms        float64 `json:"p50_ms"`
	P90ms        float64 `json:"p90_ms"`
	P99ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	WalhookCores float64 `json:"walhook_cores"`
	Rest         float64 `json:"rest_cores"`
}

// Drain compares pg_recvlogical and walhook on the same backlog.
type Drain struct {
	Recvlogical Series `json:"pg_recvlogical_rows_per_s"`
	Walhook     Series `json:"walhook_rows_per_s"`
	// Ratio is the walhook median over the pg_recvlogical median; RatioRuns
	// the ratio of each pair of runs (made one after the other).
	Ratio     float64 `json:"ratio"`
	RatioRuns Series  `json:"ratio_runs"`
	// MessageBytes is the average size of a delivered message, bodies'
	// framing included.
	MessageBytes float64 `json:"message_bytes"`

	// CPU seconds per million rows: each client's own, its walsender's,
	// and (for walhook) the receiver's.
	RecvlogicalCPU          Series `json:"pg_recvlogical_cpu_s_per_million"`
	RecvlogicalWalsenderCPU Series `json:"pg_recvlogical_walsender_cpu_s_per_million"`
	WalhookCPU              Series `json:"walhook_cpu_s_per_million"`
	WalhookWalsenderCPU     Series `json:"walhook_walsender_cpu_s_per_million"`
	ReceiverCPU             Series `json:"receiver_cpu_s_per_million"`

	// The cores busy with anything else during the runs, on average (see
	// rest): a busy neighbour lowers the rates and widens the spread.
	RecvlogicalRest Series `json:"pg_recvlogical_rest_cores"`
	WalhookRest     Series `json:"walhook_rest_cores"`

	// With the parsing receiver: the same drain to a receiver that only
	// counts, walhook's CPU seconds per million rows there, and the ratio
	// of its rate to pg_recvlogical's.
	WalhookCounting    Series  `json:"walhook_counting_receiver_rows_per_s,omitzero"`
	WalhookCountingCPU Series  `json:"walhook_counting_receiver_cpu_s_per_million,omitzero"`
	CountingRatio      float64 `json:"counting_receiver_ratio,omitempty"`
	CountingRatioRuns  Series  `json:"counting_receiver_ratio_runs,omitzero"`

	// With -state-url: the same drain with the state in PostgreSQL, and
	// walhook's CPU seconds per million rows.
	WalhookStateURL    Series `json:"walhook_state_url_rows_per_s,omitzero"`
	WalhookStateURLCPU Series `json:"walhook_state_url_cpu_s_per_million,omitzero"`

	// Brokers are the same drain through each broker (-brokers).
	Brokers []BrokerDrain `json:"brokers,omitempty"`
}

// BrokerDrain is the drain of the backlog through a broker: walhook
// delivering to a sink of that type, until the broker's stream holds every
// row.
type BrokerDrain struct {
	Broker     string `json:"broker"` // nats or redis
	RowsPerSec Series `json:"rows_per_s"`
	// Ratio is the median over pg_recvlogical's median; RatioRuns the
	// ratio of each run to pg_recvlogical's run just before it.
	Ratio     float64 `json:"ratio"`
	RatioRuns Series  `json:"ratio_runs"`
	// CPU seconds per million rows: walhook's, the broker process's and
	// the walsender's.
	WalhookCPU   Series `json:"walhook_cpu_s_per_million"`
	BrokerCPU    Series `json:"broker_cpu_s_per_million"`
	WalsenderCPU Series `json:"walsender_cpu_s_per_million"`
	Rest         Series `json:"rest_cores"`
	// Duplicates are messages in the stream beyond the rows, over every
	// run (NATS drops them by Nats-Msg-Id; Redis keeps them).
	Duplicates int64 `json:"duplicates"`
}

// bound returns the cores that the walsender and the broker would need, at
// their measured cost per row, to carry share times rate rows a second.
func (d BrokerDrain) bound(share, rate float64) float64 {
	return share * rate * (d.WalsenderCPU.Median + d.BrokerCPU.Median) / 1e6
}

// bound returns the cores that the walsender and the receiver would need,
// at their measured cost per row, for walhook to drain at share times
// pg_recvlogical's rate: what is left of the machine is walhook's most.
func (d Drain) bound(share float64) float64 {
	return share * d.Recvlogical.Median * (d.WalhookWalsenderCPU.Median + d.ReceiverCPU.Median) / 1e6
}

// Fanout is the drain with several sinks, each its own receiver.
type Fanout struct {
	Sinks            int     `json:"sinks"`
	RowsPerSec       Series  `json:"rows_per_s"`
	DeliveriesPerSec float64 `json:"deliveries_per_s"` // median
	CPUPerMillion    Series  `json:"walhook_cpu_s_per_million_deliveries"`
	ReceiverCPU      Series  `json:"receivers_cpu_s_per_million_deliveries"`
	PeakRSSMB        Series  `json:"walhook_peak_rss_mb"`
	Rest             Series  `json:"rest_cores"`
	Duplicates       int64   `json:"duplicates"` // over every run
}

// Latency is commit-to-receipt latency under a steady trickle.
type Latency struct {
	Rows         int64   `json:"rows"`
	Rate         int     `json:"rate"`
	AchievedRate float64 `json:"achieved_rate"`
	Seconds      float64 `json:"seconds"`
	P50ms        float64 `json:"p50_ms"`
	P90ms        float64 `json:"p90_ms"`
	P99ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	// WalhookCores is walhook's CPU time over the run's length, and so
	// are the walsender's and the receiver's.
	WalhookCores   float64 `json:"walhook_cores"`
	WalsenderCores float64 `json:"walsender_cores"`
	ReceiverCores  float64 `json:"receiver_cores"`
	Rest           float64 `json:"rest_cores"`
}

// Memory is walhook's peak RSS while it streams one large transaction.
type Memory struct {
	Rows         int64   `json:"rows"`
	WriteSeconds float64 `json:"write_seconds"`
	Seconds      float64 `json:"seconds"`
	RowsPerSec   float64 `json:"rows_per_s"`
	PeakRSSMB    float64 `json:"walhook_peak_rss_mb"`
	Rest         float64 `json:"rest_cores"`
	// CPUPerMillion is walhook's CPU seconds per million rows.
	CPUPerMillion float64 `json:"walhook_cpu_s_per_million"`
	// FirstSeconds is when the first row arrived, from walhook's start:
	// until then the walsender decodes (and spills) the transaction.
	FirstSeconds      float64 `json:"first_row_s"`
	SmallFirstSeconds float64 `json:"small_txns_first_row_s"`
	// The same number of rows in SmallTxnRows-row transactions, and Ratio
	// the large transaction's rate over theirs.
	SmallTxnRows       int64   `json:"small_txn_rows"`
	SmallRowsPerSec    float64 `json:"small_txns_rows_per_s"`
	SmallPeakRSSMB     float64 `json:"small_txns_walhook_peak_rss_mb"`
	SmallCPUPerMillion float64 `json:"small_txns_walhook_cpu_s_per_million"`
	SmallRest          float64 `json:"small_txns_rest_cores"`
	Ratio              float64 `json:"ratio"`
	// pg_recvlogical's rates for the same large transaction and the same
	// small ones, from the process start to its exit, and their ratio: the
	// part of Ratio that is the walsender's.
	RecvlogicalRowsPerSec  float64 `json:"pg_recvlogical_rows_per_s"`
	RecvlogicalSmallPerSec float64 `json:"pg_recvlogical_small_txns_rows_per_s"`
	RecvlogicalRatio       float64 `json:"pg_recvlogical_ratio"`
}

// The limits the report compares with (issue 22).
const (
	highRateP99Limit = 10.0 // ms, at 10,000 transactions a second
	bigTxnRatioLimit = 0.8
)

// Series is repeated measurements of one quantity.
type Series struct {
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
}

func newSeries(runs []float64) Series {
	s := Series{Runs: runs}
	if len(runs) == 0 {
		return s
	}
	sorted := slices.Sorted(slices.Values(runs))
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	if n := len(sorted); n%2 == 1 {
		s.Median = sorted[n/2]
	} else {
		s.Median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return s
}

// spread is (max - min) / median, in percent.
func (s Series) spread() float64 {
	if s.Median == 0 {
		return 0
	}
	return 100 * (s.Max - s.Min) / s.Median
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// writeJSON writes the report to path.
func (r *Report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// print writes the report as tables.
func (r *Report) print(w io.Writer) {
	settings := "defaults"
	if len(r.SinkSettings) > 0 {
		settings = strings.Join(r.SinkSettings, ", ")
	}
	fmt.Fprintf(w, "walhook benchmark, %s (%d s)\n", r.Date, r.Seconds)
	fmt.Fprintf(w, "  walhook %s, PostgreSQL %s, %s, %d CPUs (%s), load average before the run %s\n",
		r.Walhook, r.PostgreSQL, r.Go, r.CPUs, r.CPUModel, r.LoadStart)
	b := r.Backlog
	fmt.Fprintf(w, "  backlog: %s rows of %.0f bytes in %s-row transactions, %.0f MB of WAL (written at %s rows/s), delivered as %.0f-byte JSON messages\n",
		count(b.Rows), b.RowBytes, count(b.TxnRows), float64(b.WALBytes)/1e6, count(int64(float64(b.Rows)/b.Seconds)), r.Drain.MessageBytes)
	receiver := "unmarshals every message"
	if r.Receiver == "count" {
		receiver = "only scans bodies for the ids (-receiver count)"
	}
	fmt.Fprintf(w, "  sink settings: %s; the receiver %s\n", settings, receiver)

	d := r.Drain
	fmt.Fprintf(w, "\nDrain of the backlog, %d runs each: rows/s (median, min, max, spread) and CPU s per 1M rows (median)\n", len(d.Walhook.Runs))
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(t, "\trows/s\tmin\tmax\tspread\tCPU: walsender\tclient\treceiver\trest (cores)\t")
	row := func(name string, s Series, walsender, client Series, receiver string, others Series) {
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%.0f%%\t%.2f\t%.2f\t%s\t%.2f\t\n", name, count(int64(s.Median)), count(int64(s.Min)), count(int64(s.Max)), s.spread(),
			walsender.Median, client.Median, receiver, others.Median)
	}
	row("pg_recvlogical to /dev/null", d.Recvlogical, d.RecvlogicalWalsenderCPU, d.RecvlogicalCPU, "-", d.RecvlogicalRest)
	row("walhook to an HTTP receiver", d.Walhook, d.WalhookWalsenderCPU, d.WalhookCPU, fmt.Sprintf("%.2f", d.ReceiverCPU.Median), d.WalhookRest)
	if len(d.WalhookStateURL.Runs) > 0 {
		s := d.WalhookStateURL
		fmt.Fprintf(t, "walhook, state.url\t%s\t%s\t%s\t%.0f%%\t\t%.2f\t\t\t\n", count(int64(s.Median)), count(int64(s.Min)), count(int64(s.Max)), s.spread(),
			d.WalhookStateURLCPU.Median)
	}
	fmt.Fprintf(t, "walhook / pg_recvlogical\t%.2f\t%.2f\t%.2f\t\t\t\t\t\t\n", d.Ratio, d.RatioRuns.Min, d.RatioRuns.Max)
	if len(d.WalhookCounting.Runs) > 0 {
		s := d.WalhookCounting
		fmt.Fprintf(t, "walhook to a counting receiver\t%s\t%s\t%s\t%.0f%%\t\t%.2f\t\t\t\n", count(int64(s.Median)), count(int64(s.Min)), count(int64(s.Max)), s.spread(),
			d.WalhookCountingCPU.Median)
		fmt.Fprintf(t, "counting walhook / pg_recvlogical\t%.2f\t%.2f\t%.2f\t\t\t\t\t\t\n", d.CountingRatio, d.CountingRatioRuns.Min, d.CountingRatioRuns.Max)
	}
	_ = t.Flush()
	if need := d.bound(0.9); r.Receiver != "count" && need > 0 {
		fmt.Fprintf(w, "  CPU budget: at 0.9 x pg_recvlogical's rate, the walsender and the parsing receiver alone would need %.2f of the %d cores\n", need, r.CPUs)
	}

	if len(d.Brokers) > 0 {
		fmt.Fprintf(w, "\nDrain through a broker, %d runs each: rows/s until the broker's stream holds every row, and CPU s per 1M rows (median)\n", len(d.Brokers[0].RowsPerSec.Runs))
		t = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(t, "\trows/s\tmin\tmax\tspread\t/ pg_recvlogical\tmin\tmax\tCPU: walsender\twalhook\tbroker\tduplicates\trest (cores)\t")
		for _, b := range d.Brokers {
			s := b.RowsPerSec
			fmt.Fprintf(t, "walhook to %s\t%s\t%s\t%s\t%.0f%%\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%.2f\t\n", brokerName(b.Broker),
				count(int64(s.Median)), count(int64(s.Min)), count(int64(s.Max)), s.spread(), b.Ratio, b.RatioRuns.Min, b.RatioRuns.Max,
				b.WalsenderCPU.Median, b.WalhookCPU.Median, b.BrokerCPU.Median, b.Duplicates, b.Rest.Median)
		}
		_ = t.Flush()
		for _, b := range d.Brokers {
			if need := b.bound(0.9, d.Recvlogical.Median); need > 0 {
				fmt.Fprintf(w, "  CPU budget, %s: at 0.9 x pg_recvlogical's rate, the walsender and the broker alone would need %.2f of the %d cores\n", brokerName(b.Broker), need, r.CPUs)
			}
		}
	}

	if len(r.Fanout) > 0 {
		fmt.Fprintf(w, "\nFan-out: the same backlog to N sinks, each its own receiver (median of %d runs)\n", len(r.Fanout[0].RowsPerSec.Runs))
		t = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(t, "sinks\trows/s\tspread\tdeliveries/s\tCPU s per 1M deliveries: walhook\treceivers\twalhook peak RSS MB\tduplicates\trest (cores)\t")
		for _, f := range r.Fanout {
			fmt.Fprintf(t, "%d\t%s\t%.0f%%\t%s\t%.2f\t%.2f\t%.1f\t%d\t%.2f\t\n", f.Sinks, count(int64(f.RowsPerSec.Median)), f.RowsPerSec.spread(),
				count(int64(f.DeliveriesPerSec)), f.CPUPerMillion.Median, f.ReceiverCPU.Median, f.PeakRSSMB.Median, f.Duplicates, f.Rest.Median)
		}
		_ = t.Flush()
	}

	if l := r.Latency; l != nil {
		r.printLatency(w, l, 0)
	}
	if l := r.LatencyHigh; l != nil {
		r.printLatency(w, l, highRateP99Limit)
	}
	if f := r.Backfill; f != nil {
		fmt.Fprintf(w, "\nBackfill of %s rows on the sink that carries %s single-row transactions a second (achieved %s/s), default sink settings\n",
			count(f.Rows), count(int64(f.LiveRate)), count(int64(f.AchievedRate)))
		t = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(t, "\tfigure\tlimit\t")
		fmt.Fprintf(t, "live p99 while the backfill runs (ms)\t%.1f\t< %.0f %s\t\n", f.P99ms, fillLiveP99Limit, verdict(f.P99ms < fillLiveP99Limit))
		fmt.Fprintf(t, "live p50 / p90 / max while it runs (ms)\t%.1f / %.1f / %.1f\t\t\n", f.P50ms, f.P90ms, f.MaxMs)
		fmt.Fprintf(t, "live p50 / p99 before it (ms)\t%.1f / %.1f\t\t\n", f.AloneP50ms, f.AloneP99ms)
		fmt.Fprintf(t, "backfill rows/s, request to last row\t%s\t\t\n", count(int64(f.RowsPerSec)))
		fmt.Fprintf(t, "backfill / walhook's drain (%s rows/s)\t%.2f\t>= %.2f %s\t\n", count(int64(f.DrainRowsPerSec)), f.Ratio, fillRatioLimit, verdict(f.Ratio >= fillRatioLimit))
		fmt.Fprintf(t, "row_to_json through psql, rows/s\t%s\t(backfill %.2f x)\t\n", count(int64(f.PsqlJSONRowsPerSec)), f.RowsPerSec/f.PsqlJSONRowsPerSec)
		fmt.Fprintf(t, "COPY through psql, rows/s\t%s\t(backfill %.2f x)\t\n", count(int64(f.CopyRowsPerSec)), f.RowsPerSec/f.CopyRowsPerSec)
		fmt.Fprintf(t, "walhook CPU (cores), rest (cores)\t%.2f, %.2f\t\t\n", f.WalhookCores, f.Rest)
		_ = t.Flush()
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(w, "\nMemory: one %s-row transaction streamed to the receiver\n", count(m.Rows))
		fmt.Fprintf(w, "  walhook peak RSS (VmHWM) %.1f MB; delivered in %.1f s from walhook's start, the first row after %.1f s (%s rows/s, walhook %.2f CPU s per 1M rows; rest %.2f cores)\n",
			m.PeakRSSMB, m.Seconds, m.FirstSeconds, count(int64(m.RowsPerSec)), m.CPUPerMillion, m.Rest)
		if m.SmallRowsPerSec > 0 {
			fmt.Fprintf(w, "  the same rows in %s-row transactions: %s rows/s, the first row after %.1f s (walhook %.2f CPU s per 1M rows, peak RSS %.1f MB; rest %.2f cores)\n",
				count(m.SmallTxnRows), count(int64(m.SmallRowsPerSec)), m.SmallFirstSeconds, m.SmallCPUPerMillion, m.SmallPeakRSSMB, m.SmallRest)
			fmt.Fprintf(w, "  one transaction / %s-row transactions: %.2f (limit >= %.2f %s)\n", count(m.SmallTxnRows), m.Ratio, bigTxnRatioLimit, verdict(m.Ratio >= bigTxnRatioLimit))
		}
		if m.RecvlogicalRatio > 0 {
			fmt.Fprintf(w, "  pg_recvlogical, the same two: %s rows/s in one transaction, %s in %s-row ones: %.2f (the walsender decodes and spills the large one before it sends its first row; walhook / pg_recvlogical %.2f in one transaction, %.2f in small ones)\n",
				count(int64(m.RecvlogicalRowsPerSec)), count(int64(m.RecvlogicalSmallPerSec)), count(m.SmallTxnRows), m.RecvlogicalRatio,
				m.RowsPerSec/m.RecvlogicalRowsPerSec, m.SmallRowsPerSec/m.RecvlogicalSmallPerSec)
		}
	}
}

// printLatency writes one latency measurement; a limit above 0 is the p99
// it is compared with, and the CPU budget line explains a miss.
func (r *Report) printLatency(w io.Writer, l *Latency, limit float64) {
	settings := "default sink settings"
	if len(r.LatencySettings) > 0 {
		settings = "sink settings " + strings.Join(r.LatencySettings, ", ")
	}
	fmt.Fprintf(w, "\nLatency, commit to receipt: %s single-row transactions at %s/s (achieved %s/s), %s\n",
		count(l.Rows), count(int64(l.Rate)), count(int64(l.AchievedRate)), settings)
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(t, "p50 ms\tp90 ms\tp99 ms\tmax ms\tCPU (cores): walhook\twalsender\treceiver\trest\t")
	fmt.Fprintf(t, "%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", l.P50ms, l.P90ms, l.P99ms, l.MaxMs, l.WalhookCores, l.WalsenderCores, l.ReceiverCores, l.Rest)
	_ = t.Flush()
	if limit > 0 {
		fmt.Fprintf(w, "  p99 %.1f ms: limit < %.0f ms %s; CPU budget: walhook, the walsender, the receiver and the rest (the writers' backends among it) took %.2f of the %d cores\n",
			l.P99ms, limit, verdict(l.P99ms < limit), l.WalhookCores+l.WalsenderCores+l.ReceiverCores+l.Rest, r.CPUs)
	}
}

// verdict marks a figure against its limit.
func verdict(ok bool) string {
	if ok {
		return "(met)"
	}
	return "(MISSED)"
}

// brokerName is how the report names a broker.
func brokerName(name string) string {
	switch name {
	case "nats":
		return "NATS JetStream"
	case "redis":
		return "Redis Streams"
	}
	return name
}

// count writes n with thousands separators: 1,234,567.
func count(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
