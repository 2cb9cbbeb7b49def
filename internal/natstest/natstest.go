// Package natstest runs nats-server with JetStream for tests (Debian's
// nats-server package): on a free loopback port, never the system's 4222,
// with its store in a temporary directory, killed when the test ends. A
// test may kill it and restart it on the same port and store, as a broker
// restart.
//
//	srv := natstest.Start(t, natstest.Options{})
//	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 2*time.Minute)
package natstest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/walhook/walhook/internal/proctest"
)

// Options configure a server.
type Options struct {
	// Config is added to the server's configuration file: authorization
	// or tls blocks, max_payload, ...
	Config string
	// ClientOptions connect the test's own client (AddStream, Messages)
	// when Config asks clients to authenticate.
	ClientOptions []nats.Option
}

// Server is a running nats-server.
type Server struct {
	*proctest.Process
	// URL is nats://127.0.0.1:port.
	URL  string
	opts Options
}

// Start starts a server for t; it is killed when t ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	p := proctest.Start(t, proctest.Spec{
		Program: "nats-server",
		Args: func(port int, dir string) []string {
			conf := filepath.Join(dir, "nats.conf")
			text := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream {store_dir: %q}\n%s\n", port, filepath.Join(dir, "js"), opts.Config)
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Errorf("write %s: %v", conf, err)
			}
			return []string{"-c", conf}
		},
		Ready: ready,
	})
	return &Server{Process: p, URL: "nats://" + p.Addr(), opts: opts}
}

// ready returns nil once the server greets a client with INFO.
func ready(addr string) error {
	line, err := proctest.Line(addr, "")
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "INFO ") {
		return fmt.Errorf("greeting %q is not INFO", line)
	}
	return nil
}

// Connect connects the test's own client, with Options.ClientOptions.
func (s *Server) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.URL, append([]nats.Option{nats.Timeout(5 * time.Second)}, s.opts.ClientOptions...)...)
	if err != nil {
		t.Fatalf("connect to %s: %v", s.URL, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream is a JetStream context on a new connection of the test's.
func (s *Server) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(s.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// AddStream creates a file-backed stream of subjects with the given
// duplicate window (0: the server's default, 2 minutes).
func (s *Server) AddStream(t testing.TB, name string, subjects []string, duplicates time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.JetStream(t).CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: subjects, Storage: jetstream.FileStorage, Duplicates: duplicates,
	}); err != nil {
		t.Fatalf("create stream %s: %v", name, err)
	}
}

// Messages returns every message the stream holds, in stream order.
func (s *Server) Messages(t testing.TB, stream string) []*nats.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := s.JetStream(t)
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	var msgs []*nats.Msg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		// A deadline per message: the stream may hold thousands, and a
		// loaded machine serves each slowly.
		mctx, mcancel := context.WithTimeout(context.Background(), 30*time.Second)
		raw, err := st.GetMsg(mctx, seq)
		mcancel()
		if err != nil {
			t.Fatalf("stream %s message %d: %v", stream, seq, err)
		}
		msgs = append(msgs, &nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data})
	}
	return msgs
}
