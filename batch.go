package batchproc

import (
	"hash/crc32"
	"sync"
)

// Event is one event handed to [Processor.Add].
type Event struct {
	// ID is the event's or trace's id. Optional; it travels with the batch for
	// logs and sinks (a Kafka sink uses it as the record key).
	ID string
	// Payload is one encoded event, typically a JSON object. Add copies it, so
	// the caller may reuse its buffer at once. It must not be empty nor contain
	// a newline, since a batch is framed as newline-delimited payloads.
	Payload []byte
}

// A Batch is a group of events handed to [Sink.Send] or to the failure
// callback. It is valid only during that call: the processor reuses its
// memory afterwards, so a sink must neither keep it nor any slice it returns.
//
// A batch is never deep-copied on its way to the sink: the buffer that Add
// copied the payloads into is the one handed over, already framed as NDJSON.
type Batch struct {
	buf  []byte   // payloads, each followed by '\n'; buf[off:] starts this batch
	off  int      // start of this batch's first event in buf (non-zero only for a split half)
	ends []int32  // ends[i] is the offset in buf just past event i's newline
	ids  []string // ids[i] is event i's ID
	key  string

	seq      uint64 // position in cut order, for Flush
	cost     int    // memory budget used by the events
	reserved int    // memory budget held, >= cost

	journaled bool // appended to the processor's journal: it may be spilled while it waits
	// summed: sum is the CRC-32C of buf[off:], computed at the cut by a
	// processor with a journal (see NDJSONChecksum and cut).
	summed bool
	sum    uint32
	open   OpenBatch // a JournalOpener's copy of the events, until journaled
	// placed is open when buf is its memory (an OpenBuffer), until the batch
	// leaves memory; heap is buf's own buffer meanwhile, back at putBatch.
	// filled is where each Add stores len(buf), nil once open has no room.
	placed OpenBuffer
	filled *uint64
	heap   []byte
	// A spilled batch keeps only its key, seq and counts: its events are in
	// the journal, loaded again before its send. spilled is its event count
	// then (Len is 0), loadCost the budget it takes once loaded.
	spilled  int
	loadCost int
}

// count is Len, also for a spilled batch.
func (b *Batch) count() int {
	if b.spilled > 0 {
		return b.spilled
	}
	return len(b.ends)
}

// Key returns the batch's idempotency key: unique per batch (it embeds a
// random per-processor prefix and a sequence number) and the same on every
// retry of that batch. It uses only the characters [A-Za-z0-9._:-].
func (b *Batch) Key() string { return b.key }

// Len returns the number of events in the batch.
func (b *Batch) Len() int { return len(b.ends) }

// Event returns the i-th event, 0 <= i < Len(). Its Payload aliases the
// batch's buffer (no newline included) and is valid as long as the batch.
func (b *Batch) Event(i int) Event {
	start := b.off
	if i > 0 {
		start = int(b.ends[i-1])
	}
	return Event{ID: b.ids[i], Payload: b.buf[start : b.ends[i]-1 : b.ends[i]-1]}
}

// NDJSON returns every payload of the batch, each followed by '\n', as one
// slice aliasing the batch's buffer: no copy is made. It is the body of a
// protocol.md request with Content-Type application/x-ndjson.
func (b *Batch) NDJSON() []byte {
	if len(b.ends) == 0 {
		return nil
	}
	end := b.ends[len(b.ends)-1]
	return b.buf[b.off:end:end] // capped: appending to it must not overwrite what follows (a Split's other half)
}

// NDJSONChecksum returns the CRC-32C (Castagnoli) of b.NDJSON(), and true,
// if the processor computed it: it does when it cuts a batch and has a
// journal ([WithJournal]), which may use it rather than read the whole
// batch again to checksum what it writes. (At the cut the batch's bytes
// are in the cache of the core that added them; a journal's appender
// reads them from another core's.) It returns false for any other batch:
// a [Batch.Split] half, one from [NewBatch], and one whose [OpenRecord]
// said at the cut that it is the batch's record (the journal writes
// nothing for it).
func (b *Batch) NDJSONChecksum() (uint32, bool) { return b.sum, b.summed }

// castagnoli is the CRC-32C table of NDJSONChecksum.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Size returns len(b.NDJSON()).
func (b *Batch) Size() int {
	if len(b.ends) == 0 {
		return 0
	}
	return int(b.ends[len(b.ends)-1]) - b.off
}

// Split returns the batch's two halves, the first holding Len()/2 events,
// with keys derived from the batch's: Key()+".0" and Key()+".1". They share
// the batch's buffer (no copy) and are valid as long as it. A sink uses it to
// resend a batch the receiver found too large. Split panics if Len() < 2.
func (b *Batch) Split() (*Batch, *Batch) {
	n := len(b.ends)
	if n < 2 {
		panic("batchproc: Split of a batch with fewer than 2 events")
	}
	mid := n / 2
	left := &Batch{buf: b.buf, off: b.off, ends: b.ends[:mid:mid], ids: b.ids[:mid:mid], key: b.key + ".0"}
	right := &Batch{buf: b.buf, off: int(b.ends[mid-1]), ends: b.ends[mid:], ids: b.ids[mid:], key: b.key + ".1"}
	return left, right
}

// tail returns a view of b's events n to Len()-1, under b's key, sharing
// b's memory (0 < n < Len()).
func (b *Batch) tail(n int) *Batch {
	return &Batch{buf: b.buf, off: int(b.ends[n-1]), ends: b.ends[n:], ids: b.ids[n:], key: b.key}
}

// NewBatch returns a batch holding copies of events under the given key. The
// processor makes its own batches; NewBatch is for testing a [Sink] or
// resending events kept elsewhere (a spool). It returns [ErrInvalidEvent]
// (wrapped) for an empty payload or one containing a newline.
func NewBatch(key string, events ...Event) (*Batch, error) {
	size := 0
	for _, e := range events {
		if err := checkPayload(e.Payload); err != nil {
			return nil, err
		}
		size += len(e.Payload) + 1
	}
	// Sized once: append alone would grow the buffer event by event
	// (DESIGN.md, "Benchmark history").
	b := &Batch{key: key, buf: make([]byte, 0, size), ends: make([]int32, 0, len(events)), ids: make([]string, 0, len(events))}
	for _, e := range events {
		b.append(e)
	}
	return b, nil
}

// append copies e into the batch: the only copy of a payload the processor
// makes on its way to the sink.
func (b *Batch) append(e Event) {
	n := len(b.buf)
	end := n + len(e.Payload) + 1
	if end > cap(b.buf) {
		b.buf = append(b.buf, make([]byte, len(e.Payload)+1)...)
	}
	buf := b.buf[:end]
	copy(buf[n:], e.Payload)
	buf[end-1] = '\n'
	b.buf = buf
	b.ends = append(b.ends, int32(end))
	b.ids = append(b.ids, e.ID)
}

// compact moves a batch whose buffers are mostly empty (a batch cut by its
// linger, in a buffer recycled from a fuller one or grown ahead of its
// events) into buffers of its own size, and recycles the big ones: so a
// queued or in-flight batch holds about what the budget counts for it
// (WithMemoryLimit states the bound). A batch that filled its buffers is
// returned as it is: the busy path copies nothing.
func compact(b *Batch) *Batch {
	if b.placed != nil { // buf is an OpenBuffer's, not the heap's
		return b
	}
	n, m := len(b.buf), len(b.ends)
	if cap(b.buf) <= n+n/4+512 && cap(b.ends) <= m+m/4+16 && cap(b.ids) <= m+m/4+16 {
		return b
	}
	spare := &Batch{buf: b.buf, ends: b.ends, ids: b.ids}
	b.buf = append([]byte(nil), b.buf...)
	b.ends = append([]int32(nil), b.ends...)
	b.ids = append([]string(nil), b.ids...)
	putBatch(spare)
	return b
}

// place makes ob's memory b's buffer, if it has room for maxBytes; b is
// empty.
func (b *Batch) place(ob OpenBuffer, maxBytes int) {
	buf, filled := ob.Buffer()
	if cap(buf) < maxBytes || filled == nil {
		return // then ob keeps copies, by Add
	}
	b.heap, b.buf = b.buf, buf[:0]
	b.placed, b.filled = ob, filled
}

// unplace copies a placed b's events into its own buffer: the OpenBuffer's
// memory is no longer used. b.open stays for the caller to close.
func (b *Batch) unplace() {
	if b.placed == nil {
		return
	}
	h := b.heap
	if cap(h) < len(b.buf) {
		h = make([]byte, len(b.buf))
	}
	h = h[:len(b.buf)]
	copy(h, b.buf)
	b.buf, b.heap = h, nil
	b.placed, b.filled = nil, nil
}

// keep hands event i, just added, to b's OpenBatch: its ID and then the
// filled length when b is placed, a copy otherwise.
func (b *Batch) keep(i int, e Event) {
	switch {
	case b.filled != nil:
		if e.ID == "" || b.placed.AddID(i, e.ID) {
			*b.filled = uint64(len(b.buf))
		} else {
			b.filled = nil
		}
	case b.placed == nil:
		b.open.Add(e)
	}
}

// reset empties the batch for reuse, keeping its capacity.
func (b *Batch) reset() {
	b.buf = b.buf[:0]
	b.off = 0
	b.ends = b.ends[:0]
	clear(b.ids) // drop references to the callers' ID strings
	b.ids = b.ids[:0]
	b.key = ""
	b.seq = 0
	b.cost = 0
	b.reserved = 0
	b.journaled = false
	b.summed, b.sum = false, 0
	b.spilled, b.loadCost = 0, 0
}

// batchPool recycles batches and their buffers across processors: a
// delivered batch's buffer is the next batch's, so steady-state Add
// allocates nothing.
var batchPool = sync.Pool{New: func() any { return new(Batch) }}

func getBatch() *Batch { return batchPool.Get().(*Batch) }

// putBatch returns b to the pool unless its buffer grew unusually large.
func putBatch(b *Batch) {
	if b.open != nil {
		if b.placed != nil { // buf goes back to the heap's before Close unmaps it
			b.buf, b.heap = b.heap, nil
			b.placed, b.filled = nil, nil
		}
		b.open.Close()
		b.open = nil
	}
	const maxPooled = 16 << 20
	if cap(b.buf) > maxPooled {
		return
	}
	b.reset()
	batchPool.Put(b)
}
