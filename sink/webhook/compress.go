package webhook

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// minCompressed is the smallest body a sink with compression: gzip
// compresses. Below it gzip saves a few bytes at best (its header and
// trailer are 18) and costs both ends CPU, and a quiet sink's batches are
// mostly single messages of a few hundred bytes.
const minCompressed = 1024

// compressLevel trades ratio for speed: on a 100-message batch of JSON
// row changes, level 1 compresses 2.6 times faster than the default level
// for an output about 15% larger.
const compressLevel = gzip.BestSpeed

// MaxDecodedBody is how large a compressed body Verify decompresses to
// before it gives up: a bound on what an unverified request may cost.
const MaxDecodedBody = 256 << 20

// compressor compresses request bodies with pooled gzip writers and
// buffers; it is safe for concurrent use.
type compressor struct {
	writers sync.Pool // of *gzip.Writer
	bufs    sync.Pool // of *bytes.Buffer
	maxKept int       // a buffer that grew past this is not pooled
}

func newCompressor(maxKept int) *compressor {
	c := &compressor{maxKept: maxKept}
	c.writers.New = func() any {
		zw, _ := gzip.NewWriterLevel(io.Discard, compressLevel) // the level is valid
		return zw
	}
	c.bufs.New = func() any { return new(bytes.Buffer) }
	return c
}

// compress returns body gzipped in a pooled buffer, to be given back with
// release once nothing reads it. ok is false when body is too small to
// compress or does not shrink; then nothing needs releasing.
func (c *compressor) compress(body []byte) (buf *bytes.Buffer, ok bool) {
	if len(body) < minCompressed {
		return nil, false
	}
	buf = c.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	zw := c.writers.Get().(*gzip.Writer)
	zw.Reset(buf)
	_, _ = zw.Write(body) // a bytes.Buffer does not fail
	_ = zw.Close()
	zw.Reset(io.Discard) // do not keep buf reachable from the pool
	c.writers.Put(zw)
	if buf.Len() >= len(body) {
		c.release(buf)
		return nil, false
	}
	return buf, true
}

func (c *compressor) release(buf *bytes.Buffer) {
	if buf.Cap() <= c.maxKept {
		c.bufs.Put(buf)
	}
}

// gzipped reports whether a request body is gzip as it stands: its
// Content-Encoding says gzip and it starts with gzip's magic bytes. A body
// under a gzip Content-Encoding that lacks them was already decompressed on
// its way (by a proxy or a framework), since a JSON body cannot start with
// them.
func gzipped(h http.Header, body []byte) bool {
	enc := strings.ToLower(strings.TrimSpace(h.Get("Content-Encoding")))
	return (enc == "gzip" || enc == "x-gzip") && len(body) >= 2 && body[0] == 0x1f && body[1] == 0x8b
}

// ErrBodyTooLarge is returned by Decode for a body that decompresses to
// more than its limit.
var ErrBodyTooLarge = errors.New("decompressed body is over the limit")

// ErrUnsupportedEncoding is returned by Decode for a Content-Encoding other
// than gzip or none.
var ErrUnsupportedEncoding = errors.New("content-encoding is not supported")

// Decode returns a request's body as walhook signed it, the JSON: body
// itself when it is not compressed, decompressed when its Content-Encoding
// is gzip, up to limit bytes (ErrBodyTooLarge beyond). A body that says
// gzip but was already decompressed on its way is returned as it is; any
// other Content-Encoding is an error.
func Decode(h http.Header, body []byte, limit int64) ([]byte, error) {
	if gzipped(h, body) {
		var out bytes.Buffer
		if err := gunzip(&out, body, limit); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	}
	switch enc := strings.ToLower(strings.TrimSpace(h.Get("Content-Encoding"))); enc {
	case "", "identity", "gzip", "x-gzip":
		return body, nil
	default:
		return nil, fmt.Errorf("%w: %q (walhook sends gzip or none)", ErrUnsupportedEncoding, enc)
	}
}

// gunzip writes the decompressed body to w, at most limit bytes.
func gunzip(w io.Writer, body []byte, limit int64) error {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("decompress body: %w", err)
	}
	n, err := io.Copy(w, io.LimitReader(zr, limit+1))
	if err != nil {
		return fmt.Errorf("decompress body: %w", err)
	}
	if n > limit {
		return fmt.Errorf("%w of %d bytes", ErrBodyTooLarge, limit)
	}
	return zr.Close()
}
