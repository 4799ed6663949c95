// Package groupq is the queue of the stores' group commits: Store calls
// queue their requests, and a caller holding one of the queue's leader
// slots takes what is queued (up to an event budget) and writes it as one
// group, while the others wait for their answer.
//
// The queue decides who writes what; the store decides how a group is
// written and answers each request by closing its [Waiter.Done]. A caller
// whose ctx ends while its request is still queued withdraws it: no leader
// will take it, and nothing of it is read again, so its batch is the
// caller's once more. Once a leader has taken a request, its outcome is the
// truth and the caller waits for it.
package groupq

import (
	"context"
	"sync"
	"sync/atomic"
)

const (
	queued int32 = iota
	taken
	withdrawn
)

// A Waiter is the part of a request the queue manages; a store embeds it
// in its request type.
type Waiter struct {
	ctx    context.Context
	events int
	state  atomic.Int32
	done   chan struct{}
}

// Init readies w for one Submit: ctx is the caller's, events its batch's
// event count (what the budget counts; read by leaders for requests they do
// not take, so fixed before the request is queued).
func (w *Waiter) Init(ctx context.Context, events int) {
	w.ctx, w.events, w.done = ctx, events, make(chan struct{})
}

// Ctx returns the caller's ctx.
func (w *Waiter) Ctx() context.Context { return w.ctx }

// Events returns the event count given to Init.
func (w *Waiter) Events() int { return w.events }

// Answer releases the request's caller; the leader that took it calls it
// once, after setting the request's outcome.
func (w *Waiter) Answer() { close(w.done) }

// Request is what a queue holds: a store's request, with its Waiter.
type Request interface{ GroupWaiter() *Waiter }

// Queue is a group commit's queue of requests of type R.
type Queue[R Request] struct {
	mu    sync.Mutex
	q     []R
	slots chan struct{}

	// OnQueued, when set (tests), sees the queue's length after each
	// request joins it.
	OnQueued func(n int)
}

// New returns a queue with leaders leader slots (at least 1).
func New[R Request](leaders int) *Queue[R] {
	return &Queue[R]{slots: make(chan struct{}, max(1, leaders))}
}

// Leaders returns the number of leader slots.
func (q *Queue[R]) Leaders() int { return cap(q.slots) }

// Submit queues r and returns once r is answered, leading groups whenever
// a leader slot is free: holding one, it takes the queued requests, up to
// budget events (at least one request), and calls lead with them (lead
// must answer each); after releasing the slot, if it led a group, it calls
// after, if not nil.
// Submit returns false if r was withdrawn instead: its ctx ended while no
// leader had taken it.
func (q *Queue[R]) Submit(r R, budget int, lead func(group []R), after func()) (answered bool) {
	w := r.GroupWaiter()
	q.mu.Lock()
	q.q = append(q.q, r)
	if q.OnQueued != nil {
		q.OnQueued(len(q.q))
	}
	q.mu.Unlock()
	for {
		select {
		case <-w.done:
			return true
		default:
		}
		select {
		case <-w.done:
			return true
		case q.slots <- struct{}{}:
			group := q.take(budget)
			if len(group) > 0 {
				lead(group)
			}
			<-q.slots
			// Once per group: a caller whose slot found the queue empty
			// (its request taken by another leader meanwhile) led none.
			if after != nil && len(group) > 0 {
				after()
			}
		case <-w.ctx.Done():
			if w.state.CompareAndSwap(queued, withdrawn) {
				return false
			}
			<-w.done // a leader has it: its outcome is the truth
			return true
		}
	}
}

// take removes the queued requests from the queue, up to budget events
// (at least one request), and returns those not withdrawn.
func (q *Queue[R]) take(budget int) []R {
	q.mu.Lock()
	defer q.mu.Unlock()
	var group []R
	events, i := 0, 0
	for ; i < len(q.q); i++ {
		w := q.q[i].GroupWaiter()
		if len(group) > 0 && events+w.events > budget {
			break
		}
		if w.state.CompareAndSwap(queued, taken) {
			group = append(group, q.q[i])
			events += w.events
		}
	}
	n := copy(q.q, q.q[i:])
	clear(q.q[n:])
	q.q = q.q[:n]
	return group
}

// Hold takes every leader slot, so that Submit calls queue up until
// release is called (for tests: to queue a group in a known order).
func (q *Queue[R]) Hold() (release func()) {
	for range cap(q.slots) {
		q.slots <- struct{}{}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			for range cap(q.slots) {
				<-q.slots
			}
		})
	}
}

// HoldQueued is Hold for tests that queue requests in a known order: it
// also sets OnQueued, and wait blocks until at least n requests are
// queued.
func (q *Queue[R]) HoldQueued() (wait func(n int), release func()) {
	ch := make(chan int, 1024)
	q.OnQueued = func(n int) { ch <- n }
	release = q.Hold()
	return func(n int) {
		for got := range ch {
			if got >= n {
				return
			}
		}
	}, release
}
