package batchproc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Processor batches events and hands the batches to a [Sink]. Create one
// with [New]; it is safe for concurrent use. Its methods are described in
// the package documentation's delivery contract.
//
// The code is split by concern: add.go is the Add path, budget.go the
// memory budget, completion.go Flush and batch completion, dispatch.go the
// senders and retries, linger.go the linger timer, lifecycle.go Shutdown and
// the callback rules. DESIGN.md describes how they fit.
type Processor struct {
	sink Sink
	cfg  config
	log  *slog.Logger // failures and retries: slog.Default() unless WithLogger
	info *slog.Logger // per-batch delivery lines: only with WithLogger

	// Events are copied into shards: each shard is a mutex and the batch
	// being filled. Async dispatch uses shards[0] alone until a busy stream
	// contends for it, then per-P shards handed out by shardPool, and goes
	// back to one shard when a batch has to linger (DESIGN.md has why).
	// Worker-pool dispatch has one shard per worker; ordered dispatch has
	// exactly one.
	//
	// The fields every Add reads come first and are written rarely (perP
	// on a switch); what cuts and contention write is a cache line further.
	shards    []shard
	mem       *budget
	adaptive  bool        // async mode: may move from one shard to per-P shards
	pool      bool        // worker pool: events go to a worker that can send them
	perP      atomic.Bool // shards are taken from shardPool
	shardPool sync.Pool   // of *shard, for per-P locality
	_         [64]byte
	busy      atomic.Bool   // the last full batch filled within a quarter of the interval
	rr        atomic.Uint32 // round-robin for shardPool.New
	contended atomic.Uint64 // Adds that found their shard locked

	hooks hookSet

	lanes []*lane
	// With a journal, the shards feed appendLanes, one in front of each
	// lane, whose appenders journal each batch and pass it on.
	appendLanes []*lane
	jr          *journal
	opener      JournalOpener // jr's journal, if it is one
	unguarded   atomic.Uint64 // batches filled without an OpenBatch (the JournalOpener had no room)
	// limit bounds async dispatch's sends: adaptive by default, fixed with
	// WithMaxInFlight. nil for the worker pool and ordered dispatch.
	limit *adaptiveLimit

	completion

	keyPrefix string

	// Time: linger deadlines are monotonic nanoseconds since epoch, so a
	// step of the wall clock moves no deadline.
	epoch time.Time

	// Lifecycle.
	closed       atomic.Bool   // set first by Shutdown; read under shard locks
	closing      chan struct{} // closed once every shard was cut for the drain
	wake         chan struct{} // a batch got its first event: re-arm the linger timer
	stopLinger   chan struct{}
	lingerDone   chan struct{}
	sendCtx      context.Context
	abort        context.CancelCauseFunc
	running      atomic.Int32  // sender, dispatcher and send goroutines alive
	done         chan struct{} // closed when the last sender exited
	shutdownOnce sync.Once     // stops Adds and the linger
	drainOnce    sync.Once     // then, once the replay ended, starts the drain
	drain        *watcher      // what the drain covers: set by the first Shutdown
	callbacks    callbackGoroutines

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
	due   atomic.Int64 // when b must be sent (Processor.now), 0 when b is empty; read by the linger loop without mu
	_     [64]byte
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
	var jrnl Journal
	if cfg.openJournal != nil {
		j, err := cfg.openJournal()
		if err != nil {
			return nil, fmt.Errorf("batchproc: New: journal: %w", err)
		}
		if j == nil {
			return nil, errors.New("batchproc: New: journal: the open function returned nil")
		}
		jrnl = j
	}
	var prefix [8]byte
	_, _ = rand.Read(prefix[:]) // crypto/rand.Read never fails (Go 1.24+)

	p := &Processor{
		sink:       sink,
		cfg:        cfg,
		log:        cfg.logger,
		info:       cfg.logger,
		keyPrefix:  "bp-" + hex.EncodeToString(prefix[:]) + "-",
		epoch:      time.Now(),
		closing:    make(chan struct{}),
		wake:       make(chan struct{}, 1),
		stopLinger: make(chan struct{}),
		lingerDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	if cfg.logger == nil {
		// Failures and retries are never silent: without a logger they go
		// to slog.Default(), at Warn and Error. Per-batch delivery lines
		// are opt-in.
		p.log = slog.Default()
		p.info = slog.New(slog.DiscardHandler)
	}
	for _, h := range cfg.hooks {
		p.hooks.add(h)
	}
	p.completion.init()
	p.sendCtx, p.abort = context.WithCancelCause(context.Background())

	// Lanes: the queues senders take batches from.
	var nshards int
	switch {
	case cfg.ordered:
		nshards = 1
		p.lanes = []*lane{newLane(1)}
	case cfg.workers > 0:
		nshards = cfg.workers
		p.pool = nshards > 1
		p.lanes = make([]*lane, cfg.workers)
		for i := range p.lanes {
			p.lanes[i] = newLane(1)
		}
	default:
		nshards = maxShards()
		p.adaptive = true
		p.lanes = []*lane{newLane(1)} // one dispatcher; a goroutine per send under the limit
		lc := limitConfig{Max: cfg.adaptiveMax, OnChange: p.limitChanged}
		if cfg.inFlightSet {
			lc = limitConfig{Initial: cfg.maxInFlight, Min: cfg.maxInFlight, Max: cfg.maxInFlight}
		}
		p.limit = newAdaptiveLimit(lc)
		if !cfg.inFlightSet {
			// Stored once: every send's ctx carries it, for ReportCapacity.
			p.sendCtx = context.WithValue(p.sendCtx, capacityKey{}, p.limit)
		}
	}
	p.shards = make([]shard, nshards)
	for i := range p.shards {
		p.shards[i].lane = p.lanes[i%len(p.lanes)]
	}
	p.shardPool.New = p.newShard
	// A batch reserves budget in chunks of at most 32 KiB, and at most a
	// sixteenth of the budget is ever held in chunk remainders.
	p.mem = newBudget(cfg.memLimit, min(32<<10, cfg.memLimit/(16*nshards)))
	for _, l := range p.lanes {
		l.closing = p.closing
	}
	if jrnl != nil {
		p.startJournal(jrnl)
		for i := range p.shards {
			p.shards[i].lane = p.appendLanes[i%len(p.appendLanes)]
		}
	}

	for _, l := range p.lanes {
		for range l.senders {
			p.running.Add(1)
			if p.limit != nil {
				go p.dispatcher(l)
			} else {
				go p.sender(l)
			}
		}
	}
	go p.lingerLoop()
	for _, h := range p.hooks.new {
		h.OnNew(p)
	}
	return p, nil
}

// maxShards is the number of shards async dispatch spreads over under
// contention: two per P, so that a goroutine preempted while holding one
// rarely makes another wait.
func maxShards() int {
	return min(2*runtime.GOMAXPROCS(0), 256)
}

// Stats returns a snapshot of the processor's counters. It is cheap, but
// not free: it takes each shard's lock in turn, as briefly as an Add does,
// to read the shard's count of added events.
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
	var limit int
	if p.limit != nil {
		limit = p.limit.limit()
	}
	st := Stats{
		Added:         added,
		Delivered:     delivered,
		Failed:        failed,
		Rejected:      p.rejected.Load(),
		Batches:       p.batches.Load(),
		Retries:       p.retries.Load(),
		InFlight:      int(p.inFlight.Load()),
		InFlightLimit: limit,
		BufferedBytes: p.mem.used.Load(),
	}
	if jr := p.jr; jr != nil {
		st.Replayed = jr.replayed.Load()
		st.Journaled = jr.appended.Load()
		st.Unjournaled = jr.unjournal.Load()
		st.Unguarded = p.unguarded.Load()
	}
	st.Pending = st.Added + st.Replayed - delivered - failed
	return st
}

// Stats are a processor's counters since New. Every added or replayed
// event is exactly one of delivered, failed or pending, so Added + Replayed
// == Delivered + Failed + Pending in every snapshot.
type Stats struct {
	Added     uint64 // events accepted by Add or TryAdd
	Delivered uint64 // events in batches the sink accepted
	Failed    uint64 // events handed to the failure callback
	Pending   uint64 // events buffered, queued or being sent
	Rejected  uint64 // Add/TryAdd calls refused: full, closed, ctx done, too large or invalid

	Batches uint64 // batches delivered
	Retries uint64 // sends retried (a retry cut short by Shutdown is not counted)

	InFlight      int   // Send calls under way
	InFlightLimit int   // async dispatch: sends allowed at once now (adaptive unless WithMaxInFlight); 0 otherwise
	BufferedBytes int64 // bytes held against the memory limit (see WithMemoryLimit for what counts)

	// With a journal (WithJournal, spool.WithSpool):
	Replayed    uint64 // events a previous processor left in the journal, read back to be sent
	Journaled   uint64 // batches appended to the journal before their first send
	Unjournaled uint64 // batches the journal refused (full or failed): sent from memory only
	Unguarded   uint64 // batches filled without the journal keeping their events (a JournalOpener with no room)
}
