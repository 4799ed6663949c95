package sqlite_test

import (
	"context"
	"database/sql"
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
// Close is a duplicate after a new Open, whose counts start from the rows in
// the file.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loader.db")
	ctx := context.Background()
	batch := &store.Batch{Key: "kept", Events: []store.Event{{ID: "1", Payload: []byte(`{"id":"1"}`)}}}
	s := open(t, path)
	if dup, err := s.Store(ctx, batch); err != nil || dup {
		t.Fatalf("Store = %v, %v; want false, nil", dup, err)
	}
	if _, err := s.Store(ctx, &store.Batch{Events: make([]store.Event, 3)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	if got, want := s.Counts(), (store.Counts{Events: 4, Batches: 2}); got != want {
		t.Fatalf("Counts after reopen = %+v, want %+v (the rows in the file)", got, want)
	}
	if dup, err := s.Store(ctx, batch); err != nil || !dup {
		t.Fatalf("Store after reopen = %v, %v; want true, nil", dup, err)
	}
	if got, want := s.Counts(), (store.Counts{Events: 4, Batches: 2, Duplicates: 1}); got != want {
		t.Fatalf("Counts = %+v, want %+v", got, want)
	}
	got, err := s.Batches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "kept" || len(got[0].Events) != 1 {
		t.Fatalf("read back %+v, want the two batches", got)
	}
}

// schema1 is the schema of the first loader release, verbatim: batches.key
// UNIQUE, no namespace, no digest, user_version 0.
const schema1 = `
CREATE TABLE IF NOT EXISTS batches (
	id        INTEGER PRIMARY KEY,
	key       TEXT UNIQUE,
	count     INTEGER NOT NULL,
	stored_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
	id       INTEGER PRIMARY KEY,
	batch_id INTEGER NOT NULL,
	event_id TEXT NOT NULL,
	type     TEXT NOT NULL,
	ts       TEXT,
	payload  BLOB NOT NULL
);
INSERT INTO batches(id, key, count, stored_at) VALUES
	(1, 'old-http-key', 2, '2026-11-01T10:00:00.000000000Z'),
	(2, 'kafka:events:0:41', 1, '2026-11-01T10:00:01.000000000Z'),
	(3, NULL, 1, '2026-11-01T10:00:02.000000000Z');
INSERT INTO events(batch_id, event_id, type, ts, payload) VALUES
	(1, 'a', 'click', '2026-11-01T09:59:59.123456000Z', '{"id":"a"}'),
	(1, 'b', 'click', NULL, '{"id":"b"}'),
	(2, 'k', '', NULL, '{"id":"k"}'),
	(3, 'n', '', NULL, '{"id":"n"}');`

// TestMigrateSchema1 makes a database file with the first release's schema
// by hand, then opens it: the rows are kept and counted, and the old keys
// are still taken, in every namespace (they were stored before namespaces,
// so a retry from any tenant or the Kafka consumer is a duplicate).
func TestMigrateSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA journal_mode=WAL;" + schema1); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	s := open(t, path)
	got := storetest.CheckMigrated(t, s)
	if want := time.Date(2026, 11, 1, 9, 59, 59, 123456000, time.UTC); !got[0].Events[0].TS.Equal(want) {
		t.Errorf("old ts read back as %v, want %v", got[0].Events[0].TS, want)
	}
	// Opening the migrated file again migrates nothing and keeps it all.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	if got, want := s.Counts(), (store.Counts{Events: 5, Batches: 4}); got != want {
		t.Fatalf("Counts after reopen = %+v, want %+v", got, want)
	}
	if dup, err := s.Store(ctx, &store.Batch{Key: "old-http-key"}); err != nil || !dup {
		t.Fatalf("old key after reopen: Store = %v, %v; want a duplicate", dup, err)
	}
}

// TestNewerSchemaRefused: a file whose schema version this code does not
// know is not touched.
func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := sqlite.Open(path); err == nil {
		_ = s.Close()
		t.Fatal("Open of a schema version 99 file returned nil error")
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
		{"TooManyRows", filepath.Join(dir, "a.db"), []sqlite.Option{sqlite.WithRowsPerInsert(8192)}},
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
	s := open(t, filepath.Join(dir, "b.db"), sqlite.WithRowsPerInsert(8191), sqlite.WithBusyTimeout(0))
	if _, err := s.Store(context.Background(), &store.Batch{Events: make([]store.Event, 9000)}); err != nil {
		t.Fatal(err)
	}
}
