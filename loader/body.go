package loader

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/batchproc/batchproc/loader/store"
)

// encoding is a request's Content-Encoding.
type encoding uint8

const (
	encIdentity encoding = iota
	encGzip
	encZstd
)

func (e encoding) String() string {
	switch e {
	case encGzip:
		return "gzip"
	case encZstd:
		return "zstd"
	}
	return "identity"
}

// maxPooledBuf is the largest body buffer kept for reuse; rarer, bigger
// bodies get a buffer of their own, freed with the request.
const maxPooledBuf = 16 << 20

// work is everything one batch request needs besides its headers, reused
// across requests through Server.works: the decoded body, the decoder with
// its event slice, and the batch handed to the store.
type work struct {
	buf   []byte
	dec   decoder
	batch store.Batch
	count countingReader
	probe [1]byte
}

// countingReader counts the body bytes as sent (before decompression).
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// gzipReader is a pooled gzip decompressor with the bufio.Reader it reads
// through (flate needs an io.ByteReader; without one it would allocate a
// bufio.Reader per request).
type gzipReader struct {
	br *bufio.Reader
	z  gzip.Reader
}

// codecs holds a Server's pooled decompressors.
type codecs struct {
	gzip sync.Pool // *gzipReader
	zstd sync.Pool // *zstd.Decoder
	zopt []zstd.DOption
}

func newCodecs(cfg *Config) *codecs {
	window := uint64(min(cfg.MaxZstdWindow, max(cfg.MaxDecodedBody, 1<<10)))
	return &codecs{zopt: []zstd.DOption{
		// One goroutine-free decoder per request: decoding is synchronous.
		zstd.WithDecoderConcurrency(1),
		// A 37-byte frame can declare a 512 MiB window (or a single
		// segment of that size); refuse such frames before allocating.
		zstd.WithDecoderMaxWindow(window),
		zstd.WithDecoderMaxMemory(uint64(cfg.MaxDecodedBody)),
		zstd.WithDecoderLowmem(true),
	}}
}

// errDecodedTooLarge is returned by readBody when the decompressed body is
// over Config.MaxDecodedBody.
var errDecodedTooLarge = errors.New("decompressed body too large")

// readBody reads the request body, decompressed, into w.buf (at most limit
// bytes; more is errDecodedTooLarge). release must be called once the body
// is no longer read (it returns the decompressor to its pool).
func (c *codecs) readBody(w *work, body io.Reader, enc encoding, contentLength, limit int64) (release func(), err error) {
	w.count = countingReader{r: body}
	var r io.Reader = &w.count
	release = func() {}
	// sizeHint is what the decoded body is expected to need.
	sizeHint := contentLength
	switch enc {
	case encGzip:
		g, _ := c.gzip.Get().(*gzipReader)
		if g == nil {
			g = &gzipReader{br: bufio.NewReaderSize(nil, 32<<10)}
		}
		g.br.Reset(r)
		release = func() { g.br.Reset(nil); c.gzip.Put(g) }
		if err := g.z.Reset(g.br); err != nil {
			return release, err
		}
		r = &g.z
		sizeHint *= 4
	case encZstd:
		d, _ := c.zstd.Get().(*zstd.Decoder)
		if d == nil {
			if d, err = zstd.NewReader(nil, c.zopt...); err != nil {
				return release, err
			}
		}
		release = func() { _ = d.Reset(nil); c.zstd.Put(d) }
		if err := d.Reset(r); err != nil {
			return release, err
		}
		r = d
		sizeHint *= 4
	}
	w.buf, err = readLimited(w.buf[:0], r, sizeHint, limit, w.probe[:])
	return release, err
}

// readLimited appends all of r to buf, growing it to what the body needs
// (sizeHint when known) but never past limit bytes: a longer body is
// errDecodedTooLarge, found after reading limit+1 bytes, so memory stays
// bounded whatever the body expands to.
func readLimited(buf []byte, r io.Reader, sizeHint, limit int64, probe []byte) ([]byte, error) {
	if want := min(max(sizeHint, 0), limit); int64(cap(buf)) < want {
		buf = make([]byte, 0, want)
	}
	for {
		if len(buf) == cap(buf) {
			// Full: one more byte tells EOF from a bigger body, without
			// growing a buffer that was exactly right.
			n, err := io.ReadFull(r, probe)
			if n == 0 {
				if err == io.EOF {
					return buf, nil
				}
				if err != nil {
					return buf, err
				}
			}
			if int64(len(buf)) >= limit {
				return buf, errDecodedTooLarge
			}
			newCap := min(max(2*int64(cap(buf)), 64<<10), limit)
			nb := make([]byte, len(buf), newCap)
			copy(nb, buf)
			buf = append(nb, probe[0])
			continue
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// bodyError maps an error of readBody to an answer.
func bodyError(err error, enc encoding, cfg *Config) (status int, msg string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over the limit of %d bytes", mbe.Limit)
	case errors.Is(err, errDecodedTooLarge):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("decompressed body over the limit of %d bytes", cfg.MaxDecodedBody)
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return http.StatusRequestEntityTooLarge, "zstd frame over the limits (window or size): " + err.Error()
	case enc != encIdentity:
		return http.StatusBadRequest, "malformed " + enc.String() + " body: " + err.Error()
	}
	return http.StatusBadRequest, "reading the request body: " + err.Error()
}
