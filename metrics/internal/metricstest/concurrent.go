package metricstest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
)

// Concurrent runs a processor with hook under load from several goroutines
// (adds, invalid TryAdds, and a sink failing one batch in five) while
// collect is called over and over, until the load is done; then it shuts
// the processor down and returns it. collect returns Added, Delivered,
// Failed and Pending as the adapter reported them in one collection, and
// Concurrent checks that every collection adds up (Added = Delivered +
// Failed + Pending), as one Stats snapshot does. It runs on the real
// clock, with real goroutines: meant for -race.
func Concurrent(t testing.TB, hook batchproc.Hook, bind func(*batchproc.Processor), collect func() (added, delivered, failed, pending float64)) *batchproc.Processor {
	t.Helper()
	rec := &batchproctest.Recorder{Hook: func(_ context.Context, b *batchproc.Batch, _ int) error {
		if strings.HasSuffix(b.Event(0).ID, "5") || strings.HasSuffix(b.Event(0).ID, "0") {
			return batchproc.Permanent(errors.New("400 bad request"))
		}
		return nil
	}}
	p := newProcessor(t, rec, hook, bind, batchproc.WithMaxBatchEvents(7))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range 2000 {
				if i%100 == 99 {
					_ = p.TryAdd(batchproc.Event{}) // refused: invalid
					continue
				}
				if err := p.Add(context.Background(), Event(i)); err != nil {
					t.Errorf("Add: %v", err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	collections := 0
	for running := true; running && collections < 100000; collections++ {
		select {
		case <-done:
			running = false
		default:
		}
		a, d, f, pe := collect()
		if a != d+f+pe {
			t.Fatalf("collection %d: added %v != delivered %v + failed %v + pending %v", collections, a, d, f, pe)
		}
	}
	<-done
	if err := p.Shutdown(context.Background()); err != nil {
		var de *batchproc.DeliveryError
		if !errors.As(err, &de) {
			t.Fatal(err)
		}
	}
	t.Logf("%d collections under load", collections)
	return p
}
