package main

import (
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// blackhole is a TCP proxy on loopback in front of a PostgreSQL server. It
// records the connections it carries (when each was accepted, what the
// client's first packet asked for, when the server last sent on it), so
// that tests can watch walhook's connection attempts without reading its
// log. It can
// go silent: after Freeze, the connections it carries stop moving bytes in
// either direction but stay open, as behind a dead router or a frozen NAT,
// so neither end hears a reset or a FIN. Connections made after Freeze work
// normally. While the server is down, each connection is answered with a
// reset. While Silence is on, it stands for a server that accepts
// connections and never answers: it takes each client's first packet and
// sends nothing back, ever.
type blackhole struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	pairs  []*proxyPair
	closed bool
	silent bool
}

type proxyPair struct {
	accepted time.Time
	client   net.Conn
	frozen   chan struct{}
	freeze   sync.Once

	// Set once the pair is under way; guarded by the blackhole's mu.
	server         net.Conn // nil until dialed, and when the server refused
	kind           string   // see proxyConn.Kind
	lastFromServer time.Time
}

// proxyConn is what the proxy saw of one connection.
type proxyConn struct {
	Accepted time.Time // when the proxy accepted it
	// Kind is what the client's first packet asked for: "startup" (a
	// connection), "replication" (a replication connection), "cancel" (a
	// cancel request, which pgx also sends after a failed connection
	// attempt), "other", or "" while the packet has not arrived.
	Kind string
	// LastFromServer is when the proxy last began passing bytes from the
	// server to the client (zero if it never did): the client cannot have
	// received anything on this connection later.
	LastFromServer time.Time
}

func startBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	go b.accept()
	t.Cleanup(b.close)
	return b
}

// Addr is the proxy's address.
func (b *blackhole) Addr() string { return b.ln.Addr().String() }

// DSN is dsn with its host and port replaced by the proxy's.
func (b *blackhole) DSN(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	u.Host = b.Addr()
	return u.String()
}

// Conns returns the connections accepted so far, in the order accepted.
func (b *blackhole) Conns() []proxyConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]proxyConn, len(b.pairs))
	for i, p := range b.pairs {
		out[i] = proxyConn{Accepted: p.accepted, Kind: p.kind, LastFromServer: p.lastFromServer}
	}
	return out
}

func (b *blackhole) accept() {
	for {
		client, err := b.ln.Accept()
		if err != nil {
			return
		}
		p := &proxyPair{accepted: time.Now(), client: client, frozen: make(chan struct{})}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			client.Close()
			return
		}
		b.pairs = append(b.pairs, p)
		b.mu.Unlock()
		go b.carry(p)
	}
}

// carry reads the client's first packet, connects the pair to the server
// and copies both ways.
func (b *blackhole) carry(p *proxyPair) {
	first, err := readPacket(p.client)
	if err != nil {
		p.client.Close()
		return
	}
	b.mu.Lock()
	p.kind = packetKind(first)
	silent := b.silent
	b.mu.Unlock()
	if silent {
		// Hold the connection open until the client gives up on it.
		_, _ = io.Copy(io.Discard, p.client)
		p.client.Close()
		return
	}
	server, err := net.Dial("tcp", b.target)
	if err != nil {
		// The server is down: a reset is as close to a refused
		// connection as a listening proxy can get.
		if tc, ok := p.client.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		p.client.Close()
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		server.Close()
		return
	}
	p.server = server
	b.mu.Unlock()
	if _, err := server.Write(first); err != nil {
		p.client.Close()
		server.Close()
		return
	}
	go p.pipe(server, p.client, nil)
	go p.pipe(p.client, server, func(at time.Time) {
		b.mu.Lock()
		p.lastFromServer = at
		b.mu.Unlock()
	})
}

// readPacket reads a client's first packet (length-prefixed, without a
// type byte): a startup message, a cancel request, or a TLS or GSS
// encryption request.
func readPacket(r io.Reader) ([]byte, error) {
	head := make([]byte, 4)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(head)
	if n < 8 || n > 1<<16 {
		return head, nil // not PostgreSQL: pass it on as it is
	}
	pkt := make([]byte, n)
	copy(pkt, head)
	_, err := io.ReadFull(r, pkt[4:])
	return pkt, err
}

// packetKind tells what a client's first packet asks for (see
// proxyConn.Kind).
func packetKind(pkt []byte) string {
	if len(pkt) < 8 {
		return "other"
	}
	switch code := binary.BigEndian.Uint32(pkt[4:8]); {
	case code == 80877102:
		return "cancel"
	case code>>16 != 3: // not protocol 3.x: TLS or GSS encryption, or not PostgreSQL
		return "other"
	}
	fields := strings.Split(string(pkt[8:]), "\x00")
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "replication" && fields[i+1] != "false" && fields[i+1] != "0" && fields[i+1] != "off" {
			return "replication"
		}
	}
	return "startup"
}

// pipe copies src to dst until either ends or the pair is frozen; frozen,
// it reads no more, so what the sender writes piles up in its buffers. sent,
// if not nil, is told the time before each write to dst.
func (p *proxyPair) pipe(dst, src net.Conn, sent func(time.Time)) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			return
		default:
		}
		if n > 0 {
			if sent != nil {
				sent(time.Now())
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				// Pass the half-close on, as a real network would.
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}

// Freeze silences every connection open now.
func (b *blackhole) Freeze() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.pairs {
		p.freeze.Do(func() { close(p.frozen) })
	}
}

// Silence makes the connections accepted from now on silent (on) or
// carried (off); those already accepted stay as they are.
func (b *blackhole) Silence(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.silent = on
}

func (b *blackhole) close() {
	b.ln.Close()
	b.mu.Lock()
	b.closed = true
	var conns []net.Conn
	for _, p := range b.pairs {
		conns = append(conns, p.client)
		if p.server != nil {
			conns = append(conns, p.server)
		}
	}
	b.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
