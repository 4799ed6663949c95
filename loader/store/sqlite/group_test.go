package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/batchproc/batchproc/loader/store"
)

func openT(t *testing.T, opts ...Option) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "group.db"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func batch(key, tag string, n int) *store.Batch {
	b := &store.Batch{Key: key}
	for i := range n {
		id := fmt.Sprintf("%s-%d", tag, i)
		b.Events = append(b.Events, store.Event{ID: id, Payload: []byte(`{"id":"` + id + `"}`)})
	}
	return b
}

// holdWriter takes the writer token, so Store calls queue up until the
// returned release is called; queued receives the queue length each time a
// call joins it.
func holdWriter(s *Store) (queued <-chan int, release func()) {
	ch := make(chan int, 100)
	s.onQueued = func(n int) { ch <- n }
	s.writer <- struct{}{}
	return ch, func() { <-s.writer }
}

func waitQueued(t *testing.T, queued <-chan int, n int) {
	t.Helper()
	for got := range queued {
		if got == n {
			return
		}
	}
}

// TestGroupCommit: batches queued while the writer is busy are committed in
// one transaction, and each Store returns its own outcome only after it.
func TestGroupCommit(t *testing.T) {
	s := openT(t)
	var groups []int
	s.onCommit = func(n int) { groups = append(groups, n) } // under the writer token
	queued, release := holdWriter(s)

	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.Store(context.Background(), batch(fmt.Sprintf("k%d", i), fmt.Sprint(i), 100))
		})
	}
	waitQueued(t, queued, n)
	release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Store %d: %v", i, err)
		}
	}
	if len(groups) != 1 || groups[0] != n {
		t.Errorf("commits of %v batches, want one of %d", groups, n)
	}
	got, err := s.Batches(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d batches stored, want %d", len(got), n)
	}
	if c := s.Counts(); c.Events != n*100 || c.Batches != n {
		t.Errorf("Counts %+v", c)
	}
}

// TestGroupCommitIsolatesFailures: in one group, a reused key, a batch
// whose ctx ends, and a repeat of a key stored earlier in the same group
// each get their own outcome; the others are committed.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s := openT(t)
	ctx := context.Background()
	if _, err := s.Store(ctx, batch("taken", "t", 3)); err != nil {
		t.Fatal(err)
	}
	var groups []int
	s.onCommit = func(n int) { groups = append(groups, n) }
	queued, release := holdWriter(s)

	cctx, cancel := context.WithCancel(ctx)
	calls := []struct {
		ctx     context.Context
		b       *store.Batch
		wantDup bool
		wantErr error
	}{
		{ctx, batch("a", "a", 50), false, nil},
		{ctx, batch("taken", "other", 3), false, store.ErrKeyReused},
		{cctx, batch("cancelled", "c", 600), false, context.Canceled}, // cancelled while queued
		{ctx, batch("a", "a", 50), true, nil},                         // a's retry, same group
		{ctx, batch("", "nokey", 5), false, nil},
	}
	type result struct {
		dup bool
		err error
	}
	res := make([]chan result, len(calls))
	for i, c := range calls {
		res[i] = make(chan result, 1)
		go func() {
			dup, err := s.Store(c.ctx, c.b)
			res[i] <- result{dup, err}
		}()
		waitQueued(t, queued, i+1) // queue them in this order
	}
	cancel()
	// The cancelled call withdraws itself: nothing waits for the writer.
	if r := <-res[2]; !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled call: %v, %v; want context.Canceled", r.dup, r.err)
	}
	release()
	for i, c := range calls {
		if i == 2 {
			continue
		}
		r := <-res[i]
		if r.dup != c.wantDup || !errors.Is(r.err, c.wantErr) || (c.wantErr == nil && r.err != nil) {
			t.Errorf("call %d (key %q): %v, %v; want %v, %v", i, c.b.Key, r.dup, r.err, c.wantDup, c.wantErr)
		}
	}
	if len(groups) != 1 || groups[0] != 4 {
		t.Errorf("commits of %v batches, want one of 4 (the cancelled call withdrew)", groups)
	}
	got, err := s.Batches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, b := range got {
		keys = append(keys, fmt.Sprintf("%s/%d", b.Key, len(b.Events)))
	}
	if fmt.Sprint(keys) != "[taken/3 a/50 /5]" {
		t.Errorf("stored %v, want [taken/3 a/50 /5]", keys)
	}
}

// TestGroupCommitBudget: a group holds at most WithGroupCommit events
// (at least one batch); 0 commits each batch alone.
func TestGroupCommitBudget(t *testing.T) {
	for _, tc := range []struct {
		budget int
		want   string
	}{{250, "[2 2 2]"}, {0, "[1 1 1 1 1 1]"}, {50, "[1 1 1 1 1 1]"}} {
		t.Run(fmt.Sprint(tc.budget), func(t *testing.T) {
			s := openT(t, WithGroupCommit(tc.budget))
			var groups []int
			s.onCommit = func(n int) { groups = append(groups, n) }
			queued, release := holdWriter(s)
			var wg sync.WaitGroup
			for i := range 6 {
				wg.Go(func() {
					if _, err := s.Store(context.Background(), batch(fmt.Sprint(i), fmt.Sprint(i), 100)); err != nil {
						t.Error(err)
					}
				})
			}
			waitQueued(t, queued, 6)
			release()
			wg.Wait()
			if fmt.Sprint(groups) != tc.want {
				t.Errorf("groups %v, want %s", groups, tc.want)
			}
		})
	}
}

// TestSynchronous: the writer connection runs with the setting asked for,
// FULL by default.
func TestSynchronous(t *testing.T) {
	for _, tc := range []struct {
		opts []Option
		want int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{{nil, 2}, {[]Option{WithSynchronous(SyncNormal)}, 1}, {[]Option{WithSynchronous(SyncFull)}, 2}} {
		s := openT(t, tc.opts...)
		var got int
		if err := s.w.QueryRow("PRAGMA synchronous").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%v: PRAGMA synchronous = %d, want %d", tc.opts, got, tc.want)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "x.db"), WithSynchronous("OFF")); err == nil {
		t.Error("WithSynchronous(OFF) accepted")
	}
}

// TestFormatTS: the fast formatter writes what time.Format does.
func TestFormatTS(t *testing.T) {
	for _, ts := range []time.Time{
		{},
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1500, 2, 3, 4, 5, 6, 7, time.UTC),
		time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -7*3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now(),
	} {
		if got, want := formatTS(ts), ts.UTC().Format(tsLayout); got != want {
			t.Errorf("formatTS(%v) = %q, want %q", ts, got, want)
		}
	}
}

// FuzzFormatTS checks the stored timestamp form against time.Format for
// any instant.
func FuzzFormatTS(f *testing.F) {
	f.Add(int64(0), int64(0))
	f.Add(int64(253402300799), int64(999999999))
	f.Fuzz(func(t *testing.T, sec, nsec int64) {
		ts := time.Unix(sec, nsec)
		if got, want := formatTS(ts), ts.UTC().Format(tsLayout); got != want {
			t.Errorf("formatTS(%v) = %q, want %q", ts, got, want)
		}
	})
}
