package spool_test

import (
	"errors"
	"fmt"
	"os"

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
