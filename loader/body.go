package loader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

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

// maxPooledRaw and maxPooledBuf are the largest body buffers (as sent and
// decompressed) kept for reuse; rarer, bigger bodies get buffers of their
// own, freed with the request.
const (
	maxPooledRaw = 1 << 20
	maxPooledBuf = 4 << 20
)

// work is everything one batch request needs besides its headers, reused
// across requests through Server.works: the body as sent and decompressed,
// the decoder with its event slice, and the batch handed to the store.
type work struct {
	raw     []byte // the body as sent
	rawHeld int64  // what raw holds of Server.bodyMem
	buf     []byte // the decompressed body (gzip and zstd only)
	bufHeld int64  // what buf holds of Server.decodeMem
	scratch []byte // for finding a decompressed body's size
	dec     decoder
	batch   store.Batch
	probe   [1]byte
}

// codecs holds a Server's pooled decompressors.
type codecs struct {
	gzip sync.Pool // *gzip.Reader
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

// open returns a decompressor reading src, and the func that gives it back
// to its pool once it is no longer read.
func (c *codecs) open(enc encoding, src []byte) (r io.Reader, release func(), err error) {
	// A bytes.Reader is an io.ByteReader: flate reads it without a
	// bufio.Reader of its own.
	br := bytes.NewReader(src)
	switch enc {
	case encGzip:
		g, _ := c.gzip.Get().(*gzip.Reader)
		if g == nil {
			g = new(gzip.Reader)
		}
		release = func() { c.gzip.Put(g) }
		if err := g.Reset(br); err != nil {
			return nil, release, err
		}
		return g, release, nil
	case encZstd:
		d, _ := c.zstd.Get().(*zstd.Decoder)
		if d == nil {
			if d, err = zstd.NewReader(nil, c.zopt...); err != nil {
				return nil, func() {}, err
			}
		}
		release = func() { _ = d.Reset(nil); c.zstd.Put(d) }
		if err := d.Reset(br); err != nil {
			return nil, release, err
		}
		return d, release, nil
	}
	return br, func() {}, nil
}

// errDecodedTooLarge is returned by readLimited when the body is over its
// limit (Config.MaxDecodedBody, for a decompressed body).
var errDecodedTooLarge = errors.New("decompressed body too large")

// receive reads r's body, as sent, into wk.raw: at most Config.MaxBody
// bytes, within Config.BodyMemory across all requests. It runs before the
// request takes an ingest slot, so a slow client holds no slot; a client
// that is too slow for Config.ReadTimeout gets a timeout error (408). When
// Shutdown begins, bodies still arriving are cut off (503).
func (s *Server) receive(w http.ResponseWriter, r *http.Request, wk *work) error {
	limit := s.cfg.MaxBody
	if r.ContentLength >= 0 {
		limit = min(limit, r.ContentLength)
	}
	want := min(limit, minBodyBuf)
	if r.ContentLength >= 0 {
		want = limit
	}
	wk.raw = s.bodyMem.claim(wk.raw, &wk.rawHeld, want)
	// Start small whatever Content-Length says: a client must send the
	// bytes before it holds memory for them.
	hint := min(limit, minBodyBuf)
	rc := http.NewResponseController(w)
	stop := context.AfterFunc(s.drainCtx, func() { _ = rc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if s.onReceive != nil {
		s.onReceive()
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	var err error
	wk.raw, err = readLimited(wk.raw, &wk.rawHeld, s.bodyMem, body, hint, limit, wk.probe[:])
	if err != nil && s.isDraining() && isTimeout(err) {
		return errDraining
	}
	return err
}

// errDraining is a body cut off by Shutdown.
var errDraining = errors.New("shutting down")

// decompress decodes wk.raw (compressed with enc) into wk.buf, at most
// Config.MaxDecodedBody bytes, within Config.DecodeMemory across all
// requests (see limits.go).
func (s *Server) decompress(ctx context.Context, wk *work, enc encoding) error {
	limit := s.cfg.MaxDecodedBody
	hint := min(4*int64(len(wk.raw)), limit)
	wk.buf = s.decodeMem.claim(wk.buf, &wk.bufHeld, hint)
	r, release, err := s.codecs.open(enc, wk.raw)
	if err != nil {
		release()
		return err
	}
	wk.buf, err = readLimited(wk.buf, &wk.bufHeld, s.decodeMem, r, hint, limit, wk.probe[:])
	if !errors.Is(err, errBudget) {
		release()
		return err
	}
	// Over the budget: give back what this request holds, then learn the
	// decoded size without keeping the bytes. A bomb ends here, 413.
	have := int64(len(wk.buf))
	wk.buf = nil
	s.decodeMem.release(&wk.bufHeld)
	if wk.scratch == nil {
		wk.scratch = make([]byte, 32<<10)
	}
	rest, err := countRest(r, wk.scratch, limit-have)
	release()
	if err != nil {
		return err
	}
	size := have + rest
	if s.onDecodeWait != nil {
		s.onDecodeWait()
	}
	if err := s.decodeMem.sem.Acquire(ctx, size); err != nil {
		return err
	}
	wk.bufHeld = size
	wk.buf = make([]byte, 0, size)
	if r, release, err = s.codecs.open(enc, wk.raw); err == nil {
		wk.buf, err = readLimited(wk.buf, &wk.bufHeld, s.decodeMem, r, size, size, wk.probe[:])
	}
	release()
	return err
}

// freeBodies gives back what wk holds of the memory budgets and drops
// buffers too big to keep in the pool.
func (s *Server) freeBodies(wk *work) {
	s.bodyMem.release(&wk.rawHeld)
	s.decodeMem.release(&wk.bufHeld)
	if cap(wk.raw) > maxPooledRaw {
		wk.raw = nil
	}
	wk.raw = wk.raw[:0]
	if cap(wk.buf) > maxPooledBuf {
		wk.buf = nil
	}
	wk.buf = wk.buf[:0]
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// bodyError maps an error of readBody to an answer.
func bodyError(err error, enc encoding, cfg *Config) (status int, msg string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errDraining):
		return http.StatusServiceUnavailable, "shutting down"
	case isTimeout(err):
		return http.StatusRequestTimeout, fmt.Sprintf("request body not received within the read timeout of %v", cfg.ReadTimeout)
	case errors.Is(err, errBudget):
		return http.StatusTooManyRequests, fmt.Sprintf("overloaded: the %d bytes of memory for request bodies are in use", cfg.BodyMemory)
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
