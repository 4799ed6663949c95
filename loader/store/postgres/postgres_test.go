package postgres_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/batchproc/batchproc/internal/testutil/pgtest"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/postgres"
	"github.com/batchproc/batchproc/loader/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testDSN returns the DSN of a fresh schema on the test server.
func testDSN(tb testing.TB) string { tb.Helper(); return pgtest.DSN(tb) }

func open(tb testing.TB, dsn string) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, testDSN(t)) })
}

// TestSameKeyAcrossStores races one key through two Stores, as two loader
// processes sharing a database would: the unique index must let one win.
func TestSameKeyAcrossStores(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	a, b := open(t, dsn), open(t, dsn)
	ctx := context.Background()
	for i := range 20 {
		batch := &store.Batch{Key: "k" + string(rune('a'+i)), Events: []store.Event{{ID: "x", Payload: []byte(`{}`)}}}
		start := make(chan struct{})
		dups := make(chan bool, 2)
		errs := make(chan error, 2)
		for _, s := range []*postgres.Store{a, b} {
			go func() {
				<-start
				d, err := s.Store(ctx, batch)
				errs <- err
				dups <- d
			}()
		}
		close(start)
		fresh := 0
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
			if !<-dups {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("key %q: %d stores reported a new batch, want 1", batch.Key, fresh)
		}
	}
	got, err := a.Batches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 {
		t.Fatalf("%d batches stored, want 20", len(got))
	}
}

// TestReopen checks that rows and keys outlive a Store: a key stored before
// Close is a duplicate after a new Open, whose counts start at zero.
func TestReopen(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	ctx := context.Background()
	batch := &store.Batch{Key: "kept", Events: []store.Event{{ID: "1", Payload: []byte(`{"id":"1"}`)}}}
	s := open(t, dsn)
	if dup, err := s.Store(ctx, batch); err != nil || dup {
		t.Fatalf("Store = %v, %v; want false, nil", dup, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dsn)
	if got := s.Counts(); got != (store.Counts{}) {
		t.Fatalf("Counts after reopen = %+v, want zero", got)
	}
	if dup, err := s.Store(ctx, batch); err != nil || !dup {
		t.Fatalf("Store after reopen = %v, %v; want true, nil", dup, err)
	}
	got, err := s.Batches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(got[0].Events) != 1 {
		t.Fatalf("read back %+v, want the one batch", got)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := postgres.Open(ctx, "postgres://%zz"); err == nil {
		t.Error("Open with a malformed DSN returned nil error")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	// A cancelled ctx fails Open before any connection can be made, so this
	// needs no server.
	if _, err := postgres.Open(cctx, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable"); err == nil {
		t.Error("Open with a cancelled context returned nil error")
	}
}
