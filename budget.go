package batchproc

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// budget is the memory budget of [WithMemoryLimit]: the bytes reserved by
// batches being filled, queued or sent, and the queue of Adds waiting for
// room. It knows nothing of batches: callers reserve and release numbers.
//
// Batches reserve in chunks, so that Add rarely touches the shared counter.
// Blocked Adds queue in arrival order; a release hands budget straight to
// the queue's head (as golang.org/x/sync/semaphore does), and while anyone
// waits nobody else takes new budget, so a blocked Add is never overtaken.
type budget struct {
	// waiters is read by every Add's fast path and written only when Adds
	// queue: it has a cache line of its own, away from used, which every
	// chunk reservation and release writes (DESIGN.md, "The fast path").
	waiters atomic.Int32 // len(queue), readable without mu
	_       [60]byte

	used  atomic.Int64 // bytes reserved
	limit int64
	chunk int64 // what a reservation takes when there is room, at least the cost asked

	mu    sync.Mutex
	queue []*waiter
}

// waiter is an Add blocked on the budget.
type waiter struct {
	need    int           // the event's cost
	granted int           // budget taken for it; set before ready is closed
	ready   chan struct{} // closed when granted
}

func newBudget(limit, chunk int) *budget {
	return &budget{limit: int64(limit), chunk: int64(max(chunk, 1))}
}

// waiting reports whether any Add is queued for budget.
func (m *budget) waiting() bool { return m.waiters.Load() > 0 }

// reserve takes budget for an event of the given cost: a chunk if there is
// room, else just the cost. It returns what it took, 0 if nothing: there is
// no room, or Adds are queued and released budget is theirs.
func (m *budget) reserve(cost int) int {
	if m.waiting() {
		return 0
	}
	want := max(int64(cost), m.chunk)
	for {
		u := m.used.Load()
		take := want
		if u+take > m.limit {
			take = int64(cost)
			if u+take > m.limit {
				return 0
			}
		}
		if m.used.CompareAndSwap(u, u+take) {
			return int(take)
		}
	}
}

// release returns n bytes and hands what it can to queued Adds. It reports
// whether an Add is still left waiting, which the caller must act on: the
// budget it needs may be held by batches that nobody is sending.
func (m *budget) release(n int) (stillWaiting bool) {
	if n != 0 {
		m.used.Add(-int64(n))
	}
	if !m.waiting() {
		return false
	}
	return m.grant()
}

// grant hands free budget to queued Adds in arrival order and reports
// whether one is left waiting. Each gets its event's cost exactly, except the
// last in the queue, which gets up to a chunk so that the Adds arriving
// after it proceed on the fast path. (A chunk for every waiter would leave
// leftovers that later arrivals could take while earlier waiters that fit
// still wait.) It stops at the first waiter that does not fit.
func (m *budget) grant() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.queue) > 0 {
		w := m.queue[0]
		u := m.used.Load()
		free := m.limit - u
		if free < int64(w.need) {
			return true
		}
		take := int64(w.need)
		if len(m.queue) == 1 {
			take = min(free, max(take, m.chunk))
		}
		if !m.used.CompareAndSwap(u, u+take) {
			continue
		}
		w.granted = int(take)
		close(w.ready)
		m.queue[0] = nil
		m.queue = m.queue[1:]
		m.waiters.Store(int32(len(m.queue)))
	}
	return false
}

// enqueue queues an Add needing cost bytes. The caller then calls grant
// (budget freed before it queued is announced to nobody else) and waits on
// the waiter's ready channel, or leaves.
func (m *budget) enqueue(cost int) *waiter {
	w := &waiter{need: cost, ready: make(chan struct{})}
	m.mu.Lock()
	m.queue = append(m.queue, w)
	m.waiters.Store(int32(len(m.queue)))
	m.mu.Unlock()
	return w
}

// leave removes a waiter that gives up, returning a grant it got meanwhile.
// It reports, as release does, whether an Add is left waiting.
func (m *budget) leave(w *waiter) (stillWaiting bool) {
	m.mu.Lock()
	i := slices.Index(m.queue, w)
	if i >= 0 {
		m.queue = slices.Delete(m.queue, i, i+1)
		m.waiters.Store(int32(len(m.queue)))
	}
	m.mu.Unlock()
	if i < 0 { // granted before it could leave
		return m.release(w.granted)
	}
	if i == 0 { // the waiters behind it may fit now
		return m.grant()
	}
	return m.waiting()
}

// wait queues for cost bytes until they are granted, ctx is done or stop is
// closed. idle is called whenever the Add is left waiting, so that budget
// held by unsent batches can be freed. It returns the grant, or the reason.
func (m *budget) wait(ctx context.Context, stop <-chan struct{}, cost int, idle func()) (int, error) {
	w := m.enqueue(cost)
	if m.grant() {
		idle()
	}
	select {
	case <-w.ready:
		return w.granted, nil
	case <-ctx.Done():
		if m.leave(w) {
			idle()
		}
		return 0, ctx.Err()
	case <-stop:
		if m.leave(w) {
			idle()
		}
		return 0, ErrClosed
	}
}

// force takes n bytes whatever the room: a batch read back from the journal
// for its send (the sends under way are bounded by the send limit).
func (m *budget) force(n int) { m.used.Add(int64(n)) }
