// Package batchproctest helps test code that uses batchproc: [Recorder], a
// [batchproc.Sink] that keeps a copy of every batch it is sent and can be
// told to fail, block or observe each send.
package batchproctest

import (
	"context"
	"slices"
	"sync"

	"github.com/batchproc/batchproc"
)

// Sent is a copy of one batch a [Recorder] received.
type Sent struct {
	Key     string
	Events  []batchproc.Event // copies: valid after Send returned
	Attempt int               // 1 for the first send of this key, 2 for its first retry, ...
	Err     error             // what Send returned
}

// Recorder is a [batchproc.Sink] that records every Send. The zero value
// accepts every batch. It is safe for concurrent use.
type Recorder struct {
	// Hook, if set, is called on every Send with the number of the attempt
	// for this batch's key (1 for the first); Send returns what it returns.
	// It may block (on ctx, or on a channel the test controls).
	Hook func(ctx context.Context, b *batchproc.Batch, attempt int) error

	mu       sync.Mutex
	sent     []Sent
	attempts map[string]int
	inFlight int
	maxIn    int
}

// Send implements [batchproc.Sink].
func (r *Recorder) Send(ctx context.Context, b *batchproc.Batch) error {
	r.mu.Lock()
	if r.attempts == nil {
		r.attempts = make(map[string]int)
	}
	r.attempts[b.Key()]++
	attempt := r.attempts[b.Key()]
	r.inFlight++
	r.maxIn = max(r.maxIn, r.inFlight)
	r.mu.Unlock()

	var err error
	if r.Hook != nil {
		err = r.Hook(ctx, b, attempt)
	}
	s := Sent{Key: b.Key(), Attempt: attempt, Err: err, Events: make([]batchproc.Event, b.Len())}
	for i := range s.Events {
		e := b.Event(i)
		s.Events[i] = batchproc.Event{ID: e.ID, Payload: slices.Clone(e.Payload)}
	}
	r.mu.Lock()
	r.inFlight--
	r.sent = append(r.sent, s)
	r.mu.Unlock()
	return err
}

// Sent returns every Send so far, in the order they returned.
func (r *Recorder) Sent() []Sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// Delivered returns the batches whose Send returned nil, in order.
func (r *Recorder) Delivered() []Sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Sent
	for _, s := range r.sent {
		if s.Err == nil {
			out = append(out, s)
		}
	}
	return out
}

// Events returns the events of the delivered batches, in delivery order.
func (r *Recorder) Events() []batchproc.Event {
	var out []batchproc.Event
	for _, s := range r.Delivered() {
		out = append(out, s.Events...)
	}
	return out
}

// MaxInFlight returns the most Send calls that were under way at once.
func (r *Recorder) MaxInFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxIn
}
