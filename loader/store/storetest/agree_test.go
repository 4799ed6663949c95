package storetest_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/batchproc/batchproc/internal/testutil/pgtest"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/postgres"
	"github.com/batchproc/batchproc/loader/store/sqlite"
)

// TestStoresAgree stores the same awkward batches in SQLite and in
// PostgreSQL and reads both back: every value must be the same in both,
// exactly (the suite checks each store against the rules; this checks the
// stores against each other).
func TestStoresAgree(t *testing.T) {
	ctx := context.Background()
	lite, err := sqlite.Open(filepath.Join(t.TempDir(), "agree.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lite.Close() })
	pg, err := postgres.Open(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })

	ts := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	batches := []*store.Batch{
		{Namespace: "0123456789abcdef", Key: "agree-1", Events: []store.Event{
			{ID: "\x00", Type: "nul", Payload: []byte(`{"id":"\u0000"}`)},
			{ID: "a\x00b\xffc", Type: "t\x00", Payload: []byte(`{"id":"a\u0000b"}`)},
			{ID: "\uFFFD", Type: "fffd", Payload: []byte(`{"id":"\uFFFD"}`)},
			{ID: "zero", TS: ts("0001-01-01T00:00:00Z"), Payload: []byte(`{"ts":"0001-01-01T00:00:00Z"}`)},
			{ID: "zero+1", TS: ts("0001-01-01T01:00:00+01:00"), Payload: []byte(`{}`)},
			{ID: "sub-µs", TS: ts("0001-01-01T00:00:00.000000999Z"), Payload: []byte(`{}`)},
			{ID: "ns", TS: ts("2026-12-01T08:00:00.123456789Z"), Payload: []byte(`{}`)},
			{ID: "zone", TS: ts("2026-12-01T08:00:00.5-07:00"), Payload: []byte(`{}`)},
			{ID: "year0", TS: ts("0000-06-01T00:00:00Z"), Payload: []byte(`{}`)},
			{ID: "year9999", TS: ts("9999-12-31T23:59:59.999999999Z"), Payload: []byte(`{}`)},
			{ID: "nil payload"},
		}},
		{Namespace: store.NamespaceKafka, Key: "kafka:events:0:1", Events: []store.Event{{ID: "k", Payload: []byte(`{}`)}}},
		{Events: []store.Event{{Type: "unkeyed", Payload: []byte("\x00\xff")}}},
	}
	for _, s := range []store.Store{lite, pg} {
		for _, b := range batches {
			if _, err := s.Store(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	a, err := lite.Batches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pg.Batches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("SQLite has %d batches, PostgreSQL %d", len(a), len(b))
	}
	for i := range a {
		if a[i].Namespace != b[i].Namespace || a[i].Key != b[i].Key || len(a[i].Events) != len(b[i].Events) {
			t.Fatalf("batch %d: SQLite (%q, %q, %d events), PostgreSQL (%q, %q, %d events)", i,
				a[i].Namespace, a[i].Key, len(a[i].Events), b[i].Namespace, b[i].Key, len(b[i].Events))
		}
		for j := range a[i].Events {
			x, y := a[i].Events[j], b[i].Events[j]
			if x.ID != y.ID || x.Type != y.Type || !x.TS.Equal(y.TS) || x.TS.IsZero() != y.TS.IsZero() || !bytes.Equal(x.Payload, y.Payload) {
				t.Errorf("batch %d event %d: SQLite stored {%q %q %v %q}, PostgreSQL {%q %q %v %q}", i, j,
					x.ID, x.Type, x.TS, x.Payload, y.ID, y.Type, y.TS, y.Payload)
			}
		}
	}
}
