package main

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// BenchmarkQuick runs the quick suite (what `make bench BENCH_FLAGS=-quick`
// runs) once per iteration against a walhook built without the race
// detector, and reports its headline numbers. `make bench` is the full one.
//
//	go test ./internal/bench -run '^$' -bench Quick -benchtime 1x
func BenchmarkQuick(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "walhook")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/walhook").CombinedOutput(); err != nil {
		b.Fatalf("build walhook: %v\n%s", err, out)
	}
	for b.Loop() {
		rep, err := run(context.Background(), quickOptions(bin), io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(rep.Drain.Recvlogical.Median, "pg_recvlogical-rows/s")
		b.ReportMetric(rep.Drain.Walhook.Median, "walhook-rows/s")
		b.ReportMetric(rep.Drain.Ratio, "ratio")
		b.ReportMetric(rep.Drain.CountingRatio, "counting-ratio")
		for _, d := range rep.Drain.Brokers {
			b.ReportMetric(d.Ratio, d.Broker+"-ratio")
			b.ReportMetric(d.BrokerCPU.Median, d.Broker+"-cpu-s/1M")
		}
		b.ReportMetric(rep.Latency.P99ms, "p99-ms")
		b.ReportMetric(rep.LatencyHigh.P99ms, "p99-10k-ms")
		b.ReportMetric(rep.Backfill.P99ms, "backfill-live-p99-ms")
		b.ReportMetric(rep.Backfill.Ratio, "backfill-ratio")
		b.ReportMetric(rep.Memory.Ratio, "big-txn-ratio")
		b.ReportMetric(rep.Memory.PeakRSSMB, "peak-RSS-MB")
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with a space and a parenthesis, as /proc allows.
	stat := "4242 (wal hook) S 1 4242 4242 0 -1 4194560 2127 0 0 0 151 37 0 0 20 0 9 0 1234 123456 789 18446744073709551615"
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1880 * time.Millisecond; got != want {
		t.Errorf("got %v, want %v (151 + 37 ticks)", got, want)
	}
	if _, err := parseStatCPU("4242 (walhook S 1"); err == nil {
		t.Error("got no error for a stat line without ')'")
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\twalhook\nVmPeak:\t 1300000 kB\nVmHWM:\t   28120 kB\nVmRSS:\t   27000 kB\n"
	got, err := parseStatusKB(status, "VmHWM")
	if err != nil || got != 28120 {
		t.Errorf("got %d, %v, want 28120, nil", got, err)
	}
	if _, err := parseStatusKB(status, "VmSwap"); err == nil {
		t.Error("got no error for a missing line")
	}
}

func TestStatistics(t *testing.T) {
	s := newSeries([]float64{30, 10, 20})
	if s.Median != 20 || s.Min != 10 || s.Max != 30 || s.spread() != 100 {
		t.Errorf("got median %v, min %v, max %v, spread %v; want 20, 10, 30, 100", s.Median, s.Min, s.Max, s.spread())
	}
	if m := newSeries([]float64{4, 1, 3, 2}).Median; m != 2.5 {
		t.Errorf("median of 1-4: got %v, want 2.5", m)
	}
	var lat []time.Duration
	for i := 1; i <= 1000; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 500 * time.Millisecond}, {99, 990 * time.Millisecond}, {100, time.Second}, {0.01, time.Millisecond}} {
		if got := percentile(lat, c.p); got != c.want {
			t.Errorf("p%v: got %v, want %v", c.p, got, c.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-quick", "-rows", "5000", "-fanout", "1, 3", "-sink", "batch_size=500, max_in_flight=8"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Rows != 5000 || o.BigRows != 100_000 || o.LatencyFor != 3*time.Second {
		t.Errorf("-quick with -rows: got rows %d, big rows %d, latency %v; want 5000, 100000, 3s", o.Rows, o.BigRows, o.LatencyFor)
	}
	if !slices.Equal(o.Fanout, []int{1, 3}) {
		t.Errorf("fanout: got %v, want [1 3]", o.Fanout)
	}
	if want := []string{"batch_size: 500", "max_in_flight: 8"}; !slices.Equal(o.Settings, want) {
		t.Errorf("sink settings: got %q, want %q", o.Settings, want)
	}
	for _, args := range [][]string{{"-fanout", "0"}, {"-sink", "batch_size"}, {"-runs", "0"}, {"extra"}} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%q: got no error", args)
		}
	}
}

// TestBrokerEmptyForgetsMessageIDs drains twice through one nats-server, as
// the runs of the drain do: the second drain's messages carry the same
// Nats-Msg-Id as the first's, and must land in the emptied stream, not be
// dropped as duplicates of messages gone from it.
func TestBrokerEmptyForgetsMessageIDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	br, err := startBroker(ctx, "nats", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer br.close()
	for run := 1; run <= 2; run++ {
		if err := br.empty(ctx); err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: natsSubject, Data: []byte(`{}`), Header: nats.Header{}}
		msg.Header.Set(nats.MsgIdHdr, "0/16B3748:0")
		if _, err := br.js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("run %d: publish: %v", run, err)
		}
		held, err := br.held(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if held != 1 {
			t.Errorf("run %d: the stream holds %d messages, want 1", run, held)
		}
	}
}

func TestParseBrokers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"nats,redis", []string{"nats", "redis"}, false},
		{" redis ", []string{"redis"}, false},
		{"", nil, false},
		{"kafka", nil, true},
		{"nats,nats", nil, true},
	} {
		got, err := parseBrokers(tc.in)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("parseBrokers(%q): got %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
