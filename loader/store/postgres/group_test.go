package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/batchproc/batchproc/internal/testutil/pgtest"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/storetest"
)

func openT(t *testing.T, opts ...Option) *Store {
	t.Helper()
	s, err := Open(context.Background(), pgtest.DSN(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// holdLeaders takes every leader slot, so Store calls queue until
// release; wait(n) returns once n are queued.
func holdLeaders(t *testing.T, s *Store) (wait func(n int), release func()) {
	wait, release = s.q.HoldQueued()
	t.Cleanup(release)
	return wait, release
}

// stored returns "key/events" of each batch in the database, in id order,
// and checks that each batch's events are numbered 0 to n-1.
func stored(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.pool.Query(context.Background(),
		`SELECT coalesce(b.key, ''), count(e.seq), coalesce(max(e.seq), -1), count(DISTINCT e.seq)
		FROM batches b LEFT JOIN events e ON e.batch_id = b.id GROUP BY b.id ORDER BY b.id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		var n, last, distinct int64
		if err := rows.Scan(&k, &n, &last, &distinct); err != nil {
			t.Fatal(err)
		}
		if last+1 != n || distinct != n {
			t.Errorf("batch %q: %d events numbered up to %d, %d distinct", k, n, last, distinct)
		}
		out = append(out, fmt.Sprintf("%s/%d", k, n))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

type call struct {
	ctx     context.Context
	b       *store.Batch
	wantDup bool
	wantErr error
}

type result struct {
	dup bool
	err error
}

// queue starts calls in order, each queued before the next, while the
// leaders are held.
func queueCalls(s *Store, wait func(n int), calls []call) []chan result {
	res := make([]chan result, len(calls))
	for i, c := range calls {
		res[i] = make(chan result, 1)
		go func() {
			dup, err := s.Store(c.ctx, c.b)
			res[i] <- result{dup, err}
		}()
		wait(i + 1)
	}
	return res
}

func check(t *testing.T, i int, c call, r result) {
	t.Helper()
	if r.dup != c.wantDup || !errors.Is(r.err, c.wantErr) || (c.wantErr == nil && r.err != nil) {
		t.Errorf("call %d (key %q): %v, %v; want %v, %v", i, c.b.Key, r.dup, r.err, c.wantDup, c.wantErr)
	}
}

// TestGroupCommit: batches queued together are written in one
// transaction, and each gets its own outcome: a reused key fails alone, a
// caller whose ctx ends while queued withdraws (nothing stored), a retry
// in the same group is a duplicate.
func TestGroupCommit(t *testing.T) {
	s := openT(t)
	ctx := context.Background()
	if _, err := s.Store(ctx, storetest.MakeBatch("taken", "t", 3)); err != nil {
		t.Fatal(err)
	}
	var groups []int
	s.onCommit = func(n int) { groups = append(groups, n) }
	wait, release := holdLeaders(t, s)
	cctx, cancel := context.WithCancel(ctx)
	calls := []call{
		{ctx, storetest.MakeBatch("a", "a", 1500), false, nil},
		{ctx, storetest.MakeBatch("taken", "other", 3), false, store.ErrKeyReused},
		{cctx, storetest.MakeBatch("cancelled", "c", 600), false, context.Canceled}, // cancelled while queued
		{ctx, storetest.MakeBatch("a", "a", 1500), true, nil},                       // a's retry, same group
		{ctx, storetest.MakeBatch("", "nokey", 5), false, nil},
	}
	res := queueCalls(s, wait, calls)
	cancel()
	if r := <-res[2]; !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled call: %v, %v; want context.Canceled", r.dup, r.err)
	}
	release()
	for i, c := range calls {
		if i != 2 {
			check(t, i, c, <-res[i])
		}
	}
	if !slices.Equal(groups, []int{4}) {
		t.Errorf("groups of %v batches, want one of 4 (the cancelled call withdrew)", groups)
	}
	// A group writes its batches in key order.
	if got, want := stored(t, s), []string{"taken/3", "/5", "a/1500"}; !slices.Equal(got, want) {
		t.Errorf("stored %v, want %v", got, want)
	}
	if got := s.Counts(); got != (store.Counts{Events: 1508, Batches: 3, Duplicates: 1}) {
		t.Errorf("Counts %+v", got)
	}
}

// TestGroupCommitLeavesOutEndedCtx: a caller whose ctx ends after its
// group was written but before it committed gets its ctx's error and
// nothing of its batch is stored; the rest of the group is.
func TestGroupCommitLeavesOutEndedCtx(t *testing.T) {
	s := openT(t)
	ctx := context.Background()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var writes []int
	s.beforeCommit = func(_ pgx.Tx, g []*request) error {
		writes = append(writes, len(g))
		cancel() // the first write: b's caller gives up before the commit
		return nil
	}
	wait, release := holdLeaders(t, s)
	calls := []call{
		{ctx, storetest.MakeBatch("a", "a", 10), false, nil},
		{cctx, storetest.MakeBatch("b", "b", 10), false, context.Canceled},
		{ctx, storetest.MakeBatch("c", "c", 10), false, nil},
	}
	res := queueCalls(s, wait, calls)
	release()
	for i, c := range calls {
		check(t, i, c, <-res[i])
	}
	if !slices.Equal(writes, []int{3, 2}) {
		t.Errorf("group writes of %v batches, want 3 then 2 (b left out)", writes)
	}
	if got, want := stored(t, s), []string{"a/10", "c/10"}; !slices.Equal(got, want) {
		t.Errorf("stored %v, want %v", got, want)
	}
}

// TestGroupCommitFailureStoresAlone: a group transaction that fails is
// rolled back whole and each of its batches is stored in a transaction of
// its own, so one failure fails no other batch.
func TestGroupCommitFailureStoresAlone(t *testing.T) {
	s := openT(t)
	ctx := context.Background()
	injected := errors.New("injected group failure")
	var writes []int
	s.beforeCommit = func(_ pgx.Tx, g []*request) error {
		writes = append(writes, len(g))
		return injected
	}
	wait, release := holdLeaders(t, s)
	calls := []call{
		{ctx, storetest.MakeBatch("a", "a", 10), false, nil},
		{ctx, storetest.MakeBatch("b", "b", 1200), false, nil},
		{ctx, storetest.MakeBatch("", "c", 10), false, nil},
	}
	res := queueCalls(s, wait, calls)
	release()
	for i, c := range calls {
		check(t, i, c, <-res[i])
	}
	if !slices.Equal(writes, []int{3}) {
		t.Errorf("group writes of %v batches, want one of 3", writes)
	}
	got := stored(t, s)
	slices.Sort(got)
	if want := []string{"/10", "a/10", "b/1200"}; !slices.Equal(got, want) {
		t.Errorf("stored %v, want %v (each alone, once)", got, want)
	}
}

// TestGroupCommitFailedCommit: when the COMMIT itself fails, the server
// may or may not have committed, so the group is not stored again batch by
// batch (a batch without a key would be stored twice if it had): every
// caller gets the error, as one stored alone would. Here the server kills
// the group's connection before the COMMIT arrives, so nothing is stored.
func TestGroupCommitFailedCommit(t *testing.T) {
	s := openT(t)
	ctx := context.Background()
	s.beforeCommit = func(tx pgx.Tx, g []*request) error {
		var pid int
		if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return err
		}
		var ok bool
		if err := s.pool.QueryRow(ctx, "SELECT pg_terminate_backend($1, 10000)", pid).Scan(&ok); err != nil || !ok {
			t.Errorf("pg_terminate_backend(%d): %v, %v", pid, ok, err)
		}
		return nil
	}
	wait, release := holdLeaders(t, s)
	calls := []call{
		{ctx, storetest.MakeBatch("a", "a", 10), false, nil},
		{ctx, storetest.MakeBatch("", "b", 10), false, nil},
	}
	res := queueCalls(s, wait, calls)
	release()
	for i, c := range calls {
		if r := <-res[i]; r.err == nil {
			t.Errorf("call %d (key %q): %v, nil error; want the COMMIT's error", i, c.b.Key, r.dup)
		}
	}
	s.beforeCommit = nil
	if got := stored(t, s); len(got) != 0 {
		t.Errorf("stored %v, want nothing", got)
	}
}

// TestGroupCommitKeyOrder: a group inserts its keys in (namespace, key)
// order whatever order they arrived in. Two groups (of two loaders, or of
// two leaders) that insert shared keys in different orders can each wait
// for a key the other holds; PostgreSQL's deadlock detector then fails one
// of them after deadlock_timeout (1 s). In one order, one waits for the
// other to end.
func TestGroupCommitKeyOrder(t *testing.T) {
	s := openT(t)
	ctx := context.Background()
	var order []string
	s.beforeCommit = func(_ pgx.Tx, g []*request) error {
		for _, r := range g {
			order = append(order, r.ns+"/"+r.b.Key)
		}
		return nil
	}
	wait, release := holdLeaders(t, s)
	var calls []call
	for _, k := range []struct{ ns, key string }{{"t2", "a"}, {"", "k2"}, {"", "k1"}, {"t1", "z"}, {"", ""}} {
		b := storetest.MakeBatch(k.key, k.ns+k.key, 2)
		b.Namespace = k.ns
		calls = append(calls, call{ctx, b, false, nil})
	}
	res := queueCalls(s, wait, calls)
	release()
	for i, c := range calls {
		check(t, i, c, <-res[i])
	}
	if want := []string{"/", "/k1", "/k2", "t1/z", "t2/a"}; !slices.Equal(order, want) {
		t.Errorf("keys inserted in the order %v, want %v", order, want)
	}
}

// TestGroupCommitSharedKeys: concurrent groups carrying the same keys,
// queued in different orders, neither fail nor store a key twice.
func TestGroupCommitSharedKeys(t *testing.T) {
	s := openT(t)
	var mu sync.Mutex
	var failed []error
	s.onGroupError = func(err error) { mu.Lock(); failed = append(failed, err); mu.Unlock() }
	const keys, workers = 12, 6
	var wg sync.WaitGroup
	errs := make(chan error, workers*keys)
	for w := range workers {
		order := rand.Perm(keys)
		wg.Go(func() {
			for _, k := range order {
				b := storetest.MakeBatch(fmt.Sprintf("k%02d", k), fmt.Sprintf("k%02d", k), 20)
				if _, err := s.Store(context.Background(), b); err != nil {
					errs <- fmt.Errorf("worker %d key %d: %w", w, k, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failed) > 0 {
		t.Errorf("%d groups failed, the first with: %v", len(failed), failed[0])
	}
	got := stored(t, s)
	if len(got) != keys {
		t.Errorf("stored %d batches %v, want %d (one per key)", len(got), got, keys)
	}
	if c := s.Counts(); c.Batches != keys || c.Duplicates != keys*(workers-1) {
		t.Errorf("Counts %+v, want %d batches and %d duplicates", c, keys, keys*(workers-1))
	}
}

// TestCommitters: GOMAXPROCS committers by default, never more than the
// pool's connections.
func TestCommitters(t *testing.T) {
	dsn := pgtest.DSN(t)
	for _, c := range []struct {
		opt   Option
		conns int
		want  int
	}{
		{WithCommitters(0), 16, runtime.GOMAXPROCS(0)},
		{WithCommitters(3), 16, 3},
		{WithCommitters(9), 4, 4},
	} {
		s, err := Open(context.Background(), dsn+"&pool_max_conns="+strconv.Itoa(c.conns), c.opt)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.q.Leaders(); got != min(c.want, c.conns) {
			t.Errorf("%+v: %d committers, want %d", c, got, min(c.want, c.conns))
		}
		_ = s.Close()
	}
	if _, err := Open(context.Background(), dsn, WithCommitters(-1)); err == nil || !strings.Contains(err.Error(), "WithCommitters(-1)") {
		t.Errorf("WithCommitters(-1): %v, want an error naming it", err)
	}
}
