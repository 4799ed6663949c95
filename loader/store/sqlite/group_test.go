package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/storetest"
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

// holdWriter takes the writer (the queue's one leader slot), so Store
// calls queue up until release is called; wait(n) returns once n are
// queued.
func holdWriter(s *Store) (wait func(n int), release func()) { return s.q.HoldQueued() }

// TestGroupCommit: batches queued while the writer is busy are committed in
// one transaction, and each Store returns its own outcome only after it.
func TestGroupCommit(t *testing.T) {
	s := openT(t)
	var groups []int
	s.onCommit = func(n int) { groups = append(groups, n) } // under the writer token
	wait, release := holdWriter(s)

	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.Store(context.Background(), storetest.MakeBatch(fmt.Sprintf("k%d", i), fmt.Sprint(i), 100))
		})
	}
	wait(n)
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
	if _, err := s.Store(ctx, storetest.MakeBatch("taken", "t", 3)); err != nil {
		t.Fatal(err)
	}
	var groups []int
	s.onCommit = func(n int) { groups = append(groups, n) }
	wait, release := holdWriter(s)

	cctx, cancel := context.WithCancel(ctx)
	calls := []struct {
		ctx     context.Context
		b       *store.Batch
		wantDup bool
		wantErr error
	}{
		{ctx, storetest.MakeBatch("a", "a", 50), false, nil},
		{ctx, storetest.MakeBatch("taken", "other", 3), false, store.ErrKeyReused},
		{cctx, storetest.MakeBatch("cancelled", "c", 600), false, context.Canceled}, // cancelled while queued
		{ctx, storetest.MakeBatch("a", "a", 50), true, nil},                         // a's retry, same group
		{ctx, storetest.MakeBatch("", "nokey", 5), false, nil},
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
		wait(i + 1) // queue them in this order
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
			wait, release := holdWriter(s)
			var wg sync.WaitGroup
			for i := range 6 {
				wg.Go(func() {
					if _, err := s.Store(context.Background(), storetest.MakeBatch(fmt.Sprint(i), fmt.Sprint(i), 100)); err != nil {
						t.Error(err)
					}
				})
			}
			wait(6)
			release()
			wg.Wait()
			if fmt.Sprint(groups) != tc.want {
				t.Errorf("groups %v, want %s", groups, tc.want)
			}
		})
	}
}

// TestSynchronous: the writer connection runs with synchronous=NORMAL in
// both modes; with SyncFull (the default) the store syncs the WAL itself
// (TestSyncFullWaitsForSync).
func TestSynchronous(t *testing.T) {
	for _, tc := range []struct {
		opts   []Option
		syncer bool
	}{{nil, true}, {[]Option{WithSynchronous(SyncNormal)}, false}, {[]Option{WithSynchronous(SyncFull)}, true}} {
		s := openT(t, tc.opts...)
		var got int
		if err := s.wc.QueryRowContext(context.Background(), "PRAGMA synchronous").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != 1 {
			t.Errorf("%v: PRAGMA synchronous = %d, want 1 (NORMAL)", tc.opts, got)
		}
		if syncer := s.wal != nil; syncer != tc.syncer {
			t.Errorf("%v: store syncs the WAL: %v, want %v", tc.opts, syncer, tc.syncer)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "x.db"), WithSynchronous("OFF")); err == nil {
		t.Error("WithSynchronous(OFF) accepted")
	}
}

// TestSyncFullWaitsForSync: with SyncFull no Store call returns before a
// sync of the WAL begun after its group committed has completed, a
// duplicate's neither (it may rest on a commit not synced yet); the
// writer meanwhile commits the next group, which the next sync covers.
func TestSyncFullWaitsForSync(t *testing.T) {
	s := openT(t)
	ctx := context.Background()
	syncs := make(chan int, 10)
	proceed := make(chan struct{})
	releaseAll := sync.OnceFunc(func() { close(proceed) })
	t.Cleanup(releaseAll) // before Close, which waits for the held calls
	s.onSync = func(groups int) {
		syncs <- groups
		<-proceed
	}
	commits := make(chan int, 10)
	s.onCommit = func(n int) { commits <- n }

	first := make(chan error, 1)
	go func() {
		_, err := s.Store(ctx, storetest.MakeBatch("a", "a", 10))
		first <- err
	}()
	if n := <-syncs; n != 1 {
		t.Fatalf("first sync for %d groups, want 1", n)
	}
	// The first sync is held: its caller waits, and the writer is free.
	second := make(chan error, 1)
	dup := make(chan bool, 1)
	go func() {
		_, err := s.Store(ctx, storetest.MakeBatch("b", "b", 10))
		second <- err
	}()
	go func() {
		d, err := s.Store(ctx, storetest.MakeBatch("a", "a", 10)) // a's retry, found in the WAL
		if err != nil {
			t.Error(err)
		}
		dup <- d
	}()
	for got := 0; got < 2; got += <-commits {
	}
	select {
	case err := <-first:
		t.Fatalf("Store returned (%v) before its sync completed", err)
	case err := <-second:
		t.Fatalf("second Store returned (%v) before any sync covering it", err)
	case d := <-dup:
		t.Fatalf("duplicate answered (%v) before the sync of the batch it duplicates", d)
	default:
	}
	proceed <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// One more sync covers the groups committed while the first ran.
	<-syncs
	releaseAll()
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if !<-dup {
		t.Error("a's retry: not a duplicate")
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.synced != s.commits || s.commits != 2 {
		t.Errorf("%d commits, %d synced; want 2, 2", s.commits, s.synced)
	}
}

// TestSyncFailureIsSticky: after a failed sync of the WAL, the callers it
// was for and every later call get an error, never a 200.
func TestSyncFailureIsSticky(t *testing.T) {
	s := openT(t)
	ctx := context.Background()
	s.onSync = func(int) { _ = s.wal.Close() } // the fdatasync then fails
	if _, err := s.Store(ctx, storetest.MakeBatch("a", "a", 10)); err == nil {
		t.Fatal("Store: nil error after a failed sync")
	}
	// The WAL can be synced again: only the failure remembered fails
	// the next call.
	s.onSync = nil
	if err := s.openWAL(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store(ctx, storetest.MakeBatch("b", "b", 10)); err == nil || !strings.Contains(err.Error(), "sync WAL") {
		t.Fatalf("Store after a failed sync: %v, want the sync error", err)
	}
}

// TestCheckpointOffWriter: the writer never checkpoints: with the
// checkpointer held, batches are stored and the WAL grows; every
// restartEvery bytes the writer waits for one pass, after which the WAL
// starts over from its beginning.
func TestCheckpointOffWriter(t *testing.T) {
	s := openT(t)
	ctx := context.Background()
	s.ckptEvery, s.restartEvery = 1<<10, 1<<20
	passes := make(chan struct{}, 100)
	proceed := make(chan struct{})
	release := sync.OnceFunc(func() { close(proceed) })
	t.Cleanup(release) // before Close, which waits for the checkpointer
	s.onCheckpoint = func() {
		passes <- struct{}{}
		<-proceed
	}
	walFrames := func() int {
		var busy, log, done int
		if err := s.wc.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &done); err != nil {
			t.Fatal(err)
		}
		return log
	}
	big := func(key string) *store.Batch {
		b := storetest.MakeBatch(key, key, 1000)
		for i := range b.Events {
			// 200 payload bytes and no type: the sizes below count on it.
			b.Events[i].Payload, b.Events[i].Type = make([]byte, 200), ""
		}
		return b
	}
	// ~250 kB a batch: the first asks for a pass (held), the next three
	// are stored without one.
	for i := range 4 {
		if _, err := s.Store(ctx, big(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	<-passes
	if len(passes) != 0 {
		t.Errorf("%d more passes begun while one was held", len(passes))
	}
	// The fifth reaches restartEvery: the writer waits for a pass begun
	// after its commit, so its caller returns only once the held one is
	// let go.
	restart := make(chan struct{}, 1)
	s.onRestart = func() { restart <- struct{}{} }
	done := make(chan error, 1)
	go func() {
		_, err := s.Store(ctx, big("4"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Store returned (%v) without the writer waiting for a checkpoint", err)
	case <-restart:
	}
	select {
	case err := <-done:
		t.Fatalf("Store returned (%v) while the writer waits for a checkpoint", err)
	case <-passes:
		t.Fatal("a second pass ran while the first was held")
	default:
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Everything is in the database: the next commit starts the WAL over.
	before := walFrames()
	if _, err := s.Store(ctx, storetest.MakeBatch("5", "5", 1)); err != nil {
		t.Fatal(err)
	}
	if after := walFrames(); after >= before || after > 10 {
		t.Errorf("WAL of %d frames after the restart (%d before), want it started over", after, before)
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

// FuzzFormatTSSequence checks that a tsFormatter reused for a second
// instant (its date kept from the first when they share a day) writes
// what time.Format does.
func FuzzFormatTSSequence(f *testing.F) {
	f.Add(int64(1767323045), int64(5), int64(1767323045+3600), int64(7))        // one day
	f.Add(int64(1767311999), int64(0), int64(1767312000), int64(0))             // midnight
	f.Add(int64(-62167219200), int64(0), int64(-62167219201), int64(999))       // year 0, then -1
	f.Add(int64(253402300799), int64(999999999), int64(253402300800), int64(0)) // 9999, then 10000
	f.Add(int64(-1), int64(0), int64(0), int64(0))                              // the epoch
	f.Fuzz(func(t *testing.T, sec1, nsec1, sec2, nsec2 int64) {
		var tf tsFormatter
		for _, ts := range []time.Time{time.Unix(sec1, nsec1), time.Unix(sec2, nsec2), time.Unix(sec1, nsec1)} {
			if got, want := string(tf.append(nil, ts)), ts.UTC().Format(tsLayout); got != want {
				t.Errorf("tsFormatter.append(%v) = %q, want %q", ts, got, want)
			}
		}
	})
}

// TestPageSize: a database Open creates has pages of pageSize bytes; an
// existing one keeps its own and works as before.
func TestPageSize(t *testing.T) {
	s := openT(t)
	var got int
	if err := s.wc.QueryRowContext(context.Background(), "PRAGMA page_size").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != pageSize {
		t.Errorf("new database: page_size %d, want %d", got, pageSize)
	}

	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA page_size = 4096; CREATE TABLE other (x)"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	old, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.wc.QueryRowContext(context.Background(), "PRAGMA page_size").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != 4096 {
		t.Errorf("existing database: page_size %d, want 4096 (kept)", got)
	}
	if _, err := old.Store(context.Background(), storetest.MakeBatch("k", "k", 300)); err != nil {
		t.Fatal(err)
	}
}

// TestWithdrawnBatchIsNotRead: a Store whose ctx ends while it is queued
// behind another returns, and its caller reuses the batch (the loader
// recycles it) while the leader takes the queue: the leader must not read
// it. Under -race this fails if the leader reads a withdrawn request's
// batch (the write below is ordered with nothing the leader does).
func TestWithdrawnBatchIsNotRead(t *testing.T) {
	s := openT(t)
	wait, release := holdWriter(s)
	first := make(chan error)
	go func() {
		_, err := s.Store(context.Background(), storetest.MakeBatch("k", "k", 5))
		first <- err
	}()
	wait(1)
	ctx, cancel := context.WithCancel(context.Background())
	withdrawn, reuse := make(chan error), make(chan struct{})
	go func() {
		b := storetest.MakeBatch("w", "w", 10)
		_, err := s.Store(ctx, b)
		withdrawn <- err
		<-reuse
		b.Events = append(b.Events[:0], store.Event{ID: "reused"}) // the caller's again
	}()
	wait(2)
	cancel()
	if err := <-withdrawn; !errors.Is(err, context.Canceled) {
		t.Fatalf("withdrawn Store: %v", err)
	}
	release()
	close(reuse)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if c := s.Counts(); c.Batches != 1 || c.Events != 5 {
		t.Fatalf("Counts %+v: only the first batch is stored", c)
	}
}

// TestWriterTempStoreMemory: the writer keeps statement and savepoint
// journals in memory (with the default they spill to a temporary file, a
// few writes per page of each batch).
func TestWriterTempStoreMemory(t *testing.T) {
	s := openT(t)
	var got int
	if err := s.wc.QueryRowContext(context.Background(), "PRAGMA temp_store").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != 2 {
		t.Errorf("writer: temp_store %d, want 2 (MEMORY)", got)
	}
}

// TestRequestAllocs: building a request's INSERT arguments allocates about
// three values per event (the interface values of its id, ts and payload):
// the argument slices come from the pool, the ts texts share one string
// and a run of one type is boxed once.
func TestRequestAllocs(t *testing.T) {
	s := openT(t)
	const n = 1000
	b := storetest.MakeBatch("k", "a", n)
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range b.Events {
		b.Events[i].Type = "page_view"
		b.Events[i].TS = ts.Add(time.Duration(i) * time.Microsecond)
	}
	ctx := context.Background()
	s.newRequest(ctx, b).release() // fill the pool
	allocs := testing.AllocsPerRun(20, func() { s.newRequest(ctx, b).release() })
	if max := float64(3*n + 32); allocs > max {
		t.Errorf("newRequest of %d events: %.0f allocations, want at most %.0f", n, allocs, max)
	}
	// The pooled arguments hold nothing of the last batch.
	r := s.newRequest(ctx, b)
	a := r.args
	r.release()
	for i, v := range a {
		if v.Value != nil {
			t.Fatalf("released argument %d still holds %v", i, v.Value)
		}
	}
}
