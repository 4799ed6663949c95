package batchproc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	randv2 "math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// eventOverhead is what each event costs the memory budget besides its
// payload, newline and ID: its end offset and ID header in the batch.
const eventOverhead = 16

// errNoSpace is add's internal "the budget is full" signal: Add waits on it,
// TryAdd turns it into ErrFull.
var errNoSpace = errors.New("batchproc: no space")

// Processor batches events and hands the batches to a [Sink]. Create one
// with [New]; it is safe for concurrent use. Its methods are described in
// the package documentation's delivery contract.
type Processor struct {
	sink Sink
	cfg  config
	log  *slog.Logger

	// Events are copied into shards: each shard is a mutex and the batch
	// being filled. Async dispatch uses shards[0] alone until a busy stream
	// contends for it, then per-P shards handed out by shardPool, and goes
	// back to one shard when a batch has to linger (DESIGN.md has why).
	// Worker-pool dispatch has one shard per worker; ordered dispatch has
	// exactly one.
	shards    []shard
	adaptive  bool          // async mode: may move from one shard to per-P shards
	spread    bool          // worker pool: events go to a random worker's shard
	perP      atomic.Bool   // shards are taken from shardPool
	busy      atomic.Bool   // the last full batch filled within a quarter of the interval
	shardPool sync.Pool     // of *shard, for per-P locality
	rr        atomic.Uint32 // round-robin for shardPool.New
	contended atomic.Uint64 // Adds that found their shard locked

	// Memory budget: used counts bytes reserved by batches being filled,
	// queued or sent. Batches reserve it in chunks so that Add rarely
	// touches this shared counter.
	used  atomic.Int64
	chunk int
	// Adds blocked on the budget queue in arrival order; releases hand
	// budget to the queue's head directly (as x/sync/semaphore does), and
	// while anyone waits nobody else takes new budget, so a blocked Add is
	// never starved by later ones.
	waiters atomic.Int32 // len(waitq), readable without spaceMu
	spaceMu sync.Mutex
	waitq   []*waiter

	lanes []*lane

	// Batch completion, for Flush: batches are numbered as they are cut;
	// low is the smallest number not yet delivered or failed.
	outMu    sync.Mutex
	nextSeq  uint64
	low      uint64
	doneSeq  map[uint64]struct{} // completed numbers >= low
	flushers []flushWaiter

	keyPrefix string

	// Lifecycle.
	closed       atomic.Bool   // set first by Shutdown; read under shard locks
	closing      chan struct{} // closed once every shard was cut for the drain
	poke         chan struct{} // a batch got its first event: re-arm the linger timer
	stopLinger   chan struct{}
	lingerDone   chan struct{}
	sendCtx      context.Context
	abort        context.CancelCauseFunc
	running      atomic.Int32  // sender goroutines alive
	done         chan struct{} // closed when the last sender exited
	shutdownOnce sync.Once

	// Counters for Stats.
	delivered, failed, rejected, batches, retries atomic.Uint64
	inFlight                                      atomic.Int64
}

// shard is one buffer being filled, padded so that shards on different cores
// do not share a cache line.
type shard struct {
	mu    sync.Mutex
	b     *Batch
	lane  *lane
	added uint64       // events added through this shard; guarded by mu
	due   atomic.Int64 // when b must be sent (UnixNano), 0 when b is empty; read by the linger loop without mu
	_     [64]byte
}

type flushWaiter struct {
	target uint64 // every batch numbered below target must be done
	ch     chan struct{}
}

// New returns a running processor that sends batches to sink. It returns an
// error, and starts nothing, if sink is nil or an option is out of range.
func New(sink Sink, opts ...Option) (*Processor, error) {
	if sink == nil {
		return nil, errors.New("batchproc: New: nil Sink")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			return nil, errors.New("batchproc: New: nil Option")
		}
		o.apply(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var prefix [8]byte
	_, _ = rand.Read(prefix[:]) // crypto/rand.Read never fails (Go 1.24+)

	p := &Processor{
		sink:       sink,
		cfg:        cfg,
		log:        cfg.logger,
		doneSeq:    make(map[uint64]struct{}),
		keyPrefix:  "bp-" + hex.EncodeToString(prefix[:]) + "-",
		closing:    make(chan struct{}),
		poke:       make(chan struct{}, 1),
		stopLinger: make(chan struct{}),
		lingerDone: make(chan struct{}),
		done:       make(chan struct{}),
		nextSeq:    1,
		low:        1,
	}
	p.sendCtx, p.abort = context.WithCancelCause(context.Background())

	// Lanes: the queues senders take batches from.
	var nshards int
	switch {
	case cfg.ordered:
		nshards = 1
		p.lanes = []*lane{newLane(1)}
	case cfg.workers > 0:
		nshards = cfg.workers
		p.spread = nshards > 1
		p.lanes = make([]*lane, cfg.workers)
		for i := range p.lanes {
			p.lanes[i] = newLane(1)
		}
	default:
		nshards = maxShards()
		p.adaptive = true
		p.lanes = []*lane{newLane(cfg.maxInFlight)}
	}
	p.shards = make([]shard, nshards)
	for i := range p.shards {
		p.shards[i].lane = p.lanes[i%len(p.lanes)]
	}
	p.shardPool.New = p.newShard
	// A batch reserves budget in chunks of at most 32 KiB, and at most a
	// sixteenth of the budget is ever held in chunk remainders.
	p.chunk = min(32<<10, cfg.memLimit/(16*nshards))

	for _, l := range p.lanes {
		for range l.senders {
			p.running.Add(1)
			go p.sender(l)
		}
	}
	go p.lingerLoop()
	return p, nil
}

// maxShards is the number of shards async dispatch spreads over under
// contention: two per P, so that a goroutine preempted while holding one
// rarely makes another wait.
func maxShards() int {
	return min(2*runtime.GOMAXPROCS(0), 256)
}

// Add copies e into the current batch. While the memory budget is full it
// waits for space until ctx is done, and then returns ctx's error. It returns
// [ErrClosed] once Shutdown was called, [ErrEventTooLarge] for an event that
// could never be sent and [ErrInvalidEvent] for an empty payload or one
// containing a newline. A nil error means the event will be delivered or
// handed to the failure callback.
//
//go:noinline
func (p *Processor) Add(ctx context.Context, e Event) error {
	// An Event (5 words) is too big for the compiler to keep in registers
	// once it is a variable: inlined, Add would copy the caller's e through
	// the stack, and that copy stalls on store forwarding (~5 ns per call
	// here). Not inlined, e arrives in registers and goes on to add as
	// scalars. TryAdd is the same.
	return p.add(ctx, e.Payload, e.ID, true)
}

// TryAdd is Add without waiting: it returns [ErrFull] at once when the memory
// budget has no room for e.
//
//go:noinline
func (p *Processor) TryAdd(e Event) error {
	return p.add(context.Background(), e.Payload, e.ID, false) // ctx is unused: TryAdd never waits
}

// add is Add (wait true, with ctx) and TryAdd (wait false). Its body is
// the common case, kept small: a valid event, and a shard whose batch has
// the room, the buffer capacity and the reserved budget for it. It takes
// one uncontended lock, makes one copy and calls nothing else. Every other
// case goes to addSlow under the same lock.
//
// It does not check closed: Shutdown sets closed and then cuts every
// shard's batch under the shard's lock, leaving s.b nil, so an Add that
// starts after the cut finds no batch here and addSlow refuses it.
func (p *Processor) add(ctx context.Context, payload []byte, id string, wait bool) error {
	// The event is checked here once: addSlow, addWait and addWith,
	// reached only from here, take it as valid.
	size := len(payload) + 1
	cost := size + len(id) + eventOverhead
	if size == 1 || size > p.cfg.maxBytes || cost > p.cfg.memLimit || bytes.IndexByte(payload, '\n') >= 0 {
		return p.refuse(size, cost)
	}
	// shard(), written out: under RunParallel the call cost 8%.
	var s *shard
	pooled := p.perP.Load()
	switch {
	case pooled:
		s = p.shardPool.Get().(*shard)
	case p.spread:
		s = &p.shards[randv2.Uint32N(uint32(len(p.shards)))]
	default:
		s = &p.shards[0]
	}
	if !s.mu.TryLock() {
		p.contend()
		s.mu.Lock()
	}
	if b := s.b; b != nil {
		n, i := len(b.buf), len(b.ends)
		end := n + size
		if end <= cap(b.buf) && end <= p.cfg.maxBytes && i < cap(b.ends) && i < cap(b.ids) && b.cost+cost <= b.reserved {
			// Reslicing within capacity stores only lengths: no pointer
			// store, so no write barrier, except for a non-empty ID.
			b.buf = b.buf[:end]
			copy(b.buf[n:end-1], payload)
			b.buf[end-1] = '\n'
			b.ends = b.ends[:i+1]
			b.ends[i] = int32(end)
			b.ids = b.ids[:i+1]
			if id != "" {
				b.ids[i] = id // reset cleared the slot otherwise
			}
			b.cost += cost
			s.added++
			if i+1 >= p.cfg.maxEvents || end >= p.cfg.maxBytes {
				p.cutFull(s)
			}
			s.mu.Unlock()
			if pooled {
				p.shardPool.Put(s)
			}
			return nil
		}
	}
	// Anything else (no batch, no room, no budget chunk, closed) is
	// addSlow's, still under the lock.
	e := Event{ID: id, Payload: payload}
	err := p.addSlow(s, e, size, cost, 0) // unlocks s
	if pooled {
		p.shardPool.Put(s)
	}
	if err != errNoSpace {
		return err
	}
	if wait {
		return p.addWait(ctx, e)
	}
	p.relieve()
	p.rejected.Add(1)
	return ErrFull
}

// addWith adds a valid event e for an Add that waited for budget: grant is
// what it was handed, and goes into the event's batch. It returns
// errNoSpace when the grant could not be used (addSlow has the cases).
func (p *Processor) addWith(e Event, grant int) error {
	size := len(e.Payload) + 1
	cost := size + len(e.ID) + eventOverhead
	s, pooled := p.shard()
	s.mu.Lock()
	err := p.addSlow(s, e, size, cost, grant)
	if pooled {
		p.shardPool.Put(s)
	}
	return err
}

// shard picks the shard an event goes to; pooled reports that it came from
// shardPool and must be put back.
func (p *Processor) shard() (s *shard, pooled bool) {
	switch {
	case p.perP.Load():
		// Under contention each P keeps shards of its own in a sync.Pool:
		// Get hands this goroutine one that no other goroutine holds, usually
		// the one this P used last, still in its cache.
		return p.shardPool.Get().(*shard), true
	case p.spread: // worker pool: spread events over the workers' buffers
		return &p.shards[randv2.Uint32N(uint32(len(p.shards)))], false
	default:
		return &p.shards[0], false
	}
}

// refuse counts and explains an event add refused before taking a lock.
func (p *Processor) refuse(size, cost int) error {
	p.rejected.Add(1)
	if size > p.cfg.maxBytes || cost > p.cfg.memLimit {
		return ErrEventTooLarge
	}
	return ErrInvalidEvent
}

// addSlow is add when s has no batch, the event does not fit in it, its
// reserved budget is used up, or the processor is closed. It unlocks s.
func (p *Processor) addSlow(s *shard, e Event, size, cost, grant int) error {
	if p.closed.Load() {
		s.mu.Unlock()
		if grant > 0 {
			p.release(grant)
		}
		p.rejected.Add(1)
		return ErrClosed
	}
	b := s.b
	if b != nil && len(b.buf)+size > p.cfg.maxBytes {
		p.cutFull(s) // the event would take b past the byte limit
		b = nil
	}
	if b == nil {
		b = getBatch()
		s.b = b
	}
	b.reserved += grant // a grant always covers cost
	if b.cost+cost > b.reserved && !p.reserve(b, cost) {
		if len(b.ends) == 0 {
			s.b = nil
			putBatch(b)
		}
		s.mu.Unlock()
		return errNoSpace
	}
	b.cost += cost
	first := len(b.ends) == 0
	if first {
		s.due.Store(time.Now().Add(p.cfg.interval).UnixNano())
	}
	p.room(b, size)
	b.append(e)
	s.added++
	if len(b.ends) >= p.cfg.maxEvents || len(b.buf) >= p.cfg.maxBytes {
		p.cutFull(s)
	} else if first {
		select { // re-arm the linger timer for this batch
		case p.poke <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	return nil
}

// room grows b's buffers so that they take an event of the given size, and
// the fast path's next events, without append reallocating. append alone
// grows large slices by a quarter at a time, copying a big batch many times
// over; slices.Grow rounds a doubling up to nearly 2.5x, slack the memory
// budget does not see. So room sizes the new buffer itself: the full
// batch's projected size (the events so far, this one included, scaled to
// MaxBatchEvents, plus an eighth), at least double the old capacity and at
// most eight times it, within MaxBatchBytes. For events of one size that
// is one or two allocations per new batch and an eighth of slack. A
// recycled batch already has the room, so steady-state Adds allocate
// nothing.
func (p *Processor) room(b *Batch, size int) {
	if need := len(b.buf) + size; need > cap(b.buf) {
		old := max(cap(b.buf), 4<<10)
		projected := need / (len(b.ends) + 1) * p.cfg.maxEvents
		projected += projected / 8
		c := min(max(projected, 2*old), 8*old, p.cfg.maxBytes)
		b.buf = withCap(b.buf, max(c, need))
	}
	if len(b.ends) == cap(b.ends) || len(b.ids) == cap(b.ids) {
		n := max(len(b.ends)+1, min(2*cap(b.ends), p.cfg.maxEvents), 64)
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
// moves to per-P shards. (Contention is the visible tip of the real cost:
// one shard's lock and buffer bouncing between cores on every Add.)
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
		p.busy.Store(time.Now().UnixNano()-started < int64(p.cfg.interval/4))
	}
	p.cut(s)
}

// newShard is the shard pool's New: shards are handed out round-robin. Two
// Ps may then hold the same shard; its mutex keeps that correct.
func (p *Processor) newShard() any {
	return &p.shards[p.rr.Add(1)%uint32(len(p.shards))]
}

// reserve takes budget for an event of the given cost into b: a chunk if
// there is room, else just the cost. While Adds wait for budget it takes
// nothing: released budget goes to them first.
func (p *Processor) reserve(b *Batch, cost int) bool {
	if p.waiters.Load() > 0 {
		return false
	}
	want := int64(max(cost, p.chunk))
	limit := int64(p.cfg.memLimit)
	for {
		u := p.used.Load()
		take := want
		if u+take > limit {
			take = int64(cost)
			if u+take > limit {
				return false
			}
		}
		if p.used.CompareAndSwap(u, u+take) {
			b.reserved += int(take)
			return true
		}
	}
}

// release returns budget and hands what it can to waiting Adds.
func (p *Processor) release(n int) {
	p.used.Add(-int64(n))
	if p.waiters.Load() > 0 && p.grant() {
		p.relieve()
	}
}

// waiter is an Add blocked on the budget.
type waiter struct {
	need    int           // the event's cost
	granted int           // budget taken for it: need, up to a chunk; set before ready closes
	ready   chan struct{} // closed when granted
}

// grant hands free budget to waiting Adds in arrival order: each gets its
// event's cost and, if there is room, up to a chunk, so that the Adds
// behind it on the same shard proceed without waiting again. It stops at
// the first waiter that does not fit, keeping the order, and reports
// whether any is left waiting.
func (p *Processor) grant() bool {
	p.spaceMu.Lock()
	defer p.spaceMu.Unlock()
	limit := int64(p.cfg.memLimit)
	for len(p.waitq) > 0 {
		w := p.waitq[0]
		u := p.used.Load()
		free := limit - u
		if free < int64(w.need) {
			return true
		}
		take := min(free, int64(max(w.need, p.chunk)))
		if !p.used.CompareAndSwap(u, u+take) {
			continue
		}
		w.granted = int(take)
		close(w.ready)
		p.waitq[0] = nil
		p.waitq = p.waitq[1:]
		p.waiters.Store(int32(len(p.waitq)))
	}
	return false
}

// addWait is Add's slow path: queue for budget, in turn.
func (p *Processor) addWait(ctx context.Context, e Event) error {
	w := &waiter{need: len(e.Payload) + 1 + len(e.ID) + eventOverhead, ready: make(chan struct{})}
	p.spaceMu.Lock()
	p.waitq = append(p.waitq, w)
	p.waiters.Store(int32(len(p.waitq)))
	p.spaceMu.Unlock()
	// Budget freed since add failed is not announced again; and if nothing
	// is in flight, only open batches hold the budget: send them.
	if p.grant() {
		p.relieve()
	}
	select {
	case <-w.ready:
		return p.addWith(e, w.granted)
	case <-ctx.Done():
		p.leaveQueue(w)
		p.rejected.Add(1)
		return ctx.Err()
	case <-p.closing:
		p.leaveQueue(w)
		p.rejected.Add(1)
		return ErrClosed
	}
}

// leaveQueue removes a waiter that gives up, returning a grant it got
// meanwhile; the waiters behind it may fit now.
func (p *Processor) leaveQueue(w *waiter) {
	p.spaceMu.Lock()
	i := slices.Index(p.waitq, w)
	if i >= 0 {
		p.waitq = slices.Delete(p.waitq, i, i+1)
		p.waiters.Store(int32(len(p.waitq)))
	}
	p.spaceMu.Unlock()
	if i < 0 { // granted before we could leave
		p.release(w.granted)
	} else if i == 0 && p.grant() {
		p.relieve()
	}
}

// relieve sends the batches being filled when nothing else is queued or in
// flight: then only they hold budget, and only sending them frees it. It is
// called whenever an Add is left waiting: after a failed add, and after a
// release that could not serve the queue's head. (deliver marks a batch
// complete before releasing its budget, so the release that empties the
// pipeline sees it empty.)
func (p *Processor) relieve() {
	p.outMu.Lock()
	idle := p.nextSeq == p.low
	p.outMu.Unlock()
	if idle {
		p.cutAll()
	}
}

// cut hands s's batch to its lane. The caller holds s.mu: pushing under the
// lock orders the push before Shutdown's cut of the same shard, so no batch
// can reach a lane after the senders were told to finish.
func (p *Processor) cut(s *shard) {
	b := s.b
	s.b = nil
	s.due.Store(0)

	p.outMu.Lock()
	b.seq = p.nextSeq
	p.nextSeq++
	p.outMu.Unlock()
	b.key = p.keyPrefix + strconv.FormatUint(b.seq, 10)
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

// complete records that batch seq was delivered or failed and wakes the
// Flush calls waiting for it.
func (p *Processor) complete(seq uint64) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	if seq != p.low {
		p.doneSeq[seq] = struct{}{}
		return
	}
	p.low++
	for {
		if _, ok := p.doneSeq[p.low]; !ok {
			break
		}
		delete(p.doneSeq, p.low)
		p.low++
	}
	kept := p.flushers[:0]
	for _, w := range p.flushers {
		if w.target <= p.low {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(p.flushers[len(kept):])
	p.flushers = kept
}

// Flush sends every event added before the call, without waiting for the
// batches to fill or linger, and waits until each was delivered or handed to
// the failure callback. It returns ctx's error if ctx ends first (the sends
// go on), and [ErrClosed] after Shutdown. It is safe to call concurrently.
func (p *Processor) Flush(ctx context.Context) error {
	if p.closed.Load() {
		return ErrClosed
	}
	p.cutAll()
	p.outMu.Lock()
	target := p.nextSeq
	if p.low >= target {
		p.outMu.Unlock()
		return nil
	}
	w := flushWaiter{target: target, ch: make(chan struct{})}
	p.flushers = append(p.flushers, w)
	p.outMu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		p.outMu.Lock()
		for i, f := range p.flushers {
			if f.ch == w.ch {
				p.flushers = append(p.flushers[:i], p.flushers[i+1:]...)
				break
			}
		}
		p.outMu.Unlock()
		return ctx.Err()
	}
}

// Shutdown stops accepting events (Add, TryAdd and Flush return [ErrClosed],
// and Adds waiting for budget return it too), sends every event already
// added, and waits for the sends to finish. It returns nil once all were
// delivered or handed to the failure callback.
//
// If ctx ends first, the sends under way are cancelled, retries stop, every
// batch not delivered goes to the failure callback with a [ShutdownError],
// and Shutdown returns ctx's error after the processor's goroutines have
// exited. Shutdown is idempotent and safe to call concurrently; every call
// waits as described. A processor cannot be restarted.
func (p *Processor) Shutdown(ctx context.Context) error {
	p.shutdownOnce.Do(func() {
		p.closed.Store(true)
		close(p.stopLinger)
		<-p.lingerDone
		st := p.Stats()
		p.log.LogAttrs(ctx, slog.LevelInfo, "stopping, waiting for remaining events to be sent",
			slog.Uint64("pending", st.Pending), slog.Int("in_flight", st.InFlight))
		p.cutAll()
		close(p.closing)
	})
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.abort(ctx.Err())
		<-p.done // senders exit promptly once their sends see the cancellation
		return ctx.Err()
	}
}

// Stats returns a snapshot of the processor's counters. It is cheap: no lock
// is held against Add.
func (p *Processor) Stats() Stats {
	// Delivered and Failed are read before Added: every event they count was
	// added earlier, so Pending below cannot underflow.
	delivered, failed := p.delivered.Load(), p.failed.Load()
	var added uint64
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		added += s.added
		s.mu.Unlock()
	}
	return Stats{
		Added:         added,
		Delivered:     delivered,
		Failed:        failed,
		Pending:       added - delivered - failed,
		Rejected:      p.rejected.Load(),
		Batches:       p.batches.Load(),
		Retries:       p.retries.Load(),
		InFlight:      int(p.inFlight.Load()),
		BufferedBytes: p.used.Load(),
	}
}

// Stats are a processor's counters since New. Every added event is exactly
// one of delivered, failed or pending, so Added == Delivered + Failed +
// Pending in every snapshot.
type Stats struct {
	Added     uint64 // events accepted by Add or TryAdd
	Delivered uint64 // events in batches the sink accepted
	Failed    uint64 // events handed to the failure callback
	Pending   uint64 // events buffered, queued or being sent
	Rejected  uint64 // Add/TryAdd calls refused: full, closed, ctx done, too large or invalid

	Batches uint64 // batches delivered
	Retries uint64 // sends retried

	InFlight      int   // Send calls under way
	BufferedBytes int64 // bytes held against the memory limit
}

// lingerLoop sends each batch once it is the flush interval old.
func (p *Processor) lingerLoop() {
	defer close(p.lingerDone)
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-p.poke:
		case <-t.C:
		case <-p.stopLinger:
			return
		}
		// Only due shards are locked, so the scan does not get in the way
		// of Adds (nor count as contention).
		now := time.Now()
		nowNano := now.UnixNano()
		var next int64
		lingered := false
		for i := range p.shards {
			s := &p.shards[i]
			due := s.due.Load()
			if due == 0 {
				continue
			}
			if due <= nowNano {
				s.mu.Lock()
				if s.b != nil && len(s.b.ends) > 0 && s.due.Load() <= nowNano {
					p.cut(s)
					lingered = true
				}
				due = s.due.Load() // a new batch may have started meanwhile
				s.mu.Unlock()
				if due == 0 {
					continue
				}
			}
			if next == 0 || due < next {
				next = due
			}
		}
		if next != 0 {
			t.Reset(time.Duration(next - nowNano))
		}
		// A batch that had to linger means per-P shards are splitting a
		// stream too thin to fill them: go back to one shard, so a quiet
		// processor sends few, full batches. A busy one fills its batches
		// before they are due and stays spread.
		if lingered && p.adaptive && p.perP.Load() {
			p.perP.Store(false)
		}
	}
}
