package main

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/sink/webhook"
)

func TestReceiveVerifiesAndPrints(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	srv := httptest.NewServer(&receiver{out: &out, secret: testSecret})
	defer srv.Close()

	m := &change.Message{Action: change.Insert, Schema: "public", Table: "orders", Record: []byte(`{"id":1}`),
		Pos: change.Position{CommitLSN: 0x16B3748, Idx: 2}, CommitTime: time.Now()}
	body := change.AppendBody(nil, []*change.Message{m}, "orders")
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(body)
	zw.Close()
	post := func(secret, encoding string) int {
		t.Helper()
		ts := time.Now().Unix()
		sig, err := webhook.Sign(secret, "msg_1", ts, body) // over the JSON, compressed or not
		if err != nil {
			t.Fatal(err)
		}
		wire := body
		if encoding != "" {
			wire = zbuf.Bytes()
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(wire))
		if encoding != "" {
			req.Header.Set("Content-Encoding", encoding)
		}
		req.Header.Set("webhook-id", "msg_1")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("webhook-signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, encoding := range []string{"", "gzip"} {
		out.Reset()
		if code := post(testSecret, encoding); code != http.StatusOK {
			t.Fatalf("content-encoding %q: got status %d for a valid signature, want 200", encoding, code)
		}
		if !strings.Contains(out.String(), `insert   public.orders 0/16B3748:2 {"id":1}`) {
			t.Fatalf("content-encoding %q: got output %q, want the message on one line", encoding, out.String())
		}
	}
	out.Reset()
	if code := post(testSecret, "br"); code != http.StatusUnsupportedMediaType {
		t.Fatalf("got status %d for content-encoding br, want 415", code)
	}
	out.Reset()
	if code := post("whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==", ""); code != http.StatusUnauthorized {
		t.Fatalf("got status %d for a wrong signature, want 401", code)
	}
	if !strings.Contains(out.String(), "rejected msg_1") {
		t.Fatalf("got output %q, want a rejection line", out.String())
	}
}
