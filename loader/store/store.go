// Package store defines the storage seam of the Batch Loader: the [Store]
// interface every backend implements, the decoded [Batch] it receives, and
// [Discard], a store that keeps nothing.
//
// Backends live in subpackages (store/sqlite, store/postgres) and must all
// pass the conformance suite in store/storetest.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
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
	// Namespace is the space Key lives in: the same Key in two namespaces
	// names two batches. The loader uses "" for HTTP without auth, the
	// tenant of the bearer token ([TokenNamespace]) with auth, and
	// [NamespaceKafka] for the Kafka consumer. A store treats it as opaque.
	Namespace string
	// Key is the request's Idempotency-Key, or "" when it had none (then the
	// batch is always stored as new).
	Key    string
	Events []Event
}

// NamespaceKafka is the namespace of the Kafka consumer's keys, which no
// HTTP request can reach: token namespaces are hex digits, and HTTP without
// auth uses "".
const NamespaceKafka = "kafka"

// TokenNamespace returns the namespace of the HTTP requests authenticated
// by the token whose SHA-256 is tokenSum: the first 8 bytes of that sum as
// 16 lowercase hex digits. It names the tenant in the store without storing
// the token; a token and its replacement are two tenants.
func TokenNamespace(tokenSum [sha256.Size]byte) string {
	const hexdigits = "0123456789abcdef"
	var b [16]byte
	for i, c := range tokenSum[:8] {
		b[2*i], b[2*i+1] = hexdigits[c>>4], hexdigits[c&15]
	}
	return string(b[:])
}

// Digest returns the batch's content digest, which a store keeps with its
// key to tell a retry (same digest: a duplicate) from another batch under a
// reused key (ErrKeyReused): SHA-256 over, for each event in order, its
// payload's length as 8 bytes big-endian followed by the payload. Only the
// payloads count (the id, type and ts are read from them): how the batch
// was framed or compressed on the wire, and the whitespace between events,
// do not change it.
func (b *Batch) Digest() [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	for i := range b.Events {
		p := b.Events[i].Payload
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// KeyParams returns b's namespace, key and digest as a store writes them:
// the namespace and key through [CleanText], and for a batch without a key
// nil key and digest (SQL NULL, which never conflicts: such a batch is
// always stored as new).
func (b *Batch) KeyParams() (ns string, key, digest any) {
	ns = CleanText(b.Namespace)
	if b.Key == "" {
		return ns, nil, nil
	}
	sum := b.Digest()
	return ns, CleanText(b.Key), sum[:]
}

// CleanText is how every store stores an id, type, key or namespace: with
// each NUL byte and each invalid UTF-8 sequence replaced by U+FFFD
// (PostgreSQL text can hold neither; SQLite applies the same rule so both
// stores store the same values). Valid strings are returned as is, without
// allocating. Payloads are never rewritten.
func CleanText(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
}

// CleanTS is how every store stores a timestamp: in UTC, truncated toward
// the past to the microsecond (PostgreSQL's timestamptz precision), and the
// zero time as NULL, like a missing ts. The zero time is also what an
// explicit "ts":"0001-01-01T00:00:00Z" gives: that is how Go encodes an unset
// time.Time, so it is taken for one. Both stores apply it, so they store the
// same values.
func CleanTS(t time.Time) (ts time.Time, null bool) {
	t = t.UTC().Truncate(time.Microsecond)
	if t.IsZero() {
		return time.Time{}, true
	}
	return t, false
}

// Counts are a store's totals. Events and Batches are those in the store:
// the rows found when it was opened plus those this Store stored since
// (another process writing the same database after Open is not counted).
// Duplicates counts this Store's calls since Open; it is not kept in the
// database.
type Counts struct {
	Events     int64 `json:"events"`     // events in the store
	Batches    int64 `json:"batches"`    // batches in the store
	Duplicates int64 `json:"duplicates"` // batches acknowledged again for a known key since Open, not stored
}

// Store persists batches. Implementations are safe for concurrent use.
type Store interface {
	// Store commits all of b's events and its key (when not "") with its
	// namespace and [Batch.Digest] in one transaction: on return with a nil
	// error the batch is durable. If b.Key was stored before in
	// b.Namespace, nothing is written: with the same digest duplicate is
	// true; with another digest Store returns an error wrapping
	// [ErrKeyReused]. It never stores a batch without its key nor a key
	// without its batch. Store must not keep b or its payloads after
	// returning. If ctx is done before the commit, Store returns an error
	// (wrapping ctx.Err() when that is the cause) and stores nothing.
	Store(ctx context.Context, b *Batch) (duplicate bool, err error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	// Counts returns the store's totals (see [Counts]).
	Counts() Counts
	// Close releases the store. Store after Close returns ErrClosed.
	Close() error
}

// ErrClosed is returned by a Store used after Close.
var ErrClosed = errors.New("store: closed")

// ErrKeyReused is returned (wrapped) by Store for a batch whose key was
// stored before, in the same namespace, with different content.
var ErrKeyReused = errors.New("store: idempotency key already used for a different batch")

// Discard validates nothing further and stores nothing: it counts batches
// and events, and remembers keys so that duplicates are reported as a real
// store would. It measures the loader's ceiling without a database.
type Discard struct {
	mu     sync.Mutex
	keys   map[nsKey][sha256.Size]byte // digest by key
	counts Counts
	closed bool
}

type nsKey struct{ ns, key string }

// NewDiscard returns an empty Discard store.
func NewDiscard() *Discard { return &Discard{keys: make(map[nsKey][sha256.Size]byte)} }

// Store implements [Store]. Like a real store, it refuses a batch whose ctx
// is already done.
func (d *Discard) Store(ctx context.Context, b *Batch) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var sum [sha256.Size]byte
	if b.Key != "" {
		sum = b.Digest()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false, ErrClosed
	}
	if b.Key != "" {
		k := nsKey{b.Namespace, b.Key}
		if old, ok := d.keys[k]; ok {
			if old != sum {
				return false, ErrKeyReused
			}
			d.counts.Duplicates++
			return true, nil
		}
		d.keys[k] = sum
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

// Tally keeps the [Counts] of a store; a backend embeds it, calls Start
// with the totals in the database at Open, Record after each successful
// Store, and gets its Counts method from it. It is safe for concurrent use.
type Tally struct {
	events, batches, duplicates atomic.Int64
}

// Start adds the events and batches already in the store.
func (t *Tally) Start(events, batches int64) {
	t.events.Add(events)
	t.batches.Add(batches)
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
