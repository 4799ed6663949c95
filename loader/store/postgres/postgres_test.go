package postgres_test

import (
	"context"
	"crypto/rand"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/postgres"
	"github.com/batchproc/batchproc/loader/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// envDSN names the variable holding the server the tests use.
const envDSN = "BATCHPROC_TEST_POSTGRES"

// testDSN returns the DSN of a fresh, empty schema on the test server,
// dropped when tb ends, so tests run in parallel and repeatedly. Without a
// server it skips tb, or fails it when env CI is set: in CI nothing skips.
func testDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(envDSN)
	if dsn == "" {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is not set (CI is set, so PostgreSQL tests must run): start a server with eval \"$(scripts/pg-start.sh)\"", envDSN)
		}
		tb.Skipf("%s is not set; start a throwaway server with: eval \"$(scripts/pg-start.sh)\" (stop it with scripts/pg-stop.sh)", envDSN)
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect to %s: %v", envDSN, err)
	}
	defer admin.Close(ctx)
	name := "batchproc_test_" + strings.ToLower(rand.Text())
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			tb.Errorf("drop schema %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", name, err)
		}
	})
	return withSearchPath(tb, dsn, name)
}

// withSearchPath returns dsn with search_path set to schema, in the DSN's
// own syntax (URL or key=value).
func withSearchPath(tb testing.TB, dsn, schema string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("%s: %v", envDSN, err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}

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
