package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// bench runs the measurements against one database and fills in rep.
type bench struct {
	o           options
	p           progress
	db          *database
	bin         string // walhook
	recvlogical string // pg_recvlogical
	dir         string // walhook's configurations, state files and logs
	rep         *Report
	nextID      int64 // the first id no measurement has written yet
}

func (b *bench) walhook(slot string, settings []string) walhookRun {
	return walhookRun{Bin: b.bin, Dir: b.dir, DSN: b.db.dsn, Slot: slot, Settings: settings, Timeout: b.o.Timeout}
}

// drains writes the backlog into a slot per run of every drain and fan-out
// measurement, created first so that each holds all of it, then drains
// each slot once: pg_recvlogical and walhook in turns, so that a busy
// neighbour on the machine hits both alike, then walhook with more sinks.
func (b *bench) drains(ctx context.Context) error {
	o := b.o
	for i := 1; i <= o.Runs; i++ {
		slots := []string{fmt.Sprintf("recvlogical_%d", i), fmt.Sprintf("drain_%d", i)}
		if o.StateURL {
			slots = append(slots, fmt.Sprintf("drain_state_url_%d", i))
		}
		if o.Receiver == "parse" {
			slots = append(slots, fmt.Sprintf("drain_count_%d", i))
		}
		for _, k := range o.Fanout {
			if k != 1 {
				slots = append(slots, fmt.Sprintf("fanout%d_%d", k, i))
			}
		}
		for _, name := range o.Brokers {
			slots = append(slots, fmt.Sprintf("drain_%s_%d", name, i))
		}
		for _, s := range slots {
			if err := b.db.createSlot(ctx, s); err != nil {
				return err
			}
		}
	}
	b.p.printf("writing the backlog: %s rows in %s-row transactions", count(o.Rows), count(o.TxnRows))
	bl, err := b.db.writeBacklog(ctx, 1, o.Rows, o.TxnRows)
	if err != nil {
		return err
	}
	b.rep.Backlog = bl
	b.nextID = bl.FirstID + bl.Rows
	if err := b.db.exec(ctx, `CHECKPOINT`); err != nil {
		return err
	}

	sinks := slices.Max(append([]int{1}, o.Fanout...))
	rcvs := make([]*receiver, sinks)
	for i := range rcvs {
		if rcvs[i], err = newReceiver(o.Receiver == "parse"); err != nil {
			return err
		}
		defer rcvs[i].close()
	}
	// With a receiver that parses, the drain runs once more to one that
	// only counts: on a small machine the parsing receiver's CPU is taken
	// from walhook and the walsender, and this run shows walhook's rate
	// without that cost.
	var counter *receiver
	if o.Receiver == "parse" {
		if counter, err = newReceiver(false); err != nil {
			return err
		}
		defer counter.close()
	}

	brokers := make([]*broker, len(o.Brokers))
	for i, name := range o.Brokers {
		b.p.printf("starting %s", name)
		if brokers[i], err = startBroker(ctx, name, b.dir); err != nil {
			return err
		}
		defer brokers[i].close()
	}
	throughBroker := make([][]brokerResult, len(brokers))

	var recvRate, recvCPU, recvWalsender, recvRest, ratios []float64
	var single, withURL, counted []walhookResult
	var countRatios []float64
	for i := 1; i <= o.Runs; i++ {
		slot := fmt.Sprintf("recvlogical_%d", i)
		r, err := runRecvlogical(ctx, b.db, b.recvlogical, slot, bl.EndLSN, o.Timeout)
		if err != nil {
			return err
		}
		if err := b.db.dropSlot(ctx, slot); err != nil {
			return err
		}
		b.p.printf("drain %d/%d: pg_recvlogical %s rows/s", i, o.Runs, count(int64(float64(bl.Rows)/r.Seconds)))

		w, err := b.drainSlot(ctx, b.walhook(fmt.Sprintf("drain_%d", i), o.Settings), rcvs[:1],
			fmt.Sprintf("drain %d/%d: walhook       ", i, o.Runs))
		if err != nil {
			return err
		}

		if o.StateURL {
			run := b.walhook(fmt.Sprintf("drain_state_url_%d", i), o.Settings)
			run.StateURL = b.db.dsn
			w, err := b.drainSlot(ctx, run, rcvs[:1], fmt.Sprintf("drain %d/%d: walhook, state.url", i, o.Runs))
			if err != nil {
				return err
			}
			withURL = append(withURL, w)
		}

		if counter != nil {
			c, err := b.drainSlot(ctx, b.walhook(fmt.Sprintf("drain_count_%d", i), o.Settings), []*receiver{counter},
				fmt.Sprintf("drain %d/%d: walhook, counting receiver", i, o.Runs))
			if err != nil {
				return err
			}
			counted = append(counted, c)
			countRatios = append(countRatios, r.Seconds/c.Seconds)
		}

		for j, br := range brokers {
			res, err := b.drainBroker(ctx, br, fmt.Sprintf("drain_%s_%d", br.Name, i),
				fmt.Sprintf("drain %d/%d: walhook to %s", i, o.Runs, br.Name))
			if err != nil {
				return err
			}
			throughBroker[j] = append(throughBroker[j], res)
		}

		recvRate = append(recvRate, float64(bl.Rows)/r.Seconds)
		recvCPU = append(recvCPU, r.CPUSeconds/(float64(bl.Rows)/1e6))
		recvWalsender = append(recvWalsender, r.WalsenderCPU/(float64(bl.Rows)/1e6))
		recvRest = append(recvRest, r.Rest)
		ratios = append(ratios, r.Seconds/w.Seconds)
		single = append(single, w)
	}
	var restCores []float64
	for _, w := range single {
		restCores = append(restCores, w.Rest)
	}
	perMillion := func(cpu func(walhookResult) float64) Series { return perMillionRows(bl.Rows, single, cpu) }
	b.rep.Drain = Drain{
		Recvlogical:             newSeries(recvRate),
		Walhook:                 newSeries(rates(bl.Rows, single)),
		RatioRuns:               newSeries(ratios),
		RecvlogicalCPU:          newSeries(recvCPU),
		RecvlogicalWalsenderCPU: newSeries(recvWalsender),
		WalhookCPU:              perMillion(walhookCPU),
		WalhookWalsenderCPU:     perMillion(func(w walhookResult) float64 { return w.WalsenderCPU }),
		ReceiverCPU:             perMillion(func(w walhookResult) float64 { return w.ReceiverCPU }),
		RecvlogicalRest:         newSeries(recvRest),
		WalhookRest:             newSeries(restCores),
	}
	b.rep.Drain.Ratio = b.rep.Drain.Walhook.Median / b.rep.Drain.Recvlogical.Median
	if len(counted) > 0 {
		d := &b.rep.Drain
		d.WalhookCounting = newSeries(rates(bl.Rows, counted))
		d.CountingRatio = d.WalhookCounting.Median / d.Recvlogical.Median
		d.CountingRatioRuns = newSeries(countRatios)
		d.WalhookCountingCPU = perMillionRows(bl.Rows, counted, walhookCPU)
	}
	if len(withURL) > 0 {
		b.rep.Drain.WalhookStateURL = newSeries(rates(bl.Rows, withURL))
		b.rep.Drain.WalhookStateURLCPU = perMillionRows(bl.Rows, withURL, walhookCPU)
	}
	for j, br := range brokers {
		b.rep.Drain.Brokers = append(b.rep.Drain.Brokers, brokerDrain(br.Name, bl.Rows, recvRate, throughBroker[j]))
	}
	var bytes, delivered int64
	for _, w := range single {
		bytes, delivered = bytes+w.Bytes, delivered+w.Deliveries
	}
	b.rep.Drain.MessageBytes = float64(bytes) / float64(max(delivered, 1))

	for _, k := range o.Fanout {
		runs := single
		if k != 1 {
			runs = nil
			for i := 1; i <= o.Runs; i++ {
				w, err := b.drainSlot(ctx, b.walhook(fmt.Sprintf("fanout%d_%d", k, i), o.Settings), rcvs[:k],
					fmt.Sprintf("fan-out to %d sinks %d/%d", k, i, o.Runs))
				if err != nil {
					return err
				}
				runs = append(runs, w)
			}
		}
		b.rep.Fanout = append(b.rep.Fanout, fanout(k, bl.Rows, runs))
	}
	return nil
}

// drainSlot has run drain the backlog from its slot to rcvs, then drops
// the slot and prints the rate after what.
func (b *bench) drainSlot(ctx context.Context, run walhookRun, rcvs []*receiver, what string) (walhookResult, error) {
	bl := b.rep.Backlog
	w, err := run.run(ctx, rcvs, bl.FirstID, bl.Rows, false, nil)
	if err != nil {
		return w, fmt.Errorf("%s: %w", what, err)
	}
	if err := b.db.dropSlot(ctx, run.Slot); err != nil {
		return w, err
	}
	b.p.printf("%s %s rows/s", what, count(int64(float64(bl.Rows)/w.Seconds)))
	return w, nil
}

// drainBroker has walhook drain the backlog from slot into br, then drops
// the slot and prints the rate after what.
func (b *bench) drainBroker(ctx context.Context, br *broker, slot, what string) (brokerResult, error) {
	bl := b.rep.Backlog
	res, err := b.walhook(slot, b.o.Settings).runBroker(ctx, br, bl.Rows)
	if err != nil {
		return res, fmt.Errorf("%s: %w", what, err)
	}
	if err := b.db.dropSlot(ctx, slot); err != nil {
		return res, err
	}
	b.p.printf("%s %s rows/s", what, count(int64(float64(bl.Rows)/res.Seconds)))
	return res, nil
}

// brokerDrain summarizes the drains through one broker; recvRate holds
// pg_recvlogical's rate in the same runs.
func brokerDrain(name string, rows int64, recvRate []float64, runs []brokerResult) BrokerDrain {
	var rate, ratios, cpu, brokerCPU, walsender, busy []float64
	var duplicates int64
	m := float64(rows) / 1e6
	for i, r := range runs {
		rate = append(rate, float64(rows)/r.Seconds)
		ratios = append(ratios, float64(rows)/r.Seconds/recvRate[i])
		cpu = append(cpu, r.CPUSeconds/m)
		brokerCPU = append(brokerCPU, r.BrokerCPU/m)
		walsender = append(walsender, r.WalsenderCPU/m)
		busy = append(busy, r.Rest)
		duplicates += r.Held - rows
	}
	d := BrokerDrain{
		Broker: name, RowsPerSec: newSeries(rate), RatioRuns: newSeries(ratios),
		WalhookCPU: newSeries(cpu), BrokerCPU: newSeries(brokerCPU), WalsenderCPU: newSeries(walsender),
		Rest: newSeries(busy), Duplicates: duplicates,
	}
	d.Ratio = d.RowsPerSec.Median / newSeries(recvRate).Median
	return d
}

// perMillionRows returns cpu of each run per million of its rows.
func perMillionRows(rows int64, runs []walhookResult, cpu func(walhookResult) float64) Series {
	v := make([]float64, len(runs))
	for i, w := range runs {
		v[i] = cpu(w) / (float64(rows) / 1e6)
	}
	return newSeries(v)
}

func walhookCPU(w walhookResult) float64 { return w.CPUSeconds }

// rates returns rows a second of each run.
func rates(rows int64, runs []walhookResult) []float64 {
	r := make([]float64, len(runs))
	for i, w := range runs {
		r[i] = float64(rows) / w.Seconds
	}
	return r
}

// fanout summarizes the runs with k sinks.
func fanout(k int, rows int64, runs []walhookResult) Fanout {
	f := Fanout{Sinks: k, RowsPerSec: newSeries(rates(rows, runs))}
	var cpu, rcv, rss, perSec, busy []float64
	for _, w := range runs {
		busy = append(busy, w.Rest)
		cpu = append(cpu, w.CPUSeconds/(float64(w.Deliveries)/1e6))
		rcv = append(rcv, w.ReceiverCPU/(float64(w.Deliveries)/1e6))
		rss = append(rss, float64(w.PeakKB)/1024)
		perSec = append(perSec, float64(w.Deliveries)/w.Seconds)
		f.Duplicates += w.Deliveries - w.Distinct
	}
	f.CPUPerMillion, f.ReceiverCPU, f.PeakRSSMB, f.Rest = newSeries(cpu), newSeries(rcv), newSeries(rss), newSeries(busy)
	f.DeliveriesPerSec = newSeries(perSec).Median
	return f
}

// latency runs walhook with the latency sink settings on a new slot,
// commits single-row transactions at rate a second for d once it streams,
// and reports how long each message took from its commit to the receiver.
func (b *bench) latency(ctx context.Context, slot string, rate int, d time.Duration) (*Latency, error) {
	o := b.o
	n := int64(d.Seconds() * float64(rate))
	if n < 1 {
		return nil, fmt.Errorf("%v at %d transactions a second is not one transaction", d, rate)
	}
	rcv, err := newReceiver(true) // it reads commit_timestamp
	if err != nil {
		return nil, err
	}
	defer rcv.close()
	first := b.nextID
	b.nextID += n
	var achieved float64
	write := func(ctx context.Context) error {
		if err := b.db.waitSlotActive(ctx, slot, time.Minute); err != nil {
			return err
		}
		b.p.printf("latency: writing %s single-row transactions at %s/s", count(n), count(int64(rate)))
		var err error
		_, achieved, err = writePaced(ctx, b.db.dsn, first, n, rate, nil)
		return err
	}
	w, err := b.walhook(slot, o.LatencySettings).run(ctx, []*receiver{rcv}, first, n, true, write)
	if err != nil {
		return nil, fmt.Errorf("latency: %w", err)
	}
	if err := b.db.dropSlot(ctx, slot); err != nil {
		return nil, err
	}
	lat := latencies(rcv.takeLatencies(), time.Time{}, time.Time{})
	l := &Latency{
		Rows: n, Rate: rate, AchievedRate: achieved, Seconds: w.Seconds,
		P50ms: ms(percentile(lat, 50)), P90ms: ms(percentile(lat, 90)),
		P99ms: ms(percentile(lat, 99)), MaxMs: ms(percentile(lat, 100)),
		WalhookCores: w.CPUSeconds / w.Seconds, WalsenderCores: w.WalsenderCPU / w.Seconds,
		ReceiverCores: w.ReceiverCPU / w.Seconds, Rest: w.Rest,
	}
	b.p.printf("latency at %s/s: p50 %.1f ms, p99 %.1f ms", count(int64(rate)), l.P50ms, l.P99ms)
	return l, nil
}

// latencies returns the sorted latencies of the samples received from
// `from` until `to` (a zero time: no bound).
func latencies(samples []latencySample, from, to time.Time) []time.Duration {
	var lat []time.Duration
	for _, s := range samples {
		if (!from.IsZero() && s.At.Before(from)) || (!to.IsZero() && s.At.After(to)) {
			continue
		}
		lat = append(lat, s.Latency)
	}
	slices.Sort(lat)
	return lat
}

// memory commits one large transaction into a new slot, then has walhook
// stream it to the receiver and reads its peak RSS when the last row
// arrives. The same number of rows in 1,000-row transactions, written
// first into a slot of their own, give the rate it is compared with.
func (b *bench) memory(ctx context.Context) error {
	o := b.o
	const slot, small = "memory", "memory_small_txns"
	// pg_recvlogical reads the same two from slots of its own: what the
	// walsender's decoding of one large transaction costs (it spills it to
	// disk and sends nothing before the commit) is PostgreSQL's, for any
	// client.
	const recvSlot, recvSmall = "memory_recvlogical", "memory_small_txns_recvlogical"
	for _, s := range []string{small, recvSmall} {
		if err := b.db.createSlot(ctx, s); err != nil {
			return err
		}
	}
	rcv, err := newReceiver(o.Receiver == "parse")
	if err != nil {
		return err
	}
	defer rcv.close()
	smallFirst := b.nextID
	b.nextID += o.BigRows
	b.p.printf("memory: writing %s rows in %s-row transactions", count(o.BigRows), count(o.TxnRows))
	smallLog, err := b.db.writeBacklog(ctx, smallFirst, o.BigRows, o.TxnRows)
	if err != nil {
		return err
	}
	for _, s := range []string{slot, recvSlot} {
		if err := b.db.createSlot(ctx, s); err != nil {
			return err
		}
	}
	first := b.nextID
	b.nextID += o.BigRows
	b.p.printf("memory: writing one %s-row transaction", count(o.BigRows))
	start := time.Now()
	if err := b.db.exec(ctx, insertRange, first, first+o.BigRows-1); err != nil {
		return fmt.Errorf("write the large transaction: %w", err)
	}
	written := time.Since(start)
	var bigEnd string
	if err := b.db.conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&bigEnd); err != nil {
		return fmt.Errorf("read wal position: %w", err)
	}
	if err := b.db.exec(ctx, `CHECKPOINT`); err != nil {
		return err
	}
	w, err := b.walhook(slot, o.Settings).run(ctx, []*receiver{rcv}, first, o.BigRows, false, nil)
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	if err := b.db.dropSlot(ctx, slot); err != nil {
		return err
	}
	// The small transactions' slot also holds the large one, after them:
	// the run ends when the small ones' rows have all arrived.
	ws, err := b.walhook(small, o.Settings).run(ctx, []*receiver{rcv}, smallFirst, o.BigRows, false, nil)
	if err != nil {
		return fmt.Errorf("memory, %s-row transactions: %w", count(o.TxnRows), err)
	}
	if err := b.db.dropSlot(ctx, small); err != nil {
		return err
	}
	rb, err := runRecvlogical(ctx, b.db, b.recvlogical, recvSlot, bigEnd, o.Timeout)
	if err != nil {
		return fmt.Errorf("memory, pg_recvlogical: %w", err)
	}
	rs, err := runRecvlogical(ctx, b.db, b.recvlogical, recvSmall, smallLog.EndLSN, o.Timeout)
	if err != nil {
		return fmt.Errorf("memory, pg_recvlogical, %s-row transactions: %w", count(o.TxnRows), err)
	}
	for _, s := range []string{recvSlot, recvSmall} {
		if err := b.db.dropSlot(ctx, s); err != nil {
			return err
		}
	}
	b.rep.Memory = &Memory{
		Rows: o.BigRows, WriteSeconds: written.Seconds(), Seconds: w.Seconds,
		RowsPerSec: float64(o.BigRows) / w.Seconds, PeakRSSMB: float64(w.PeakKB) / 1024, Rest: w.Rest,
		CPUPerMillion: w.CPUSeconds / (float64(o.BigRows) / 1e6),
		FirstSeconds:  w.FirstSeconds, SmallFirstSeconds: ws.FirstSeconds,
		SmallTxnRows: o.TxnRows, SmallRowsPerSec: float64(o.BigRows) / ws.Seconds,
		SmallPeakRSSMB: float64(ws.PeakKB) / 1024, SmallCPUPerMillion: ws.CPUSeconds / (float64(o.BigRows) / 1e6),
		SmallRest:              ws.Rest,
		RecvlogicalRowsPerSec:  float64(o.BigRows) / rb.Seconds,
		RecvlogicalSmallPerSec: float64(o.BigRows) / rs.Seconds,
	}
	m := b.rep.Memory
	m.Ratio = m.RowsPerSec / m.SmallRowsPerSec
	m.RecvlogicalRatio = m.RecvlogicalRowsPerSec / m.RecvlogicalSmallPerSec
	b.p.printf("memory: peak RSS %.1f MB; %s rows/s in one transaction, %s in %s-row ones", m.PeakRSSMB,
		count(int64(m.RowsPerSec)), count(int64(m.SmallRowsPerSec)), count(o.TxnRows))
	return nil
}
