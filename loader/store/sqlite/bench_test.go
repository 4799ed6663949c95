package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/sqlite"
)

// benchBatch returns n events whose payloads are 200 bytes each.
func benchBatch(n int) []store.Event {
	ts := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	ev := make([]store.Event, n)
	for i := range ev {
		id := fmt.Sprintf("%016x", i)
		p := fmt.Sprintf(`{"id":%q,"type":"bench","ts":%q,"pad":"`, id, ts.Format(time.RFC3339Nano))
		p += strings.Repeat("x", 200-len(p)-2) + `"}`
		ev[i] = store.Event{ID: id, Type: "bench", TS: ts, Payload: []byte(p)}
	}
	return ev
}

// BenchmarkStore stores batches of 1,000 events of 200 bytes, each under a
// fresh key, one at a time (Serial) and from GOMAXPROCS goroutines
// (Parallel), and reports events/s.
func BenchmarkStore(b *testing.B) {
	const perBatch = 1000
	events := benchBatch(perBatch)
	open := func(b *testing.B) *sqlite.Store {
		s, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	}
	report := func(b *testing.B, s *sqlite.Store) {
		b.ReportMetric(float64(s.Counts().Events)/b.Elapsed().Seconds(), "events/s")
	}
	b.Run("Serial", func(b *testing.B) {
		s := open(b)
		ctx := context.Background()
		b.SetBytes(200 * perBatch)
		i := 0
		for b.Loop() {
			i++
			if _, err := s.Store(ctx, &store.Batch{Key: fmt.Sprintf("k%d", i), Events: events}); err != nil {
				b.Fatal(err)
			}
		}
		report(b, s)
	})
	b.Run("Parallel", func(b *testing.B) {
		s := open(b)
		ctx := context.Background()
		b.SetBytes(200 * perBatch)
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Store(ctx, &store.Batch{Key: fmt.Sprintf("k%d", n.Add(1)), Events: events}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		report(b, s)
	})
}
