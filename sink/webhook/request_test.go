package webhook

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/sink"
)

// countingConn counts the writes made on a connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestSmallBodyOneWrite: a request whose body fits beside its headers in
// the transport's write buffer leaves in one write, not headers and body
// apart (a syscall and a wakeup more at both ends, per request); a body
// larger than the buffer still arrives whole, and a retry of either sends
// the same bytes.
func TestSmallBodyOneWrite(t *testing.T) {
	var mu sync.Mutex
	var got [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, body)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	s, err := New(testConfig(srv.URL), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int64
	var d net.Dialer
	s.transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: &writes}, nil
	}
	deliver := func(b *sink.Batch) (int64, []byte) {
		t.Helper()
		before := writes.Load()
		if err := s.Deliver(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return writes.Load() - before, got[len(got)-1]
	}

	small := &sink.Batch{ID: "small", Messages: []*change.Message{msg(1, "k1")}}
	if n, body := deliver(small); n != 1 || string(body) != string(small.Body) {
		t.Errorf("a %d-byte body: %d writes, body arrived %t; want 1 write and the body whole", len(small.Body), n, string(body) == string(small.Body))
	}
	var msgs []*change.Message
	for i := range 100 {
		m := msg(i, "k")
		m.Record = []byte(`{"id":` + strings.Repeat(" ", 100) + `1}`)
		msgs = append(msgs, m)
	}
	large := &sink.Batch{ID: "large", Messages: msgs}
	if n, body := deliver(large); n < 2 || string(body) != string(large.Body) {
		t.Errorf("a %d-byte body: %d writes, body arrived %t; want more than the buffer's one write and the body whole", len(large.Body), n, string(body) == string(large.Body))
	}
	for _, b := range []*sink.Batch{small, large} {
		b.Attempt = 2
		if _, body := deliver(b); string(body) != string(b.Body) {
			t.Errorf("batch %s, attempt 2: the body changed", b.ID)
		}
	}
}
