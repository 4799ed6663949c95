package batchproc

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	randv2 "math/rand/v2"
	"runtime"
	"strconv"
)

// eventOverhead is what each event costs the memory budget besides its
// payload, newline and ID bytes: its end offset (4 bytes) and ID header (16)
// in the batch.
const eventOverhead = 20

// batchOverhead is what a batch costs the budget besides its events: the
// Batch itself and its key. It is charged with the batch's first event.
const batchOverhead = 256

// errNoSpace is add's internal "the budget is full" signal: Add waits on it,
// TryAdd turns it into ErrFull.
var errNoSpace = errors.New("batchproc: no space")

// Add copies e into the current batch. While the memory budget is full it
// waits for space until ctx is done, and then returns ctx's error. It returns
// [ErrClosed] once Shutdown was called, [ErrEventTooLarge] for an event that
// could never be sent and [ErrInvalidEvent] for an empty payload or one
// containing a newline. A nil error means the event will be delivered or
// handed to the failure callback.
//
// Called from a callback ([Sink.Send] or the [WithOnFailure] function), Add
// does not wait: it returns [ErrFull] when the budget is full, since the
// budget it would wait for may be held by the very batch of that callback.
//
//go:noinline
func (p *Processor) Add(ctx context.Context, e Event) error {
	// An Event (5 words) is too big for the compiler to keep in registers
	// once it is a variable: inlined, Add would copy the caller's e through
	// the stack, and that copy stalls on store forwarding. Not inlined, e
	// arrives in registers and goes on as scalars (DESIGN.md, "The fast
	// path"). TryAdd is the same.
	if p.addFast(e.Payload, e.ID) {
		return nil
	}
	return p.add(ctx, e.Payload, e.ID, true)
}

// TryAdd is Add without waiting: it returns [ErrFull] at once when the memory
// budget has no room for e.
//
//go:noinline
func (p *Processor) TryAdd(e Event) error {
	if p.addFast(e.Payload, e.ID) {
		return nil
	}
	return p.add(context.Background(), e.Payload, e.ID, false) // ctx is unused: TryAdd never waits
}

// addFast is the common case of Add and TryAdd, kept apart so that it
// holds few values across its calls (each call clobbers every register, and
// what is live across it goes through the stack): a valid event, and a
// shard whose batch has the room, the buffer capacity and the reserved
// budget for it, with no Add queued for budget. It takes one lock, makes one
// copy, and reports whether it added the event; when it did not, it changed
// nothing and add takes over, from the start.
//
// It does not check closed: Shutdown sets closed and then cuts every
// shard's batch under the shard's lock, leaving s.b nil, so an Add that
// starts after the cut finds no batch here and addSlow refuses it.
func (p *Processor) addFast(payload []byte, id string) bool {
	size := len(payload) + 1
	if size == 1 || bytes.IndexByte(payload, '\n') >= 0 {
		return false
	}
	// pickShard, written out (DESIGN.md, "The fast path").
	var s *shard
	pooled := p.perP.Load()
	switch {
	case pooled:
		s = p.shardPool.Get().(*shard)
	case p.pool:
		s = p.poolShard()
	default:
		s = &p.shards[0]
	}
	if !s.mu.TryLock() {
		p.contend()
		s.mu.Lock()
	}
	// The atomic load comes before the batch's fields are read: the
	// compiler does not reuse a load across it, and would then check the
	// bounds below again.
	b := s.b
	if b == nil || p.mem.waiting() {
		return p.fastMiss(s, pooled)
	}
	n, i := len(b.buf), len(b.ends)
	end := n + size
	cost := size + len(id) + eventOverhead
	// end <= maxBytes and the reserve also refuse what add would call too
	// large: a batch reserves at most the memory limit.
	if end > cap(b.buf) || end > p.cfg.maxBytes || i >= cap(b.ends) || i >= cap(b.ids) || b.cost+cost > b.reserved {
		return p.fastMiss(s, pooled)
	}
	// Reslicing within capacity stores only lengths: no pointer store, so
	// no write barrier, except for a non-empty ID. The bookkeeping comes
	// before the copy, so that little is live across memmove.
	b.ends = b.ends[:i+1]
	b.ends[i] = int32(end)
	b.ids = b.ids[:i+1]
	if id != "" {
		b.ids[i] = id // reset cleared the slot otherwise
	}
	b.cost += cost
	s.added++
	b.buf = b.buf[:end]
	b.buf[end-1] = '\n'
	copy(b.buf[n:], payload)
	if b.open != nil {
		if f := b.filled; f != nil && id == "" {
			*f = uint64(end) // b is placed: the copy above was the one kept
		} else {
			b.keep(i, Event{ID: id, Payload: payload})
		}
	}
	if len(b.ends) >= p.cfg.maxEvents || len(b.buf) >= p.cfg.maxBytes {
		p.cutFull(s)
		s.mu.Unlock()
		if pooled {
			p.shardPool.Put(s)
		}
		p.yieldIfBehind(s.lane)
		return true
	}
	s.mu.Unlock()
	if pooled {
		p.shardPool.Put(s)
	}
	return true
}

// fastMiss is addFast giving up: it changed nothing, and add starts over.
func (p *Processor) fastMiss(s *shard, pooled bool) bool {
	s.mu.Unlock()
	if pooled {
		p.shardPool.Put(s)
	}
	return false
}

// yieldIfBehind lets the senders run after an Add cut a batch, if batches
// cut before it are still waiting for a sender (l's batches queued or
// being sent, less the sends under way, is more than the one just cut).
// When every P runs Adds that do not block, a sender the cut woke waits in
// the run queue of the Add's P until the Add goroutine is preempted, up to
// 10 ms, and in 10 ms the Adds fill the budget with batches nobody sends;
// then they all wait for it. One Gosched per batch, and only when the
// senders are behind, keeps them running.
//
// Behind a journal, l is an append lane, and it does not yield: the append
// gate already stops a cut while its appenders have a few batches not yet
// written (appendQueue), and that wait lets them run; an appender yields
// in turn to the senders when batches it journaled wait for one. A yield there cost
// more than it gave: the appender it let run kept the P for a whole
// batch's write, and Add's time per event at a paced 200,000 events/s
// with a spool was 219-276 ns against 96 without a spool, and is 78-82
// without the yield (BenchmarkProcessorAddPaced, quiet machine).
func (p *Processor) yieldIfBehind(l *lane) {
	if l.gate == nil && int64(l.outstanding.Load())-p.inFlight.Load() > 1 {
		runtime.Gosched()
	}
}

// add is Add (wait true, with ctx) and TryAdd (wait false) when addFast
// did not take the event: it refuses an invalid event, or takes the shard's
// lock again and leaves the event to addSlow, which handles every case
// addFast does not (and the common one too, should another Add have made
// room meanwhile).
func (p *Processor) add(ctx context.Context, payload []byte, id string, wait bool) error {
	// The event is checked here once: addSlow and addWait, reached only
	// from here, take it as valid.
	size := len(payload) + 1
	cost := size + len(id) + eventOverhead
	if size == 1 || size > p.cfg.maxBytes || cost+batchOverhead > p.cfg.memLimit || bytes.IndexByte(payload, '\n') >= 0 {
		return p.refuse(size, cost)
	}
	s, pooled := p.pickShard()
	s.mu.Lock()
	e := Event{ID: id, Payload: payload}
	err := p.addSlow(s, e, size, cost, 0) // unlocks s
	if pooled {
		p.shardPool.Put(s)
	}
	if err != errNoSpace {
		return err
	}
	if wait && !p.callbacks.current() {
		return p.addWait(ctx, e, cost+batchOverhead)
	}
	p.cutIfIdle() // only unsent batches may hold the budget
	p.rejected.Add(1)
	p.onReject(ErrFull)
	return ErrFull
}

// addWait is Add's slow path: queue for budget, in turn, then add with the
// grant.
func (p *Processor) addWait(ctx context.Context, e Event, need int) error {
	grant, err := p.mem.wait(ctx, p.closing, need, p.cutIfIdle)
	if err != nil {
		p.rejected.Add(1)
		p.onReject(err)
		return err
	}
	s, pooled := p.pickShard()
	s.mu.Lock()
	err = p.addSlow(s, e, len(e.Payload)+1, need-batchOverhead, grant) // unlocks s
	if pooled {
		p.shardPool.Put(s)
	}
	// The event now sits in an open batch with its grant. If Adds are still
	// queued behind it and nothing is being sent, no release will come to
	// serve them until that batch is sent: send it now, not at its linger.
	if p.mem.waiting() {
		p.cutIfIdle()
	}
	return err
}

// pickShard picks the shard an event goes to; pooled reports that it came
// from shardPool and must be put back.
func (p *Processor) pickShard() (s *shard, pooled bool) {
	switch {
	case p.perP.Load():
		// Under contention each P keeps shards of its own in a sync.Pool:
		// Get hands this goroutine one that no other goroutine holds, usually
		// the one this P used last, still in its cache.
		return p.shardPool.Get().(*shard), true
	case p.pool:
		return p.poolShard(), false
	default:
		return &p.shards[0], false
	}
}

// poolShard picks a worker for an event in worker-pool mode: one that can
// send it, as a seed worker blocked in its send stops reading the queue. A
// worker with no batch queued or being sent is taken at once; otherwise
// the least loaded of a few random picks. So a stuck worker is picked only
// when every worker sampled has at least as many batches outstanding, and
// each batch it collects makes that less likely.
func (p *Processor) poolShard() *shard {
	n := uint32(len(p.shards))
	best := &p.shards[randv2.Uint32N(n)]
	load := best.lane.outstanding.Load()
	for range 3 {
		if load == 0 {
			break
		}
		s := &p.shards[randv2.Uint32N(n)]
		if l := s.lane.outstanding.Load(); l < load {
			best, load = s, l
		}
	}
	return best
}

// refuse counts and explains an event add refused before taking a lock.
func (p *Processor) refuse(size, cost int) error {
	p.rejected.Add(1)
	err := ErrInvalidEvent
	if size > p.cfg.maxBytes || cost+batchOverhead > p.cfg.memLimit {
		err = ErrEventTooLarge
	}
	p.onReject(err)
	return err
}

// addSlow is add when s has no batch, the event does not fit in it, its
// reserved budget is used up, Adds are queued for budget, or the processor
// is closed. grant is budget an Add was handed after waiting; it always
// covers the event's cost. It unlocks s.
func (p *Processor) addSlow(s *shard, e Event, size, cost, grant int) error {
	if p.closed.Load() {
		s.mu.Unlock()
		if grant > 0 && p.mem.release(grant) {
			p.cutIfIdle()
		}
		p.rejected.Add(1)
		p.onReject(ErrClosed)
		return ErrClosed
	}
	b := s.b
	if b != nil && len(b.buf)+size > p.cfg.maxBytes {
		p.cutFull(s) // the event would take b past the byte limit
		b = nil
	}
	if b == nil {
		b = getBatch()
		if o := p.opener; o != nil {
			if b.open = o.OpenBatch(p.cfg.maxBytes); b.open == nil {
				p.unguarded.Add(1)
			} else if ob, ok := b.open.(OpenBuffer); ok {
				b.place(ob, p.cfg.maxBytes)
			}
		}
		s.b = b
	}
	first := len(b.ends) == 0
	if first {
		cost += batchOverhead
	}
	// A grant covers the event and a new batch's overhead. Without one,
	// queued Adds come first, even where b's reserve has room.
	b.reserved += grant
	if grant == 0 && p.mem.waiting() || b.cost+cost > b.reserved && !p.reserve(b, cost) {
		if first {
			s.b = nil
			putBatch(b)
		}
		s.mu.Unlock()
		return errNoSpace
	}
	b.cost += cost
	if first {
		s.due.Store(p.deadline())
	}
	p.growFor(b, size)
	b.append(e)
	if b.open != nil {
		b.keep(len(b.ends)-1, e)
	}
	s.added++
	if len(b.ends) >= p.cfg.maxEvents || len(b.buf) >= p.cfg.maxBytes {
		p.cutFull(s)
	} else if first {
		select { // re-arm the linger timer for this batch
		case p.wake <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	return nil
}

// reserve takes budget for cost more bytes into b.
func (p *Processor) reserve(b *Batch, cost int) bool {
	n := p.mem.reserve(cost)
	b.reserved += n
	return n > 0
}

// growFor grows b's buffers so that they take an event of the given size,
// and the fast path's next events, without append reallocating. append
// alone grows large slices by a quarter at a time, copying a big batch many
// times over; slices.Grow rounds a doubling up to nearly 2.5x, slack the
// memory budget does not see. So growFor sizes the new buffer itself: the
// full batch's projected size (the events so far, this one included, scaled
// to MaxBatchEvents, plus an eighth), at least a quarter more than the old
// capacity and at most eight times it, within MaxBatchBytes. For events of
// one size that is one or two allocations per new batch and an eighth of
// slack. A recycled batch already has the room, so steady-state Adds
// allocate nothing.
//
// The floor is a quarter, not a doubling: a partial batch leaves buffers of
// any size in the pool, and doubling a 140 KB one for a 200 KB batch made
// the full batch too loose for compact, which copied it at its cut
// (TestFullBatchIsNotCopiedAtItsCut; half the cuts of a saturated spooled
// processor did).
func (p *Processor) growFor(b *Batch, size int) {
	if need := len(b.buf) + size; need > cap(b.buf) {
		old := max(cap(b.buf), 4<<10)
		projected := need / (len(b.ends) + 1) * p.cfg.maxEvents
		projected += projected / 8
		c := min(max(projected, old+old/4), 8*old, p.cfg.maxBytes)
		b.buf = withCap(b.buf, max(c, need))
	}
	if len(b.ends) == cap(b.ends) || len(b.ids) == cap(b.ids) {
		n := max(len(b.ends)+1, min(2*cap(b.ends), p.cfg.maxEvents), min(64, p.cfg.maxEvents))
		b.ends, b.ids = withCap(b.ends, n), withCap(b.ids, n)
	}
}

// withCap returns a copy of s with capacity c exactly (slices.Grow would
// round it up).
func withCap[S ~[]E, E any](s S, c int) S {
	t := make(S, len(s), c)
	copy(t, s)
	return t
}

// contend records that an Add found its shard locked: async dispatch then
// moves to per-P shards, if the stream is busy. (Contention is the visible
// tip of the real cost: one shard's lock and buffer bouncing between cores
// on every Add.)
func (p *Processor) contend() {
	p.contended.Add(1)
	if p.adaptive && !p.perP.Load() && p.busy.Load() {
		p.perP.Store(true)
	}
}

// cutFull cuts a batch that reached a size limit, noting whether it filled
// within a quarter of the flush interval: only then is the stream busy
// enough for per-P shards to pay. A service at the seed's 2,000 events/s
// fills a 1,000-event batch in 0.5 s and keeps one shard, so one batch per
// fill and no extra linger for its events, however many handlers collide.
func (p *Processor) cutFull(s *shard) {
	if p.adaptive {
		started := s.due.Load() - int64(p.cfg.interval)
		p.busy.Store(p.now()-started < int64(p.cfg.interval/4))
	}
	p.cut(s)
}

// newShard is the shard pool's New: shards are handed out round-robin. Two
// Ps may then hold the same shard; its mutex keeps that correct.
func (p *Processor) newShard() any {
	return &p.shards[p.rr.Add(1)%uint32(len(p.shards))]
}

// cut hands s's batch to its lane. The caller holds s.mu: pushing under the
// lock orders the push before Shutdown's cut of the same shard, so no batch
// can reach a lane after the senders were told to finish.
func (p *Processor) cut(s *shard) {
	b := s.b
	s.b = nil
	s.due.Store(0)
	b = compact(b)
	// The batch takes no more events: hand back the rest of its reserve, so
	// that a queued batch holds what it costs, not a chunk (a thin stream
	// behind a stuck sink would otherwise fill the budget with leftovers).
	// A cut batch is about to be sent, so a waiter left waiting here is
	// served by its completion.
	if spare := b.reserved - b.cost; spare > 0 {
		b.reserved = b.cost
		_ = p.mem.release(spare)
	}
	b.seq = p.completion.number()
	b.key = p.keyPrefix + strconv.FormatUint(b.seq, 10)
	record := false
	if b.open != nil {
		if r, ok := b.open.(OpenRecord); ok && b.placed != nil {
			record = r.SealRecord(b.key)
		} else {
			b.open.Seal(b.key)
		}
	}
	if p.jr != nil && !record {
		// The journal checksums what it writes. Here, on the core whose
		// Adds (per-P shards) filled the batch, its bytes are in cache:
		// 11 ns a 200-byte event at 18 GB/s (spool's BenchmarkChecksum),
		// where the journal's appender, on another core, read them at
		// about 2.7 GB/s (a fifth of a saturated spool's CPU, in its
		// profile), and a checksum kept per Add took 37 ns an event
		// (CRC-32C of a short slice runs one stream). A batch whose
		// region is its record is not written: no checksum.
		b.sum, b.summed = crc32.Checksum(b.buf[b.off:], castagnoli), true
	}
	s.lane.push(b)
}

// cutAll cuts every shard's non-empty batch.
func (p *Processor) cutAll() {
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		if s.b != nil && len(s.b.ends) > 0 {
			p.cut(s)
		}
		s.mu.Unlock()
	}
}

// cutIfIdle sends the batches being filled when nothing is queued or being
// sent: then only they hold budget, and only sending them frees it. It is
// called whenever an Add is left waiting or refused for budget: after a
// failed TryAdd, when an Add queues, after an Add served from the queue
// leaves others queued, and after a release that could not serve the
// queue's head. (A batch is marked complete before its budget is released,
// so the release that empties the pipeline sees it empty.)
//
// With a journal, the queued batches that are in it leave memory too.
func (p *Processor) cutIfIdle() {
	if p.completion.idle() {
		p.cutAll()
	}
	if p.jr != nil {
		p.spillQueued()
	}
}
