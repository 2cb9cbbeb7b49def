package adminclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/adminclient"
	"github.com/walhook/walhook/internal/admintest"
	"github.com/walhook/walhook/server"
)

// testToken holds "hunter2", which no error may show.
const testToken = "hunter2-admin-token"

var sinks = []string{"orders", "audit.log"}

// startDaemon serves a fake walhook with token and returns it with a client
// configured with clientToken.
func startDaemon(t *testing.T, token, clientToken string) (*adminclient.Client, *admintest.Fake) {
	t.Helper()
	fake := admintest.NewFake(sinks...)
	at := time.Date(2026, 11, 26, 11, 20, 0, 0, time.UTC)
	fake.Dead["orders"] = []server.DeadLetter{
		{ID: "dl_1", Sink: "orders", Count: 1, Attempts: 3, LastStatus: 500, FirstAttemptAt: at, LastAttemptAt: at,
			Messages: []json.RawMessage{json.RawMessage(`{"action":"insert"}`)}},
		{ID: "dl_2", Sink: "orders", Count: 1, Attempts: 3, FirstAttemptAt: at, LastAttemptAt: at},
		{ID: "dl_3", Sink: "orders", Count: 1, Attempts: 3, FirstAttemptAt: at, LastAttemptAt: at},
	}
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0", Token: token}, fake.Options(sinks...)))
	c, err := adminclient.New(&config.Config{Server: config.Server{Listen: addr, Token: clientToken}})
	if err != nil {
		t.Fatal(err)
	}
	return c, fake
}

func TestClient(t *testing.T) {
	c, fake := startDaemon(t, testToken, testToken)
	ctx := context.Background()

	if err := c.Pause(ctx, "orders"); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if !st.Ready || st.Role != "active" || len(st.Sinks) != 2 || st.Sinks[0].State != "paused" {
		t.Errorf("Status: got %+v, want ready, active, orders paused", st)
	}
	if err := c.Resume(ctx, "orders"); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if fake.Paused("orders") {
		t.Errorf("orders still paused after Resume")
	}

	list, err := c.DeadLetters(ctx, "orders")
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	if len(list) != 3 || list[0].ID != "dl_1" || list[0].Messages != nil {
		t.Errorf("DeadLetters: got %+v, want dl_1..dl_3 without messages", list)
	}
	dl, err := c.DeadLetter(ctx, "orders", "dl_1")
	if err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	if dl.LastStatus != 500 || len(dl.Messages) != 1 || string(dl.Messages[0]) != `{"action":"insert"}` {
		t.Errorf("DeadLetter: got %+v, want dl_1 with its message", dl)
	}
	ids, err := c.ReplayDeadLetters(ctx, "orders", "dl_2")
	if err != nil || !reflect.DeepEqual(ids, []string{"dl_2"}) {
		t.Errorf("ReplayDeadLetters(dl_2): got %q, %v; want [dl_2]", ids, err)
	}
	ids, err = c.ReplayDeadLetters(ctx, "orders")
	if err != nil || len(ids) != 3 {
		t.Errorf("ReplayDeadLetters(): got %q, %v; want all three", ids, err)
	}
	if err := c.DropDeadLetters(ctx, "orders", "dl_1", "dl_2"); err != nil {
		t.Fatalf("DropDeadLetters: %v", err)
	}
	err = c.DropDeadLetters(ctx, "orders", "dl_3", "dl_1")
	if err == nil || !strings.Contains(err.Error(), `dropped 1 of 2 dead letters, then dl_1: sink "orders" has no dead letter "dl_1"`) {
		t.Errorf("DropDeadLetters of one gone: got %v, want it to say 1 of 2 was dropped", err)
	}
	if err := c.DropDeadLetters(ctx, "orders"); err == nil {
		t.Errorf("DropDeadLetters without IDs: got nil, want an error")
	}

	bf, err := c.StartBackfill(ctx, "orders", server.BackfillRequest{Tables: []string{"public.orders"}, Where: "id > 1"})
	if err != nil {
		t.Fatalf("StartBackfill: %v", err)
	}
	if bf.ID == "" || bf.State != "running" || bf.Where != "id > 1" {
		t.Errorf("StartBackfill: got %+v, want a running backfill with its where", bf)
	}
	bfs, err := c.Backfills(ctx)
	if err != nil || len(bfs) != 1 || bfs[0].ID != bf.ID {
		t.Errorf("Backfills: got %+v, %v; want [%s]", bfs, err, bf.ID)
	}
	if err := c.CancelBackfill(ctx, bf.ID); err != nil {
		t.Fatalf("CancelBackfill: %v", err)
	}
	err = c.CancelBackfill(ctx, bf.ID)
	var apiErr *adminclient.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 409 || apiErr.Message != `backfill "bf_1" is cancelled already: conflict` {
		t.Errorf("second CancelBackfill: got %#v, want a 409 APIError", err)
	}

	want := []string{
		"PauseSink orders", "Status", "ResumeSink orders",
		"ListDeadLetters orders", "DeadLetter orders dl_1",
		"ReplayDeadLetters orders dl_2", "ReplayDeadLetters orders",
		"DropDeadLetter orders dl_1", "DropDeadLetter orders dl_2", "DropDeadLetter orders dl_3", "DropDeadLetter orders dl_1",
		`StartBackfill orders "public"."orders" where id > 1`, "Backfills", "CancelBackfill bf_1", "CancelBackfill bf_1",
	}
	if got := fake.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls:\n got %q\nwant %q", got, want)
	}
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	c, _ := startDaemon(t, testToken, testToken)
	wrong, _ := startDaemon(t, testToken, "hunter2-wrong")
	none, _ := startDaemon(t, testToken, "")

	tests := []struct {
		name       string
		call       func() error
		wantStatus int
		want       string
	}{
		{"unknown sink", func() error { return c.Pause(ctx, "nope") }, 404, `unknown sink "nope"; the configured sinks are orders, audit.log`},
		{"unknown dead letter", func() error { _, err := c.DeadLetter(ctx, "orders", "dl/9"); return err }, 404, `sink "orders" has no dead letter "dl/9": not found`},
		{"bad table", func() error {
			_, err := c.StartBackfill(ctx, "orders", server.BackfillRequest{Tables: []string{"a b"}})
			return err
		}, 400, `tables[0]: invalid table name "a b"`},
		{"wrong token", func() error { _, err := wrong.Status(ctx); return err }, 401,
			"wrong bearer token; send the server.token of this walhook's configuration; this configuration's server.token differs from the running walhook's"},
		{"no token", func() error { _, err := none.Status(ctx); return err }, 401,
			"missing bearer token; send Authorization: Bearer followed by server.token; the daemon has a token but this configuration sets no server.token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var apiErr *adminclient.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("got %v, want an *APIError", err)
			}
			if apiErr.Status != tt.wantStatus || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %d %q, want %d %q", apiErr.Status, err, tt.wantStatus, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows a token: %v", err)
			}
		})
	}
}

func TestNotRunning(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	c, err := adminclient.New(&config.Config{Server: config.Server{Listen: addr, Token: testToken}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Status(context.Background())
	if !errors.Is(err, adminclient.ErrNotRunning) {
		t.Fatalf("got %v, want ErrNotRunning", err)
	}
	if want := "walhook is not running: nothing answers on " + addr + " (server.listen)"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error shows the token: %v", err)
	}
}

func TestNoAnswer(t *testing.T) {
	// Something accepts connections but never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var held []net.Conn
		for {
			conn, err := ln.Accept()
			if err != nil {
				break
			}
			held = append(held, conn)
		}
		for _, conn := range held {
			conn.Close()
		}
	}()
	defer func() {
		ln.Close()
		<-done
	}()

	c, err := adminclient.New(&config.Config{Server: config.Server{Listen: ln.Addr().String(), Token: testToken}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(200 * time.Millisecond)
	_, err = c.Status(context.Background())
	if err == nil || errors.Is(err, adminclient.ErrNotRunning) {
		t.Fatalf("got %v, want a timeout that is not ErrNotRunning", err)
	}
	if want := "walhook on " + ln.Addr().String() + " (server.listen) did not answer GET /api/v1/status within 200ms"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

func TestOff(t *testing.T) {
	_, err := adminclient.New(&config.Config{Server: config.Server{Listen: ""}})
	if !errors.Is(err, adminclient.ErrOff) {
		t.Fatalf("got %v, want ErrOff", err)
	}
	if !strings.HasPrefix(err.Error(), `the admin server is off (server.listen is "")`) {
		t.Errorf("got %q, want it to say the admin server is off", err)
	}
}

func TestAddr(t *testing.T) {
	tests := []struct{ listen, want string }{
		{"127.0.0.1:9400", "127.0.0.1:9400"},
		{"0.0.0.0:9400", "127.0.0.1:9400"},
		{":9400", "127.0.0.1:9400"},
		{"[::]:9400", "[::1]:9400"},
		{"[::1]:9401", "[::1]:9401"},
		{"localhost:9400", "localhost:9400"},
		{"10.1.2.3:9400", "10.1.2.3:9400"},
	}
	for _, tt := range tests {
		c, err := adminclient.New(&config.Config{Server: config.Server{Listen: tt.listen, Token: testToken}})
		if err != nil {
			t.Errorf("New(%q): %v", tt.listen, err)
			continue
		}
		if got := c.Addr(); got != tt.want {
			t.Errorf("New(%q).Addr(): got %q, want %q", tt.listen, got, tt.want)
		}
	}
}

func TestUnspecifiedListenReachesLoopback(t *testing.T) {
	// A daemon listening on every interface is reached on 127.0.0.1.
	fake := admintest.NewFake(sinks...)
	addr := admintest.Start(t, server.New(config.Server{Token: testToken}, fake.Options(sinks...)))
	_, port, _ := net.SplitHostPort(addr)
	c, err := adminclient.New(&config.Config{Server: config.Server{Listen: "0.0.0.0:" + port, Token: testToken}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Errorf("Status via 0.0.0.0:%s: %v", port, err)
	}
}
