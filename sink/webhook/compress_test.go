package webhook

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
)

// bigMsg is msg with a record large enough that a few of them pass the
// compression threshold.
func bigMsg(i int, key string) *change.Message {
	m := msg(i, key)
	m.Record = []byte(`{"id":` + strconv.Itoa(i) + `,"note":"` + strings.Repeat("walhook ", 40) + `"}`)
	return m
}

func gunzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("body is not gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

// TestCompression: with compression: gzip, a body of 1 KiB or more goes
// gzipped with Content-Encoding: gzip, also on a retry; a smaller one goes
// as it is. The signatures cover the JSON, and Verify accepts the body as
// received or decoded.
func TestCompression(t *testing.T) {
	newer := "whsec_bmV3ZXIgc2VjcmV0LCBhbHNvIDMyIGJ5dGVzIQ=="
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
		if n == 1 {
			<-release // until the large batch is queued behind it
		}
		if n == 2 {
			w.WriteHeader(http.StatusInternalServerError) // the large batch is retried
			return http.StatusInternalServerError
		}
		return ok(w, r, n, nil)
	})
	cfg := testConfig(rc.URL)
	cfg.Webhook.Compression = "gzip"
	cfg.Webhook.Secrets = []string{newer, testSecret}
	cfg.MaxInFlight = 1
	cfg.BatchSize = 20
	var a acks
	s := start(t, cfg, testOpts{Ack: a.add})

	small := []*change.Message{msg(1, "k")}
	submit(t, s, small...)
	waitFor(t, "the first request", func() bool { return rc.count() == 1 })
	var large []*change.Message
	for i := 2; i < 12; i++ {
		large = append(large, bigMsg(i, "k"))
	}
	submit(t, s, large...)
	close(release)
	drain(t, s)

	hits := rc.list()
	if len(hits) != 3 {
		t.Fatalf("got %d requests, want 3 (small, large, large again)", len(hits))
	}
	for _, h := range hits {
		var json []byte
		want := change.AppendBody(nil, large, "orders")
		if h.n == 1 {
			want = change.AppendBody(nil, small, "orders")
			if enc := h.header.Get("Content-Encoding"); enc != "" {
				t.Errorf("request 1 (%d bytes): Content-Encoding %q, want none below 1 KiB", len(want), enc)
			}
			json = h.body
		} else {
			if enc := h.header.Get("Content-Encoding"); enc != "gzip" {
				t.Fatalf("request %d (%d bytes): Content-Encoding %q, want gzip", h.n, len(want), enc)
			}
			if len(h.body) >= len(want) {
				t.Errorf("request %d: %d bytes on the wire for %d of JSON, want fewer", h.n, len(h.body), len(want))
			}
			json = gunzipped(t, h.body)
		}
		if !bytes.Equal(json, want) {
			t.Errorf("request %d: got JSON\n%s\nwant\n%s", h.n, json, want)
		}
		for _, secret := range cfg.Webhook.Secrets {
			if err := Verify(secret, h.header, h.body, 0, time.Now()); err != nil {
				t.Errorf("request %d: Verify of the body as received: %v", h.n, err)
			}
			if err := Verify(secret, h.header, json, 0, time.Now()); err != nil {
				t.Errorf("request %d: Verify of the JSON: %v", h.n, err)
			}
		}
		decoded, err := Decode(h.header, h.body, 1<<20)
		if err != nil || !bytes.Equal(decoded, want) {
			t.Errorf("request %d: Decode: got %d bytes, %v; want the JSON", h.n, len(decoded), err)
		}
	}
	wantAcks(t, &a, append(small, large...)...)
}

func TestVerifyCompressed(t *testing.T) {
	now := time.Unix(1700000000, 0)
	json := []byte(`{"data":[` + strings.Repeat(`{"record":{"id":1}},`, 100) + `{"record":{"id":2}}]}`)
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(json)
	zw.Close()
	compressed := zbuf.Bytes()
	sigJSON, err := Sign(testSecret, "msg_1", now.Unix(), json)
	if err != nil {
		t.Fatal(err)
	}
	sigWire, err := Sign(testSecret, "msg_1", now.Unix(), compressed)
	if err != nil {
		t.Fatal(err)
	}
	header := func(enc, sig string) http.Header {
		h := http.Header{}
		h.Set("webhook-id", "msg_1")
		h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		h.Set("webhook-signature", sig)
		if enc != "" {
			h.Set("Content-Encoding", enc)
		}
		return h
	}
	tampered := bytes.Clone(compressed)
	tampered[len(tampered)/2] ^= 0x55
	for _, tc := range []struct {
		name string
		h    http.Header
		body []byte
		ok   bool
	}{
		{"gzip as received", header("gzip", sigJSON), compressed, true},
		{"x-gzip", header("X-Gzip", sigJSON), compressed, true},
		{"gzip already decoded on its way", header("gzip", sigJSON), json, true},
		{"plain", header("", sigJSON), json, true},
		{"signed over the compressed bytes", header("gzip", sigWire), compressed, false},
		{"tampered compressed body", header("gzip", sigJSON), tampered, false},
		{"gzip bytes without the header", header("", sigJSON), compressed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(testSecret, tc.h, tc.body, 0, now)
			if tc.ok && err != nil {
				t.Errorf("got %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrUnverified) {
				t.Errorf("got %v, want an error wrapping ErrUnverified", err)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	json := []byte(`{"data":[` + strings.Repeat(`{"id":1},`, 200) + `{"id":2}]}`)
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(json)
	zw.Close()
	h := func(enc string) http.Header {
		h := http.Header{}
		if enc != "" {
			h.Set("Content-Encoding", enc)
		}
		return h
	}
	for _, tc := range []struct {
		name    string
		h       http.Header
		body    []byte
		limit   int64
		want    []byte
		wantErr error
	}{
		{"none", h(""), json, 10, json, nil},
		{"identity", h("identity"), json, 10, json, nil},
		{"gzip", h("gzip"), zbuf.Bytes(), int64(len(json)), json, nil},
		{"gzip over the limit", h("gzip"), zbuf.Bytes(), int64(len(json)) - 1, nil, ErrBodyTooLarge},
		{"gzip already decoded", h("gzip"), json, 10, json, nil},
		{"brotli", h("br"), []byte{1, 2, 3}, 10, nil, ErrUnsupportedEncoding},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.h, tc.body, tc.limit)
			if !errors.Is(err, tc.wantErr) || !bytes.Equal(got, tc.want) {
				t.Errorf("got %d bytes, %v; want %d bytes, %v", len(got), err, len(tc.want), tc.wantErr)
			}
		})
	}
	if _, err := Decode(h("gzip"), []byte{0x1f, 0x8b, 0, 0}, 1<<20); err == nil {
		t.Error("corrupt gzip: got nil error, want one")
	}
}

// BenchmarkCompress: what a 100-message batch costs to gzip, with the
// pooled writer and buffer.
func BenchmarkCompress(b *testing.B) {
	msgs := make([]*change.Message, 100)
	for i := range msgs {
		msgs[i] = bigMsg(i, "k")
	}
	body := change.AppendBody(nil, msgs, "orders")
	c := newCompressor(4 << 20)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		buf, ok := c.compress(body)
		if !ok {
			b.Fatal("not compressed")
		}
		c.release(buf)
	}
}
