package batchproc

import (
	"context"
	"fmt"
	"math"
	"sync"
)

// completion tracks which batches are done (delivered or failed), for
// Flush, Shutdown and cutIfIdle. Batches are numbered as they are cut; low
// is the smallest number not yet done, and completions out of order park
// in doneSeq until low reaches them. A batch is done before its budget is
// released (an Add woken by the release must find it done) and a watcher
// wakes only after: releasing holds the batches in between.
type completion struct {
	mu        sync.Mutex
	next      uint64 // the number the next cut batch gets
	low       uint64
	doneSeq   map[uint64]struct{} // done numbers > low
	releasing map[uint64]struct{} // done numbers whose budget is not released yet
	watchers  []*watcher
}

// A watcher waits for every batch numbered below target, and collects the
// failures among them: a Flush or a Shutdown.
type watcher struct {
	target uint64
	ch     chan struct{} // closed once every batch below target is done and its budget released
	out    outcome
}

// outcome is what a Flush or Shutdown reports of the batches it covered.
type outcome struct {
	failedEvents  int
	failedBatches int
	first         error // the first failure's reason
}

// err returns the error for o: nil if nothing failed.
func (o *outcome) err() error {
	if o.failedEvents == 0 {
		return nil
	}
	return &DeliveryError{Events: o.failedEvents, Batches: o.failedBatches, Err: o.first}
}

func (c *completion) init() {
	c.next, c.low = 1, 1
	c.doneSeq = make(map[uint64]struct{})
	c.releasing = make(map[uint64]struct{})
}

// number returns the number of a batch being cut.
func (c *completion) number() uint64 {
	c.mu.Lock()
	n := c.next
	c.next++
	c.mu.Unlock()
	return n
}

// idle reports whether every cut batch is done: nothing queued or in flight.
func (c *completion) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next == c.low
}

// complete records that batch seq is done, failed events of it having
// failed for reason err. The caller then releases the batch's budget and
// calls released, which wakes the watchers: a Flush returns only once what
// it flushed holds no more budget, while an Add woken by the release
// already finds the batch done.
func (c *completion) complete(seq uint64, failed int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if failed > 0 {
		for _, w := range c.watchers {
			if seq < w.target {
				w.out.failedEvents += failed
				w.out.failedBatches++
				if w.out.first == nil {
					w.out.first = err
				}
			}
		}
	}
	c.releasing[seq] = struct{}{}
	if seq != c.low {
		c.doneSeq[seq] = struct{}{}
		return
	}
	c.low++
	for {
		if _, ok := c.doneSeq[c.low]; !ok {
			break
		}
		delete(c.doneSeq, c.low)
		c.low++
	}
}

// released records that the budget of batch seq, done, was released, and
// returns the watchers now satisfied, for the caller to wake (wakeAll):
// those whose every batch is done and released. Another sender may still
// be between its batch's complete and released, so that is not only the
// batches below low.
func (c *completion) released(seq uint64) []*watcher {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.releasing, seq)
	bound := c.low // a watcher of target <= bound is satisfied
	for s := range c.releasing {
		bound = min(bound, s)
	}
	var woken []*watcher
	kept := c.watchers[:0]
	for _, w := range c.watchers {
		if w.target <= bound {
			woken = append(woken, w)
		} else {
			kept = append(kept, w)
		}
	}
	clear(c.watchers[len(kept):])
	c.watchers = kept
	return woken
}

func wakeAll(ws []*watcher) {
	for _, w := range ws {
		close(w.ch)
	}
}

// watch returns a watcher for every batch cut so far, or nil if they are all
// done.
func (c *completion) watch() *watcher {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.low >= c.next && len(c.releasing) == 0 {
		return nil
	}
	w := &watcher{target: c.next, ch: make(chan struct{})}
	c.watchers = append(c.watchers, w)
	return w
}

// watchRest returns a watcher of every batch that completes from now on,
// for Shutdown's drain: it collects failures and is never woken (Shutdown
// waits for the senders to exit instead).
func (c *completion) watchRest() *watcher {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &watcher{target: math.MaxUint64}
	c.watchers = append(c.watchers, w)
	return w
}

// unwatch removes a watcher that gives up.
func (c *completion) unwatch(w *watcher) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.watchers {
		if x == w {
			c.watchers = append(c.watchers[:i], c.watchers[i+1:]...)
			return
		}
	}
}

// result returns what w collected; it is final once w.ch is closed.
func (c *completion) result(w *watcher) outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return w.out
}

// Flush sends every event added before the call, without waiting for the
// batches to fill or linger, and waits until each was delivered or handed to
// the failure callback, and the memory they held was released. It returns
// nil if all were delivered, a [*DeliveryError] saying how many failed and
// why, ctx's error if ctx ends first (the sends go on), and [ErrClosed]
// after Shutdown. It is safe to call concurrently. From a callback
// ([Sink.Send] or the [WithOnFailure] function) it returns [ErrInCallback]
// at once: it would wait for the batch of that very callback.
//
// With a journal, Flush first waits until what a previous processor left
// there was read back (Stats.Replayed), so it covers those events too.
func (p *Processor) Flush(ctx context.Context) error {
	if p.closed.Load() {
		return ErrClosed
	}
	if p.callbacks.current() {
		return fmt.Errorf("batchproc: Flush: %w", ErrInCallback)
	}
	if p.jr != nil {
		select {
		case <-p.jr.replayDone:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.cutAll()
	w := p.completion.watch()
	if w == nil {
		return nil
	}
	select {
	case <-w.ch:
		out := p.completion.result(w)
		return out.err()
	case <-ctx.Done():
		p.completion.unwatch(w)
		return ctx.Err()
	}
}
