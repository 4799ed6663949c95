package batchproc_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/batchproc/batchproc"
)

// A processor writing NDJSON to stdout: events are batched, and Shutdown
// sends what remains.
func Example() {
	p, err := batchproc.New(batchproc.NewWriterSink(os.Stdout),
		batchproc.WithMaxBatchEvents(100),
		batchproc.WithFlushInterval(500*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		payload := fmt.Appendf(nil, `{"id":"e%d","type":"signup"}`, i)
		if err := p.Add(ctx, batchproc.Event{ID: fmt.Sprint("e", i), Payload: payload}); err != nil {
			log.Print(err)
		}
	}
	// On shutdown, give the drain a deadline.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Print(err)
	}
	st := p.Stats()
	fmt.Println("delivered", st.Delivered, "of", st.Added)
	// Output:
	// {"id":"e0","type":"signup"}
	// {"id":"e1","type":"signup"}
	// {"id":"e2","type":"signup"}
	// delivered 3 of 3
}

// TryAdd never blocks: a request handler that must not wait sheds the event
// and counts it instead.
func ExampleProcessor_TryAdd() {
	p, _ := batchproc.New(batchproc.NewWriterSink(os.Stdout))
	defer p.Shutdown(context.Background())

	err := p.TryAdd(batchproc.Event{Payload: []byte(`{"type":"click"}`)})
	switch {
	case errors.Is(err, batchproc.ErrFull):
		fmt.Println("shed: memory budget full")
	case err != nil:
		fmt.Println("rejected:", err)
	default:
		fmt.Println("queued")
	}
	// Output:
	// queued
	// {"type":"click"}
}

// A Sink classifies its errors; the processor retries. Here the first send
// fails with a Retry-After hint, and the failure callback stays unused.
func ExampleSinkFunc() {
	attempts := 0
	sink := batchproc.SinkFunc(func(ctx context.Context, b *batchproc.Batch) error {
		attempts++
		if attempts == 1 {
			return batchproc.RetryAfter(errors.New("loader busy"), 10*time.Millisecond)
		}
		fmt.Printf("delivered %d events under key %t\n", b.Len(), b.Key() != "")
		return nil
	})
	p, _ := batchproc.New(sink,
		batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
			fmt.Println("failed:", b.Len(), err)
		}))
	_ = p.Add(context.Background(), batchproc.Event{Payload: []byte(`{}`)})
	_ = p.Flush(context.Background())
	_ = p.Shutdown(context.Background())
	fmt.Println("attempts:", attempts)
	// Output:
	// delivered 1 events under key true
	// attempts: 2
}
