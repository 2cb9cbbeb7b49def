// Command demo runs walhook against a throwaway PostgreSQL: it starts a
// cluster, `walhook receive` and `walhook run`, makes a few changes and
// prints them as they are delivered. `make demo` runs it.
package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
)

const secret = "whsec_ZGVtby1zZWNyZXQtZm9yLXdhbGhvb2stZGVtbw=="

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	bin, err := filepath.Abs("bin/walhook")
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s is missing: run `make demo`, which builds it first", bin)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	step("starting a throwaway PostgreSQL (wal_level=logical)")
	srv, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		return err
	}
	defer srv.Close()
	dsn := srv.DSN("postgres")
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE orders (id serial PRIMARY KEY, customer text, status text, amount numeric(10,2), items jsonb, created_at timestamptz DEFAULT now());
		ALTER TABLE orders REPLICA IDENTITY FULL`); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "walhook-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	addr, err := freeAddr()
	if err != nil {
		return err
	}

	step("starting `walhook receive` on " + addr)
	recv := exec.CommandContext(ctx, bin, "receive", "--listen", addr, "--secret", secret)
	recvOut, err := recv.StdoutPipe()
	if err != nil {
		return err
	}
	recv.Stderr = os.Stderr
	if err := recv.Start(); err != nil {
		return err
	}
	defer stopProcess(recv)
	lines := make(chan string)
	go func() {
		s := bufio.NewScanner(recvOut)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()

	cfgPath := filepath.Join(dir, "walhook.yaml")
	cfg := fmt.Sprintf(`source:
  url: %q
  tables: [public.orders]
state:
  path: %q
server:
  listen: ""
log:
  format: text
sinks:
  - name: orders
    url: http://%s/hooks
    secret: %q
`, dsn, filepath.Join(dir, "walhook.state"), addr, secret)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	fmt.Printf("\n%s\n", indent(cfg))
	step("starting `walhook run` (its log: " + filepath.Join(dir, "walhook.log") + ")")
	logFile, err := os.Create(filepath.Join(dir, "walhook.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	wh := exec.Command(bin, "run", "--config", cfgPath)
	wh.Stdout, wh.Stderr = logFile, logFile
	if err := wh.Start(); err != nil {
		return err
	}
	defer stopProcess(wh)
	if err := waitSlotActive(ctx, conn); err != nil {
		return fmt.Errorf("%w; walhook's log:\n%s", err, readFile(logFile.Name()))
	}

	step("making changes")
	statements := []string{
		`INSERT INTO orders (customer, status, amount, items) VALUES ('ada', 'new', 19.90, '[{"sku": "tea", "qty": 2}]')`,
		`INSERT INTO orders (customer, status, amount, items) VALUES ('grace', 'new', 5.00, '[{"sku": "cup", "qty": 1}]')`,
		`UPDATE orders SET status = 'paid' WHERE customer = 'ada'`,
		`BEGIN; UPDATE orders SET amount = 7.50 WHERE customer = 'grace'; INSERT INTO orders (customer, status, amount) VALUES ('linus', 'new', 1.00); COMMIT`,
		`DELETE FROM orders WHERE customer = 'grace'`,
	}
	want := 6
	for _, s := range statements {
		fmt.Println("  sql>", s)
		if _, err := conn.Exec(ctx, s); err != nil {
			return err
		}
	}
	step("deliveries, as `walhook receive` prints them")
	timeout := time.After(30 * time.Second)
	for got := 0; got < want; {
		select {
		case l, ok := <-lines:
			if !ok {
				return fmt.Errorf("walhook receive ended early")
			}
			fmt.Println("  " + l)
			got++
		case <-timeout:
			return fmt.Errorf("only part of the changes arrived within 30s; walhook's log:\n%s", readFile(logFile.Name()))
		case <-ctx.Done():
			return nil
		}
	}
	step("stopping walhook with SIGTERM (graceful: drain, persist the cursor, final standby status)")
	_ = wh.Process.Signal(syscall.SIGTERM)
	if err := wh.Wait(); err != nil {
		return fmt.Errorf("walhook run: %w; its log:\n%s", err, readFile(logFile.Name()))
	}
	fmt.Println("  walhook exited 0. Its log:")
	fmt.Println(indent(readFile(logFile.Name())))
	return nil
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitSlotActive(ctx context.Context, conn *pgx.Conn) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var active bool
		err := conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = 'walhook'").Scan(&active)
		if err == nil && active {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("walhook did not start streaming within 30s")
}

func stopProcess(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
	}
}
