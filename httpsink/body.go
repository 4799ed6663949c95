package httpsink

import (
	"errors"
	"io"
	"runtime"
	"sync"

	"github.com/batchproc/batchproc"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// buffer is a growable byte slice, pooled across sinks. It is an io.Writer
// for the gzip writer and a dst for zstd's EncodeAll.
type buffer struct{ b []byte }

func (w *buffer) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// maxPooledBuffer keeps a rare huge body's buffer out of the pool, so that
// one outlier does not pin its memory for the process's lifetime.
const maxPooledBuffer = 16 << 20

var bufferPool = sync.Pool{New: func() any { return new(buffer) }}

func getBuffer() *buffer {
	w := bufferPool.Get().(*buffer)
	w.b = w.b[:0]
	return w
}

func putBuffer(w *buffer) {
	if w == nil || cap(w.b) > maxPooledBuffer {
		return
	}
	bufferPool.Put(w)
}

// zstdWindow is the zstd window size; see newEncoder.
const zstdWindow = 1 << 20

// encoder turns a batch into a request body: framing, then compression.
type encoder struct {
	framing     Framing
	compression Compression
	gzipPool    sync.Pool // of *gzip.Writer at the sink's level
	zstd        *zstd.Encoder
}

func newEncoder(c *config) (*encoder, error) {
	e := &encoder{framing: c.framing, compression: c.compression}
	switch c.compression {
	case Gzip:
		level := DefaultGzipLevel
		if c.levelSet {
			level = c.level
		}
		// Validated by config.validate, so NewWriterLevel cannot fail.
		e.gzipPool.New = func() any {
			zw, _ := gzip.NewWriterLevel(nil, level)
			return zw
		}
	case Zstd:
		level := DefaultZstdLevel
		if c.levelSet {
			level = c.level
		}
		// One encoder for the sink: EncodeAll may be called concurrently and
		// keeps GOMAXPROCS block encoders, each reused across batches. Each
		// keeps a history of twice the window: with the default 8 MiB
		// window that is 16 MiB per encoder, for batches that are 1 MiB by
		// default. A 1 MiB window (2 MiB of history) costs events in larger
		// batches almost no ratio, and bounds the loader's decoder memory.
		zw, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithWindowSize(zstdWindow))
		if err != nil {
			return nil, err
		}
		e.zstd = zw
	}
	return e, nil
}

// body is one request body and the pooled buffers it lives in.
type body struct {
	data       []byte
	framed     *buffer // JSONArray framing, nil for NDJSON
	compressed *buffer // nil without compression
}

// release gives the buffers back. The request must be over and its fence
// closed: net/http reads nothing of data afterwards.
func (b *body) release() {
	putBuffer(b.framed)
	putBuffer(b.compressed)
}

// encode builds b's request body. For NDJSON without compression it is the
// batch's own buffer: nothing is copied or allocated.
func (e *encoder) encode(b *batchproc.Batch) body {
	var out body
	src := b.NDJSON()
	if e.framing == JSONArray {
		out.framed = getBuffer()
		out.framed.b = appendJSONArray(out.framed.b, b)
		src = out.framed.b
	}
	switch e.compression {
	case Gzip:
		out.compressed = getBuffer()
		zw := e.gzipPool.Get().(*gzip.Writer)
		zw.Reset(out.compressed)
		// Writes into a buffer cannot fail.
		_, _ = zw.Write(src)
		_ = zw.Close()
		e.gzipPool.Put(zw)
		src = out.compressed.b
	case Zstd:
		out.compressed = getBuffer()
		out.compressed.b = e.zstd.EncodeAll(src, out.compressed.b[:0])
		src = out.compressed.b
	}
	out.data = src
	return out
}

// appendJSONArray appends b's events as one JSON array to dst: '[', the
// payloads joined by ',', ']'. It copies the NDJSON buffer in one go and
// then overwrites each payload's newline, which payloads never contain.
func appendJSONArray(dst []byte, b *batchproc.Batch) []byte {
	nd := b.NDJSON()
	start := len(dst) + 1
	dst = append(dst, '[')
	dst = append(dst, nd...)
	pos := start
	for i := range b.Len() {
		pos += len(b.Event(i).Payload)
		dst[pos] = ','
		pos++
	}
	dst[len(dst)-1] = ']'
	return dst
}

// errBodyClosed is what a request body reads after its Send returned.
var errBodyClosed = errors.New("httpsink: request body read after Send returned")

// fence guards a request body that aliases memory the sink hands back when
// Send returns: the batch's buffer, which the processor reuses, or a pooled
// buffer. net/http may go on reading a request body in another goroutine
// after Client.Do returned (http.RoundTripper says so: the transport may
// close the body "even after RoundTrip returns"), for instance when the
// server answers before reading the whole body. Once close has returned, no
// reader of the fence touches the memory again; they fail instead. Waiting
// for the transport to close the body could instead take as long as a
// stalled write, so the fence does not wait.
type fence struct {
	mu     sync.Mutex
	closed bool
	data   []byte
	first  fencedReader // the request's Body; GetBody makes others
}

func newFence(data []byte) *fence {
	f := &fence{data: data}
	f.first.f = f
	return f
}

func (f *fence) close() {
	f.mu.Lock()
	f.closed = true
	f.data = nil
	f.mu.Unlock()
}

// getBody is the request's GetBody: a fresh reader from the start, for a
// transport that replays the request on a new connection or a 307/308.
func (f *fence) getBody() (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errBodyClosed
	}
	return &fencedReader{f: f}, nil
}

type fencedReader struct {
	f   *fence
	off int
}

func (r *fencedReader) Read(p []byte) (int, error) {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	if r.f.closed {
		return 0, errBodyClosed
	}
	if r.off >= len(r.f.data) {
		return 0, io.EOF
	}
	n := copy(p, r.f.data[r.off:])
	r.off += n
	return n, nil
}

func (r *fencedReader) Close() error { return nil }
