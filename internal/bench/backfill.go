package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// fillTable is the table the backfill measurement backfills: bench_rows'
// shape, so a read costs the receiver what a streamed insert does.
const fillTable = "public.bench_fill"

// The backfill measurement's limits (issue 22): the live changes' p99
// while the backfill runs, and the backfill's rate against the drain's.
const (
	fillLiveP99Limit = 25.0 // ms
	fillRatioLimit   = 0.8
	// fillWarmup is how long the live writer runs before the backfill
	// starts: the live changes' latency alone.
	fillWarmup = 3 * time.Second
)

// backfill fills a table of its own (before the slot exists, so the
// stream never carries it), then runs walhook with one sink on both
// tables while a writer commits single-row transactions into bench_rows
// at the latency rate, starts a backfill of the table through the admin
// API once the live changes flow, and measures the backfill's rate (from
// the request until the receiver has every row) and the live changes'
// latency before and while it runs. PostgreSQL's own rates for the same
// rows (row_to_json through psql, COPY) are measured beside it.
func (b *bench) backfill(ctx context.Context) error {
	o := b.o
	fillFirst := b.nextID
	b.nextID += o.FillRows
	b.p.printf("backfill: writing %s rows into %s", count(o.FillRows), fillTable)
	if err := b.db.exec(ctx, `CREATE TABLE bench_fill (LIKE bench_rows INCLUDING ALL)`); err != nil {
		return err
	}
	fill := strings.Replace(insertRange, "INSERT INTO bench_rows", "INSERT INTO bench_fill", 1)
	for lo := fillFirst; lo < fillFirst+o.FillRows; lo += 100_000 {
		if err := b.db.exec(ctx, fill, lo, min(lo+100_000, fillFirst+o.FillRows)-1); err != nil {
			return fmt.Errorf("fill %s: %w", fillTable, err)
		}
	}
	if err := b.db.exec(ctx, `VACUUM ANALYZE bench_fill`); err != nil {
		return err
	}
	if err := b.db.exec(ctx, `ALTER PUBLICATION `+publication+` ADD TABLE `+fillTable); err != nil {
		return err
	}
	res := &Backfill{Rows: o.FillRows, LiveRate: o.LatencyRate}
	var err error
	if res.PsqlJSONRowsPerSec, err = b.psqlRate(ctx, `COPY (SELECT row_to_json(t) FROM bench_fill t) TO STDOUT`); err != nil {
		return err
	}
	if res.CopyRowsPerSec, err = b.psqlRate(ctx, `COPY bench_fill TO STDOUT`); err != nil {
		return err
	}

	rcv, err := newReceiver(true)
	if err != nil {
		return err
	}
	defer rcv.close()
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	const slot = "backfill"
	run := b.walhook(slot, o.LatencySettings)
	run.Tables, run.Listen = []string{table, fillTable}, listen
	liveFirst := b.nextID
	maxLive := int64(o.LatencyRate) * int64(o.Timeout/time.Second)
	b.nextID += maxLive
	stopWriter := make(chan struct{})
	type written struct {
		n    int64
		rate float64
		err  error
	}
	writer := make(chan written, 1)
	var requested time.Time
	started := func(runCtx context.Context) error {
		if err := b.db.waitSlotActive(runCtx, slot, time.Minute); err != nil {
			return err
		}
		b.p.printf("backfill: writing single-row transactions at %s/s; the backfill starts in %v", count(int64(o.LatencyRate)), fillWarmup)
		go func() { // on the measurement's ctx: it outlives the run's
			n, rate, err := writePaced(ctx, b.db.dsn, liveFirst, maxLive, o.LatencyRate, stopWriter)
			writer <- written{n, rate, err}
		}()
		select {
		case <-time.After(fillWarmup):
		case <-runCtx.Done():
			return runCtx.Err()
		}
		requested = time.Now()
		return startBackfill(runCtx, listen, "s1", fillTable)
	}
	w, err := run.run(ctx, []*receiver{rcv}, fillFirst, o.FillRows, true, started)
	close(stopWriter)
	wr := <-writer
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	if wr.err != nil {
		return fmt.Errorf("backfill: live writer: %w", wr.err)
	}
	if err := b.db.dropSlot(ctx, slot); err != nil {
		return err
	}
	samples := rcv.takeLatencies()
	alone := latencies(samples, time.Time{}, requested)
	during := latencies(samples, requested, w.End)
	res.Seconds = w.End.Sub(requested).Seconds()
	res.RowsPerSec = float64(o.FillRows) / res.Seconds
	res.DrainRowsPerSec = b.rep.Drain.Walhook.Median
	if res.DrainRowsPerSec > 0 {
		res.Ratio = res.RowsPerSec / res.DrainRowsPerSec
	}
	res.AchievedRate = wr.rate
	res.AloneP50ms, res.AloneP99ms = ms(percentile(alone, 50)), ms(percentile(alone, 99))
	res.LiveDuring = int64(len(during))
	res.P50ms, res.P90ms = ms(percentile(during, 50)), ms(percentile(during, 90))
	res.P99ms, res.MaxMs = ms(percentile(during, 99)), ms(percentile(during, 100))
	res.WalhookCores, res.Rest = w.CPUSeconds/w.Seconds, w.Rest
	b.rep.Backfill = res
	b.p.printf("backfill: %s rows/s (%.2f x the drain); live p99 %.1f ms while it ran, %.1f ms before",
		count(int64(res.RowsPerSec)), res.Ratio, res.P99ms, res.AloneP99ms)
	return nil
}

// startBackfill asks the walhook whose admin server is at addr to backfill
// table on sink, as `walhook backfill --sink sink --table table` does.
func startBackfill(ctx context.Context, addr, sink, table string) error {
	body, err := json.Marshal(map[string][]string{"tables": {table}})
	if err != nil {
		return err
	}
	url := "http://" + addr + "/api/v1/sinks/" + sink + "/backfills"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			return fmt.Errorf("start the backfill: POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
		}
		select { // the admin server may not listen yet
		case <-ctx.Done():
			return fmt.Errorf("start the backfill: POST %s: %w", url, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// psqlRate runs one statement through psql, its output to /dev/null, and
// returns the fill table's rows a second.
func (b *bench) psqlRate(ctx context.Context, sql string) (float64, error) {
	psql := filepath.Join(b.db.srv.BinDir(), "psql")
	if _, err := os.Stat(psql); err != nil {
		if psql, err = lookPath("psql"); err != nil {
			return 0, err
		}
	}
	cmd := command(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", b.db.dsn, "-c", sql)
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer devNull.Close()
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = devNull, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("psql -c %q: %w\n%s", sql, err, stderr.String())
	}
	return float64(b.o.FillRows) / time.Since(start).Seconds(), nil
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
