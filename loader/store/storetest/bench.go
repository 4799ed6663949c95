package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchproc/batchproc/loader/store"
)

// BenchEvents returns n events whose payloads are 200 bytes each, shaped
// like a service's events.
func BenchEvents(n int) []store.Event {
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

// Benchmark is every backend's BenchmarkStore: it stores batches of 1,000
// 200-byte events, each under a fresh key, one at a time (Serial), from
// GOMAXPROCS goroutines (Parallel) and from 8 per GOMAXPROCS (Parallel8x,
// where a store's group commit or the server's WAL flush can combine
// commits), into a fresh store from open for each, and reports events/s.
func Benchmark(b *testing.B, open func(b *testing.B) store.Store) {
	const perBatch = 1000
	events := BenchEvents(perBatch)
	report := func(b *testing.B, s store.Store) {
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
	for _, par := range []int{1, 8} {
		name := "Parallel"
		if par > 1 {
			name += fmt.Sprintf("%dx", par)
		}
		b.Run(name, func(b *testing.B) {
			s := open(b)
			ctx := context.Background()
			b.SetBytes(200 * perBatch)
			b.SetParallelism(par)
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
}
