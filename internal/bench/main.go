// Command bench measures walhook against the physical limit of logical
// replication on this machine, treating walhook as a black box: the built
// binary and a YAML configuration. `make bench` runs it.
//
// On a throwaway PostgreSQL it writes a backlog of rows while nothing
// consumes it, then measures:
//
//   - drain: pg_recvlogical reading the backlog into /dev/null (the limit:
//     the walsender's decoding) against walhook delivering it to an HTTP
//     receiver that unmarshals every message, each from its own slot;
//   - fan-out: the same drain to 1, 2 and 4 sinks, with walhook's CPU time
//     per million deliveries;
//   - latency: commit-to-receipt latency of single-row transactions
//     committed at a steady rate, with default sink settings, at 2,000 and
//     at 10,000 a second;
//   - backfill: a backfill of a table of its own on the sink that carries
//     single-row transactions at 2,000 a second, its rate against the
//     drain's and PostgreSQL's own (row_to_json through psql, COPY), and
//     the live changes' latency while it runs;
//   - memory: walhook's peak RSS while it streams one large transaction,
//     and its rate against the same rows in 1,000-row transactions.
//
// It prints a report; -json also writes it as JSON. -quick scales
// everything down for a run of well under a minute.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, opts, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Println()
	rep.print(os.Stdout)
	if opts.JSON != "" {
		if err := rep.writeJSON(opts.JSON); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "bench: report written to", opts.JSON)
	}
}

// parseFlags reads the command line into options.
func parseFlags(args []string) (options, error) {
	o := defaultOptions()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.Walhook, "walhook", o.Walhook, "the walhook `binary` to measure (build it without -race)")
	fs.Int64Var(&o.Rows, "rows", o.Rows, "rows in the backlog the drain and fan-out measurements read")
	fs.Int64Var(&o.TxnRows, "txn-rows", o.TxnRows, "rows per transaction of the backlog")
	fs.IntVar(&o.Runs, "runs", o.Runs, "how often each drain and fan-out measurement is repeated")
	fanout := fs.String("fanout", "1,2,4", "sink counts for the fan-out measurement, comma-separated")
	fs.IntVar(&o.LatencyRate, "latency-rate", o.LatencyRate, "single-row transactions a second in the latency measurement")
	fs.DurationVar(&o.LatencyFor, "latency-for", o.LatencyFor, "how long the latency measurement writes; 0 skips it")
	fs.IntVar(&o.HighRate, "latency-high-rate", o.HighRate, "single-row transactions a second in the second latency measurement; 0 skips it")
	fs.DurationVar(&o.HighRateFor, "latency-high-for", o.HighRateFor, "how long the second latency measurement writes")
	fs.Int64Var(&o.FillRows, "backfill-rows", o.FillRows, "rows of the table the backfill measurement backfills under live load; 0 skips it")
	fs.Int64Var(&o.BigRows, "big-rows", o.BigRows, "rows of the one transaction the memory measurement streams (and of the 1,000-row transactions it is compared with); 0 skips it")
	sink := fs.String("sink", "", "extra sink settings for the drain, fan-out and memory measurements, e.g. `batch_size=500,max_in_flight=8`")
	latencySink := fs.String("latency-sink", "", "sink settings for the latency measurement, which otherwise runs with the defaults, e.g. `batch_wait=20ms`")
	brokers := fs.String("brokers", "nats,redis", "brokers the drain also runs through, comma-separated (nats, redis); \"\" skips them")
	fs.BoolVar(&o.StateURL, "state-url", false, "also drain with the state in PostgreSQL (state.url: schema walhook of the benchmark's database), beside each drain with the state file")
	fs.BoolVar(&o.Keep, "keep", false, "keep walhook's configurations, state files and logs, and print where")
	fs.StringVar(&o.Receiver, "receiver", o.Receiver, "what the receivers of the drain, fan-out and memory measurements do with a body: parse (unmarshal every message) or count (only scan for the ids, to see walhook with a receiver that costs next to nothing)")
	fs.StringVar(&o.JSON, "json", "", "also write the report as JSON to this `file`")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "longest one measurement may take")
	quick := fs.Bool("quick", false, "a quick run: 20,000 backlog rows, 3 s and 2 s of latency, a 20,000-row backfill, a 100,000-row transaction (explicit flags still win)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q; every setting is a flag (-h lists them)", fs.Arg(0))
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		q := quickOptions(o.Walhook)
		if !set["rows"] {
			o.Rows = q.Rows
		}
		if !set["latency-for"] {
			o.LatencyFor = q.LatencyFor
		}
		if !set["big-rows"] {
			o.BigRows = q.BigRows
		}
		if !set["latency-high-for"] {
			o.HighRateFor = q.HighRateFor
		}
		if !set["backfill-rows"] {
			o.FillRows = q.FillRows
		}
	}
	var err error
	if o.Fanout, err = parseCounts(*fanout); err != nil {
		return o, fmt.Errorf("-fanout %q: %w", *fanout, err)
	}
	if o.Brokers, err = parseBrokers(*brokers); err != nil {
		return o, fmt.Errorf("-brokers %q: %w", *brokers, err)
	}
	if o.Settings, err = parseSettings(*sink); err != nil {
		return o, fmt.Errorf("-sink %q: %w", *sink, err)
	}
	if o.LatencySettings, err = parseSettings(*latencySink); err != nil {
		return o, fmt.Errorf("-latency-sink %q: %w", *latencySink, err)
	}
	return o, o.validate()
}

// options are the benchmark's settings.
type options struct {
	Walhook     string
	Rows        int64
	TxnRows     int64
	Runs        int
	Fanout      []int
	LatencyRate int
	LatencyFor  time.Duration
	BigRows     int64
	HighRate    int           // the second latency measurement's rate
	HighRateFor time.Duration // and its length
	FillRows    int64         // the backfill measurement's table
	Settings    []string      // extra sink settings, "key: value"
	// LatencySettings are the latency measurement's sink settings.
	LatencySettings []string
	Receiver        string // parse or count
	JSON            string
	Timeout         time.Duration
	Keep            bool
	StateURL        bool     // drain with state.url too
	Brokers         []string // nats, redis: drains through a broker
}

func defaultOptions() options {
	return options{
		Walhook:     "bin/walhook",
		Rows:        200_000,
		TxnRows:     1_000,
		Runs:        3,
		Fanout:      []int{1, 2, 4},
		Brokers:     []string{"nats", "redis"},
		LatencyRate: 2_000,
		LatencyFor:  15 * time.Second,
		BigRows:     1_000_000,
		HighRate:    10_000,
		HighRateFor: 10 * time.Second,
		FillRows:    200_000,
		Receiver:    "parse",
		Timeout:     5 * time.Minute,
	}
}

// quickOptions are the defaults scaled down to well under a minute.
func quickOptions(walhook string) options {
	o := defaultOptions()
	o.Walhook = walhook
	o.Rows = 20_000
	o.LatencyFor = 3 * time.Second
	o.BigRows = 100_000
	o.HighRateFor = 2 * time.Second
	o.FillRows = 20_000
	return o
}

func (o options) validate() error {
	switch {
	case o.Rows < 1:
		return fmt.Errorf("-rows %d: want at least 1", o.Rows)
	case o.TxnRows < 1:
		return fmt.Errorf("-txn-rows %d: want at least 1", o.TxnRows)
	case o.Runs < 1:
		return fmt.Errorf("-runs %d: want at least 1", o.Runs)
	case o.LatencyRate < 1 || o.LatencyRate > 1_000_000:
		return fmt.Errorf("-latency-rate %d: want 1 to 1000000 transactions a second", o.LatencyRate)
	case o.HighRate < 0 || o.HighRate > 1_000_000:
		return fmt.Errorf("-latency-high-rate %d: want 0 (skip) to 1000000 transactions a second", o.HighRate)
	case o.HighRate > 0 && o.HighRateFor <= 0:
		return fmt.Errorf("-latency-high-for %v: want a positive duration (or -latency-high-rate 0 to skip)", o.HighRateFor)
	case o.LatencyFor < 0 || o.BigRows < 0 || o.FillRows < 0:
		return errors.New("-latency-for, -backfill-rows and -big-rows: want 0 (skip) or more")
	case o.Timeout <= 0:
		return fmt.Errorf("-timeout %v: want a positive duration", o.Timeout)
	case o.Receiver != "parse" && o.Receiver != "count":
		return fmt.Errorf("-receiver %q: want parse or count", o.Receiver)
	}
	return nil
}

// parseCounts parses "1,2,4".
func parseCounts(s string) ([]int, error) {
	var counts []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 16 {
			return nil, fmt.Errorf("%q is not a sink count from 1 to 16", f)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

// parseBrokers parses "nats,redis".
func parseBrokers(s string) ([]string, error) {
	var names []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if f != "nats" && f != "redis" {
			return nil, fmt.Errorf("%q is not a broker the benchmark runs (nats or redis)", f)
		}
		if slices.Contains(names, f) {
			return nil, fmt.Errorf("%q is named twice", f)
		}
		names = append(names, f)
	}
	return names, nil
}

// parseSettings turns "batch_size=500,max_in_flight=8" into YAML lines.
func parseSettings(s string) ([]string, error) {
	var lines []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" || strings.ContainsAny(k, ": \t") {
			return nil, fmt.Errorf("%q is not key=value (e.g. batch_size=500)", f)
		}
		lines = append(lines, k+": "+v)
	}
	return lines, nil
}

// progress prints what the benchmark is doing, with the time since it began.
type progress struct {
	w     io.Writer
	start time.Time
}

func (p progress) printf(format string, args ...any) {
	fmt.Fprintf(p.w, "bench: %5.1fs  %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// run runs every measurement and returns the report.
func run(ctx context.Context, o options, log io.Writer) (_ *Report, err error) {
	p := progress{w: log, start: time.Now()}
	bin, err := filepath.Abs(o.Walhook)
	if err != nil {
		return nil, err
	}
	version, err := walhookVersion(ctx, bin)
	if err != nil {
		return nil, err
	}
	rep := &Report{
		Date:            time.Now().UTC().Format(time.RFC3339),
		Walhook:         version,
		Go:              runtime.Version(),
		CPUs:            runtime.NumCPU(),
		CPUModel:        cpuModel(),
		LoadStart:       loadAverage(),
		SinkSettings:    o.Settings,
		LatencySettings: o.LatencySettings,
		Receiver:        o.Receiver,
	}

	extra := 0
	for _, k := range o.Fanout {
		if k != 1 {
			extra++
		}
	}
	slots := (4+len(o.Brokers))*o.Runs + extra*o.Runs + 5
	p.printf("starting PostgreSQL")
	db, err := startDatabase(ctx, slots)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := db.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	recvlogical := filepath.Join(db.srv.BinDir(), "pg_recvlogical")
	if _, err := os.Stat(recvlogical); err != nil {
		return nil, fmt.Errorf("pg_recvlogical is not beside the PostgreSQL server programs in %s: %w", db.srv.BinDir(), err)
	}
	if rep.PostgreSQL, err = db.version(ctx); err != nil {
		return nil, err
	}
	if err := db.createSchema(ctx); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "walhook-bench-")
	if err != nil {
		return nil, err
	}
	if o.Keep {
		p.printf("walhook's configurations, state files and logs: %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	b := &bench{o: o, p: p, db: db, bin: bin, dir: dir, recvlogical: recvlogical, rep: rep}
	if err := b.drains(ctx); err != nil {
		return nil, err
	}
	if o.LatencyFor > 0 {
		if rep.Latency, err = b.latency(ctx, "latency", o.LatencyRate, o.LatencyFor); err != nil {
			return nil, err
		}
	}
	if o.HighRate > 0 {
		if rep.LatencyHigh, err = b.latency(ctx, "latency_high", o.HighRate, o.HighRateFor); err != nil {
			return nil, err
		}
	}
	if o.FillRows > 0 {
		if err := b.backfill(ctx); err != nil {
			return nil, err
		}
	}
	if o.BigRows > 0 {
		if err := b.memory(ctx); err != nil {
			return nil, err
		}
	}
	rep.Seconds = int(time.Since(p.start).Seconds())
	return rep, nil
}

// walhookVersion runs `walhook version`: "walhook v0.1.0-12-gabcdef".
func walhookVersion(ctx context.Context, bin string) (string, error) {
	out, err := command(ctx, bin, "version").Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w (build it first: make build)", bin, err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "walhook "), nil
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadAverage is the 1, 5 and 15 minute load averages, "1.14 1.59 1.65":
// the machine is shared, and a busy neighbour shows in the numbers.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
