package main

import (
	"io"
	"net"
	"sync"
	"testing"
)

// blackhole is a TCP proxy on loopback that can go silent: after Freeze,
// the connections it carries stop moving bytes in either direction but stay
// open, as behind a dead router or a frozen NAT, so neither end hears a
// reset or a FIN. Connections made after Freeze work normally.
type blackhole struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	pairs  []*proxyPair
	closed bool
}

type proxyPair struct {
	client, server net.Conn
	frozen         chan struct{}
	freeze         sync.Once
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

func (b *blackhole) accept() {
	for {
		client, err := b.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", b.target)
		if err != nil {
			client.Close()
			continue
		}
		p := &proxyPair{client: client, server: server, frozen: make(chan struct{})}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		b.pairs = append(b.pairs, p)
		b.mu.Unlock()
		go p.pipe(server, client)
		go p.pipe(client, server)
	}
}

// pipe copies src to dst until either ends or the pair is frozen; frozen,
// it reads no more, so what the sender writes piles up in its buffers.
func (p *proxyPair) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			return
		default:
		}
		if n > 0 {
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

func (b *blackhole) close() {
	b.ln.Close()
	b.mu.Lock()
	b.closed = true
	pairs := b.pairs
	b.mu.Unlock()
	for _, p := range pairs {
		p.client.Close()
		p.server.Close()
	}
}
