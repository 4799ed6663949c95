// Package storetest is the conformance suite every [store.Store] must pass,
// in the spirit of [testing/slogtest]: a backend's tests call [Run] with a
// function that opens a fresh, empty store.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := mybackend.Open(filepath.Join(t.TempDir(), "db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// # What is checked
//
// Through the [store.Store] interface alone: counts after storing, a repeated
// key with the same content acknowledged as a duplicate and counted in
// [store.Counts.Duplicates], a repeated key with other content refused with
// [store.ErrKeyReused], keys of different namespaces kept apart, the empty
// key always stored as new, exactly-once storage when many
// goroutines store the same key at once, concurrent distinct batches, an
// error wrapping [store.ErrClosed] after Close, a context cancelled before
// Store, and all-or-nothing storage when the context is cancelled at every
// possible point during Store (the key of a failed batch must still be
// free, so a retry is stored as new).
//
// A store that also implements [Reader] is further checked row by row: ids,
// types, timestamps and payload bytes round-trip, every batch is stored once,
// and a failed batch leaves no rows behind. Stores that keep no rows, such as
// [store.Discard], simply do not implement it.
//
// # Contract details the suite fixes
//
// Every backend stores the same values for the same input, so the rules are
// exact: Event.TS is stored as [store.CleanTS] makes it (the instant to the
// microsecond, truncated toward the past, PostgreSQL's timestamptz
// precision; the zero time, 0001-01-01T00:00:00Z, as no ts); the zone is not
// kept. Event.ID and Event.Type, the key and the namespace are stored as
// [store.CleanText] makes them (each NUL and each invalid UTF-8 sequence
// replaced by U+FFFD). Payloads are always returned verbatim; a nil payload
// is stored as an empty one.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchproc/batchproc/loader/store"
)

// Reader is implemented by stores that can read back what they stored. The
// suite uses it to check rows; stores that keep nothing need not implement
// it.
type Reader interface {
	// Batches returns every stored batch in the order stored, each with its
	// key ("" when it had none) and its events in their original order.
	Batches(ctx context.Context) ([]store.Batch, error)
}

// MigratedStore is a store that can read back what it stored: what
// CheckMigrated needs.
type MigratedStore interface {
	store.Store
	Reader
}

// CheckMigrated checks a store just opened on a database that a backend's
// test filled with the first schema (before namespaces and digests): three
// batches, keys "old-http-key" (2 events, the first with id "a"),
// "kafka:events:0:41" and none, 4 events in all. The old keys stay taken in
// every namespace whatever the content (they have no digest), a new key is
// stored and then refused for other content, and the rows read back in
// order. It returns them.
func CheckMigrated(t *testing.T, s MigratedStore) []store.Batch {
	t.Helper()
	ctx := context.Background()
	if got, want := s.Counts(), (store.Counts{Events: 4, Batches: 3}); got != want {
		t.Fatalf("Counts after migration = %+v, want %+v", got, want)
	}
	for _, ns := range []string{"", "0123456789abcdef", store.NamespaceKafka} {
		for _, key := range []string{"old-http-key", "kafka:events:0:41"} {
			// Any content: the old rows have no digest to compare.
			b := &store.Batch{Namespace: ns, Key: key, Events: []store.Event{{ID: "other", Payload: []byte(`{"id":"other"}`)}}}
			if dup, err := s.Store(ctx, b); err != nil || !dup {
				t.Errorf("namespace %q, old key %q: Store = %v, %v; want a duplicate", ns, key, dup, err)
			}
		}
	}
	nb := &store.Batch{Namespace: "0123456789abcdef", Key: "new-key", Events: []store.Event{{ID: "c", Payload: []byte(`{"id":"c"}`)}}}
	if dup, err := s.Store(ctx, nb); err != nil || dup {
		t.Fatalf("new key after migration: Store = %v, %v; want stored", dup, err)
	}
	if _, err := s.Store(ctx, &store.Batch{Namespace: nb.Namespace, Key: nb.Key, Events: []store.Event{{ID: "d", Payload: []byte(`{"id":"d"}`)}}}); !errors.Is(err, store.ErrKeyReused) {
		t.Fatalf("new key reused with other content: error %v, want store.ErrKeyReused", err)
	}
	got, err := s.Batches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].Key != "old-http-key" || len(got[0].Events) != 2 || got[0].Events[0].ID != "a" ||
		got[1].Key != "kafka:events:0:41" || got[2].Key != "" || got[3].Key != "new-key" || got[3].Namespace != nb.Namespace {
		t.Fatalf("read back %+v, want the three old batches and the new one", got)
	}
	return got
}

// Run runs the conformance suite as subtests of t. open must return a new,
// empty store each time it is called; Run closes it (calling Close again is
// harmless for a conforming store, so open may also register a t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"StoreAndCount", testStoreAndCount},
		{"DuplicateKey", testDuplicateKey},
		{"KeyReused", testKeyReused},
		{"Namespaces", testNamespaces},
		{"EmptyKeyAlwaysNew", testEmptyKey},
		{"ConcurrentSameKey", testConcurrentSameKey},
		{"ConcurrentDistinct", testConcurrentDistinct},
		{"ConcurrentMixed", testConcurrentMixed},
		{"RoundTrip", testRoundTrip},
		{"AwkwardStrings", testAwkwardStrings},
		{"CancelledBeforeStore", testCancelledBefore},
		{"AllOrNothing", testAllOrNothing},
		{"Ping", testPing},
		{"StoreAfterClose", testStoreAfterClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			if s == nil {
				t.Fatal("open returned a nil store")
			}
			defer func() {
				if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
					t.Errorf("Close: %v", err)
				}
			}()
			tt.fn(t, s)
		})
	}
}

// base is a fixed, nanosecond-precise instant for generated events.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// MakeBatch returns a batch of n distinct events under key (none when key
// is ""); tag makes ids and payloads unique across batches: ids are
// tag-0 to tag-(n-1). For backends' own tests.
func MakeBatch(key, tag string, n int) *store.Batch { return makeBatch(key, tag, n) }

// makeBatch returns a batch of n distinct events under key; tag makes ids and
// payloads unique across batches.
func makeBatch(key, tag string, n int) *store.Batch {
	b := &store.Batch{Key: key, Events: make([]store.Event, n)}
	for i := range b.Events {
		id := fmt.Sprintf("%s-%d", tag, i)
		ts := base.Add(time.Duration(i) * time.Millisecond)
		b.Events[i] = store.Event{
			ID:      id,
			Type:    "test.event",
			TS:      ts,
			Payload: fmt.Appendf(nil, `{"id":%q,"type":"test.event","ts":%q,"n":%d}`, id, ts.Format(time.RFC3339Nano), i),
		}
	}
	return b
}

// cloneBatch deep-copies b so a test can compare what it sent with what was
// stored even if a misbehaving store changed b.
func cloneBatch(b *store.Batch) *store.Batch {
	c := &store.Batch{Namespace: b.Namespace, Key: b.Key, Events: make([]store.Event, len(b.Events))}
	for i, e := range b.Events {
		e.Payload = bytes.Clone(e.Payload)
		c.Events[i] = e
	}
	return c
}

func mustStore(t *testing.T, s store.Store, b *store.Batch, wantDup bool) {
	t.Helper()
	dup, err := s.Store(context.Background(), b)
	if err != nil {
		t.Fatalf("Store(key %q, %d events): %v", b.Key, len(b.Events), err)
	}
	if dup != wantDup {
		t.Fatalf("Store(key %q) duplicate = %v, want %v", b.Key, dup, wantDup)
	}
}

func checkCounts(t *testing.T, s store.Store, want store.Counts) {
	t.Helper()
	if got := s.Counts(); got != want {
		t.Errorf("Counts() = %+v, want %+v", got, want)
	}
}

// readBack returns the stored batches when s is a Reader, and ok=false when
// it is not.
func readBack(t *testing.T, s store.Store) (batches []store.Batch, ok bool) {
	t.Helper()
	r, ok := s.(Reader)
	if !ok {
		return nil, false
	}
	got, err := r.Batches(context.Background())
	if err != nil {
		t.Fatalf("Batches: %v", err)
	}
	return got, true
}

// checkStored verifies, for a Reader, that exactly the want batches are
// stored, in that order, row for row.
func checkStored(t *testing.T, s store.Store, want ...*store.Batch) {
	t.Helper()
	got, ok := readBack(t, s)
	if !ok {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("read back %d batches, want %d", len(got), len(want))
	}
	for i := range want {
		compareBatch(t, fmt.Sprintf("batch %d", i), &got[i], want[i])
	}
}

func compareBatch(t *testing.T, what string, got, want *store.Batch) {
	t.Helper()
	if got.Key != store.CleanText(want.Key) {
		t.Errorf("%s: key %q, want %q", what, got.Key, store.CleanText(want.Key))
	}
	if got.Namespace != store.CleanText(want.Namespace) {
		t.Errorf("%s: namespace %q, want %q", what, got.Namespace, store.CleanText(want.Namespace))
	}
	if len(got.Events) != len(want.Events) {
		t.Errorf("%s (key %q): %d events, want %d", what, want.Key, len(got.Events), len(want.Events))
		return
	}
	bad := 0
	for j := range want.Events {
		if msg := diffEvent(&got.Events[j], &want.Events[j]); msg != "" {
			t.Errorf("%s (key %q) event %d: %s", what, want.Key, j, msg)
			if bad++; bad == 5 {
				t.Errorf("%s: further differences not shown", what)
				return
			}
		}
	}
}

// diffEvent describes how got differs from want under the contract in the
// package doc, or returns "".
func diffEvent(got, want *store.Event) string {
	var d []string
	if !sameString(got.ID, want.ID) {
		d = append(d, fmt.Sprintf("id %q, want %q", got.ID, want.ID))
	}
	if !sameString(got.Type, want.Type) {
		d = append(d, fmt.Sprintf("type %q, want %q", got.Type, want.Type))
	}
	if !sameTime(got.TS, want.TS) {
		d = append(d, fmt.Sprintf("ts %v, want %v", got.TS, want.TS))
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		d = append(d, fmt.Sprintf("payload %q, want %q", got.Payload, want.Payload))
	}
	return strings.Join(d, "; ")
}

func sameString(got, want string) bool {
	return got == store.CleanText(want)
}

func sameTime(got, want time.Time) bool {
	w, null := store.CleanTS(want)
	if null {
		return got.IsZero()
	}
	return got.Equal(w)
}

func testStoreAndCount(t *testing.T, s store.Store) {
	checkCounts(t, s, store.Counts{})
	b1 := makeBatch("k1", "a", 3)
	b2 := makeBatch("k2", "b", 1)
	b3 := makeBatch("k3", "c", 1000)
	mustStore(t, s, b1, false)
	mustStore(t, s, b2, false)
	mustStore(t, s, b3, false)
	checkCounts(t, s, store.Counts{Events: 1004, Batches: 3})
	checkStored(t, s, b1, b2, b3)
}

func testDuplicateKey(t *testing.T, s store.Store) {
	b := makeBatch("dup-key", "first", 5)
	mustStore(t, s, b, false)
	// A retry carries the same key and the same payloads; the copy has its
	// own buffers, as a retry decoded from a new request has.
	mustStore(t, s, cloneBatch(b), true)
	mustStore(t, s, b, true)
	checkCounts(t, s, store.Counts{Events: 5, Batches: 1, Duplicates: 2})
	checkStored(t, s, b)
	// Keys are compared exactly: a key differing in case is another batch.
	other := makeBatch("DUP-KEY", "third", 2)
	mustStore(t, s, other, false)
	checkCounts(t, s, store.Counts{Events: 7, Batches: 2, Duplicates: 2})
	checkStored(t, s, b, other)
}

// testKeyReused stores other content under a key already stored: refused
// with store.ErrKeyReused, nothing written, not counted as a duplicate.
func testKeyReused(t *testing.T, s store.Store) {
	b := makeBatch("reused", "first", 5)
	mustStore(t, s, b, false)
	others := map[string]*store.Batch{
		"other events":   makeBatch("reused", "second", 5),
		"fewer events":   makeBatch("reused", "first", 4),
		"more events":    makeBatch("reused", "first", 6),
		"one byte added": cloneBatch(b),
		"events swapped": cloneBatch(b),
	}
	others["one byte added"].Events[2].Payload = append(others["one byte added"].Events[2].Payload, ' ')
	sw := others["events swapped"].Events
	sw[0], sw[1] = sw[1], sw[0]
	for name, o := range others {
		dup, err := s.Store(context.Background(), o)
		if !errors.Is(err, store.ErrKeyReused) {
			t.Errorf("%s under a stored key: Store = %v, %v; want an error wrapping store.ErrKeyReused", name, dup, err)
		}
	}
	checkCounts(t, s, store.Counts{Events: 5, Batches: 1})
	checkStored(t, s, b)
	// The first content is still a duplicate.
	mustStore(t, s, b, true)
	// A key reused with other content in the same transaction-free retry
	// loop of a client: still refused, also for an empty-payload batch.
	e := &store.Batch{Key: "reused-empty", Events: []store.Event{{ID: "x"}}}
	mustStore(t, s, e, false)
	if _, err := s.Store(context.Background(), &store.Batch{Key: "reused-empty", Events: []store.Event{{ID: "x"}, {ID: "y"}}}); !errors.Is(err, store.ErrKeyReused) {
		t.Errorf("two empty payloads under the key of one: error %v, want store.ErrKeyReused", err)
	}
}

// testNamespaces stores one key in several namespaces: each is its own
// batch, and a duplicate or a reuse is judged within its namespace.
func testNamespaces(t *testing.T, s store.Store) {
	var want []*store.Batch
	for i, ns := range []string{"", "0123456789abcdef", "fedcba9876543210", store.NamespaceKafka} {
		b := makeBatch("shared-key", fmt.Sprintf("ns%d", i), 3)
		b.Namespace = ns
		mustStore(t, s, b, false)
		want = append(want, b)
	}
	for _, b := range want {
		mustStore(t, s, cloneBatch(b), true)
	}
	checkCounts(t, s, store.Counts{Events: 12, Batches: 4, Duplicates: 4})
	checkStored(t, s, want...)
	// Other content under the key in one namespace is refused there only.
	o := makeBatch("shared-key", "ns0", 3)
	o.Namespace = "0123456789abcdef"
	if _, err := s.Store(context.Background(), o); !errors.Is(err, store.ErrKeyReused) {
		t.Errorf("namespace %q: error %v, want store.ErrKeyReused", o.Namespace, err)
	}
	// Unkeyed batches are new in every namespace.
	u := makeBatch("", "unkeyed", 1)
	u.Namespace = store.NamespaceKafka
	mustStore(t, s, u, false)
	mustStore(t, s, u, false)
	checkStored(t, s, append(want, u, u)...)
}

func testEmptyKey(t *testing.T, s store.Store) {
	b := makeBatch("", "nokey", 4)
	mustStore(t, s, b, false)
	mustStore(t, s, b, false)
	mustStore(t, s, b, false)
	checkCounts(t, s, store.Counts{Events: 12, Batches: 3})
	checkStored(t, s, b, b, b)
}

func testConcurrentSameKey(t *testing.T, s store.Store) {
	// Several rounds, each a fresh key raced by many goroutines released at
	// once, so a check-then-insert race has many chances to show.
	const rounds, goroutines, events = 8, 16, 100
	var want []*store.Batch
	for r := range rounds {
		b := makeBatch(fmt.Sprintf("same-key-%d", r), fmt.Sprintf("same%d", r), events)
		want = append(want, b)
		start := make(chan struct{})
		var wg sync.WaitGroup
		dups := make([]bool, goroutines)
		errs := make([]error, goroutines)
		for i := range goroutines {
			wg.Go(func() {
				<-start
				dups[i], errs[i] = s.Store(context.Background(), b)
			})
		}
		close(start)
		wg.Wait()
		fresh := 0
		for i := range goroutines {
			if errs[i] != nil {
				t.Fatalf("round %d, goroutine %d: Store: %v", r, i, errs[i])
			}
			if !dups[i] {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("round %d: %d of %d concurrent Stores of one key reported a new batch, want exactly 1", r, fresh, goroutines)
		}
		n := int64(r + 1)
		checkCounts(t, s, store.Counts{Events: n * events, Batches: n, Duplicates: n * (goroutines - 1)})
	}
	checkStored(t, s, want...)
}

func testConcurrentDistinct(t *testing.T, s store.Store) {
	const goroutines, perG, events = 8, 5, 50
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*perG)
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for j := range perG {
				key := ""
				if j%2 == 0 { // a mix of keyed and unkeyed batches
					key = fmt.Sprintf("g%d-%d", g, j)
				}
				dup, err := s.Store(context.Background(), makeBatch(key, fmt.Sprintf("g%d-%d", g, j), events))
				if err == nil && dup {
					err = fmt.Errorf("batch g%d-%d reported as duplicate", g, j)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkCounts(t, s, store.Counts{Events: goroutines * perG * events, Batches: goroutines * perG})

	got, ok := readBack(t, s)
	if !ok {
		return
	}
	if len(got) != goroutines*perG {
		t.Fatalf("read back %d batches, want %d", len(got), goroutines*perG)
	}
	// Order across goroutines is free; each batch must be whole and match
	// the batch its first event names.
	seen := make(map[string]bool)
	for i := range got {
		if len(got[i].Events) == 0 {
			t.Fatalf("batch %d (key %q) has no events", i, got[i].Key)
		}
		first := got[i].Events[0].ID
		tag := first[:max(strings.LastIndexByte(first, '-'), 0)]
		if seen[tag] {
			t.Fatalf("batch %s stored twice", tag)
		}
		seen[tag] = true
		var g, j int
		if _, err := fmt.Sscanf(tag, "g%d-%d", &g, &j); err != nil {
			t.Fatalf("batch %d: unexpected first id %q", i, got[i].Events[0].ID)
		}
		key := ""
		if j%2 == 0 {
			key = tag
		}
		compareBatch(t, "batch "+tag, &got[i], makeBatch(key, tag, events))
	}
}

// testConcurrentMixed races what a loader sees at once: retries of one
// key, other content under a taken key, batches without a key, and callers
// whose ctx ends at any point, across keys and namespaces. Whatever the
// interleaving (and however a store groups concurrent calls), each key
// ends up stored by exactly one call that returned (false, nil), with that
// call's content; a duplicate carries the stored content and a reuse the
// other; a call that returned an error stored nothing; and the counts add
// up.
func testConcurrentMixed(t *testing.T, s store.Store) {
	const goroutines, perG, keys, events = 8, 24, 6, 20
	type outcome struct {
		ns, key string
		variant int // which of the key's two contents
		tag     string
		dup     bool
		err     error
	}
	content := func(ns, key string, variant int, tag string) *store.Batch {
		if key == "" {
			b := makeBatch("", tag, events)
			b.Namespace = ns
			return b
		}
		b := makeBatch(key, fmt.Sprintf("%s-%s-v%d", ns, key, variant), events)
		b.Namespace = ns
		return b
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	results := make([][]outcome, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for j := range perG {
				// A fixed pseudo-random mix per (g, j): the same calls every run.
				h := uint32(g*7919+j*104729) * 2654435761
				o := outcome{ns: []string{"", "t1"}[h>>3&1], variant: int(h >> 5 & 1)}
				if k := h >> 8 % (keys + 2); k < keys {
					o.key = fmt.Sprintf("mixed-%d", k)
				} else {
					o.tag = fmt.Sprintf("nokey-g%d-%d", g, j)
				}
				b := content(o.ns, o.key, o.variant, o.tag)
				var ctx context.Context = context.Background()
				var cd *countdownCtx
				if h>>12%4 == 0 { // a quarter of the callers give up after a few looks
					cd = newCountdownCtx(int(h>>16%6) + 1)
					ctx = cd
				}
				o.dup, o.err = s.Store(ctx, b)
				if cd != nil {
					cd.stop()
				}
				results[g] = append(results[g], o)
			}
		})
	}
	close(start)
	wg.Wait()

	type nsk struct{ ns, key string }
	fresh := make(map[nsk]int) // the variant stored, from the call that stored it
	var freshNoKey []string
	var want store.Counts
	for _, rs := range results {
		for _, o := range rs {
			switch {
			case o.err != nil && !errors.Is(o.err, context.Canceled) && !errors.Is(o.err, store.ErrKeyReused):
				t.Errorf("Store(%q/%q): unexpected error %v", o.ns, o.key, o.err)
			case o.err == nil && !o.dup && o.key == "":
				freshNoKey = append(freshNoKey, o.ns+"/"+o.tag)
				want.Batches++
				want.Events += events
			case o.err == nil && !o.dup:
				k := nsk{o.ns, o.key}
				if _, twice := fresh[k]; twice {
					t.Errorf("key %q/%q reported new by two calls", o.ns, o.key)
				}
				fresh[k] = o.variant
				want.Batches++
				want.Events += events
			case o.err == nil && o.dup:
				want.Duplicates++
			}
		}
	}
	for _, rs := range results {
		for _, o := range rs {
			v, stored := fresh[nsk{o.ns, o.key}]
			switch {
			case o.key == "" || o.err != nil && !errors.Is(o.err, store.ErrKeyReused):
			case o.dup && (!stored || v != o.variant):
				t.Errorf("key %q/%q variant %d reported a duplicate; stored: %v (variant %d)", o.ns, o.key, o.variant, stored, v)
			case errors.Is(o.err, store.ErrKeyReused) && (!stored || v == o.variant):
				t.Errorf("key %q/%q variant %d reported reused; stored: %v (variant %d)", o.ns, o.key, o.variant, stored, v)
			}
		}
	}
	checkCounts(t, s, want)
	cancelled, reused := 0, 0
	for _, rs := range results {
		for _, o := range rs {
			cancelled += btoi(errors.Is(o.err, context.Canceled))
			reused += btoi(errors.Is(o.err, store.ErrKeyReused))
		}
	}
	t.Logf("%d calls: %d keys stored, %d batches without a key, %d duplicates, %d reused, %d cancelled",
		goroutines*perG, len(fresh), len(freshNoKey), want.Duplicates, reused, cancelled)
	if reused == 0 || want.Duplicates == 0 {
		t.Errorf("the mix made no reuse (%d) or no duplicate (%d): it tests less than it says", reused, want.Duplicates)
	}
	got, ok := readBack(t, s)
	if !ok {
		return
	}
	var gotNoKey []string
	for i := range got {
		b := &got[i]
		if b.Key == "" {
			if len(b.Events) == 0 {
				t.Fatalf("batch %d without key has no events", i)
			}
			first := b.Events[0].ID
			tag := first[:max(strings.LastIndexByte(first, '-'), 0)]
			gotNoKey = append(gotNoKey, b.Namespace+"/"+tag)
			compareBatch(t, "batch "+tag, b, content(b.Namespace, "", 0, tag))
			continue
		}
		v, ok := fresh[nsk{b.Namespace, b.Key}]
		if !ok {
			t.Errorf("key %q/%q stored, but no call reported it new", b.Namespace, b.Key)
			continue
		}
		compareBatch(t, "key "+b.Namespace+"/"+b.Key, b, content(b.Namespace, b.Key, v, ""))
	}
	slices.Sort(gotNoKey)
	slices.Sort(freshNoKey)
	if !slices.Equal(gotNoKey, freshNoKey) {
		t.Errorf("batches without a key: stored %v, want %v (one per call that returned nil)", gotNoKey, freshNoKey)
	}
	if n := len(got) - len(gotNoKey); n != len(fresh) {
		t.Errorf("%d keyed batches stored, want %d", n, len(fresh))
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func testRoundTrip(t *testing.T, s store.Store) {
	b := &store.Batch{Key: "round-trip:1.A_b-c", Events: []store.Event{
		{ID: "e1", Type: "click", TS: base, Payload: []byte(`{"id":"e1","type":"click","ts":"2025-03-14T15:09:26.535897932Z"}`)},
		// Absent members: zero values, kept as such.
		{Payload: []byte(`{}`)},
		// Go's zero time sent explicitly: stored as no ts.
		{ID: "e2z", TS: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), Payload: []byte(`{"id":"e2z","ts":"0001-01-01T00:00:00Z"}`)},
		// The same instant in another zone is the zero time too.
		{ID: "e2y", TS: time.Date(1, 1, 1, 1, 0, 0, 0, time.FixedZone("", 3600)), Payload: []byte(`{"id":"e2y","ts":"0001-01-01T01:00:00+01:00"}`)},
		// 1.5 µs after it is a time, kept to the microsecond (1 µs); 0.5 µs
		// after it truncates to the zero time: no ts.
		{ID: "e2x", TS: time.Date(1, 1, 1, 0, 0, 0, 1500, time.UTC), Payload: []byte(`{"id":"e2x","ts":"0001-01-01T00:00:00.0000015Z"}`)},
		{ID: "e2w", TS: time.Date(1, 1, 1, 0, 0, 0, 500, time.UTC), Payload: []byte(`{"id":"e2w","ts":"0001-01-01T00:00:00.0000005Z"}`)},
		// A zone other than UTC: the instant must survive.
		{ID: "e3", Type: "zoned", TS: time.Date(2024, 2, 29, 23, 59, 59, 999999000, time.FixedZone("", -7*3600)), Payload: []byte(`{"id":"e3","ts":"2024-02-29T23:59:59.999999-07:00"}`)},
		// Far past and far future, beyond int64 nanoseconds since 1970.
		{ID: "e4", TS: time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC), Payload: []byte(`{"id":"e4","ts":"1500-01-01T00:00:00Z"}`)},
		{ID: "e5", TS: time.Date(9999, 12, 31, 23, 59, 59, 123456000, time.UTC), Payload: []byte(`{"id":"e5","ts":"9999-12-31T23:59:59.123456Z"}`)},
		// Payload bytes verbatim: whitespace, escapes, non-ASCII, NUL, and
		// bytes that are not UTF-8 (the store must not look inside).
		{ID: "e6", Type: "bytes", Payload: []byte("{ \"s\" : \"\\u0000 é 日本 🎉\",\n\t\"x\": [1,2,3] }\x00\xff\xfe")},
		// A large payload.
		{ID: "e7", Type: "big", Payload: append(append([]byte(`{"blob":"`), bytes.Repeat([]byte("x"), 1<<20)...), `"}`...)},
		// No payload at all: stored as an empty one, not refused.
		{ID: "e8", Type: "empty"},
		// A long id and type.
		{ID: strings.Repeat("i", 1000), Type: strings.Repeat("t", 1000), Payload: []byte(`{"long":true}`)},
	}}
	want := cloneBatch(b)
	mustStore(t, s, b, false)
	if d := diffBatchInput(b, want); d != "" {
		t.Errorf("Store modified its input batch: %s", d)
	}
	checkCounts(t, s, store.Counts{Events: int64(len(want.Events)), Batches: 1})
	checkStored(t, s, want)

	// Store must not keep b: scribbling over the caller's buffers after
	// Store returned must not change what was stored.
	for i := range b.Events {
		for j := range b.Events[i].Payload {
			b.Events[i].Payload[j] = '#'
		}
	}
	checkStored(t, s, want)
}

func diffBatchInput(got, want *store.Batch) string {
	if got.Key != want.Key || len(got.Events) != len(want.Events) {
		return "key or length changed"
	}
	for i := range want.Events {
		g, w := got.Events[i], want.Events[i]
		if g.ID != w.ID || g.Type != w.Type || !g.TS.Equal(w.TS) || !bytes.Equal(g.Payload, w.Payload) {
			return fmt.Sprintf("event %d changed", i)
		}
	}
	return ""
}

func testAwkwardStrings(t *testing.T, s store.Store) {
	awkward := []string{"a\x00b", "\x00", "\xff\xfe", "ok\xc3", "é日本🎉", "\u2028", "\uFFFD", `'; DROP TABLE events; --`}
	b := &store.Batch{Key: "awkward"}
	for i, a := range awkward {
		b.Events = append(b.Events, store.Event{ID: a, Type: a, Payload: []byte(`{"i":` + fmt.Sprint(i) + `}`)})
	}
	mustStore(t, s, b, false)
	checkCounts(t, s, store.Counts{Events: int64(len(awkward)), Batches: 1})
	checkStored(t, s, b)
	// An awkward key is not a valid Idempotency-Key, but a store must not
	// corrupt or refuse it either.
	k := &store.Batch{Key: `'"; --`, Events: b.Events[:1]}
	mustStore(t, s, k, false)
	mustStore(t, s, k, true)
}

func testCancelledBefore(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := makeBatch("cancelled", "x", 10)
	if _, err := s.Store(ctx, b); err == nil {
		t.Fatal("Store with a cancelled context returned nil error")
	} else if !errors.Is(err, context.Canceled) {
		// Not required by the contract, but a caller distinguishing its own
		// cancellation from a store failure needs it.
		t.Errorf("Store with a cancelled context: error %v does not wrap context.Canceled", err)
	}
	checkCounts(t, s, store.Counts{})
	checkStored(t, s)
	// The key was not taken: a retry is a new batch.
	mustStore(t, s, b, false)
	checkCounts(t, s, store.Counts{Events: 10, Batches: 1})
	checkStored(t, s, b)
}

// testAllOrNothing cancels the context after the store has looked at it k
// times, for every k from 1 until a Store completes untouched, so the
// cancellation lands at every point where the backend consults the context:
// before, between and inside its statements and at commit. Whatever the
// point, the batch must be stored whole or not at all, its key with it.
func testAllOrNothing(t *testing.T, s store.Store) {
	const events = 1200 // several multi-row statements in any backend
	var stored []*store.Batch
	failed := 0
	var want store.Counts
	for k := 1; ; k++ {
		if k > 10000 {
			t.Fatal("Store still sees a cancelled context after 10000 context checks")
		}
		key := fmt.Sprintf("aon-%d", k)
		b := makeBatch(key, key, events)
		ctx := newCountdownCtx(k)
		dup, err := s.Store(ctx, b)
		if dup {
			t.Fatalf("k=%d: fresh key reported as duplicate (err %v)", k, err)
		}
		// Make sure nothing the store started outlives the call with the
		// context still live, e.g. a watcher goroutine.
		ctx.stop()
		if err == nil {
			want.Batches++
			want.Events += events
			stored = append(stored, b)
			checkCounts(t, s, want)
			// Retry: the key was stored, so it is a duplicate now.
			mustStore(t, s, b, true)
			want.Duplicates++
			if !ctx.fired() {
				break // the whole Store ran before the countdown ended
			}
			continue
		}
		failed++
		checkCounts(t, s, want)
		// Nothing was kept, key included: a retry is stored as new. Checking
		// rows and retrying at a sample of points keeps the sweep linear.
		if k%25 == 1 {
			checkStored(t, s, stored...)
			mustStore(t, s, b, false)
			want.Batches++
			want.Events += events
			stored = append(stored, b)
			checkCounts(t, s, want)
		}
	}
	if failed == 0 {
		t.Fatal("no Store failed although its context was cancelled during the call")
	}
	checkStored(t, s, stored...)
	t.Logf("cancelled at %d distinct points", failed)
}

// countdownCtx is a context that cancels itself on the n-th call to its Done
// or Err method, that is, the n-th time the code under test looks at it.
type countdownCtx struct {
	context.Context // Background: no deadline, no values

	mu     sync.Mutex
	left   int
	done   chan struct{}
	err    error
	closed bool
	ran    bool // the countdown ran out (not stop)
}

func newCountdownCtx(n int) *countdownCtx {
	return &countdownCtx{Context: context.Background(), left: n, done: make(chan struct{})}
}

func (c *countdownCtx) tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.left--
	if c.left <= 0 {
		c.err = context.Canceled
		c.closed, c.ran = true, true
		close(c.done)
	}
}

func (c *countdownCtx) Done() <-chan struct{} {
	c.tick()
	return c.done
}

func (c *countdownCtx) Err() error {
	c.tick()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// fired reports whether the countdown ran out during the call.
func (c *countdownCtx) fired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ran
}

// stop cancels the context if it has not fired, without counting as a look.
// Err is set before Done is closed, as the context package requires (a
// context derived from this one by the store reads Err once Done closes).
func (c *countdownCtx) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.err = context.Canceled
		c.closed = true
		close(c.done)
	}
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testStoreAfterClose(t *testing.T, s store.Store) {
	mustStore(t, s, makeBatch("before-close", "a", 2), false)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err := s.Store(context.Background(), makeBatch("after-close", "b", 2))
	if !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Store after Close: error %v, want one wrapping store.ErrClosed", err)
	}
	if err := s.Ping(context.Background()); err == nil {
		t.Error("Ping after Close returned nil")
	}
	// Counts stay readable after Close.
	checkCounts(t, s, store.Counts{Events: 2, Batches: 1})
	if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}
