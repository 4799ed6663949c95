package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/httpsink"
	"github.com/batchproc/batchproc/internal/testutil/faults"
	"github.com/batchproc/batchproc/spool"
)

// TestSpoolOutageBudgetWithIDs: WithJournal promises that during an
// outage a batch waiting for its next attempt leaves memory, "so an outage
// fills the journal, not the memory budget". Through a spool, to a real
// loader answering 503, 8 budgets' worth of events with UUID-sized IDs
// (36 bytes) and 200-byte payloads are added: every Add must return nil
// within its 2 s deadline, and BufferedBytes stay within twice the budget.
// Then the loader is back and stores every event once.
//
// It failed before a spilled batch dropped its events' offsets and IDs
// too (it kept len(ID)+20 bytes per event in the budget, so the budget
// filled after about 4.4 budgets of events here, and at 2,000 events/s
// of UUID-keyed events the default 64 MiB after about 10 minutes of
// outage); a spilled batch now keeps 128 bytes.
func TestSpoolOutageBudgetWithIDs(t *testing.T) {
	t.Run("no IDs", func(t *testing.T) { spoolOutageBudget(t, 0) })
	t.Run("UUID IDs", func(t *testing.T) { spoolOutageBudget(t, 36) })
}

// spoolOutageBudget adds 8 budgets of events with idLen-byte IDs through a
// spool while the loader answers 503.
func spoolOutageBudget(t *testing.T, idLen int) {
	const memLimit = 1 << 20
	var down atomic.Bool
	down.Store(true)
	fh := &faults.Handler{Plan: onlyBatches(func(int) faults.Fault {
		if down.Load() {
			return faults.Unavailable
		}
		return faults.None
	})}
	url, dbPath, stop := inProcessLoader(t, fh)
	sink, err := httpsink.New(url, httpsink.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	p, err := batchproc.New(sink, batchproc.WithLogger(slog.New(slog.DiscardHandler)),
		spool.WithSpool(t.TempDir(), spool.WithSync(spool.SyncNever), spool.WithSegmentSize(1<<20)),
		batchproc.WithMemoryLimit(memLimit), batchproc.WithMaxBatchEvents(100), batchproc.WithMaxBatchBytes(64<<10),
		batchproc.WithFlushInterval(10*time.Millisecond),
		batchproc.WithRetry(batchproc.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxElapsed: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	eventCost := idLen + 200 + 1 + 20 // ID, payload, newline, offset and ID header
	n := 8 * memLimit / eventCost
	var maxBuffered int64
	for i := range n {
		uuid := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)      // 36 bytes
		payload := fmt.Sprintf(`{"id":%q,"pad":"%0146d"}`, uuid, i) // 200 bytes
		id := uuid[:idLen]
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := p.Add(ctx, batchproc.Event{ID: id, Payload: []byte(payload)})
		cancel()
		if err != nil {
			st := p.Stats()
			t.Errorf("Add %d of %d with the loader down: %v; buffered %d of a %d budget, %d pending, %d journaled",
				i, n, err, st.BufferedBytes, memLimit, st.Pending, st.Journaled)
			break
		}
		maxBuffered = max(maxBuffered, p.Stats().BufferedBytes)
	}
	if maxBuffered > 2*memLimit {
		t.Errorf("buffered %d bytes with a %d budget", maxBuffered, memLimit)
	}
	down.Store(false)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	stop()
	if st.Delivered != st.Added || st.Failed != 0 || st.Journaled == 0 {
		t.Errorf("stats %+v", st)
	}
	batches := storedBatches(t, dbPath)
	seen := map[string]bool{}
	for _, b := range batches {
		for _, e := range b.Events {
			if seen[string(e.Payload)] {
				t.Fatalf("event %.50s stored twice", e.Payload)
			}
			seen[string(e.Payload)] = true
		}
	}
	if uint64(len(seen)) != st.Added {
		t.Errorf("%d events stored, %d accepted", len(seen), st.Added)
	}
}
