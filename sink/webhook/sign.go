package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// secretPrefix starts every Standard Webhooks secret; the rest is base64.
const secretPrefix = "whsec_"

// DefaultTolerance is how far webhook-timestamp may be from now when Verify
// is given no tolerance, as Standard Webhooks recommends.
const DefaultTolerance = 5 * time.Minute

// ErrUnverified is wrapped by every error Verify returns for a request that
// fails verification.
var ErrUnverified = errors.New("webhook not verified")

// Sign returns the Standard Webhooks signature of a request: "v1," and the
// base64 HMAC-SHA256 of "{id}.{timestamp}.{body}", keyed with the base64
// decoded part of secret after "whsec_".
func Sign(secret string, id string, timestamp int64, body []byte) (string, error) {
	key, err := decodeSecret(secret)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return string(appendSignature(nil, hmac.New(sha256.New, key), id, strconv.FormatInt(timestamp, 10), body)), nil
}

// Verify checks a request as a Standard Webhooks receiver does: webhook-id
// is present, webhook-timestamp is Unix seconds within tolerance of now
// (DefaultTolerance when tolerance is not positive), and one of the
// space-separated signatures in webhook-signature is a v1 signature of the
// id, the timestamp and body under secret, compared in constant time. It
// returns nil for a verified request and an error wrapping ErrUnverified for
// one that is not.
//
// walhook signs the JSON, before compression. A body with Content-Encoding
// gzip may be passed as received, compressed (Verify decompresses it, at
// most MaxDecodedBody bytes, without keeping it), or as Decode returns it.
func Verify(secret string, h http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	key, err := decodeSecret(secret)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	id, ts := h.Get("Webhook-Id"), h.Get("Webhook-Timestamp")
	sigs := h.Values("Webhook-Signature")
	if id == "" || ts == "" || len(sigs) == 0 {
		return fmt.Errorf("%w: missing webhook-id, webhook-timestamp or webhook-signature header", ErrUnverified)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: webhook-timestamp %q is not Unix seconds", ErrUnverified, ts)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if d := now.Sub(time.Unix(secs, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: webhook-timestamp is %s from now, beyond the tolerance of %s", ErrUnverified, d.Round(time.Second), tolerance)
	}
	mac := hmac.New(sha256.New, key)
	var want []byte
	if gzipped(h, body) {
		writeSigned(mac, id, ts)
		if err := gunzip(mac, body, MaxDecodedBody); err != nil {
			return fmt.Errorf("%w: %w", ErrUnverified, err)
		}
		want = appendSum(nil, mac)
	} else {
		want = appendSignature(nil, mac, id, ts, body)
	}
	want = want[len("v1,"):]
	for _, v := range sigs {
		for _, sig := range strings.Fields(v) {
			version, b64, ok := strings.Cut(sig, ",")
			if ok && version == "v1" && subtle.ConstantTimeCompare([]byte(b64), want) == 1 {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: no v1 signature matches", ErrUnverified)
}

// decodeSecret turns "whsec_<base64>" into the HMAC key.
func decodeSecret(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		// Never print the secret, not even a part of it.
		return nil, errors.New(`want "whsec_" followed by base64, the Standard Webhooks form`)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, errors.New(`the part after "whsec_" is not valid base64`)
	}
	if len(key) == 0 {
		return nil, errors.New(`the part after "whsec_" is empty`)
	}
	return key, nil
}

var dot = []byte{'.'}

// appendSignature appends "v1,<base64 HMAC>" of "{id}.{ts}.{body}" to dst,
// using mac, which it resets first.
func appendSignature(dst []byte, mac hash.Hash, id, ts string, body []byte) []byte {
	writeSigned(mac, id, ts)
	_, _ = mac.Write(body)
	return appendSum(dst, mac)
}

// writeSigned resets mac and writes what precedes the body in the signed
// content: "{id}.{ts}.".
func writeSigned(mac hash.Hash, id, ts string) {
	mac.Reset()
	_, _ = io.WriteString(mac, id)
	_, _ = mac.Write(dot)
	_, _ = io.WriteString(mac, ts)
	_, _ = mac.Write(dot)
}

// appendSum appends "v1," and mac's sum in base64 to dst.
func appendSum(dst []byte, mac hash.Hash) []byte {
	var sum [sha256.Size]byte
	dst = append(dst, "v1,"...)
	return base64.StdEncoding.AppendEncode(dst, mac.Sum(sum[:0]))
}
