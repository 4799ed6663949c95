// Package store defines the storage seam of the Batch Loader: the [Store]
// interface every backend implements, the decoded [Batch] it receives, and
// [Discard], a store that keeps nothing.
//
// Backends live in subpackages (store/sqlite, store/postgres) and must all
// pass the conformance suite in store/storetest.
package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one validated event of a batch.
type Event struct {
	ID      string    // the event's "id" member; "" when absent
	Type    string    // the event's "type" member; "" when absent
	TS      time.Time // the event's "ts" member; zero when absent
	Payload []byte    // the whole JSON object, verbatim (no trailing newline)
}

// Batch is one decoded request, stored all-or-nothing.
type Batch struct {
	// Key is the request's Idempotency-Key, or "" when it had none (then the
	// batch is always stored as new).
	Key    string
	Events []Event
}

// Counts are a store's totals since it was opened.
type Counts struct {
	Events     int64 `json:"events"`     // events stored
	Batches    int64 `json:"batches"`    // batches stored
	Duplicates int64 `json:"duplicates"` // batches acknowledged again for a known key, not stored
}

// Store persists batches. Implementations are safe for concurrent use.
type Store interface {
	// Store commits all of b's events and its key (when not "") in one
	// transaction: on return with a nil error the batch is durable. If b.Key
	// was stored before, nothing is written and duplicate is true. It never
	// stores a batch without its key nor a key without its batch. Store must
	// not keep b or its payloads after returning. If ctx is done before the
	// commit, Store returns an error (wrapping ctx.Err() when that is the
	// cause) and stores nothing.
	Store(ctx context.Context, b *Batch) (duplicate bool, err error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	// Counts returns the totals since the store was opened.
	Counts() Counts
	// Close releases the store. Store after Close returns ErrClosed.
	Close() error
}

// ErrClosed is returned by a Store used after Close.
var ErrClosed = errors.New("store: closed")

// Discard validates nothing further and stores nothing: it counts batches
// and events, and remembers keys so that duplicates are reported as a real
// store would. It measures the loader's ceiling without a database.
type Discard struct {
	mu     sync.Mutex
	keys   map[string]struct{}
	counts Counts
	closed bool
}

// NewDiscard returns an empty Discard store.
func NewDiscard() *Discard { return &Discard{keys: make(map[string]struct{})} }

// Store implements [Store]. Like a real store, it refuses a batch whose ctx
// is already done.
func (d *Discard) Store(ctx context.Context, b *Batch) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false, ErrClosed
	}
	if b.Key != "" {
		if _, ok := d.keys[b.Key]; ok {
			d.counts.Duplicates++
			return true, nil
		}
		d.keys[b.Key] = struct{}{}
	}
	d.counts.Batches++
	d.counts.Events += int64(len(b.Events))
	return false, nil
}

// Ping implements [Store].
func (d *Discard) Ping(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	return nil
}

// Counts implements [Store].
func (d *Discard) Counts() Counts {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counts
}

// Close implements [Store].
func (d *Discard) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

// Tally keeps the [Counts] of a store; a backend embeds it, calls Record
// after each successful Store, and gets its Counts method from it. It is
// safe for concurrent use.
type Tally struct {
	events, batches, duplicates atomic.Int64
}

// Record counts one successful Store of b: a stored batch, or a duplicate.
func (t *Tally) Record(b *Batch, duplicate bool) {
	if duplicate {
		t.duplicates.Add(1)
		return
	}
	t.batches.Add(1)
	t.events.Add(int64(len(b.Events)))
}

// Counts returns the totals recorded so far.
func (t *Tally) Counts() Counts {
	return Counts{Events: t.events.Load(), Batches: t.batches.Load(), Duplicates: t.duplicates.Load()}
}
