package batchproc_test

import (
	"bytes"
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
)

// With every P running Adds that never block, the senders still run as
// batches are cut: an Add that cuts a batch while earlier ones still wait for
// a sender yields. (Without that, the sender the cut woke waited in the run
// queue until the Add goroutine was preempted, 10 ms later, while the Adds
// filled the budget with batches nobody sent; under RunParallel the Adds then
// spent their time waiting for budget.) One P makes it deterministic: the
// sender can only run when the Add loop lets it.
func TestSendersKeepUpWithBusyAdds(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const perBatch, batches = 1000, 40
	var added, sent, maxLag atomic.Int64
	p := mustNew(t, batchproc.SinkFunc(func(_ context.Context, b *batchproc.Batch) error {
		// Events added and not yet handed to Send, this batch's included.
		lag := added.Load() - sent.Add(int64(b.Len())) + int64(b.Len())
		for m := maxLag.Load(); lag > m && !maxLag.CompareAndSwap(m, lag); m = maxLag.Load() {
		}
		return nil
	}), batchproc.WithMaxBatchEvents(perBatch), batchproc.WithFlushInterval(time.Hour))
	e := batchproc.Event{ID: "id", Payload: bytes.Repeat([]byte("x"), 200)}
	ctx := context.Background()
	for range perBatch * batches {
		if err := p.Add(ctx, e); err != nil {
			t.Fatal(err)
		}
		added.Add(1)
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sent.Load(); got != perBatch*batches {
		t.Fatalf("sent %d events, want %d", got, perBatch*batches)
	}
	// A batch is sent right after the next one is cut, at worst: the lag is
	// then the two batches, less the one event whose Add is cutting.
	if lag := maxLag.Load(); lag > 3*perBatch {
		t.Fatalf("a Send saw %d events added and not yet sent (%d batches): the senders did not run while Adds kept their P busy", lag, lag/perBatch)
	}
}
