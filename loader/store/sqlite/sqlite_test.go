package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/sqlite"
	"github.com/batchproc/batchproc/loader/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(filepath.Join(t.TempDir(), "loader.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestConformanceSmallInserts runs the suite with tiny statements, so that
// batches span many INSERTs of every prepared size.
func TestConformanceSmallInserts(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(filepath.Join(t.TempDir(), "loader.db"), sqlite.WithRowsPerInsert(37))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func open(t *testing.T, path string, opts ...sqlite.Option) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestReopen checks that rows and keys outlive a Store: a key stored before
// Close is a duplicate after a new Open, whose counts start at zero.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loader.db")
	ctx := context.Background()
	batch := &store.Batch{Key: "kept", Events: []store.Event{{ID: "1", Payload: []byte(`{"id":"1"}`)}}}
	s := open(t, path)
	if dup, err := s.Store(ctx, batch); err != nil || dup {
		t.Fatalf("Store = %v, %v; want false, nil", dup, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
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
	if len(got) != 1 || got[0].Key != "kept" || len(got[0].Events) != 1 {
		t.Fatalf("read back %+v, want the one batch", got)
	}
}

// TestSameKeyAcrossStores races one key through two Stores on one file, as
// two processes would: SQLite's write lock and the unique key let one win.
func TestSameKeyAcrossStores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loader.db")
	a, b := open(t, path), open(t, path)
	ctx := context.Background()
	const keys = 20
	for i := range keys {
		batch := &store.Batch{Key: fmt.Sprintf("k%d", i), Events: []store.Event{{ID: "x", Payload: []byte(`{}`)}}}
		start := make(chan struct{})
		type result struct {
			dup bool
			err error
		}
		res := make(chan result, 2)
		for _, s := range []*sqlite.Store{a, b} {
			go func() {
				<-start
				d, err := s.Store(ctx, batch)
				res <- result{d, err}
			}()
		}
		close(start)
		fresh := 0
		for range 2 {
			r := <-res
			if r.err != nil {
				t.Fatal(r.err)
			}
			if !r.dup {
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
	if len(got) != keys {
		t.Fatalf("%d batches stored, want %d", len(got), keys)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		path string
		opts []sqlite.Option
	}{
		{"EmptyPath", "", nil},
		{"Memory", ":memory:", nil},
		{"QueryInPath", filepath.Join(dir, "a.db?_pragma=foo"), nil},
		{"URI", "file:" + filepath.Join(dir, "a.db"), nil},
		{"ZeroRows", filepath.Join(dir, "a.db"), []sqlite.Option{sqlite.WithRowsPerInsert(0)}},
		{"TooManyRows", filepath.Join(dir, "a.db"), []sqlite.Option{sqlite.WithRowsPerInsert(6554)}},
		{"NegativeBusyTimeout", filepath.Join(dir, "a.db"), []sqlite.Option{sqlite.WithBusyTimeout(-time.Second)}},
		{"MissingDir", filepath.Join(dir, "no", "such", "dir", "a.db"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sqlite.Open(tc.path, tc.opts...)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open(%q) returned nil error", tc.path)
			}
		})
	}
	// The limits themselves are accepted.
	s := open(t, filepath.Join(dir, "b.db"), sqlite.WithRowsPerInsert(6553), sqlite.WithBusyTimeout(0))
	if _, err := s.Store(context.Background(), &store.Batch{Events: make([]store.Event, 7000)}); err != nil {
		t.Fatal(err)
	}
}
