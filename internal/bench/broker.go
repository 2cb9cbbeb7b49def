package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/walhook/walhook/internal/proctest"
)

// broker is a nats-server (JetStream) or a redis-server the benchmark
// started on a free loopback port, with its data in a directory of its own,
// that a drain delivers the backlog to.
type broker struct {
	Name string // nats or redis
	cmd  *exec.Cmd
	url  string

	nc    *nats.Conn
	js    jetstream.JetStream
	redis *redis.Client
}

// The JetStream stream the NATS drain publishes to, and the subject and
// Redis stream walhook maps the benchmark's table to.
const (
	natsStream  = "BENCH"
	natsSubject = "bench.public.bench_rows"
	redisStream = "bench:public.bench_rows"
)

// startBroker starts the named broker: nats-server -js with a file store,
// or redis-server with an append-only file fsynced once a second and no
// RDB snapshots (see docs/design.md, Benchmarks). It waits until the
// broker answers; each drain creates its stream (empty).
func startBroker(ctx context.Context, name, dir string) (*broker, error) {
	port, err := proctest.FreePort()
	if err != nil {
		return nil, err
	}
	program, err := lookPath(name + "-server")
	if err != nil {
		return nil, fmt.Errorf("%s-server: %w (make bench installs it: the brokers target)", name, err)
	}
	data := filepath.Join(dir, name)
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	b := &broker{Name: name}
	switch name {
	case "nats":
		b.url = "nats://" + addr
		b.cmd = command(context.Background(), program, "-a", "127.0.0.1", "-p", strconv.Itoa(port),
			"-js", "-sd", data)
	case "redis":
		b.url = "redis://" + addr + "/0"
		b.cmd = command(context.Background(), program, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--dir", data, "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
			"--auto-aof-rewrite-percentage", "0", "--protected-mode", "no")
	default:
		return nil, fmt.Errorf("broker %q: want nats or redis", name)
	}
	logPath := filepath.Join(data, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	b.cmd.Stdout, b.cmd.Stderr = logFile, logFile
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", program, err)
	}
	if err := b.connect(ctx); err != nil {
		_ = b.close()
		return nil, fmt.Errorf("%s on %s: %w\n%s's log (%s) ends:\n%s", name, addr, err, name, logPath, tail(logPath, 10))
	}
	return b, nil
}

// connect waits up to 30 s for the broker to answer, then prepares it.
func (b *broker) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		err := b.dial(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not answering after 30 s: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (b *broker) dial(ctx context.Context) error {
	switch b.Name {
	case "nats":
		nc, err := nats.Connect(b.url, nats.Timeout(time.Second), nats.NoReconnect())
		if err != nil {
			return err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return err
		}
		b.nc, b.js = nc, js
		return nil
	default:
		opts, err := redis.ParseURL(b.url)
		if err != nil {
			return err
		}
		c := redis.NewClient(opts)
		if err := c.Ping(ctx).Err(); err != nil {
			_ = c.Close()
			return err
		}
		b.redis = c
		return nil
	}
}

// sinkYAML is the walhook sink that delivers to the broker.
func (b *broker) sinkYAML() string {
	if b.Name == "nats" {
		return fmt.Sprintf("    type: nats\n    url: %q\n    subject: \"bench.{schema}.{table}\"\n", b.url)
	}
	return fmt.Sprintf("    type: redis\n    url: %q\n    stream: \"bench:{schema}.{table}\"\n", b.url)
}

// empty readies an empty stream for a drain. The JetStream stream is
// deleted and created anew, not purged: a purged stream still remembers the
// message ids of its duplicate window, and would drop the next drain's
// messages (the same rows, so the same Nats-Msg-Id) as duplicates.
func (b *broker) empty(ctx context.Context) error {
	if b.Name == "nats" {
		err := b.js.DeleteStream(ctx, natsStream)
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("delete nats stream %s: %w", natsStream, err)
		}
		_, err = b.js.CreateStream(ctx, jetstream.StreamConfig{
			Name: natsStream, Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage,
			Duplicates: 2 * time.Minute,
		})
		if err != nil {
			return fmt.Errorf("create nats stream %s: %w", natsStream, err)
		}
		return nil
	}
	if err := b.redis.Del(ctx, redisStream).Err(); err != nil {
		return fmt.Errorf("redis DEL %s: %w", redisStream, err)
	}
	return nil
}

// held is how many messages the broker's stream holds: the JetStream
// stream's message count, or XLEN.
func (b *broker) held(ctx context.Context) (int64, error) {
	if b.Name == "nats" {
		s, err := b.js.Stream(ctx, natsStream)
		if err != nil {
			return 0, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, err
		}
		return int64(info.State.Msgs), nil
	}
	return b.redis.XLen(ctx, redisStream).Result()
}

// pid is the broker process's.
func (b *broker) pid() int { return b.cmd.Process.Pid }

// close stops the broker (SIGTERM, SIGKILL after 10 s) and its clients.
func (b *broker) close() error {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.redis != nil {
		_ = b.redis.Close()
	}
	exited := make(chan error, 1)
	go func() { exited <- b.cmd.Wait() }()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s did not stop within 10 s of SIGTERM; killed", b.Name)
	}
}

// lookPath finds a broker program on PATH, then where Debian installs it
// (nats-server is in /usr/sbin, which a user's PATH may lack).
func lookPath(program string) (string, error) {
	if path, err := exec.LookPath(program); err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
		path := filepath.Join(dir, program)
		if st, err := os.Stat(path); err == nil && !st.IsDir() {
			return path, nil
		}
	}
	return "", errors.New("not on PATH nor in /usr/sbin, /usr/bin or /usr/local/bin")
}

// brokerResult is one drain through a broker.
type brokerResult struct {
	Seconds      float64
	CPUSeconds   float64 // walhook's
	BrokerCPU    float64 // the broker's, over the run
	WalsenderCPU float64
	Rest         float64
	Held         int64 // messages in the stream at the end
}

// runBroker starts walhook with one sink to br, waits until the broker
// holds n messages, reads walhook's and the broker's CPU time from /proc at
// that moment, and stops walhook.
func (w walhookRun) runBroker(ctx context.Context, br *broker, n int64) (brokerResult, error) {
	var res brokerResult
	if err := br.empty(ctx); err != nil {
		return res, err
	}
	cfgPath, logPath, err := w.writeConfig(nil, br)
	if err != nil {
		return res, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return res, fmt.Errorf("walhook log: %w", err)
	}
	defer logFile.Close()

	brokerStart, err := readProc(br.pid())
	if err != nil {
		return res, fmt.Errorf("read %s's /proc: %w", br.Name, err)
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
	fail := func(err error) (brokerResult, error) {
		_ = stop()
		return res, fmt.Errorf("%w\nwalhook's log (%s) ends:\n%s", err, logPath, tail(logPath, 15))
	}

	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	// Poll every 10 ms: a run's end is late by at most that and one
	// round trip to the broker.
	for {
		held, err := br.held(ctx)
		if err != nil && ctx.Err() == nil {
			return fail(fmt.Errorf("count the messages in %s: %w", br.Name, err))
		}
		if held >= n {
			res.Held = held
			break
		}
		select {
		case err := <-exited:
			return res, fmt.Errorf("walhook exited (%v) before %s held every row (%d of %d)\nwalhook's log (%s) ends:\n%s",
				err, br.Name, held, n, logPath, tail(logPath, 15))
		case <-ctx.Done():
			return fail(fmt.Errorf("%s holds %d of %d rows: %w", br.Name, held, n, ctx.Err()))
		case <-time.After(10 * time.Millisecond):
		}
	}
	end := time.Now()
	stat, err := readProc(cmd.Process.Pid)
	if err != nil {
		return fail(fmt.Errorf("read walhook's /proc: %w", err))
	}
	brokerEnd, err := readProc(br.pid())
	if err != nil {
		return fail(fmt.Errorf("read %s's /proc: %w", br.Name, err))
	}
	res.WalsenderCPU = stopSampling().Seconds()
	self := (selfCPU() - selfStart).Seconds()
	res.Seconds = end.Sub(start).Seconds()
	res.CPUSeconds = stat.CPU.Seconds()
	res.BrokerCPU = (brokerEnd.CPU - brokerStart.CPU).Seconds()
	res.Rest = rest(machineBusy()-busyStart, res.CPUSeconds+res.BrokerCPU+res.WalsenderCPU+self, time.Since(start))
	if err := stop(); err != nil {
		return res, fmt.Errorf("stop walhook: %w\nwalhook's log (%s) ends:\n%s", err, logPath, tail(logPath, 15))
	}
	return res, nil
}
