package batchproctest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
)

// A Gate holds every send until Open, reporting each as it begins; then
// the held batches and the later ones are delivered. A send whose ctx
// ends while held returns the ctx's error.
func TestGateHoldsSendsUntilOpen(t *testing.T) {
	g := batchproctest.NewGate(1)
	rec := &batchproctest.Recorder{Hook: g.Hook}
	p, err := batchproc.New(rec, batchproc.WithMaxBatchEvents(1), batchproc.WithMaxInFlight(2), batchproc.WithFlushInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := p.Add(t.Context(), batchproc.Event{Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-g.Started
	<-g.Started // two sends held, the send limit
	if n := len(rec.Sent()); n != 0 {
		t.Fatalf("%d sends returned before Open", n)
	}
	g.Open()
	g.Open() // a second Open does nothing
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Delivered()); n != 4 {
		t.Fatalf("%d batches delivered after Open, want 4", n)
	}

	held := batchproctest.NewGate(1)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b, err := batchproc.NewBatch("k", batchproc.Event{Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := held.Hook(ctx, b, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("a held send whose ctx ended returned %v", err)
	}
}
