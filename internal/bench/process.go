package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// procStat is what /proc says about a running process.
type procStat struct {
	CPU    time.Duration // utime + stime, all threads
	PeakKB int64         // VmHWM, the peak resident set size
}

// readProc reads a process's CPU time and peak RSS.
func readProc(pid int) (procStat, error) {
	var st procStat
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	if st.CPU, err = parseStatCPU(string(stat)); err != nil {
		return st, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	if st.PeakKB, err = parseStatusKB(string(status), "VmHWM"); err != nil {
		return st, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return st, nil
}

// parseStatCPU returns utime + stime from the text of /proc/PID/stat. The
// command name, field 2, is in parentheses and may hold spaces and
// parentheses itself, so the fields are counted from the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, errors.New("no command name in parentheses")
	}
	// After the name: field 3 (state) onwards; utime and stime are fields
	// 14 and 15.
	f := strings.Fields(stat[end+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// parseStatusKB returns the value of a "Name:   123 kB" line of
// /proc/PID/status.
func parseStatusKB(status, name string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s: %q, want a number of kB", name, line)
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s line", name)
}

// childEnv is the environment of the programs the benchmark runs: the
// bench's own, without the PG* variables that could point a client
// elsewhere, and without WALHOOK_CONFIG.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") || name == "WALHOOK_CONFIG" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// command prepares a child that is killed if the benchmark dies.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// recvResult is one pg_recvlogical run.
type recvResult struct {
	Seconds      float64
	CPUSeconds   float64 // its own user + system time
	WalsenderCPU float64 // the walsender's, in seconds
	Rest         float64 // cores busy with anything else, on average (see rest)
}

// runRecvlogical drains slot with pg_recvlogical into /dev/null up to
// endLSN, the way walhook reads it (pgoutput, proto_version 1, the same
// publication), and times it from the process start to its exit.
func runRecvlogical(ctx context.Context, db *database, bin, slot, endLSN string, timeout time.Duration) (recvResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := command(ctx, bin, "--dbname", db.dsn, "--slot", slot, "--start", "--no-loop",
		"--endpos", endLSN, "--file", "/dev/null",
		"--option", "proto_version=1", "--option", "publication_names="+publication)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	stopSampling := walsenderCPU(ctx, db.dsn, slot)
	busy, self := machineBusy(), selfCPU()
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	busy, self = machineBusy()-busy, selfCPU()-self
	walsender := stopSampling()
	if err != nil {
		return recvResult{}, fmt.Errorf("pg_recvlogical: %w\n%s", err, strings.TrimSpace(out.String()))
	}
	ok, err := db.flushedPast(ctx, slot, endLSN)
	if err != nil {
		return recvResult{}, err
	}
	if !ok {
		return recvResult{}, fmt.Errorf("pg_recvlogical exited before slot %s reached %s, the backlog's end", slot, endLSN)
	}
	res := recvResult{Seconds: elapsed.Seconds(), WalsenderCPU: walsender.Seconds()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.CPUSeconds = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	res.Rest = rest(busy, res.CPUSeconds+res.WalsenderCPU+self.Seconds(), elapsed)
	return res, nil
}

// walhookRun is one walhook process delivering a known set of rows.
type walhookRun struct {
	Bin      string
	Dir      string // for its configuration, state file and log
	DSN      string
	Slot     string
	Settings []string // extra sink settings, "key: value"
	Timeout  time.Duration
	StateURL string // state.url; "": a state file in Dir
	// Tables are source.tables; none: the captured table alone.
	Tables []string
	// Listen is server.listen; "": no admin server.
	Listen string
}

// walhookResult is what a walhook run measured: the time from its start
// until every receiver had every row, and /proc at that moment.
type walhookResult struct {
	Seconds      float64
	CPUSeconds   float64
	WalsenderCPU float64 // the walsender's CPU seconds
	ReceiverCPU  float64 // the benchmark process's CPU seconds
	Rest         float64 // cores busy with anything else, on average (see rest)
	PeakKB       int64
	Deliveries   int64     // messages received, duplicates included
	Distinct     int64     // rows received, summed over the receivers
	Bytes        int64     // of the bodies received
	End          time.Time // when the last row arrived
	// FirstSeconds is how long after walhook's start the first row
	// arrived (at the first receiver).
	FirstSeconds float64
}

// run starts walhook with one sink per receiver, waits until every
// receiver has every id in [firstID, firstID+n), reads walhook's CPU time
// and peak RSS at that moment, and stops it. With latency, the receivers
// record commit-to-receipt latencies. started, if not nil, runs once
// walhook runs (to write rows while it streams).
func (w walhookRun) run(ctx context.Context, rcvs []*receiver, firstID, n int64, latency bool, started func(context.Context) error) (walhookResult, error) {
	var res walhookResult
	cfgPath, logPath, err := w.writeConfig(rcvs, nil)
	if err != nil {
		return res, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return res, fmt.Errorf("walhook log: %w", err)
	}
	defer logFile.Close()

	var (
		pid       atomic.Int64
		remaining atomic.Int64
		finished  = make(chan struct{})
		end       time.Time
		stat      procStat
		statErr   error
		once      sync.Once
	)
	remaining.Store(int64(len(rcvs)))
	complete := func() {
		if remaining.Add(-1) > 0 {
			return
		}
		once.Do(func() {
			end = time.Now()
			stat, statErr = readProc(int(pid.Load()))
			close(finished)
		})
	}
	for _, r := range rcvs {
		r.expect(firstID, n, latency, complete)
	}

	cmd := command(context.Background(), w.Bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	stopSampling := walsenderCPU(ctx, w.DSN, w.Slot)
	defer stopSampling()
	selfStart, busyStart := selfCPU(), machineBusy()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start walhook: %w", err)
	}
	pid.Store(int64(cmd.Process.Pid))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(45 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return errors.New("walhook did not stop within 45 s of SIGTERM; killed")
		}
	}
	fail := func(err error) (walhookResult, error) {
		_ = stop()
		return res, fmt.Errorf("%w\nwalhook's log (%s) ends:\n%s", err, logPath, tail(logPath, 15))
	}

	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	// writing is the started function's result while it runs, nil after.
	var writing chan error
	if started != nil {
		writing = make(chan error, 1)
		go func() { writing <- started(ctx) }()
	}
	errs := make(chan error, len(rcvs))
	for _, r := range rcvs {
		go func() {
			select {
			case err := <-r.errs:
				errs <- err
			case <-finished:
			case <-ctx.Done():
			}
		}()
	}
	for waiting := true; waiting; {
		select {
		case <-finished:
			waiting = false
		case err := <-writing:
			if err != nil {
				return fail(err)
			}
			writing = nil
		case err := <-errs:
			return fail(err)
		case err := <-exited:
			return res, fmt.Errorf("walhook exited (%v) before delivering every row\nwalhook's log (%s) ends:\n%s", err, logPath, tail(logPath, 15))
		case <-ctx.Done():
			got, _, _ := rcvs[0].counts()
			return fail(fmt.Errorf("the first receiver got %d of %d rows: %w", got, n, ctx.Err()))
		}
	}
	if writing != nil {
		if err := <-writing; err != nil {
			return fail(err)
		}
	}
	if statErr != nil {
		return fail(fmt.Errorf("read walhook's /proc: %w", statErr))
	}
	res.WalsenderCPU = stopSampling().Seconds()
	res.ReceiverCPU = (selfCPU() - selfStart).Seconds()
	res.Seconds = end.Sub(start).Seconds()
	res.End = end
	if first := rcvs[0].firstArrival(); !first.IsZero() {
		res.FirstSeconds = first.Sub(start).Seconds()
	}
	res.CPUSeconds = stat.CPU.Seconds()
	res.PeakKB = stat.PeakKB
	res.Rest = rest(machineBusy()-busyStart, res.CPUSeconds+res.WalsenderCPU+res.ReceiverCPU, time.Since(start))
	for _, r := range rcvs {
		d, m, n := r.counts()
		res.Distinct += d
		res.Deliveries += m
		res.Bytes += n
	}
	if err := stop(); err != nil {
		return res, fmt.Errorf("stop walhook: %w\nwalhook's log (%s) ends:\n%s", err, logPath, tail(logPath, 15))
	}
	return res, nil
}

// writeConfig writes walhook's configuration: the source, a fresh state
// file, no admin server, and one sink per receiver, or one to br, with
// w.Settings.
func (w walhookRun) writeConfig(rcvs []*receiver, br *broker) (cfgPath, logPath string, err error) {
	dir, err := os.MkdirTemp(w.Dir, w.Slot+"-")
	if err != nil {
		return "", "", err
	}
	var b strings.Builder
	tables := table
	if len(w.Tables) > 0 {
		tables = strings.Join(w.Tables, ", ")
	}
	fmt.Fprintf(&b, "source:\n  url: %q\n  slot: %s\n  publication: %s\n  tables: [%s]\n", w.DSN, w.Slot, publication, tables)
	if w.StateURL != "" {
		fmt.Fprintf(&b, "state:\n  url: %q\n", w.StateURL)
	} else {
		fmt.Fprintf(&b, "state:\n  path: %q\n", filepath.Join(dir, "walhook.state"))
	}
	fmt.Fprintf(&b, "server:\n  listen: %q\nlog:\n  format: json\nsinks:\n", w.Listen)
	for i, r := range rcvs {
		fmt.Fprintf(&b, "  - name: s%d\n    url: %q\n", i+1, r.URL)
		for _, s := range w.Settings {
			fmt.Fprintf(&b, "    %s\n", s)
		}
	}
	if br != nil {
		fmt.Fprintf(&b, "  - name: %s\n%s", br.Name, br.sinkYAML())
		for _, s := range w.Settings {
			fmt.Fprintf(&b, "    %s\n", s)
		}
	}
	cfgPath = filepath.Join(dir, "walhook.yaml")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o600); err != nil {
		return "", "", err
	}
	return cfgPath, filepath.Join(dir, "walhook.log"), nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// walsenderCPU samples the CPU time of the walsender streaming from a slot
// (found as the slot's active_pid) every 20 ms, on a connection of its own,
// until stopped; stop returns the last sample. A walsender exits with its
// client, so for a client that exits at the end, the last sample is at
// most 20 ms of CPU short.
func walsenderCPU(ctx context.Context, dsn, slot string) (stop func() time.Duration) {
	ctx, cancel := context.WithCancel(ctx)
	var last atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		pid := 0
		for {
			if pid == 0 {
				_ = conn.QueryRow(ctx, `SELECT coalesce(max(active_pid), 0) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
			}
			if pid != 0 {
				if st, err := readProc(pid); err == nil {
					last.Store(int64(st.CPU))
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() time.Duration {
		cancel()
		<-done
		return time.Duration(last.Load())
	}
}

// selfCPU is the benchmark process's own CPU time so far: during a walhook
// run, mostly its receivers parsing what walhook sends.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy is the CPU time every core of the machine has spent on
// anything but idling since boot, from the first line of /proc/stat: user,
// nice, system, irq, softirq and steal.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for i, s := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(s, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// rest is how many cores, on average over elapsed, went to anything but
// what a measurement accounted for: the machine's other users, kernel
// threads (writeback, network) and PostgreSQL's other processes. On a
// quiet machine it stays a fraction of a core; more means a neighbour
// took CPU from the measurement.
func rest(busy time.Duration, accounted float64, elapsed time.Duration) float64 {
	return max(0, busy.Seconds()-accounted) / elapsed.Seconds()
}
