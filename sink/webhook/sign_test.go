package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// The vector the Standard Webhooks reference libraries test against.
func TestSignStandardWebhooksVector(t *testing.T) {
	got, err := Sign(testSecret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// The spec's description, computed here without the package's code: the
// key is the base64 after "whsec_", the content is "{id}.{timestamp}.{body}".
func TestSignMatchesSpecDescription(t *testing.T) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(testSecret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	id, ts, body := "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", int64(1674087231), []byte(`{"data":[{"action":"insert"}]}`)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))

	got, err := Sign(testSecret, id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1700000000, 0)
	body := []byte(`{"data":[{"record":{"id":1}}]}`)
	sig, err := Sign(testSecret, "msg_1", now.Unix(), body)
	if err != nil {
		t.Fatal(err)
	}
	otherSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another key, 24 bytes ok"))
	otherSig, err := Sign(otherSecret, "msg_1", now.Unix(), body)
	if err != nil {
		t.Fatal(err)
	}
	header := func(id, ts, sig string) http.Header {
		h := http.Header{}
		if id != "" {
			h.Set("webhook-id", id)
		}
		if ts != "" {
			h.Set("webhook-timestamp", ts)
		}
		if sig != "" {
			h.Set("webhook-signature", sig)
		}
		return h
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	for _, tc := range []struct {
		name   string
		secret string
		h      http.Header
		body   []byte
		now    time.Time
		ok     bool
	}{
		{"valid", testSecret, header("msg_1", ts, sig), body, now, true},
		{"valid among several", testSecret, header("msg_1", ts, "v1,bm9wZQ== v2,xyz "+sig), body, now, true},
		{"valid at the tolerance edge", testSecret, header("msg_1", ts, sig), body, now.Add(5 * time.Minute), true},
		{"tampered body", testSecret, header("msg_1", ts, sig), []byte(`{"data":[{"record":{"id":2}}]}`), now, false},
		{"other id", testSecret, header("msg_2", ts, sig), body, now, false},
		{"wrong secret", otherSecret, header("msg_1", ts, sig), body, now, false},
		{"signed with another secret", testSecret, header("msg_1", ts, otherSig), body, now, false},
		{"stale timestamp", testSecret, header("msg_1", ts, sig), body, now.Add(5*time.Minute + time.Second), false},
		{"future timestamp", testSecret, header("msg_1", ts, sig), body, now.Add(-6 * time.Minute), false},
		{"timestamp not a number", testSecret, header("msg_1", "soon", sig), body, now, false},
		{"no signature", testSecret, header("msg_1", ts, ""), body, now, false},
		{"no id", testSecret, header("", ts, sig), body, now, false},
		{"unknown version only", testSecret, header("msg_1", ts, "v2"+strings.TrimPrefix(sig, "v1")), body, now, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.secret, tc.h, tc.body, 0, tc.now)
			if tc.ok && err != nil {
				t.Errorf("got %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrUnverified) {
				t.Errorf("got %v, want an error wrapping ErrUnverified", err)
			}
		})
	}
}

func TestVerifyTolerance(t *testing.T) {
	now := time.Unix(1700000000, 0)
	sig, err := Sign(testSecret, "msg_1", now.Unix(), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("webhook-id", "msg_1")
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("webhook-signature", sig)
	if err := Verify(testSecret, h, nil, 10*time.Second, now.Add(10*time.Second)); err != nil {
		t.Errorf("10s old with 10s tolerance: got %v, want nil", err)
	}
	if err := Verify(testSecret, h, nil, 10*time.Second, now.Add(11*time.Second)); !errors.Is(err, ErrUnverified) {
		t.Errorf("11s old with 10s tolerance: got %v, want ErrUnverified", err)
	}
}

func TestBadSecrets(t *testing.T) {
	for _, secret := range []string{
		"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // no prefix
		"whsec_not base64!",
		"whsec_",
	} {
		_, err := Sign(secret, "msg_1", 1, nil)
		if err == nil {
			t.Errorf("Sign with secret %q: got nil error, want one", secret)
			continue
		}
		if rest := strings.TrimPrefix(secret, "whsec_"); rest != "" && strings.Contains(err.Error(), rest) {
			t.Errorf("Sign with secret %q: error %q shows the secret", secret, err)
		}
		if err := Verify(secret, http.Header{}, nil, 0, time.Now()); err == nil || errors.Is(err, ErrUnverified) {
			t.Errorf("Verify with secret %q: got %v, want a secret error", secret, err)
		}
	}
}
