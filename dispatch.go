package batchproc

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// lane is a FIFO of cut batches and the goroutines that drain it. Async
// dispatch has one lane and one dispatcher, which starts a goroutine per
// send under the concurrency limit; the worker pool has a lane per worker
// with one sender each (the worker's synchronous sends); ordered dispatch
// has one lane with one sender, so batches leave in the order they were cut
// and a retry holds back the rest.
type lane struct {
	mu      sync.Mutex
	q       []*Batch
	head    int
	senders int
	ready   chan struct{} // one token per push, up to senders

	// outstanding counts the lane's batches queued or being sent: the
	// worker pool routes events away from a worker that has some. counter
	// points to it, or, behind a journal's append lane, to that lane's.
	outstanding atomic.Int32
	counter     *atomic.Int32

	// closing is closed once nothing more can be pushed: the processor's
	// closing, or, behind a journal's append lane, when its appenders exited.
	closing <-chan struct{}
	end     chan struct{} // behind an append lane: its closing, closed by the last appender
	to      *lane         // an append lane's lane
	gate    *appendGate   // an append lane's bound on batches not yet journaled
	left    atomic.Int32  // an append lane's appenders still running
}

func newLane(senders int) *lane {
	l := &lane{senders: senders, ready: make(chan struct{}, senders)}
	l.counter = &l.outstanding
	return l
}

// push queues a cut batch. An append lane admits at most a few batches
// not yet journaled: the cut waits for room (see appendGate).
func (l *lane) push(b *Batch) {
	l.counter.Add(1)
	if l.gate != nil {
		l.gate.enter()
	}
	l.forward(b)
}

// forward queues a batch already counted: one an append lane passes on,
// or one replayed from the journal.
func (l *lane) forward(b *Batch) {
	l.mu.Lock()
	l.q = append(l.q, b)
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default: // every sender already has a token; each re-checks the queue before waiting
	}
}

// queued is the number of batches waiting for a sender.
func (l *lane) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.q) - l.head
}

func (l *lane) pop() *Batch {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.head == len(l.q) {
		return nil
	}
	b := l.q[l.head]
	l.q[l.head] = nil
	l.head++
	if l.head == len(l.q) { // empty: reuse the slice from the start
		l.q, l.head = l.q[:0], 0
	}
	return b
}

// sender takes batches from l and sends them, until Shutdown's drain has
// emptied the lane: the worker pool's and ordered dispatch's goroutines. Its
// goroutine is registered as a callback goroutine: whatever user code runs
// on it (Send, the failure callback) is inside a callback.
func (p *Processor) sender(l *lane) {
	id := p.callbacks.enter()
	defer p.exited(id)
	for {
		b := p.next(l)
		if b == nil {
			return
		}
		p.deliver(l, b, nil, nil)
	}
}

// next returns l's next batch, waiting for one, or nil once Shutdown's drain
// has emptied the lane.
func (p *Processor) next(l *lane) *Batch {
	for {
		if b := l.pop(); b != nil {
			return b
		}
		select {
		case <-l.ready:
		case <-l.closing:
			// Every shard was cut before closing was closed (and every
			// appender in front of the lane exited), so once the lane is
			// empty nothing more can arrive.
			return l.pop()
		}
	}
}

// exited is the last thing a processor goroutine that runs callbacks does.
func (p *Processor) exited(id uint64) {
	p.callbacks.exit(id)
	if p.running.Add(-1) == 0 {
		close(p.done)
	}
}

// dispatcher is async dispatch: it takes batches in cut order, waits for
// the concurrency limit to admit each, and hands it to a send goroutine,
// which keeps the batch through its retries (acquiring the limit again for
// each). So sends start in cut order and at most the limit are under way.
// Send goroutines are kept for the next batch once done, and a new one is
// started only when none is free, so their number is the highest
// concurrency reached, not one per batch (registering a goroutine as a
// callback goroutine costs a microsecond). The limit is bounded by what the
// budget holds: budget / the average batch's cost.
func (p *Processor) dispatcher(l *lane) {
	id := p.callbacks.enter() // it fails batches itself when Shutdown aborts
	defer p.exited(id)
	jobs := make(chan sendJob) // unbuffered: a hand-off succeeds only to a free send goroutine
	defer close(jobs)          // the send goroutines finish their batch and exit
	var avg float64
	for {
		b := p.next(l)
		if b == nil {
			return
		}
		cost := float64(max(b.reserved, b.loadCost)) // a spilled batch costs this once loaded for its send
		if avg == 0 {
			avg = cost
		}
		avg += (cost - avg) / 16
		p.limit.setBudgetCap(max(1, int(float64(p.cfg.memLimit)/max(avg, 1))))
		tok, err := p.limit.acquire(p.sendCtx)
		if err != nil { // Shutdown's ctx ended: the batch is not sent
			p.finish(l, b, 0, 0, &ShutdownError{Cause: context.Cause(p.sendCtx)})
			continue
		}
		job := sendJob{l: l, b: b, tok: tok}
		select {
		case jobs <- job:
		default:
			p.running.Add(1)
			go p.sendLoop(job, jobs)
		}
	}
}

// sendJob is one admitted batch for a send goroutine.
type sendJob struct {
	l   *lane
	b   *Batch
	tok token
}

// sendLoop is a send goroutine of async dispatch: it delivers job, then
// the jobs handed to it, until the dispatcher closes jobs.
func (p *Processor) sendLoop(job sendJob, jobs <-chan sendJob) {
	id := p.callbacks.enter()
	defer p.exited(id)
	var note *sendNote
	if !p.cfg.inFlightSet { // the limit is adaptive: its Send ctx carries a note, for ReportServerTime
		note = newSendNote(p.sendCtx)
	}
	for ok := true; ok; job, ok = <-jobs {
		p.deliver(job.l, job.b, &job.tok, note)
	}
}

// limitChanged logs a lowered send limit, once per change, with the reason
// (with WithLogger; Stats.InFlightLimit shows the limit in any case).
func (p *Processor) limitChanged(c limitChange) {
	for _, h := range p.hooks.limit {
		h.OnLimitChange(c.From, c.To, string(c.Reason))
	}
	if c.To >= c.From {
		return
	}
	p.info.LogAttrs(context.Background(), slog.LevelInfo, "send limit lowered",
		slog.Int("from", c.From), slog.Int("to", c.To), slog.String("reason", string(c.Reason)),
		slog.Duration("rtt", c.RTT), slog.Duration("baseline", c.Baseline))
}

// deliver sends b with retries, accounts for it and recycles it. tok, if
// not nil, is the limit's admission for the first attempt; note, if not
// nil, the send goroutine's, for what the sink reports of each attempt.
func (p *Processor) deliver(l *lane, b *Batch, tok *token, note *sendNote) {
	attempts, stored, err := p.send(b, tok, note)
	p.finish(l, b, attempts, stored, err)
}

// finish accounts for b, sent or failed, and recycles it. With a journal,
// a batch that Shutdown's abort interrupted stays in the journal instead of
// failing, and one the journal dropped meanwhile was reported failed then.
func (p *Processor) finish(l *lane, b *Batch, attempts, stored int, err error) {
	n := b.count()
	failed := 0
	switch {
	case p.jr != nil && isShutdown(err) && p.leave(b):
		err = nil // kept for the next start: still pending
	case p.jr != nil && p.journalDone(b, err):
		failed, err = n, ErrDropped
	case err == nil:
		p.delivered.Add(uint64(n))
		p.batches.Add(1)
		p.info.LogAttrs(context.Background(), slog.LevelInfo, "batch delivered",
			slog.Int("count", n), slog.String("key", b.key), slog.Int("attempts", attempts))
	default:
		failed = p.fail(b, stored, attempts, err)
	}
	seq, reserved := b.seq, b.reserved
	putBatch(b)
	l.counter.Add(-1)
	// complete before release: an Add woken by the release must find this
	// batch done, or cutIfIdle would wrongly wait for it. Flush and
	// Shutdown wake after the release: what they covered holds no budget.
	p.completion.complete(seq, failed, err)
	if testHookBeforeRelease != nil {
		testHookBeforeRelease()
	}
	if p.mem.release(reserved) {
		p.cutIfIdle()
	}
	wakeAll(p.completion.released(seq))
}

// testHookBeforeRelease, if set (by tests, before New), runs in finish
// between a batch's completion and the release of its budget.
var testHookBeforeRelease func()

// isShutdown reports whether err is Shutdown's abort.
func isShutdown(err error) bool {
	_, ok := errors.AsType[*ShutdownError](err)
	return ok
}

// fail hands b to the failure callback and returns how many of its events
// failed. The counter moves first so that a callback reading Stats sees the
// batch as failed. stored is how many of b's first events some attempt
// delivered ([Partial]): they count as delivered, and only the rest fails.
// One log line per failed batch, at Error: count= carries a delivered
// prefix (count= lines sum to the deliveries), events= what failed.
func (p *Processor) fail(b *Batch, stored, attempts int, err error) int {
	attrs := []slog.Attr{slog.String("key", b.key), slog.Int("attempts", attempts), slog.Any("error", err)}
	msg := "batch failed"
	if stored > 0 && stored < b.Len() {
		p.delivered.Add(uint64(stored))
		b = b.tail(stored)
		msg = "batch failed in part"
		attrs = append(attrs, slog.Int("count", stored))
	}
	p.failed.Add(uint64(b.Len()))
	attrs = append(attrs, slog.Int("events", b.Len()))
	p.log.LogAttrs(context.Background(), slog.LevelError, msg, attrs...)
	for _, h := range p.hooks.fail {
		h.OnBatchFailed(FailureInfo{Key: b.key, Events: b.Len(), Attempts: attempts, Err: err})
	}
	if p.cfg.onFailure != nil {
		p.cfg.onFailure(b, err)
	}
	return b.Len()
}

// send calls the sink until it accepts b, the error is permanent, the retry
// policy gives up, or Shutdown aborts. It returns the number of sends made
// and how many of b's first events any attempt reported stored with
// [Partial]: the parts of a split batch stored by an earlier attempt stay
// stored whatever a later attempt does (the receiver de-duplicates them by
// key), so the largest prefix over all attempts counts.
func (p *Processor) send(b *Batch, tok *token, note *sendNote) (attempts, stored int, err error) {
	pol := p.cfg.retry
	var start time.Time
	var lastErr error
	for attempt := 1; ; attempt++ {
		if p.sendCtx.Err() != nil {
			return attempt - 1, stored, &ShutdownError{Cause: context.Cause(p.sendCtx), LastErr: lastErr}
		}
		if attempt == 1 {
			start = time.Now()
		} else {
			p.retries.Add(1) // counted when made: a retry Shutdown cut short is not one
		}
		if p.limit != nil && tok == nil {
			t, err := p.limit.acquire(p.sendCtx)
			if err != nil {
				return attempt - 1, stored, &ShutdownError{Cause: context.Cause(p.sendCtx), LastErr: lastErr}
			}
			tok = &t
		}
		if b.spilled > 0 { // its events are in the journal
			if err := p.load(b); err != nil {
				if errors.Is(err, ErrDropped) {
					p.releaseToken(tok)
					return attempt - 1, stored, err
				}
				p.releaseToken(tok)
				tok = nil
				lastErr = err
				p.log.LogAttrs(context.Background(), slog.LevelError, "journal read failed, retrying",
					slog.String("key", b.key), slog.Int("attempt", attempt), slog.Any("error", err))
				if !p.sleep(backoff(pol, attempt)) {
					return attempt - 1, stored, &ShutdownError{Cause: context.Cause(p.sendCtx), LastErr: err}
				}
				continue
			}
		}
		p.inFlight.Add(1)
		var began time.Time
		if len(p.hooks.send) > 0 {
			began = time.Now()
		}
		ctx := p.sendCtx
		if note != nil {
			ctx = note.ctx
			note.take() // nothing left from an earlier Send
		}
		err := p.sink.Send(ctx, b)
		var took time.Duration
		if len(p.hooks.send) > 0 {
			took = time.Since(began)
		}
		p.inFlight.Add(-1)
		if p.limit != nil {
			p.limit.releaseServed(*tok, outcomeOf(p.sendCtx, err), note.take())
			tok = nil
		}
		report := func(out SendOutcome) {
			if len(p.hooks.send) > 0 {
				p.sendHooks(SendInfo{Key: b.key, Events: b.Len(), Bytes: b.Size(), Attempt: attempt, Duration: took, Outcome: out, Err: err})
			}
		}
		if err == nil {
			report(SendDelivered)
			return attempt, 0, nil
		}
		if pe, ok := errors.AsType[*PartialError](err); ok && pe.Delivered < b.Len() {
			stored = max(stored, pe.Delivered)
		}
		lastErr = err
		if p.sendCtx.Err() != nil {
			report(SendAborted)
			return attempt, stored, &ShutdownError{Cause: context.Cause(p.sendCtx), LastErr: err}
		}
		if IsPermanent(err) {
			report(SendFailed)
			return attempt, stored, err
		}
		// A batch in the journal never gives up on a retryable error: it
		// waits on disk, not in memory.
		if !b.journaled && pol.MaxAttempts > 0 && attempt >= pol.MaxAttempts {
			report(SendFailed)
			return attempt, stored, &GiveUpError{Attempts: attempt, Elapsed: time.Since(start), Err: err}
		}
		wait := backoff(pol, attempt)
		if ra, ok := errors.AsType[*RetryAfterError](err); ok {
			wait = max(wait, ra.After)
			if p.limit != nil {
				// The receiver said when to come back: to every sender, not
				// only to this batch's.
				p.limit.pauseUntil(time.Now().Add(ra.After))
			}
		}
		if !b.journaled && pol.MaxElapsed > 0 && wait > pol.MaxElapsed-time.Since(start) { // not Since+wait: a huge hint would overflow
			report(SendFailed)
			return attempt, stored, &GiveUpError{Attempts: attempt, Elapsed: time.Since(start), Deadline: pol.MaxElapsed, Err: err}
		}
		report(SendRetrying)
		p.log.LogAttrs(context.Background(), slog.LevelWarn, "send failed, retrying",
			slog.Int("events", b.Len()), slog.String("key", b.key), slog.Int("attempt", attempt),
			slog.Duration("wait", wait), slog.Any("error", err))
		if p.jr != nil { // it waits in the journal, not in memory
			if n := p.jr.spill(b); n > 0 && p.mem.release(n) {
				p.cutIfIdle()
			}
		}
		if !p.sleep(wait) {
			return attempt, stored, &ShutdownError{Cause: context.Cause(p.sendCtx), LastErr: err}
		}
	}
}

// releaseToken hands back an admission not used for a send.
func (p *Processor) releaseToken(tok *token) {
	if p.limit != nil && tok != nil {
		p.limit.release(*tok, sendIgnored)
	}
}

// sendHooks tells the SendHooks about an attempt.
func (p *Processor) sendHooks(info SendInfo) {
	for _, h := range p.hooks.send {
		h.OnSend(info)
	}
}

// sleep waits d, or less if Shutdown aborts; it reports whether d passed.
func (p *Processor) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.sendCtx.Done():
		return false
	}
}
