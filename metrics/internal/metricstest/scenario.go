// Package metricstest drives a real processor through the scenarios the
// metrics adapters' tests share, so that both adapters are checked against
// the same runs. Run them inside a testing/synctest bubble: sends that
// take time and retries then run on the bubble's clock.
package metricstest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
)

// SlowSend is how long Basic's first send takes.
const SlowSend = 50 * time.Millisecond

// Event returns the i-th event of a scenario: ID "e<i>", an 8-byte line
// ({"n":<i>} and its newline) for i < 10.
func Event(i int) batchproc.Event {
	return batchproc.Event{ID: fmt.Sprintf("e%d", i), Payload: fmt.Appendf(nil, `{"n":%d}`, i)}
}

func newProcessor(t testing.TB, sink batchproc.Sink, hook batchproc.Hook, bind func(*batchproc.Processor), opts ...batchproc.Option) *batchproc.Processor {
	t.Helper()
	opts = append([]batchproc.Option{batchproc.WithLogger(slog.New(slog.DiscardHandler)), batchproc.WithHooks(hook)}, opts...)
	p, err := batchproc.New(sink, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if bind != nil {
		bind(p)
	}
	return p
}

// Basic runs a processor with hook through a short history and shuts it
// down: batches of 2 events; the batch e0,e1 takes SlowSend to fail its
// first attempt and is delivered by its second; the batch e2,e3 fails
// permanently; three Adds are refused (an empty event, one larger than the
// 64-byte batch limit, one after Shutdown). bind, if not nil, is called
// with the processor right after New. Stats then match [BasicStats].
func Basic(t testing.TB, hook batchproc.Hook, bind func(*batchproc.Processor)) *batchproc.Processor {
	t.Helper()
	rec := &batchproctest.Recorder{Hook: func(_ context.Context, b *batchproc.Batch, attempt int) error {
		switch b.Event(0).ID {
		case "e0":
			if attempt == 1 {
				time.Sleep(SlowSend) // the bubble's clock: the send takes SlowSend
				return errors.New("503 service unavailable")
			}
		case "e2":
			return batchproc.Permanent(errors.New("400 bad request"))
		}
		return nil
	}}
	p := newProcessor(t, rec, hook, bind, batchproc.WithMaxBatchEvents(2), batchproc.WithMaxBatchBytes(64))
	ctx := context.Background()
	for i := range 4 {
		if err := p.Add(ctx, Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Flush reports the failures of what it covered; e2,e3 may have failed
	// before it was called. Stats count every failure either way.
	_ = p.Flush(ctx)
	if err := p.TryAdd(batchproc.Event{}); !errors.Is(err, batchproc.ErrInvalidEvent) {
		t.Fatalf("TryAdd(empty): %v", err)
	}
	if err := p.TryAdd(batchproc.Event{Payload: []byte(strings.Repeat("x", 100))}); !errors.Is(err, batchproc.ErrEventTooLarge) {
		t.Fatalf("TryAdd(100 bytes): %v", err)
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.TryAdd(Event(9)); !errors.Is(err, batchproc.ErrClosed) {
		t.Fatalf("TryAdd after Shutdown: %v", err)
	}
	return p
}

// BasicStats is what Basic's processor's Stats say, but for InFlightLimit
// (the adaptive limit's choice).
var BasicStats = batchproc.Stats{Added: 4, Delivered: 2, Failed: 2, Rejected: 3, Batches: 1, Retries: 1}

// Reasons runs a processor with hook so that every reason the adapters
// name occurs once: of Add/TryAdd refusals full, canceled,
// deadline_exceeded, invalid, too_large, closed; of failed batches
// permanent, retries_exhausted and shutdown. Batches hold one event, and
// one send runs at a time.
func Reasons(t testing.TB, hook batchproc.Hook, bind func(*batchproc.Processor)) *batchproc.Processor {
	t.Helper()
	release := make(chan struct{})
	rec := &batchproctest.Recorder{Hook: func(ctx context.Context, b *batchproc.Batch, attempt int) error {
		switch b.Event(0).ID {
		case "block":
			<-release
		case "perm":
			return batchproc.Permanent(errors.New("400 bad request"))
		case "flaky":
			return errors.New("503 service unavailable")
		case "hang":
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}}
	p := newProcessor(t, rec, hook, bind,
		batchproc.WithMaxBatchEvents(1), batchproc.WithMaxBatchBytes(64), batchproc.WithMemoryLimit(4096),
		batchproc.WithMaxInFlight(1),
		batchproc.WithRetry(batchproc.RetryPolicy{MaxAttempts: 2, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}))
	ctx := context.Background()
	mustAdd := func(e batchproc.Event) {
		t.Helper()
		if err := p.TryAdd(e); err != nil {
			t.Fatalf("TryAdd(%s): %v", e.ID, err)
		}
	}
	mustAdd(batchproc.Event{ID: "block", Payload: []byte("{}")})
	synctest.Wait() // its send is under way, and blocks every other
	full := false
	for i := range 10000 { // the 4 KiB budget holds far fewer
		if err := p.TryAdd(Event(i)); errors.Is(err, batchproc.ErrFull) {
			full = true
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("the budget never filled")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.Add(canceled, Event(0)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Add(canceled ctx) with the budget full: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := p.Add(short, Event(0)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Add(10ms ctx) with the budget full: %v", err)
	}
	if err := p.TryAdd(batchproc.Event{}); !errors.Is(err, batchproc.ErrInvalidEvent) {
		t.Fatalf("TryAdd(empty): %v", err)
	}
	if err := p.TryAdd(batchproc.Event{Payload: []byte(strings.Repeat("x", 100))}); !errors.Is(err, batchproc.ErrEventTooLarge) {
		t.Fatalf("TryAdd(100 bytes): %v", err)
	}
	close(release)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mustAdd(batchproc.Event{ID: "perm", Payload: []byte("{}")})
	mustAdd(batchproc.Event{ID: "flaky", Payload: []byte("{}")})
	_ = p.Flush(ctx) // the two failures, if they came after the call
	mustAdd(batchproc.Event{ID: "hang", Payload: []byte("{}")})
	synctest.Wait()
	stop, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := p.Shutdown(stop); err == nil {
		t.Fatal("Shutdown: no error, want the hung batch's failure")
	}
	if err := p.TryAdd(Event(0)); !errors.Is(err, batchproc.ErrClosed) {
		t.Fatalf("TryAdd after Shutdown: %v", err)
	}
	return p
}

// Unguarded runs a processor with hook and journal, an option that gives it
// a journal keeping no open batches (the spool with WithOpenBatches(0)):
// 25 events in batches of 10, then Shutdown. It checks that every batch
// was journaled and unguarded, and returns the Stats, for the adapter's
// journal metrics to match.
func Unguarded(t testing.TB, hook batchproc.Hook, journal batchproc.Option) batchproc.Stats {
	t.Helper()
	p := newProcessor(t, &batchproctest.Recorder{}, hook, nil, journal, batchproc.WithMaxBatchEvents(10))
	for i := range 25 {
		if err := p.Add(context.Background(), Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := p.Stats()
	if s.Journaled == 0 || s.Unguarded != s.Journaled {
		t.Fatalf("Stats %+v: want every batch journaled and unguarded (no open batches kept)", s)
	}
	return s
}
