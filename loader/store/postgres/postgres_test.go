package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/batchproc/batchproc/internal/testutil/pgtest"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/postgres"
	"github.com/batchproc/batchproc/loader/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testDSN returns the DSN of a fresh schema on the test server.
func testDSN(tb testing.TB) string { tb.Helper(); return pgtest.DSN(tb) }

func open(tb testing.TB, dsn string, opts ...postgres.Option) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), dsn, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	t.Run("group-commit", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, func(t *testing.T) store.Store { return open(t, testDSN(t)) })
	})
	t.Run("one-commit-per-batch", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, func(t *testing.T) store.Store { return open(t, testDSN(t), postgres.WithGroupCommit(0)) })
	})
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
// Close is a duplicate after a new Open, whose counts start from the rows in
// the database.
func TestReopen(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	ctx := context.Background()
	batch := &store.Batch{Key: "kept", Events: []store.Event{{ID: "1", Payload: []byte(`{"id":"1"}`)}}}
	s := open(t, dsn)
	if dup, err := s.Store(ctx, batch); err != nil || dup {
		t.Fatalf("Store = %v, %v; want false, nil", dup, err)
	}
	if _, err := s.Store(ctx, &store.Batch{Events: make([]store.Event, 3)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dsn)
	if got, want := s.Counts(), (store.Counts{Events: 4, Batches: 2}); got != want {
		t.Fatalf("Counts after reopen = %+v, want %+v (the rows in the database)", got, want)
	}
	if dup, err := s.Store(ctx, batch); err != nil || !dup {
		t.Fatalf("Store after reopen = %v, %v; want true, nil", dup, err)
	}
	got, err := s.Batches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got[0].Events) != 1 {
		t.Fatalf("read back %+v, want the two batches", got)
	}
}

// schema1 is the schema of the first loader release, verbatim, with rows.
const schema1 = `
CREATE TABLE IF NOT EXISTS batches (
	id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	key       text UNIQUE,
	count     integer NOT NULL,
	stored_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS events (
	batch_id bigint NOT NULL,
	seq      integer NOT NULL,
	event_id text NOT NULL,
	type     text NOT NULL,
	ts       timestamptz,
	payload  bytea NOT NULL
);
INSERT INTO batches(key, count) VALUES ('old-http-key', 2), ('kafka:events:0:41', 1), (NULL, 1);
INSERT INTO events(batch_id, seq, event_id, type, ts, payload) VALUES
	(1, 0, 'a', 'click', '2026-11-01T09:59:59.123456Z', '{"id":"a"}'),
	(1, 1, 'b', 'click', NULL, '{"id":"b"}'),
	(2, 0, 'k', '', NULL, '{"id":"k"}'),
	(3, 0, 'n', '', NULL, '{"id":"n"}');`

// TestMigrateSchema1 makes the first release's schema by hand, then opens
// it: rows are kept and counted, the old keys are still taken in every
// namespace, and new keys get namespaces and digests.
func TestMigrateSchema1(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, schema1); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}

	storetest.CheckMigrated(t, open(t, dsn))
	// A second Open (as a second loader would) migrates nothing again.
	s2 := open(t, dsn)
	if got, want := s2.Counts(), (store.Counts{Events: 5, Batches: 4}); got != want {
		t.Fatalf("Counts of a second Open = %+v, want %+v", got, want)
	}
	if dup, err := s2.Store(ctx, &store.Batch{Key: "old-http-key"}); err != nil || !dup {
		t.Fatalf("old key via a second Open: Store = %v, %v; want a duplicate", dup, err)
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
	if _, err := postgres.Open(ctx, "postgres://postgres@127.0.0.1:1/postgres", postgres.WithGroupCommit(-1)); err == nil || !strings.Contains(err.Error(), "WithGroupCommit(-1)") {
		t.Errorf("Open with WithGroupCommit(-1): %v, want an error naming it", err)
	}
}
