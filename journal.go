package batchproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
)

// A Journal keeps cut batches on durable storage from before their first
// send until they leave the processor (delivered, or failed permanently),
// so that a crash of the process loses none of them: the next processor on
// the same journal sends them again, under the same keys. The spool package
// implements it on disk (spool.WithSpool); [WithJournal] plugs any
// implementation in.
//
// The processor calls its methods from its own goroutines, concurrently;
// none of them from the Add path.
type Journal interface {
	// Append records b (its key, and every event's ID and payload, in
	// order) before b's first send. An error wrapping [ErrFull] means no
	// room: the processor keeps and sends b from memory, unjournaled, so
	// the memory budget fills and Add pushes back. Any other error is
	// logged and treated the same way. Append must not keep b.
	Append(b *Batch) error
	// Ack records that the batch with this key left the processor:
	// delivered, or failed permanently. It is never replayed after that.
	Ack(key string) error
	// Load returns a copy of a batch appended and not acked, read back: a
	// batch waiting for a retry leaves memory and is loaded again for its
	// next attempt. For a batch the journal dropped on its own (see
	// [JournalDropper]) it returns an error wrapping [ErrDropped].
	Load(key string) (*Batch, error)
	// Replay calls f, in Append order, for each batch a previous processor
	// left in the journal (appended, never acked). f owns the batch it is
	// given. Replay stops at f's first error and returns it; the batches not
	// replayed stay in the journal.
	Replay(f func(b *Batch) error) error
	// Close releases the journal. What was not acked stays for the next
	// processor.
	Close() error
}

// A JournalDropper is a [Journal] that may drop batches on its own, a
// disk budget full with drop-oldest: New calls OnDrop once with the
// function the journal must call for each batch it drops. The processor
// counts the batch's events as failed and hands it to the failure callback
// with [ErrDropped].
type JournalDropper interface {
	Journal
	OnDrop(f func(b *Batch))
}

// A JournalWriter is a [Journal] that can write a batch without waiting
// for it to be durable against a power loss: Write returns once a crash
// of the process can no longer lose b, with a function that waits until b
// is durable and returns the error that kept it from being so. The
// processor writes with it when it can: an appender then has the next
// batches written while an fsync runs, and the batches waiting for a
// journal (the crash bound) are those not yet written.
type JournalWriter interface {
	Journal
	Write(b *Batch) (durable func() error, err error)
}

// A JournalOpener is a [Journal] that also keeps the events of the batches
// being filled, so that a crash of the process loses no event whose Add
// returned nil, not even in the batch still open: the next processor on
// the same journal gets those events back from Replay, as batches. (The
// spool keeps them in memory-mapped files: what Add copies there is in the
// kernel's page cache, which a killed process cannot lose.)
type JournalOpener interface {
	Journal
	// OpenBatch is called when a batch gets its first event, under its
	// shard's lock, with the batch byte limit. It returns nil when it has
	// no room: that batch is filled unguarded, as without a JournalOpener.
	OpenBatch(maxBytes int) OpenBatch
}

// An OpenBatch keeps the events of one batch being filled, for a
// [JournalOpener]. Add and Seal are called under the batch's shard lock;
// Close later, from any of the processor's goroutines; never two at once.
type OpenBatch interface {
	// Add keeps e, the batch's next event, before Processor.Add returns.
	Add(e Event)
	// Seal records the key the batch got when it was cut.
	Seal(key string)
	// Close says the batch is in the journal (its Append returned nil) or
	// has left the processor: what was kept is forgotten.
	Close()
}

// An OpenBuffer is an [OpenBatch] that the batch is filled in: its Buffer
// is the batch's own buffer, so Add copies an event once, into memory the
// [JournalOpener] keeps (the spool's memory-mapped region), rather than
// into the batch and then again into the OpenBatch. The processor then
// never calls Add: it writes each event's bytes (the payload and its
// newline) into Buffer's memory, calls AddID for an event with an ID, and
// then stores the buffer's new length into filled. A crash leaves filled
// covering only events whose bytes and ID are in place.
type OpenBuffer interface {
	OpenBatch
	// Buffer returns the memory the batch is filled in (length 0, capacity
	// at least the maxBytes given to OpenBatch) and the word the processor
	// stores the filled length of it in, a plain store, after each event.
	// It is called once, before the batch's first event.
	Buffer() (buf []byte, filled *uint64)
	// AddID keeps the ID of the batch's event i, before the length that
	// covers event i is stored. It returns false if it has no room: the
	// processor then stores no more lengths, and the batch's later events
	// are not kept.
	AddID(i int, id string) bool
	// Journaled is called in place of Close once the batch is in the
	// journal: what was kept is forgotten, but Buffer's memory stays the
	// batch's until Close, called when the batch leaves the processor or
	// its events leave memory. keep false asks the processor to let go of
	// the memory now: it copies the batch out, then calls Close.
	Journaled() (keep bool)
}

// An OpenRecord is an [OpenBuffer] that can be its batch's record in the
// journal itself, so that the journal writes nothing more for the batch
// (the spool does so under SyncNever: a record it writes would be in the
// same page cache as the region). The processor calls SealRecord in place
// of Seal when the batch was filled in Buffer's memory.
type OpenRecord interface {
	OpenBuffer
	// SealRecord is Seal, and reports whether the buffer will be the
	// batch's record: then the processor does not checksum the batch at
	// its cut ([Batch.NDJSONChecksum] reports false), as the journal needs
	// no checksum to write it. The journal decides again when the batch is
	// appended, and writes a record (checksumming it then) if it must.
	SealRecord(key string) (record bool)
}

// ErrDropped is the failure reason of a batch the journal dropped to make
// room ([JournalDropper]).
var ErrDropped = errors.New("batchproc: batch dropped from the journal to make room")

// LeftInJournalError is part of the error [Processor.Shutdown] returns when
// its context ended with batches not yet delivered that are in the journal:
// they are not failed but kept there, and the next processor on the same
// journal sends them.
type LeftInJournalError struct {
	Batches int // batches the processor held, not delivered
	Events  int // their events
	// Unread counts the batches a previous processor left that the
	// replay had not read back yet, for a journal that can say
	// ([JournalBacklog]); their events are not counted.
	Unread int
}

func (e *LeftInJournalError) Error() string {
	if e.Unread > 0 {
		return fmt.Sprintf("batchproc: %d events in %d batches left in the journal for the next start, and %d batches a previous processor left not read back",
			e.Events, e.Batches, e.Unread)
	}
	return fmt.Sprintf("batchproc: %d events in %d batches left in the journal for the next start", e.Events, e.Batches)
}

// A JournalBacklog is a [Journal] that can say how many of the batches a
// previous processor left in it were not handed over by Replay (to a
// callback that returned nil): a Shutdown whose ctx ended during the
// replay counts them in its [*LeftInJournalError].
type JournalBacklog interface {
	Journal
	Unreplayed() (batches int)
}

// journal is the processor's side of a Journal: the append stage in front
// of each lane, the batches read back, and the counters.
type journal struct {
	j Journal

	appended   atomic.Uint64 // batches appended
	unjournal  atomic.Uint64 // batches the journal refused (full or failed), sent from memory only
	replayed   atomic.Uint64 // events replayed from a previous processor
	leftBatch  atomic.Int64  // batches left in the journal by an aborted Shutdown
	leftEvents atomic.Int64
	refusing   atomic.Bool // the last Append was refused: log the next success

	mu   sync.Mutex
	held map[string]holdState // journaled batches the processor holds
	// unheld are keys dropped before the processor read them back (a
	// replay): replay skips them. Cleared when replay ends.
	unheld map[string]struct{}

	closeOnce sync.Once
	closeErr  error

	w       JournalWriter     // j, if it is one
	durable chan func() error // JournalWriter: the waits, run in order by the syncer
	writers atomic.Int32      // appenders still running, for closing durable

	stopReplay chan struct{} // closed by Shutdown: replay no more
	stopOnce   sync.Once
	replayDone chan struct{}
}

// holdState is where a journaled batch the processor holds is, as seen by
// a journal that may drop it ([JournalDropper]). Transitions happen under
// journal.mu, so that a drop and the processor's own moves agree on who
// reports the batch.
type holdState uint8

const (
	inMemory        holdState = iota + 1 // journaled, payloads in memory (0: not held)
	spilled                              // journaled, payloads only in the journal
	droppedFailed                        // dropped while spilled: reported failed at the drop; the processor discards it
	droppedInMemory                      // dropped while in memory: no longer journaled, sent from memory
	finishedPending                      // finished by the processor before the drop's report came: it is ignored
	awaitingReport                       // discarded by the processor (a Load said dropped) before the report came: the report fails it
)

// appenders is how many goroutines append to the journal in front of a
// lane: concurrent Appends share an fsync (group commit). Ordered dispatch
// has one, so that batches keep their order.
const appenders = 4

// appendGate bounds the batches of an append lane not yet journaled, so
// that a crash loses at most those and the open batches: a cut finding it
// full waits, under its shard's lock (so an Add or TryAdd that fills a
// batch, and the Adds behind it, wait while the journal is that far
// behind), except on a callback goroutine, whose wait could be for a send
// the journal's Append is waiting on.
type appendGate struct {
	mu    sync.Mutex
	cond  sync.Cond
	n     int
	limit int
	cb    *callbackGoroutines
}

func newAppendGate(limit int, cb *callbackGoroutines) *appendGate {
	g := &appendGate{limit: limit, cb: cb}
	g.cond.L = &g.mu
	return g
}

func (g *appendGate) enter() {
	g.mu.Lock()
	if g.n >= g.limit && !g.cb.current() {
		for g.n >= g.limit {
			g.cond.Wait()
		}
	}
	g.n++
	g.mu.Unlock()
}

func (g *appendGate) exit() {
	g.mu.Lock()
	g.n--
	g.mu.Unlock()
	g.cond.Signal()
}

// Journal returns the journal the processor writes through ([WithJournal],
// spool.WithSpool), or nil without one: a metrics adapter reads the
// journal's own statistics through it (spoolprom, spoolotel). The
// processor owns the journal and closes it at the end of Shutdown; do not
// call its methods that change it.
func (p *Processor) Journal() Journal {
	if p.jr == nil {
		return nil
	}
	return p.jr.j
}

// appendQueue is how many batches per appender may wait for the journal.
const appendQueue = 2

// startJournal opens the journal's stage: each lane gets an append lane in
// front of it, which the shards feed, and appender goroutines that move
// batches from one to the other; a replay goroutine feeds what a previous
// processor left.
func (p *Processor) startJournal(j Journal) {
	p.jr = &journal{j: j, held: map[string]holdState{}, unheld: map[string]struct{}{},
		stopReplay: make(chan struct{}), replayDone: make(chan struct{})}
	if d, ok := j.(JournalDropper); ok {
		d.OnDrop(p.journalDropped)
	}
	if o, ok := j.(JournalOpener); ok {
		p.opener = o
	}
	if w, ok := j.(JournalWriter); ok {
		p.jr.w = w
		p.jr.durable = make(chan func() error, 256)
		p.running.Add(1)
		go p.syncer()
	}
	n := appenders
	if p.cfg.ordered || p.cfg.workers > 0 {
		n = 1
	}
	p.appendLanes = make([]*lane, len(p.lanes))
	for i, l := range p.lanes {
		in := newLane(n)
		in.gate = newAppendGate(n*(1+appendQueue), &p.callbacks)
		in.closing = p.closing
		in.to = l
		in.left.Store(int32(n))
		l.end = make(chan struct{}) // closed when in's last appender exits
		l.closing = l.end
		l.counter = &in.outstanding // routing reads the append lane's count
		p.appendLanes[i] = in
		for range n {
			p.running.Add(1)
			p.jr.writers.Add(1)
			go p.appender(in)
		}
	}
	go p.replay()
}

// appender moves batches from an append lane to its lane, appending each
// to the journal on the way. Its goroutine is a callback goroutine: a
// journal may run user code in its Append (spool.WithDropOldest's
// function). With ordered dispatch, the batches a previous processor left
// go first: the appender passes nothing on before the replay ended.
func (p *Processor) appender(in *lane) {
	id := p.callbacks.enter()
	defer p.exited(id)
	defer func() {
		if in.left.Add(-1) == 0 {
			close(in.to.end)
		}
		if p.jr.writers.Add(-1) == 0 && p.jr.durable != nil {
			close(p.jr.durable)
		}
	}()
	// Ordered: batches journaled while the replay runs wait here, spilled
	// (the replay may need the budget they hold), and follow it in order.
	var held []*Batch
	replaying := p.cfg.ordered
	pass := func() {
		for _, h := range held {
			in.to.forward(h)
		}
		held, replaying = nil, false
	}
	for {
		if replaying && len(held) > 0 {
			select {
			case <-p.jr.replayDone:
				pass()
				continue
			case <-in.ready: // a batch arrived: next takes it
			case <-in.closing: // Shutdown ended the replay before closing
			}
		}
		b := p.next(in)
		if b == nil {
			pass()
			return
		}
		p.journalAppend(b)
		in.gate.exit()
		if replaying {
			select {
			case <-p.jr.replayDone:
				pass()
			default:
				if n := p.jr.spill(b); n > 0 && p.mem.release(n) {
					p.cutIfIdle()
				}
				held = append(held, b)
				continue
			}
		}
		p.forwardJournaled(in.to, b)
		if in.to.queued() > 1 {
			runtime.Gosched()
		}
	}
}

// forwardJournaled hands b to lane l, and if b is in the journal and an
// Add waits for budget, spills the queued journaled batches, b among them.
// An Add spills them as it begins to wait (cutIfIdle), but b may not have
// been in the journal or the lane then, and with the sink stuck nothing
// else would free its budget: the Add would wait for the sink
// (TestRegionRecordSpilledIsLoaded hung without this). The appenders and
// the replay forward through it.
func (p *Processor) forwardJournaled(l *lane, b *Batch) {
	journaled := b.journaled // b is the lane's once forwarded
	l.forward(b)
	if journaled && p.mem.waiting() {
		p.spillQueued()
	}
}

// journalAppend appends b to the journal, or keeps it in memory only if
// the journal refuses it.
func (p *Processor) journalAppend(b *Batch) {
	jr := p.jr
	// Held before the Append: an Append of another appender may drop b as
	// soon as b is in the journal.
	jr.mu.Lock()
	jr.held[b.key] = inMemory
	jr.mu.Unlock()
	var err error
	if jr.w != nil {
		var durable func() error
		if durable, err = jr.w.Write(b); err == nil {
			jr.durable <- durable
		}
	} else {
		err = jr.j.Append(b)
	}
	if err != nil {
		jr.mu.Lock()
		delete(jr.held, b.key)
		jr.mu.Unlock()
		jr.unjournal.Add(1)
		if !jr.refusing.Swap(true) {
			p.log.LogAttrs(context.Background(), slog.LevelWarn, "journal refused a batch: sending it from memory only until it takes batches again",
				slog.String("key", b.key), slog.Any("error", err))
		}
		return
	}
	if b.open != nil { // in the journal now: the open batch's copy may go
		if b.placed == nil || !b.placed.Journaled() {
			b.unplace()
			b.open.Close()
			b.open = nil
		}
	}
	if jr.refusing.Swap(false) {
		p.log.LogAttrs(context.Background(), slog.LevelInfo, "journal takes batches again", slog.String("key", b.key))
	}
	jr.appended.Add(1)
	b.journaled = true
}

// batchCost is what b takes of the budget, as Add counts it.
func batchCost(b *Batch) int {
	cost := len(b.buf) - b.off + b.Len()*eventOverhead + batchOverhead
	for _, id := range b.ids {
		cost += len(id)
	}
	return cost
}

// syncer waits, in order, for the batches a JournalWriter wrote to become
// durable: the first wait runs the fsync that covers every batch written
// so far, and the next ones it covered return at once. A failure is
// logged once (the journal stops taking batches: they are sent from memory
// only).
func (p *Processor) syncer() {
	defer func() {
		if p.running.Add(-1) == 0 {
			close(p.done)
		}
	}()
	logged := false
	for wait := range p.jr.durable {
		if err := wait(); err != nil && !logged {
			logged = true
			p.log.LogAttrs(context.Background(), slog.LevelError, "journal could not make batches durable; they stay in it, but a power loss may lose them",
				slog.Any("error", err))
		}
	}
}

// replay feeds the batches a previous processor left in the journal into
// the lanes, each taking its budget as an Add would (so a backlog larger
// than the budget is read as the budget frees). Shutdown stops it; what
// it did not replay stays in the journal.
func (p *Processor) replay() {
	jr := p.jr
	defer close(jr.replayDone)
	i := 0
	err := jr.j.Replay(func(b *Batch) error {
		n := b.Len()
		if n == 0 {
			return jr.j.Ack(b.key)
		}
		cost := batchCost(b)
		grant, err := p.mem.wait(context.Background(), jr.stopReplay, cost, p.cutIfIdle)
		if err != nil {
			return err
		}
		b.cost, b.reserved = cost, grant
		b.journaled = true
		jr.mu.Lock()
		if _, gone := jr.unheld[b.key]; gone { // dropped while being read: reported then
			delete(jr.unheld, b.key)
			jr.mu.Unlock()
			return nil
		}
		jr.held[b.key] = inMemory
		jr.mu.Unlock()
		jr.replayed.Add(uint64(n))
		b.seq = p.completion.number()
		l := p.lanes[i%len(p.lanes)]
		i++
		p.forwardJournaled(l, b)
		return nil
	})
	jr.mu.Lock()
	clear(jr.unheld)
	jr.mu.Unlock()
	if err != nil && !errors.Is(err, ErrClosed) {
		p.log.LogAttrs(context.Background(), slog.LevelError, "journal replay stopped; the batches not replayed stay in the journal",
			slog.Any("error", err))
	}
}

// spillQueued drops from memory the payloads of the queued batches that
// are in the journal: an Add waits for budget they hold.
func (p *Processor) spillQueued() {
	freed := 0
	for _, l := range p.lanes {
		freed += l.spill(p.jr)
	}
	if freed > 0 && p.mem.release(freed) && p.completion.idle() {
		p.cutAll()
	}
}

// spill drops the payloads of l's queued journaled batches from memory
// (they are loaded again before their send) and returns the bytes freed.
func (l *lane) spill(jr *journal) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	freed := 0
	for _, b := range l.q[l.head:] {
		freed += jr.spill(b)
	}
	return freed
}

// spilledCost is what a spilled batch holds of the budget: the Batch
// itself. Its events, their offsets and IDs are in the journal only, so a
// backlog of any size on disk holds 128 bytes a batch in memory.
const spilledCost = 128

// spill drops a journaled batch's events from memory and returns the
// budget freed; its key, seq and count stay. A batch the journal dropped
// meanwhile stays in memory: it is sent from there.
func (jr *journal) spill(b *Batch) int {
	if !b.journaled || b.spilled > 0 || b.reserved <= spilledCost {
		return 0
	}
	jr.mu.Lock()
	ok := jr.held[b.key] == inMemory
	if ok {
		jr.held[b.key] = spilled
	}
	jr.mu.Unlock()
	if !ok {
		return 0
	}
	freed := b.reserved - spilledCost
	b.spilled, b.loadCost = len(b.ends), b.cost
	b.buf, b.off, b.ends, b.ids = nil, 0, nil, nil
	if b.open != nil { // its buffer was an OpenBuffer's, kept past the journal
		b.placed, b.filled, b.heap = nil, nil, nil
		b.open.Close()
		b.open = nil
	}
	b.cost, b.reserved = spilledCost, spilledCost
	return freed
}

// load reads a spilled batch's payloads back from the journal, taking
// their budget even past the limit: the batches loaded at once are the
// sends under way, which the send limit bounds (see WithMemoryLimit). It
// returns an error wrapping ErrDropped if the journal dropped b: b was
// reported failed then, and is not sent.
func (p *Processor) load(b *Batch) error {
	jr := p.jr
	c, err := jr.j.Load(b.key)
	jr.mu.Lock()
	defer jr.mu.Unlock()
	switch st := jr.held[b.key]; {
	case st == droppedFailed:
		return fmt.Errorf("batchproc: load %s: %w", b.key, ErrDropped)
	case errors.Is(err, ErrDropped): // the drop's report is on its way
		jr.held[b.key] = awaitingReport
		return err
	case err != nil:
		return err
	}
	if c.Len() != b.spilled {
		return fmt.Errorf("batchproc: journal returned %d events for batch %s of %d", c.Len(), b.key, b.spilled)
	}
	jr.held[b.key] = inMemory
	cost := batchCost(c)
	p.mem.force(cost - b.reserved)
	b.buf, b.off, b.ends, b.ids = c.buf, c.off, c.ends, c.ids
	b.cost, b.reserved = cost, cost
	b.spilled, b.loadCost = 0, 0
	return nil
}

// journalDone is called as b leaves the processor, err being why (nil:
// delivered): it acks b. It reports whether b was reported failed when the
// journal dropped it: then the caller counts nothing.
func (p *Processor) journalDone(b *Batch, err error) (dropped bool) {
	jr := p.jr
	if !b.journaled {
		return false
	}
	var aerr error
	if !errors.Is(err, ErrDropped) { // else a Load found it dropped: nothing to ack
		aerr = jr.j.Ack(b.key)
		if aerr != nil && !errors.Is(aerr, ErrDropped) {
			p.log.LogAttrs(context.Background(), slog.LevelWarn, "journal ack failed: the batch may be sent again after a restart (the receiver de-duplicates it by key)",
				slog.String("key", b.key), slog.Any("error", aerr))
		}
	}
	jr.mu.Lock()
	defer jr.mu.Unlock()
	switch jr.held[b.key] {
	case droppedFailed:
		delete(jr.held, b.key)
		return true
	case awaitingReport: // the report deletes it
		return true
	case droppedInMemory:
		delete(jr.held, b.key)
	default:
		if errors.Is(aerr, ErrDropped) {
			// Dropped just now, and the drop's report has not come: it
			// will find finishedPending and ignore b, sent from memory.
			jr.held[b.key] = finishedPending
			return false
		}
		delete(jr.held, b.key)
	}
	return false
}

// journalDropped is the JournalDropper callback: the journal dropped b to
// make room. A batch the processor has in memory is sent from there; one
// that is only in the journal fails here, once, with its payloads.
func (p *Processor) journalDropped(b *Batch) {
	jr := p.jr
	jr.mu.Lock()
	st, held := jr.held[b.key]
	fail := true
	switch {
	case !held: // a replay the processor had not read: it enters the counts here
		jr.unheld[b.key] = struct{}{}
		jr.replayed.Add(uint64(b.Len()))
	case st == inMemory:
		jr.held[b.key] = droppedInMemory
		fail = false
	case st == finishedPending:
		delete(jr.held, b.key)
		fail = false
	case st == awaitingReport:
		delete(jr.held, b.key)
	default: // spilled
		jr.held[b.key] = droppedFailed
	}
	jr.mu.Unlock()
	if fail {
		// Not on the appender: the failure callback may Add, and an Add
		// may wait on the append gate, which waits for the appender.
		p.running.Add(1) // the appender reporting this is running: done is not closed yet
		go func() {
			id := p.callbacks.enter()
			defer p.exited(id)
			p.fail(b, 0, 0, ErrDropped)
		}()
	}
}

// leave keeps b in the journal at an aborted Shutdown, appending it first
// if it is not there; it reports whether b is kept.
func (p *Processor) leave(b *Batch) bool {
	jr := p.jr
	if jr == nil {
		return false
	}
	if b.journaled {
		jr.mu.Lock()
		st := jr.held[b.key]
		if st != inMemory && st != spilled { // dropped: finish accounts for it
			jr.mu.Unlock()
			return false
		}
		delete(jr.held, b.key)
		jr.mu.Unlock()
	} else if jr.j.Append(b) != nil {
		return false
	}
	jr.leftBatch.Add(1)
	jr.leftEvents.Add(int64(b.count()))
	return true
}
