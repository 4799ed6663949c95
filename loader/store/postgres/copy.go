package postgres

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/batchproc/batchproc/loader/store"
)

// copyReader streams the events of one or more batches (a group commit
// copies a group's batches in one COPY) as PostgreSQL binary COPY data for
// the columns (batch_id int8, seq int4, event_id text, type text,
// ts timestamptz, payload bytea), encoding a chunk of rows at a time into a
// reused buffer, so a batch of any size costs no allocation per row.
//
// pgconn reads it from a goroutine of its own, which on some error paths
// is still running when PgConn.CopyFrom returns. So reads and [release]
// are serialised by mu, and a read after release fails without touching the
// events: Store must not look at a batch once it has returned.
type copyReader struct {
	mu       sync.Mutex
	released bool

	parts []copyPart // what is left to encode; parts[0] is under way
	next  int        // index of the next event of parts[0] to encode
	ended bool       // trailer written
	buf   []byte
	off   int // read position in buf
}

// chunkSize is how much COPY data copyReader encodes ahead of the reader;
// one event larger than this makes a chunk of its own.
const chunkSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2*chunkSize); return &b }}

// copyHeader is the binary COPY signature, flags (0) and header extension
// length (0).
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

// copyPart is one batch's events and the id of its batches row.
type copyPart struct {
	batchID int64
	events  []store.Event
}

func newCopyReader(parts []copyPart) *copyReader {
	bp := bufPool.Get().(*[]byte)
	return &copyReader{parts: parts, buf: append((*bp)[:0], copyHeader...)}
}

// errReleased is what a read after release gets; pgconn only passes it on
// to a COPY that has already failed.
var errReleased = errors.New("postgres: COPY source read after the COPY ended")

// release waits for a read under way, returns the buffer to the pool and
// makes later reads fail.
func (r *copyReader) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.released = true
	if cap(r.buf) <= 4*chunkSize { // do not pin buffers grown by huge events
		b := r.buf[:0]
		bufPool.Put(&b)
	}
	r.buf, r.parts = nil, nil
}

// Read implements io.Reader.
func (r *copyReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released {
		return 0, errReleased
	}
	if r.off == len(r.buf) {
		if r.ended {
			return 0, io.EOF
		}
		r.fill()
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// fill replaces the consumed buffer with the next chunk of rows, and the
// trailer after the last.
func (r *copyReader) fill() {
	b := r.buf[:0]
	for len(r.parts) > 0 && len(b) < chunkSize {
		p := &r.parts[0]
		if r.next == len(p.events) {
			r.parts, r.next = r.parts[1:], 0
			continue
		}
		b = appendRow(b, p.batchID, int32(r.next), &p.events[r.next])
		r.next++
	}
	if len(r.parts) == 0 {
		b = binary.BigEndian.AppendUint16(b, 0xffff) // trailer: field count -1
		r.ended = true
	}
	r.buf, r.off = b, 0
}

// pgEpochMicros is 2000-01-01 UTC, PostgreSQL's timestamp epoch, in
// microseconds since the Unix epoch.
const pgEpochMicros = 946684800 * 1_000_000

func appendRow(b []byte, batchID int64, seq int32, e *store.Event) []byte {
	b = binary.BigEndian.AppendUint16(b, 6) // field count
	b = binary.BigEndian.AppendUint32(b, 8)
	b = binary.BigEndian.AppendUint64(b, uint64(batchID))
	b = binary.BigEndian.AppendUint32(b, 4)
	b = binary.BigEndian.AppendUint32(b, uint32(seq))
	b = appendText(b, e.ID)
	b = appendText(b, e.Type)
	if ts, null := store.CleanTS(e.TS); null {
		b = binary.BigEndian.AppendUint32(b, 0xffffffff) // NULL
	} else {
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(pgMicros(ts)))
	}
	// A nil payload is stored as an empty bytea, not NULL.
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Payload)))
	return append(b, e.Payload...)
}

func appendText(b []byte, s string) []byte {
	s = store.CleanText(s)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// pgMicros returns t as microseconds since 2000-01-01 UTC, truncated
// toward the past, as pgx encodes a timestamptz.
func pgMicros(t time.Time) int64 {
	return t.Unix()*1_000_000 + int64(t.Nanosecond())/1000 - pgEpochMicros
}
