package batchproc_test

// Tests for the delivery contract's corners: each one failed on the code
// before the fix it names (issue 8).

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"regexp"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/internal/testutil"
)

// Under back-pressure with nothing in flight, a blocked Add is served as
// soon as budget can be freed: the Add served first must not sit in a fresh
// open batch holding the budget the next waiter needs until the linger (an
// hour here).
func TestBackPressureNeverWaitsOutLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error { <-release; return nil }}
		// The budget holds one 700-byte event (977 with overheads) and a bit.
		p := mustNew(t, rec, batchproc.WithFlushInterval(time.Hour),
			batchproc.WithMemoryLimit(1300), batchproc.WithMaxBatchBytes(1024), batchproc.WithMaxInFlight(1))
		payload := bytes.Repeat([]byte("p"), 700)
		if err := p.TryAdd(batchproc.Event{Payload: payload}); err != nil {
			t.Fatal(err)
		}
		flushed := make(chan error)
		go func() { flushed <- p.Flush(t.Context()) }() // the event is in flight, its send blocked
		synctest.Wait()
		done := make(chan struct{}, 2)
		for range 2 { // A, then B, wait for budget
			go func() {
				if err := p.Add(t.Context(), batchproc.Event{Payload: payload}); err != nil {
					t.Error(err)
				}
				done <- struct{}{}
			}()
			synctest.Wait()
		}
		// The send completes: its release serves A, whose event opens a new
		// batch holding the budget B needs, with nothing in flight.
		start := time.Now()
		close(release)
		<-done
		<-done
		if el := time.Since(start); el > 0 {
			t.Fatalf("the second waiter was served after %v of fake time: it sat out the linger", el)
		}
		if err := <-flushed; err != nil {
			t.Fatal(err)
		}
		shutdown(t, p)
	})
}

// Calls into the processor from its callbacks either work or fail at once.
func TestCallbacksDoNotDeadlock(t *testing.T) {
	t.Run("Shutdown from OnFailure", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var p *batchproc.Processor
			got := make(chan error, 1)
			p = mustNew(t, batchproc.SinkFunc(func(context.Context, *batchproc.Batch) error {
				return batchproc.Permanent(errors.New("no"))
			}), batchproc.WithOnFailure(func(*batchproc.Batch, error) { got <- p.Shutdown(context.Background()) }))
			_ = p.Add(t.Context(), ev(1))
			_ = p.Flush(t.Context())
			if err := <-got; !errors.Is(err, batchproc.ErrInCallback) {
				t.Fatalf("Shutdown in OnFailure: %v, want ErrInCallback", err)
			}
			if err := p.Add(t.Context(), ev(2)); !errors.Is(err, batchproc.ErrClosed) {
				t.Fatalf("Add after a Shutdown begun in a callback: %v, want ErrClosed", err)
			}
			if err := p.Shutdown(t.Context()); err == nil || !strings.Contains(err.Error(), "no") {
				t.Fatalf("outer Shutdown: %v", err)
			}
		})
	})
	t.Run("Shutdown with deadline from Send", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var p *batchproc.Processor
			got := make(chan error, 1)
			p = mustNew(t, batchproc.SinkFunc(func(context.Context, *batchproc.Batch) error {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				got <- p.Shutdown(ctx)
				return nil
			}))
			_ = p.Add(t.Context(), ev(1))
			_ = p.Flush(t.Context())
			if err := <-got; !errors.Is(err, batchproc.ErrInCallback) {
				t.Fatalf("Shutdown in Send: %v, want ErrInCallback", err)
			}
			shutdown(t, p)
		})
	})
	t.Run("Add from OnFailure with a full budget", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var p *batchproc.Processor
			got := make(chan error, 1)
			payload := bytes.Repeat([]byte("p"), 500)
			p = mustNew(t, batchproc.SinkFunc(func(context.Context, *batchproc.Batch) error {
				return batchproc.Permanent(errors.New("no"))
			}), batchproc.WithMemoryLimit(2048), batchproc.WithMaxBatchBytes(1024), batchproc.WithMaxBatchEvents(2),
				batchproc.WithMaxInFlight(1),
				batchproc.WithOnFailure(func(*batchproc.Batch, error) {
					select {
					case got <- p.Add(context.Background(), batchproc.Event{Payload: payload}):
					default:
					}
				}))
			for p.TryAdd(batchproc.Event{Payload: payload}) == nil {
			}
			_ = p.Flush(t.Context())
			if err := <-got; err != nil && !errors.Is(err, batchproc.ErrFull) {
				t.Fatalf("Add in OnFailure: %v, want nil or ErrFull", err)
			}
			_ = p.Shutdown(t.Context())
		})
	})
	t.Run("Flush from OnFailure", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var p *batchproc.Processor
			got := make(chan error, 1)
			p = mustNew(t, batchproc.SinkFunc(func(context.Context, *batchproc.Batch) error {
				return batchproc.Permanent(errors.New("no"))
			}), batchproc.WithOnFailure(func(*batchproc.Batch, error) { got <- p.Flush(context.Background()) }))
			_ = p.Add(t.Context(), ev(1))
			_ = p.Flush(t.Context())
			if err := <-got; !errors.Is(err, batchproc.ErrInCallback) {
				t.Fatalf("Flush in OnFailure: %v, want ErrInCallback", err)
			}
			_ = p.Shutdown(t.Context())
		})
	})
}

// In the worker pool, a worker stuck in its send stops taking events, as a
// seed worker blocked in its send stops reading the queue: TryAdd is then
// refused no more often than with async dispatch.
func TestWorkerPoolAvoidsStuckWorker(t *testing.T) {
	stuck := make(chan struct{})
	var first atomic.Bool
	sink := batchproc.SinkFunc(func(ctx context.Context, b *batchproc.Batch) error {
		if first.CompareAndSwap(false, true) {
			select { // the first send hangs until the test ends
			case <-stuck:
			case <-ctx.Done():
			}
		}
		return nil
	})
	p := mustNew(t, sink, batchproc.WithWorkerPool(4), batchproc.WithMaxBatchEvents(100),
		batchproc.WithMaxBatchBytes(64<<10), batchproc.WithMemoryLimit(1<<20))
	payload := bytes.Repeat([]byte("x"), 200)
	defer func() {
		close(stuck)
		shutdown(t, p)
	}()
	refused := 0
	for i := range 20000 { // 20,000 x 200 bytes: four times the budget
		if err := p.TryAdd(batchproc.Event{Payload: payload}); err != nil {
			refused++
		}
		if i%100 == 99 {
			runtime.Gosched() // let the free workers send
		}
	}
	// The stuck worker holds its one batch and whatever it was handed
	// while every other worker was as busy: a few batches, not a quarter
	// of the stream.
	if refused > 200 {
		t.Fatalf("TryAdd refused %d of 20000 with one worker stuck", refused)
	}
}

func TestFlushIntervalNoLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{}
		p := mustNew(t, rec, batchproc.WithFlushInterval(math.MaxInt64), batchproc.WithMaxBatchEvents(10))
		time.Sleep(time.Second) // the processor's clock is past 0: now+interval would overflow
		for i := range 5 {
			_ = p.Add(t.Context(), ev(i))
		}
		time.Sleep(100 * 365 * 24 * time.Hour)
		synctest.Wait()
		if n := len(rec.Sent()); n != 0 {
			t.Fatalf("%d batches sent with no linger: the deadline overflowed", n)
		}
		shutdown(t, p)
		if n := len(rec.Events()); n != 5 {
			t.Fatalf("Shutdown delivered %d events, want 5", n)
		}
	})
}

// An event within the batch byte limit is accepted with the smallest
// memory limit New takes.
func TestSmallestMemoryLimitTakesFullEvent(t *testing.T) {
	const maxBytes = 1000
	var p *batchproc.Processor
	var err error
	for mem := maxBytes; err != nil || p == nil; mem++ {
		p, err = batchproc.New(&batchproctest.Recorder{}, batchproc.WithMaxBatchBytes(maxBytes), batchproc.WithMemoryLimit(mem),
			batchproc.WithLogger(slog.New(slog.DiscardHandler)))
		if mem > 2*maxBytes {
			t.Fatal("no memory limit below twice the batch limit accepted")
		}
	}
	defer shutdown(t, p)
	if err := p.Add(t.Context(), batchproc.Event{ID: "", Payload: bytes.Repeat([]byte("x"), maxBytes-1)}); err != nil {
		t.Fatalf("event of exactly the batch limit refused: %v", err)
	}
}

// A stalled writer does not hold Shutdown past its deadline.
func TestWriterSinkHonoursCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pr.Close()
		p := mustNew(t, batchproc.NewWriterSink(pw))
		_ = p.Add(t.Context(), ev(1))
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v", err)
		}
		if el := time.Since(start); el != time.Second {
			t.Fatalf("Shutdown took %v, want its 1s deadline", el)
		}
		pw.Close() // ends the stalled write
	})
}

// Flush returns once what it flushed holds no budget.
func TestFlushReturnsAfterRelease(t *testing.T) {
	p := mustNew(t, &batchproctest.Recorder{})
	defer shutdown(t, p)
	for range 50 {
		for i := range 10 {
			_ = p.Add(t.Context(), ev(i))
		}
		if err := p.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		if b := p.Stats().BufferedBytes; b != 0 {
			t.Fatalf("BufferedBytes %d right after Flush, want 0", b)
		}
	}
}

// A later TryAdd never takes budget while an earlier Add waits, even where
// the leftover of a grant would hold it.
func TestGrantLeavesNoLeftoverToBarge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error { <-release; return nil }}
		p := mustNew(t, rec, batchproc.WithMemoryLimit(8192), batchproc.WithMaxBatchBytes(1024),
			batchproc.WithMaxBatchEvents(1), batchproc.WithMaxInFlight(1))
		big := bytes.Repeat([]byte("p"), 1000)
		small := []byte("s")
		for p.TryAdd(batchproc.Event{Payload: big}) == nil {
		}
		done := make(chan string, 2)
		for _, name := range []string{"A", "B"} {
			go func() {
				if err := p.Add(t.Context(), batchproc.Event{ID: name, Payload: big}); err != nil {
					t.Error(err)
				}
				done <- name
			}()
			synctest.Wait()
		}
		release <- struct{}{} // frees one big event's budget: A's
		synctest.Wait()
		if got := <-done; got != "A" {
			t.Fatalf("%s served first", got)
		}
		// B still waits: a small TryAdd must not take A's leftover.
		if err := p.TryAdd(batchproc.Event{Payload: small}); !errors.Is(err, batchproc.ErrFull) {
			t.Fatalf("TryAdd while B waits: %v, want ErrFull", err)
		}
		close(release)
		<-done
		shutdown(t, p)
	})
}

// A retry that Shutdown cut short is not counted.
func TestRetriesCountOnlyRetriesMade(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error {
			return batchproc.RetryAfter(errors.New("busy"), time.Minute)
		}}
		p := mustNew(t, rec)
		_ = p.Add(t.Context(), ev(1))
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		if st := p.Stats(); st.Retries != 0 || len(rec.Sent()) != 1 {
			t.Fatalf("Retries %d after 1 send, want 0", st.Retries)
		}
	})
}

// Every part of a split batch that any attempt stored counts as delivered:
// the receiver keeps it (and de-duplicates its resend), so handing it to
// the failure callback would make a resending service duplicate it.
func TestStoredPartsCountAcrossAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		down := errors.New("connection refused")
		rec := &batchproctest.Recorder{Hook: func(_ context.Context, _ *batchproc.Batch, attempt int) error {
			switch attempt {
			case 1: // the first 6 events stored (<key>.0, <key>.1.0), then a 503
				return batchproc.Partial(errors.New("503"), 6)
			default: // the loader is gone after the first part is acknowledged again
				return batchproc.Partial(batchproc.Permanent(down), 2)
			}
		}}
		var failed int
		p := mustNew(t, rec, batchproc.WithMaxBatchEvents(8),
			batchproc.WithOnFailure(func(b *batchproc.Batch, err error) { failed += b.Len() }))
		for i := range 8 {
			_ = p.Add(t.Context(), ev(i))
		}
		_ = p.Shutdown(t.Context())
		if st := p.Stats(); st.Delivered != 6 || st.Failed != 2 || failed != 2 {
			t.Fatalf("stats %+v, callback got %d: want 6 delivered, 2 failed", st, failed)
		}
	})
}

// Without a logger, failures and retries reach slog.Default; Flush and
// Shutdown report failures; one line per failed batch; one attribute name
// per meaning.
func TestFailuresNeverSilent(t *testing.T) {
	var logs testutil.SyncBuffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	synctest.Test(t, func(t *testing.T) {
		bad := errors.New("rejected")
		rec := &batchproctest.Recorder{Hook: func(_ context.Context, _ *batchproc.Batch, attempt int) error {
			if attempt == 1 {
				return errors.New("flaky")
			}
			return batchproc.Permanent(bad)
		}}
		p, err := batchproc.New(rec, batchproc.WithOnFailure(func(*batchproc.Batch, error) {}))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			_ = p.Add(t.Context(), ev(i))
		}
		err = p.Flush(t.Context())
		de, ok := errors.AsType[*batchproc.DeliveryError](err)
		if !ok || de.Events != 3 || de.Batches != 1 || !errors.Is(err, bad) {
			t.Fatalf("Flush: %v, want a DeliveryError for 3 events wrapping the cause", err)
		}
		_ = p.Add(t.Context(), ev(4))
		if err := p.Shutdown(t.Context()); !errors.Is(err, bad) {
			t.Fatalf("Shutdown: %v, want the failure reported", err)
		}
	})
	out := logs.String()
	if n := strings.Count(out, "level=ERROR"); n != 2 {
		t.Errorf("%d error lines for 2 failed batches:\n%s", n, out)
	}
	if n := strings.Count(out, "level=WARN"); n != 2 {
		t.Errorf("%d warn lines for 2 retries:\n%s", n, out)
	}
	if strings.Contains(out, "level=INFO") || strings.Contains(out, "count_failed") || regexp.MustCompile(` count=`).MatchString(out) {
		t.Errorf("delivery lines or old attribute names without a logger:\n%s", out)
	}
}

// The default retry policy survives a deploy-length loader outage (a
// minute here) without failing an event.
func TestDefaultPolicySurvivesOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error {
			if time.Since(start) < time.Minute {
				return errors.New("503")
			}
			return nil
		}}
		p := mustNew(t, rec, batchproc.WithMaxBatchEvents(10))
		for i := range 2000 { // 200 batches, cut at once
			_ = p.Add(t.Context(), ev(i))
		}
		shutdown(t, p)
		if st := p.Stats(); st.Failed != 0 || st.Delivered != 2000 {
			t.Fatalf("stats after a 1 minute outage: %+v", st)
		}
	})
	a := batchproc.DefaultRetryPolicy()
	a.MaxElapsed = time.Nanosecond
	if batchproc.DefaultRetryPolicy().MaxElapsed == time.Nanosecond {
		t.Fatal("the default policy can be changed for everyone")
	}
}

// liveHeap returns the bytes of live heap objects after a full collection
// (twice: the second empties sync.Pool victim caches).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// With the sink stuck, the processor's heap stays within the bound
// WithMemoryLimit states: 1.25 times BufferedBytes plus a batch buffer per
// shard. A thin stream (every batch cut by its linger, one event each) and a
// busy one (full batches) both hold to it; the thin one held 32 KiB of
// buffers per 300-byte event before sparse batches were compacted.
func TestHeapBoundedWithStuckSink(t *testing.T) {
	for _, tc := range []struct {
		name      string
		perLinger int // events added per linger interval
	}{{"thin", 1}, {"busy", 5000}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const budget = 16 << 20
				const maxBytes = 256 << 10
				stuck := make(chan struct{})
				p := mustNew(t, batchproc.SinkFunc(func(ctx context.Context, _ *batchproc.Batch) error {
					select {
					case <-stuck:
					case <-ctx.Done():
					}
					return ctx.Err()
				}), batchproc.WithMemoryLimit(budget), batchproc.WithMaxBatchBytes(maxBytes), batchproc.WithMaxInFlight(1))
				payload := bytes.Repeat([]byte("x"), 299)
				base := liveHeap()
				for p.TryAdd(batchproc.Event{Payload: payload}) == nil {
					if p.Stats().Added%uint64(tc.perLinger) == 0 {
						time.Sleep(batchproc.DefaultFlushInterval) // fake time: the batch lingers out
					}
				}
				held := liveHeap() - base
				st := p.Stats()
				shards := 2 * runtime.GOMAXPROCS(0)
				bound := uint64(float64(st.BufferedBytes)*1.25) + uint64(shards)*(maxBytes+20*batchproc.DefaultMaxBatchEvents)
				t.Logf("%d events buffered, %d bytes against the budget, heap held %d (%.2fx), bound %d",
					st.Added, st.BufferedBytes, held, float64(held)/float64(st.BufferedBytes), bound)
				if min := uint64(budget / 1024); st.Added < min {
					t.Fatalf("only %d events fit a %d-byte budget: queued batches hold unused reserve", st.Added, budget)
				}
				if held > bound {
					t.Fatalf("heap held %d bytes for %d budgeted: over the stated bound %d", held, st.BufferedBytes, bound)
				}
				close(stuck)
				_ = p.Shutdown(t.Context())
			})
		})
	}
}
