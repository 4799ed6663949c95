package batchproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// lane is a FIFO of cut batches and the senders that drain it. Async
// dispatch has one lane with WithMaxInFlight senders; the worker pool has a
// lane per worker with one sender each (the worker's synchronous sends);
// ordered dispatch has one lane with one sender, so batches leave in the
// order they were cut and a retry holds back the rest.
type lane struct {
	mu      sync.Mutex
	q       []*Batch
	head    int
	senders int
	ready   chan struct{} // one token per push, up to senders
}

func newLane(senders int) *lane {
	return &lane{senders: senders, ready: make(chan struct{}, senders)}
}

func (l *lane) push(b *Batch) {
	l.mu.Lock()
	l.q = append(l.q, b)
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default: // every sender already has a token; each re-checks the queue before waiting
	}
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
// emptied the lane.
func (p *Processor) sender(l *lane) {
	defer func() {
		if p.running.Add(-1) == 0 {
			close(p.done)
		}
	}()
	for {
		if b := l.pop(); b != nil {
			p.deliver(b)
			continue
		}
		select {
		case <-l.ready:
		case <-p.closing:
			// Every shard was cut before closing was closed, so once the lane
			// is empty nothing more can arrive.
			if b := l.pop(); b != nil {
				p.deliver(b)
				continue
			}
			return
		}
	}
}

// deliver sends b with retries, accounts for it and recycles it.
func (p *Processor) deliver(b *Batch) {
	n := uint64(b.Len())
	attempts, err := p.send(b)
	if err == nil {
		p.delivered.Add(n)
		p.batches.Add(1)
		p.log.LogAttrs(context.Background(), slog.LevelInfo, "batch delivered",
			slog.Int("count", b.Len()), slog.String("key", b.key), slog.Int("attempts", attempts))
	} else {
		p.fail(b, err)
	}
	seq, reserved := b.seq, b.reserved
	putBatch(b)
	// complete before release: an Add woken by the release must find this
	// batch no longer outstanding, or relieve would wrongly wait for it.
	p.complete(seq)
	p.release(reserved)
}

// fail hands b to the failure callback. The counter moves first so that a
// callback reading Stats sees the batch as failed. If the last attempt
// delivered a prefix of b ([Partial]), that prefix counts as delivered and
// only the rest fails.
func (p *Processor) fail(b *Batch, err error) {
	if pe, ok := errors.AsType[*PartialError](err); ok && pe.Delivered > 0 && pe.Delivered < b.Len() {
		n := pe.Delivered
		p.delivered.Add(uint64(n))
		p.log.LogAttrs(context.Background(), slog.LevelWarn, "batch delivered in part",
			slog.Int("count", n), slog.String("key", b.key), slog.Int("events", b.Len()))
		b = b.tail(n)
	}
	p.failed.Add(uint64(b.Len()))
	p.log.LogAttrs(context.Background(), slog.LevelError, "batch failed",
		slog.Int("count_failed", b.Len()), slog.String("key", b.key), slog.Any("error", err))
	if p.cfg.onFailure != nil {
		p.cfg.onFailure(b, err)
	}
}

// send calls the sink until it accepts b, the error is permanent, the retry
// policy gives up, or Shutdown aborts. It returns the number of sends made.
func (p *Processor) send(b *Batch) (int, error) {
	pol := p.cfg.retry
	var start time.Time
	var lastErr error
	for attempt := 1; ; attempt++ {
		if p.sendCtx.Err() != nil {
			return attempt - 1, &ShutdownError{Cause: context.Cause(p.sendCtx), LastErr: lastErr}
		}
		if attempt == 1 {
			start = time.Now()
		}
		p.inFlight.Add(1)
		err := p.sink.Send(p.sendCtx, b)
		p.inFlight.Add(-1)
		if err == nil {
			return attempt, nil
		}
		lastErr = err
		if p.sendCtx.Err() != nil {
			return attempt, &ShutdownError{Cause: context.Cause(p.sendCtx), LastErr: err}
		}
		if IsPermanent(err) {
			return attempt, err
		}
		if pol.MaxAttempts > 0 && attempt >= pol.MaxAttempts {
			return attempt, fmt.Errorf("batchproc: giving up after %d attempts: %w", attempt, err)
		}
		wait := backoff(pol, attempt)
		if ra, ok := errors.AsType[*RetryAfterError](err); ok && ra.After > wait {
			wait = ra.After
		}
		if pol.MaxElapsed > 0 && wait > pol.MaxElapsed-time.Since(start) { // not Since+wait: a huge hint would overflow
			return attempt, fmt.Errorf("batchproc: giving up after %d attempts: next retry would pass %v: %w", attempt, pol.MaxElapsed, err)
		}
		p.retries.Add(1)
		// "events", not "count": count= lines are summed as deliveries.
		p.log.LogAttrs(context.Background(), slog.LevelWarn, "send failed, retrying",
			slog.Int("events", b.Len()), slog.String("key", b.key), slog.Int("attempt", attempt),
			slog.Duration("wait", wait), slog.Any("error", err))
		if !p.sleep(wait) {
			return attempt, &ShutdownError{Cause: context.Cause(p.sendCtx), LastErr: err}
		}
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
