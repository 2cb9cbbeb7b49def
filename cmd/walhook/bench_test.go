package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
)

// BenchmarkDrainBacklog measures the whole relay: a backlog of rows
// committed before walhook starts, drained by the real binary (built
// without the race detector) through the webhook sink into a receiver that
// only counts. It reports delivered messages per second and walhook's peak
// RSS.
//
//	go test ./cmd/walhook -run '^$' -bench DrainBacklog -benchtime 1x
func BenchmarkDrainBacklog(b *testing.B) {
	const rows = 200_000
	bin := filepath.Join(b.TempDir(), "walhook")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	for i := 0; i < b.N; i++ {
		dsn := pgtest.NewDatabase(b, pgtest.Shared())
		conn := connect(b, dsn)
		exec1(b, conn, `CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric(10,2), tags text[], created timestamptz)`)
		exec1(b, conn, `CREATE PUBLICATION bench FOR ALL TABLES WITH (publish_via_partition_root = true)`)
		exec1(b, conn, `SELECT pg_create_logical_replication_slot('bench', 'pgoutput')`)
		exec1(b, conn, fmt.Sprintf(`INSERT INTO orders SELECT g, 'customer ' || g, g / 100.0, '{a,b}', now() FROM generate_series(1, %d) g`, rows))

		var (
			got      atomic.Int64
			done     = make(chan struct{})
			doneOnce sync.Once
		)
		rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if got.Add(int64(bytes.Count(body, []byte(`"action":`)))) >= rows {
				doneOnce.Do(func() { close(done) })
			}
		}))
		cfg := writeConfig(b, b.TempDir(), dsn, "bench", "", sinkConf{Name: "s", URL: rcv.URL,
			Extra: "    batch_size: 500\n    max_in_flight: 8\n"})
		cfgText, err := os.ReadFile(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(cfg, bytes.Replace(cfgText, []byte("level: debug"), []byte("level: info"), 1), 0o600); err != nil {
			b.Fatal(err)
		}

		b.ResetTimer()
		start := time.Now()
		cmd := exec.Command(bin, "run", "--config", cfg)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-done:
		case err := <-exited:
			b.Fatalf("walhook exited early (%v) after %d of %d messages\n%s", err, got.Load(), rows, out.String())
		case <-time.After(5 * time.Minute):
			cmd.Process.Kill()
			b.Fatalf("got %d of %d messages in 5 minutes\n%s", got.Load(), rows, out.String())
		}
		elapsed := time.Since(start)
		rss := procStatusKB(b, cmd.Process.Pid, "VmHWM")
		b.StopTimer()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		rcv.Close()
		b.ReportMetric(float64(rows)/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(rss)/1024, "peak-RSS-MB")
		b.Logf("walhook delivered %d messages in %v: %.0f msgs/s, peak RSS %.1f MB", rows, elapsed.Round(time.Millisecond), float64(rows)/elapsed.Seconds(), float64(rss)/1024)
	}
}
