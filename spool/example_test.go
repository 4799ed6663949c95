package spool_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/spool"
)

func Example() {
	dir, _ := os.MkdirTemp("", "spool-example")
	defer os.RemoveAll(dir)

	// A first process appends two batches and delivers one; then it dies.
	s, err := spool.Open(dir, spool.WithSync(spool.SyncBatch))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, key := range []string{"p1:1", "p1:2"} {
		b, _ := batchproc.NewBatch(key, batchproc.Event{ID: "e-" + key, Payload: []byte(`{"msg":"hello"}`)})
		if err := s.Append(b); errors.Is(err, batchproc.ErrFull) {
			fmt.Println("spool full: back-pressure")
		}
	}
	s.Ack("p1:1") // delivered
	s.Close()

	// The next process finds what was not delivered, under the same key.
	s, _ = spool.Open(dir)
	defer s.Close()
	s.Replay(func(b *batchproc.Batch) error {
		fmt.Printf("resend %s: %s", b.Key(), b.NDJSON())
		return nil
	})
	fmt.Println("batches in the spool:", s.Stats().Batches)
	// Output:
	// resend p1:2: {"msg":"hello"}
	// batches in the spool: 1
}

// A processor with a spool: what one process could not deliver (here, the
// receiver was down when it shut down) the next one delivers, under the
// same keys.
func ExampleWithSpool() {
	dir, _ := os.MkdirTemp("", "spool-example")
	defer os.RemoveAll(dir)

	down := batchproc.SinkFunc(func(ctx context.Context, b *batchproc.Batch) error {
		return errors.New("receiver down") // retryable
	})
	p, err := batchproc.New(down, spool.WithSpool(dir), batchproc.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		fmt.Println(err)
		return
	}
	p.Add(context.Background(), batchproc.Event{Payload: []byte(`{"msg":"hello"}`)})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = p.Shutdown(ctx)
	if left, ok := errors.AsType[*batchproc.LeftInJournalError](err); ok {
		fmt.Println("left in the spool:", left.Events, "event")
	}

	up := batchproc.SinkFunc(func(ctx context.Context, b *batchproc.Batch) error {
		fmt.Printf("delivered: %s", b.NDJSON())
		return nil
	})
	p, err = batchproc.New(up, spool.WithSpool(dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	p.Flush(context.Background()) // waits for the replay too
	p.Shutdown(context.Background())
	fmt.Println("replayed:", p.Stats().Replayed)
	// Output:
	// left in the spool: 1 event
	// delivered: {"msg":"hello"}
	// replayed: 1
}
