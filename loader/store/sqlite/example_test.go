package sqlite_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/sqlite"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := sqlite.Open(filepath.Join(dir, "loader.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	b := &store.Batch{Key: "batch-1", Events: []store.Event{
		{ID: "e1", Type: "click", TS: time.Now(), Payload: []byte(`{"id":"e1","type":"click"}`)},
	}}
	ctx := context.Background()
	dup, err := s.Store(ctx, b) // committed when err is nil
	fmt.Println(dup, err)
	dup, err = s.Store(ctx, b) // a retry of the same key
	fmt.Println(dup, err)
	fmt.Printf("%+v\n", s.Counts())
	// Output:
	// false <nil>
	// true <nil>
	// {Events:1 Batches:1 Duplicates:1}
}
