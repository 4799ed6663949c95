package bench

import (
	"context"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Client is a design under test as a service's request handler sees it:
// Add hands over one event and returns when the design took it; Shutdown
// drains what was taken.
type Client interface {
	Add(ctx context.Context, id string, payload []byte) error
	Shutdown(ctx context.Context) error
}

// Load kinds.
const (
	LoadClosed = "closed" // N handlers, each waits for Add before its next request, paced to the rate in aggregate
	LoadOpen   = "open"   // requests at the rate whatever Add does, each in its own goroutine (bounded)
)

// loadConfig is one run of the load generator.
type loadConfig struct {
	Kind     string
	Rate     float64 // requests (events) per second in aggregate; 0: unpaced, as fast as Add allows
	Duration time.Duration
	Handlers int // closed loop: concurrent handlers; open loop unpaced: producers
	// MaxOutstanding bounds the open loop's requests under way at once; a
	// request due when the bound is reached is not made and is counted as
	// NotOffered.
	MaxOutstanding int
	EventSize      int    // bytes per event payload
	RunID          string // prefix of event ids
	// Grace bounds how long an Add still under way when the duration ends may
	// take before its context is cancelled (it then counts as Rejected).
	Grace time.Duration
	// PacerTick, for the paced closed loop: 0 gives every handler its own
	// timer (closedHandler); > 0 has one pacer goroutine release the
	// handlers' slots every PacerTick (pacedClosedLoop), so that the load
	// generator's runtime work (timers, scheduler wake-ups) is one tick's
	// per PacerTick whatever the timing, not one per request.
	PacerTick time.Duration
}

// loadCounters are read while the load runs (progress) and at its end.
type loadCounters struct {
	Requests   atomic.Int64 // Add called
	Offered    atomic.Int64 // Add returned nil
	Rejected   atomic.Int64 // Add returned an error
	NotOffered atomic.Int64 // open loop: due but not made (outstanding bound reached)
	// The paced closed loop's skipped slots (pacedClosedLoop): SkippedBusy
	// came while their handler was in Add (the design held it), SkippedLate
	// while their handler had its previous slot still waiting, not yet
	// run (the process did not get to run it: a starved child).
	SkippedBusy atomic.Int64
	SkippedLate atomic.Int64
}

// loadResult is what runLoad measured.
type loadResult struct {
	Requests, Offered, Rejected, NotOffered int64
	SkippedBusy, SkippedLate                int64                   // see loadCounters
	Elapsed                                 time.Duration           // from the first request to the last Add's return
	AddLatency                              *hdrhistogram.Histogram // nanoseconds
}

// latencyShards is an HdrHistogram split in shards so that many handlers
// record without contending on one lock.
type latencyShards struct {
	shards [32]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
		_  [40]byte // keep shards on separate cache lines
	}
}

// newLatencyHistogram covers 1 ns to 10 minutes at two significant digits
// (1% resolution), about 32 KiB.
func newLatencyHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute), 2)
}

func newLatencyShards() *latencyShards {
	l := &latencyShards{}
	for i := range l.shards {
		l.shards[i].h = newLatencyHistogram()
	}
	return l
}

func (l *latencyShards) record(shard int, d time.Duration) {
	s := &l.shards[shard%len(l.shards)]
	s.mu.Lock()
	_ = s.h.RecordValue(max(int64(d), 1))
	s.mu.Unlock()
}

func (l *latencyShards) merged() *hdrhistogram.Histogram {
	h := newLatencyHistogram()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		h.Merge(s.h)
		s.mu.Unlock()
	}
	return h
}

// eventBuilder makes the harness's events: a JSON object of exactly size
// bytes (when size allows) carrying its id, an RFC 3339 time, and t0, the
// send time in Unix nanoseconds, from which the receiving side computes the
// end-to-end latency:
//
//	{"id":"r1-42","type":"bench","ts":"2025-01-01T00:00:00.123Z","t0":1735689600123000000,"pad":"xxxx"}
type eventBuilder struct {
	prefix string
	size   int
	seq    atomic.Int64
}

func (b *eventBuilder) next() (id string, payload []byte) {
	now := time.Now()
	n := b.seq.Add(1)
	buf := make([]byte, 0, max(b.size, 128))
	buf = append(buf, `{"id":"`...)
	idStart := len(buf)
	buf = append(buf, b.prefix...)
	buf = append(buf, '-')
	buf = strconv.AppendInt(buf, n, 10)
	id = string(buf[idStart:])
	buf = append(buf, `","type":"bench","ts":"`...)
	buf = now.UTC().AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, `","t0":`...)
	buf = strconv.AppendInt(buf, now.UnixNano(), 10)
	buf = append(buf, `,"pad":"`...)
	for len(buf) < b.size-2 {
		buf = append(buf, 'x')
	}
	buf = append(buf, `"}`...)
	return id, buf
}

// runLoad drives c with cfg's load until cfg.Duration has passed and every
// Add under way returned. It never calls Shutdown.
func runLoad(ctx context.Context, c Client, cfg loadConfig, cnt *loadCounters) loadResult {
	if cfg.Handlers <= 0 {
		cfg.Handlers = 1
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.MaxOutstanding <= 0 {
		cfg.MaxOutstanding = 100_000
	}
	// The handler goroutines run labelled side=loadgen and switch to
	// side=client only for the Add call, so the CPU profile charges pacing
	// and event building to the load generator, and Add (and whatever
	// goroutine it starts) to the design.
	genLabels := pprof.WithLabels(ctx, pprof.Labels(labelSide, sideLoadgen))
	addLabels := pprof.WithLabels(ctx, pprof.Labels(labelSide, sideClient))
	pprof.SetGoroutineLabels(genLabels)
	defer pprof.SetGoroutineLabels(ctx)

	lat := newLatencyShards()
	events := &eventBuilder{prefix: cfg.RunID, size: cfg.EventSize}
	start := time.Now()
	end := start.Add(cfg.Duration)
	// Adds get a context that outlives the load by Grace: a handler whose
	// Add is blocked when the time is up still waits for it, as a real
	// handler would, but not forever.
	addCtx, cancel := context.WithDeadline(ctx, end.Add(cfg.Grace))
	defer cancel()

	request := func(shard int) {
		id, payload := events.next()
		cnt.Requests.Add(1)
		pprof.SetGoroutineLabels(addLabels)
		t := time.Now()
		err := c.Add(addCtx, id, payload)
		d := time.Since(t)
		pprof.SetGoroutineLabels(genLabels)
		lat.record(shard, d)
		if err != nil {
			cnt.Rejected.Add(1)
		} else {
			cnt.Offered.Add(1)
		}
	}

	var wg sync.WaitGroup
	switch {
	case cfg.Kind == LoadOpen && cfg.Rate > 0:
		openLoop(ctx, cfg, start, end, cnt, request, &wg)
	case cfg.Rate > 0 && cfg.PacerTick > 0:
		pacedClosedLoop(ctx, cfg, start, end, cnt, request, &wg)
	default:
		// Closed loop, and the unpaced producers of saturate: each handler
		// waits for its Add before its next request.
		for i := range cfg.Handlers {
			wg.Go(func() { closedHandler(ctx, cfg, i, start, end, request) })
		}
	}
	wg.Wait()
	return loadResult{
		Requests:    cnt.Requests.Load(),
		Offered:     cnt.Offered.Load(),
		Rejected:    cnt.Rejected.Load(),
		NotOffered:  cnt.NotOffered.Load(),
		SkippedBusy: cnt.SkippedBusy.Load(),
		SkippedLate: cnt.SkippedLate.Load(),
		Elapsed:     time.Since(start),
		AddLatency:  lat.merged(),
	}
}

// closedHandler is one of the service's request handlers. The handlers
// share the target rate: handler i owns the slots start + (i/N + k) *
// period, period = N / rate. A handler whose Add outlasted its slots makes
// one late request at once (as a time.Ticker delivers one missed tick) and
// skips the rest: a blocked handler lowers the rate, it does not make it up
// later.
func closedHandler(ctx context.Context, cfg loadConfig, i int, start, end time.Time, request func(int)) {
	if cfg.Rate <= 0 {
		for ctx.Err() == nil && time.Now().Before(end) {
			request(i)
		}
		return
	}
	period := time.Duration(float64(cfg.Handlers) / cfg.Rate * float64(time.Second))
	next := start.Add(period * time.Duration(i) / time.Duration(cfg.Handlers))
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		if !next.Before(end) || !time.Now().Before(end) {
			return
		}
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		request(i)
		next = next.Add(period)
		if now := time.Now(); next.Before(now) {
			next = next.Add(now.Sub(next) / period * period)
		}
	}
}

// pacedClosedLoop is the closed loop of closedHandler, with one pacer
// instead of a timer per handler: the same slots (handler i owns start +
// (i/N + k) * period), released by a pacer that wakes every
// cfg.PacerTick and hands each slot due before its next wake-up to its
// handler through a channel of capacity 1 (so a request starts up to one
// tick before its slot). A handler still in its Add when its slot comes
// finds the slot waiting when Add returns and makes one late request at
// once; the slots that come while one is waiting are skipped, as
// closedHandler does. No request starts at or after end.
func pacedClosedLoop(ctx context.Context, cfg loadConfig, start, end time.Time, cnt *loadCounters, request func(int), wg *sync.WaitGroup) {
	n := cfg.Handlers
	slot := time.Duration(float64(time.Second) / cfg.Rate) // between consecutive slots, over all handlers
	if slot <= 0 {
		slot = 1
	}
	total := int64((end.Sub(start) + slot - 1) / slot) // slots before end
	tokens := make([]chan struct{}, n)
	inAdd := make([]atomic.Bool, n)
	for i := range tokens {
		tokens[i] = make(chan struct{}, 1)
		wg.Go(func() {
			for range tokens[i] {
				if !time.Now().Before(end) {
					continue // due before end, reached after: not made, as closedHandler
				}
				inAdd[i].Store(true)
				request(i)
				inAdd[i].Store(false)
			}
		})
	}
	defer func() {
		for _, t := range tokens {
			close(t)
		}
	}()
	ticker := time.NewTicker(cfg.PacerTick)
	defer ticker.Stop()
	var released int64
	for {
		// The slots of the coming tick are released now, up to a tick
		// early rather than up to a tick late: the last ones before end
		// would otherwise come due only at end, when no request starts.
		due := min(int64((time.Since(start)+cfg.PacerTick)/slot)+1, total)
		for ; released < due; released++ {
			h := released % int64(n)
			select {
			case tokens[h] <- struct{}{}:
			default: // its handler has a slot waiting already: skipped
				if inAdd[h].Load() {
					cnt.SkippedBusy.Add(1)
				} else {
					cnt.SkippedLate.Add(1)
				}
			}
		}
		if released >= total {
			return
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			return
		}
	}
}

// openLoop issues requests at the rate, each in its own goroutine, with at
// most cfg.MaxOutstanding under way.
func openLoop(ctx context.Context, cfg loadConfig, start, end time.Time, cnt *loadCounters, request func(int), wg *sync.WaitGroup) {
	sem := make(chan struct{}, cfg.MaxOutstanding)
	tick := time.Millisecond
	if per := time.Duration(float64(time.Second) / cfg.Rate); per > tick {
		tick = per
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var issued int64
	for shard := 0; ; {
		now := time.Now()
		if now.After(end) {
			now = end
		}
		due := int64(cfg.Rate*now.Sub(start).Seconds()) - issued
		for ; due > 0; due-- {
			issued++
			select {
			case sem <- struct{}{}:
				shard++
				s := shard
				wg.Go(func() {
					defer func() { <-sem }()
					request(s)
				})
			default:
				cnt.NotOffered.Add(1)
			}
		}
		if !now.Before(end) {
			return
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			return
		}
	}
}
