package spool

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/batchproc/batchproc"
)

// A Shutdown whose ctx does not end delivers what a previous processor
// left in the spool too, though the replay has to wait for budget that
// sends hold: the replay is part of the drain. (Shutdown used to stop it
// at once, so with a budget of two batches it delivered two of the six
// left, returned nil, and left four on disk, which a slow disk's fsyncs
// made TestProcessorOrderedReplaysFirst show four times in ten.)
func TestShutdownDeliversTheReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemFS()
		s := mustOpen(t, "/d", withFS(m))
		const left, events = 6, 20
		for i := range left {
			if err := s.Append(testBatch(t, fmt.Sprintf("k%02d", i), events)); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()

		release := make(chan struct{})
		var delivered atomic.Int64
		sink := batchproc.SinkFunc(func(ctx context.Context, b *batchproc.Batch) error {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			delivered.Add(int64(b.Len()))
			return nil
		})
		s = mustOpen(t, "/d", withFS(m))
		p, err := batchproc.New(sink, batchproc.WithLogger(slog.New(slog.DiscardHandler)),
			batchproc.WithMaxBatchBytes(1<<10), batchproc.WithMemoryLimit(3<<10),
			batchproc.WithJournal(func() (batchproc.Journal, error) { return s, nil }))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Shutdown(context.Background()) }()
		synctest.Wait() // Shutdown under way; the replay waits for budget the blocked sends hold
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if got := delivered.Load(); got != left*events {
			t.Fatalf("delivered %d events, want %d", got, left*events)
		}
		if st := p.Stats(); st.Replayed != left*events {
			t.Fatalf("Stats.Replayed %d, want %d", st.Replayed, left*events)
		}
		s = mustOpen(t, "/d", withFS(m))
		defer s.Close()
		if st := s.Stats(); st.Batches != 0 {
			t.Fatalf("%d batches still in the spool after a full Shutdown", st.Batches)
		}
	})
}
