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

// maxPooledRing is the largest zstd window buffer kept in the pool with its
// decoder: a decoder that needed more is closed after use, so that idle
// decoders hold little memory outside Config.DecodeMemory.
const maxPooledRing = 1 << 20

// open returns a decompressor reading src, and the func that gives it back
// to its pool once it is no longer read. ring is the window buffer a zstd
// frame needs.
func (c *codecs) open(enc encoding, src []byte, ring int64) (r io.Reader, release func(), err error) {
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
		release = func() {
			if ring > maxPooledRing {
				d.Close()
				return
			}
			_ = d.Reset(nil)
			c.zstd.Put(d)
		}
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
	if int64(cap(wk.raw)) < hint {
		s.bodyMem.release(&wk.rawHeld)
		if !s.bodyMem.sem.TryAcquire(hint) {
			return errBudget
		}
		wk.raw, wk.rawHeld = make([]byte, 0, hint), hint
	}
	rc := http.NewResponseController(w)
	stop := context.AfterFunc(s.drainCtx, func() { _ = rc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if s.onReceive != nil {
		s.onReceive()
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	now := time.Now()
	mr := &minRateReader{r: body, rc: rc, rate: s.cfg.MinBodyRate, drain: s.drainCtx,
		grace: now.Add(s.cfg.BodyRateGrace), end: now.Add(s.cfg.ReadTimeout)}
	if mr.setDeadline() == nil { // not on a ResponseRecorder
		body = mr
	}
	var err error
	wk.raw, err = readLimited(wk.raw, &wk.rawHeld, s.bodyMem, body, hint, limit, wk.probe[:])
	// No deadline to reset: at the body's EOF net/http clears it for its
	// background read (TestMinBodyRateSparesTheStore).
	if err != nil && s.isDraining() && isTimeout(err) {
		return errDraining
	}
	return err
}

// minRateReader moves the connection's read deadline before each read so
// that the body keeps arriving at rate bytes per second on average after
// grace, and ends before end (the ReadTimeout).
type minRateReader struct {
	r     io.Reader
	drain context.Context // done: Shutdown cuts the body off
	rc    *http.ResponseController
	rate  int64
	n     int64
	grace time.Time
	end   time.Time
}

func (m *minRateReader) setDeadline() error {
	d := m.grace.Add(time.Duration(float64(m.n) / float64(m.rate) * float64(time.Second)))
	if d.After(m.end) {
		d = m.end
	}
	return m.rc.SetReadDeadline(d)
}

func (m *minRateReader) Read(p []byte) (int, error) {
	if err := m.setDeadline(); err != nil {
		return 0, err
	}
	// After moving the deadline: Shutdown's cut (a deadline in the past)
	// may have come just before it.
	if m.drain.Err() != nil {
		return 0, os.ErrDeadlineExceeded
	}
	n, err := m.r.Read(p)
	m.n += int64(n)
	return n, err
}

// errDraining is a body cut off by Shutdown.
var errDraining = errors.New("shutting down")

// decompress decodes wk.raw (compressed with enc) into wk.buf, at most
// Config.MaxDecodedBody bytes, within Config.DecodeMemory across all
// requests (see limits.go). A zstd decoder's window buffer counts too: it
// is taken first, the only wait for the budget that holds nothing else.
func (s *Server) decompress(ctx context.Context, wk *work, enc encoding) error {
	limit := s.cfg.MaxDecodedBody
	var window int64 // what the decoder holds of s.decodeMem
	defer s.decodeMem.release(&window)
	ring := int64(0)
	if enc == encZstd {
		var h zstd.Header
		if err := h.Decode(wk.raw); err != nil {
			return err
		}
		w := h.WindowSize
		if h.SingleSegment {
			w = h.FrameContentSize
		}
		if w > uint64(s.cfg.MaxZstdWindow) {
			return zstd.ErrWindowSizeExceeded
		}
		// What history.ensureBlockRing allocates: the window and two
		// blocks of room, with the copies' overrun.
		ring = int64(w) + 2*(min(int64(w), 128<<10)+64)
		if err := s.waitDecodeMem(ctx, ring); err != nil {
			return err
		}
		window = min(ring, s.decodeMem.size)
	}
	hint := min(4*int64(len(wk.raw)), limit)
	wk.buf = s.decodeMem.claim(wk.buf, &wk.bufHeld, hint)
	r, release, err := s.codecs.open(enc, wk.raw, ring)
	if err != nil {
		release()
		return err
	}
	// Grow by copying up to 4 times the hint (bodies compressed up to 16
	// times); past that, find the size first and allocate it once, so a
	// bomb makes little garbage on its way to the limit.
	wk.buf, err = readGrowing(wk.buf, &wk.bufHeld, s.decodeMem, r, hint, limit, max(4*hint, minBodyBuf), wk.probe[:])
	if !errors.Is(err, errBudget) {
		release()
		return err
	}
	// Over the budget or 4 times the hint: give back the buffer, then learn the decoded size
	// without keeping the bytes. A bomb ends here, 413.
	have := int64(len(wk.buf))
	if err == errBudgetProbe {
		have++
	}
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
	// Wait for the decoded size and the window at once, holding nothing.
	size := have + rest
	s.decodeMem.release(&window)
	if s.onDecodeWait != nil {
		s.onDecodeWait()
	}
	if err := s.waitDecodeMem(ctx, size+ring); err != nil {
		return err
	}
	// What was taken: size+ring, or all of the budget if that is less.
	wk.bufHeld, window = size, min(ring, s.decodeMem.size-size)
	wk.buf = make([]byte, 0, size)
	if r, release, err = s.codecs.open(enc, wk.raw, ring); err == nil {
		wk.buf, err = readLimited(wk.buf, &wk.bufHeld, s.decodeMem, r, size, size, wk.probe[:])
	}
	release()
	return err
}

// errDecodeBusy is a request that waited StoreTimeout for decode memory.
var errDecodeBusy = errors.New("decode memory stayed in use")

// waitDecodeMem takes n bytes of the decode budget (all of it when n is
// more), waiting at most Config.StoreTimeout. The caller holds none of it,
// so the wait ends as the requests holding it finish.
func (s *Server) waitDecodeMem(ctx context.Context, n int64) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	if err := s.decodeMem.sem.Acquire(ctx, min(n, s.decodeMem.size)); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return errDecodeBusy
		}
		return err
	}
	return nil
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
	case errors.Is(err, errDecodeBusy):
		return http.StatusServiceUnavailable, fmt.Sprintf("overloaded: the %d bytes of decode memory stayed in use for %v", cfg.DecodeMemory, cfg.StoreTimeout)
	case isTimeout(err):
		return http.StatusRequestTimeout, fmt.Sprintf("request body not received within the read timeout of %v, or slower than %d bytes/s after %v", cfg.ReadTimeout, cfg.MinBodyRate, cfg.BodyRateGrace)
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
