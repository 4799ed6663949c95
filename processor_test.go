package batchproc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchproc/batchproc/internal/testutil"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
)

func ev(i int) batchproc.Event {
	return batchproc.Event{ID: "e" + strconv.Itoa(i), Payload: fmt.Appendf(nil, `{"n":%d}`, i)}
}

func mustNew(t *testing.T, sink batchproc.Sink, opts ...batchproc.Option) *batchproc.Processor {
	t.Helper()
	// Quiet by default: failures would go to slog.Default. A test's own
	// WithLogger comes later and wins.
	opts = append([]batchproc.Option{batchproc.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	p, err := batchproc.New(sink, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func shutdown(t *testing.T, p *batchproc.Processor) {
	t.Helper()
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func checkIdentity(t *testing.T, s batchproc.Stats) {
	t.Helper()
	if s.Added != s.Delivered+s.Failed+s.Pending {
		t.Fatalf("accounting: Added %d != Delivered %d + Failed %d + Pending %d", s.Added, s.Delivered, s.Failed, s.Pending)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	okSink := &batchproctest.Recorder{}
	cases := []struct {
		name string
		sink batchproc.Sink
		opts []batchproc.Option
		want string
	}{
		{"nil sink", nil, nil, "nil Sink"},
		{"nil option", okSink, []batchproc.Option{nil}, "nil Option"},
		{"zero events", okSink, []batchproc.Option{batchproc.WithMaxBatchEvents(0)}, "WithMaxBatchEvents(0)"},
		{"tiny bytes", okSink, []batchproc.Option{batchproc.WithMaxBatchBytes(1)}, "WithMaxBatchBytes(1)"},
		{"zero interval", okSink, []batchproc.Option{batchproc.WithFlushInterval(0)}, "WithFlushInterval(0s)"},
		{"memory below batch", okSink, []batchproc.Option{batchproc.WithMemoryLimit(1000), batchproc.WithMaxBatchBytes(2000)}, "WithMemoryLimit(1000)"},
		{"zero in flight", okSink, []batchproc.Option{batchproc.WithMaxInFlight(0)}, "WithMaxInFlight(0)"},
		{"negative pool", okSink, []batchproc.Option{batchproc.WithWorkerPool(-1)}, "WithWorkerPool(-1)"},
		{"zero pool", okSink, []batchproc.Option{batchproc.WithWorkerPool(0)}, "WithWorkerPool(0)"},
		{"zero pool in flight", okSink, []batchproc.Option{batchproc.WithWorkerPool(0), batchproc.WithMaxInFlight(2)}, "WithWorkerPool(0)"},
		{"zero pool ordered", okSink, []batchproc.Option{batchproc.WithWorkerPool(0), batchproc.WithOrdered()}, "WithWorkerPool(0)"},
		{"huge pool", okSink, []batchproc.Option{batchproc.WithWorkerPool(batchproc.MaxSendersLimit + 1)}, "WithWorkerPool(1025)"},
		{"huge in flight", okSink, []batchproc.Option{batchproc.WithMaxInFlight(1 << 20)}, "WithMaxInFlight(1048576)"},
		{"memory equal to batch", okSink, []batchproc.Option{batchproc.WithMemoryLimit(2000), batchproc.WithMaxBatchBytes(2000)}, "WithMemoryLimit(2000)"},
		{"ordered pool", okSink, []batchproc.Option{batchproc.WithOrdered(), batchproc.WithWorkerPool(2)}, "exclude each other"},
		{"ordered in flight", okSink, []batchproc.Option{batchproc.WithOrdered(), batchproc.WithMaxInFlight(3)}, "WithMaxInFlight(3) contradicts"},
		{"pool in flight", okSink, []batchproc.Option{batchproc.WithWorkerPool(3), batchproc.WithMaxInFlight(3)}, "do not combine"},
		{"nil logger", okSink, []batchproc.Option{batchproc.WithLogger(nil)}, "WithLogger(nil)"},
		{"retry unbounded", okSink, []batchproc.Option{batchproc.WithRetry(batchproc.RetryPolicy{InitialBackoff: time.Second, MaxBackoff: time.Second})}, "both unlimited"},
		{"retry backoff order", okSink, []batchproc.Option{batchproc.WithRetry(batchproc.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Second, MaxBackoff: time.Millisecond})}, "below InitialBackoff"},
		{"retry negative", okSink, []batchproc.Option{batchproc.WithRetry(batchproc.RetryPolicy{MaxAttempts: -1, InitialBackoff: time.Second, MaxBackoff: time.Second, MaxElapsed: time.Minute})}, "negative"},
	}
	if strconv.IntSize == 64 { // on 32-bit platforms an int cannot pass the 32-bit offsets
		past, mem := 1, 1
		past <<= 31
		mem <<= 40
		cases = append(cases, struct {
			name string
			sink batchproc.Sink
			opts []batchproc.Option
			want string
		}{"bytes past 32-bit offsets", okSink, []batchproc.Option{batchproc.WithMaxBatchBytes(past), batchproc.WithMemoryLimit(mem)}, "WithMaxBatchBytes(2147483648)"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := batchproc.New(c.sink, c.opts...)
			if err == nil {
				shutdown(t, p)
				t.Fatal("New accepted a bad configuration")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
	// The valid edge cases are accepted.
	p := mustNew(t, okSink, batchproc.WithOrdered(), batchproc.WithMaxInFlight(1),
		batchproc.WithRetry(batchproc.RetryPolicy{MaxAttempts: 1}))
	shutdown(t, p)
}

func TestFlushOnMaxEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{}
		p := mustNew(t, rec, batchproc.WithMaxBatchEvents(10), batchproc.WithFlushInterval(time.Hour))
		for i := range 25 {
			if err := p.Add(t.Context(), ev(i)); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait() // no time passes: only the count can have triggered sends
		got := rec.Delivered()
		if len(got) != 2 || len(got[0].Events) != 10 || len(got[1].Events) != 10 {
			t.Fatalf("want two batches of 10 before any time passed, got %d batches", len(got))
		}
		shutdown(t, p)
		if n := len(rec.Events()); n != 25 {
			t.Fatalf("delivered %d events, want 25", n)
		}
	})
}

func TestFlushOnMaxBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{}
		const limit = 100
		p := mustNew(t, rec, batchproc.WithMaxBatchBytes(limit), batchproc.WithFlushInterval(time.Hour))
		// 30-byte payloads: 31 bytes framed, so 3 fit (93) and a 4th would pass 100.
		payload := bytes.Repeat([]byte("x"), 30)
		for range 7 {
			if err := p.Add(t.Context(), batchproc.Event{Payload: payload}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if got := rec.Delivered(); len(got) != 2 || len(got[0].Events) != 3 {
			t.Fatalf("want 2 batches of 3 sent on size, got %+v", len(got))
		}
		// A batch that reaches the limit exactly is sent at once.
		exact := bytes.Repeat([]byte("y"), limit-1)
		if err := p.Add(t.Context(), batchproc.Event{Payload: exact}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := rec.Delivered(); len(got) != 4 { // the pending 7th event was cut before the exact one
			t.Fatalf("want 4 batches, got %d", len(got))
		}
		tooBig := bytes.Repeat([]byte("z"), limit)
		if err := p.Add(t.Context(), batchproc.Event{Payload: tooBig}); !errors.Is(err, batchproc.ErrEventTooLarge) {
			t.Fatalf("Add of %d bytes + newline: %v, want ErrEventTooLarge", limit, err)
		}
		if err := p.TryAdd(batchproc.Event{Payload: tooBig}); !errors.Is(err, batchproc.ErrEventTooLarge) {
			t.Fatalf("TryAdd: %v, want ErrEventTooLarge", err)
		}
		shutdown(t, p)
		for _, s := range rec.Sent() {
			size := 0
			for _, e := range s.Events {
				size += len(e.Payload) + 1
			}
			if size > limit {
				t.Fatalf("batch %s is %d bytes, over the limit %d", s.Key, size, limit)
			}
		}
		if st := p.Stats(); st.Rejected != 2 || st.Delivered != 8 {
			t.Fatalf("stats %+v: want 2 rejected, 8 delivered", st)
		}
	})
}

func TestInvalidEvent(t *testing.T) {
	p := mustNew(t, &batchproctest.Recorder{})
	defer shutdown(t, p)
	for _, payload := range [][]byte{nil, {}, []byte("{}\n"), []byte("a\nb")} {
		if err := p.Add(t.Context(), batchproc.Event{Payload: payload}); !errors.Is(err, batchproc.ErrInvalidEvent) {
			t.Errorf("Add(%q) = %v, want ErrInvalidEvent", payload, err)
		}
	}
}

// Linger is measured from a batch's first event, not from a free-running
// ticker: a batch leaves exactly one interval after its first event.
func TestLingerFromFirstEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var sentAt []time.Duration
		start := time.Now()
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error {
			mu.Lock()
			sentAt = append(sentAt, time.Since(start))
			mu.Unlock()
			return nil
		}}
		const interval = time.Second
		p := mustNew(t, rec, batchproc.WithFlushInterval(interval))
		time.Sleep(300 * time.Millisecond) // fake time: the first event comes at 0.3 s
		_ = p.Add(t.Context(), ev(1))
		time.Sleep(600 * time.Millisecond)
		_ = p.Add(t.Context(), ev(2)) // joins the batch, does not restart its clock
		time.Sleep(399 * time.Millisecond)
		synctest.Wait()
		if len(rec.Sent()) != 0 {
			t.Fatal("batch sent before its interval ran out")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		mu.Lock()
		got := sentAt
		mu.Unlock()
		if len(got) != 1 || got[0] != 1300*time.Millisecond {
			t.Fatalf("sent at %v, want once at 1.3s", got)
		}
		if n := len(rec.Sent()[0].Events); n != 2 {
			t.Fatalf("batch has %d events, want 2", n)
		}
		// An idle processor sends nothing.
		time.Sleep(10 * interval)
		synctest.Wait()
		if n := len(rec.Sent()); n != 1 {
			t.Fatalf("%d sends, want 1", n)
		}
		shutdown(t, p)
	})
}

func TestFlushWaitsForDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		rec := &batchproctest.Recorder{Hook: func(ctx context.Context, _ *batchproc.Batch, _ int) error {
			<-release
			return nil
		}}
		p := mustNew(t, rec, batchproc.WithFlushInterval(time.Hour))
		for i := range 5 {
			_ = p.Add(t.Context(), ev(i))
		}
		flushed := make(chan error, 3)
		for range 3 { // concurrent Flush calls
			go func() { flushed <- p.Flush(t.Context()) }()
		}
		synctest.Wait()
		select {
		case <-flushed:
			t.Fatal("Flush returned before the sink accepted the batch")
		default:
		}
		close(release)
		for range 3 {
			if err := <-flushed; err != nil {
				t.Fatal(err)
			}
		}
		if n := len(rec.Events()); n != 5 {
			t.Fatalf("delivered %d, want 5", n)
		}
		// Flush with nothing pending returns at once; Flush's ctx bounds it.
		if err := p.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		shutdown(t, p)
		if err := p.Flush(t.Context()); !errors.Is(err, batchproc.ErrClosed) {
			t.Fatalf("Flush after Shutdown: %v, want ErrClosed", err)
		}
	})
}

func TestFlushContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error { <-release; return nil }}
		p := mustNew(t, rec)
		_ = p.Add(t.Context(), ev(1))
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := p.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Flush: %v, want deadline exceeded", err)
		}
		close(release)
		shutdown(t, p)
	})
}

// The memory budget bounds what is buffered and in flight: with the sink
// stuck, Add blocks until its ctx ends, TryAdd fails fast, and the budget is
// never exceeded; once the sink moves, everything goes through.
func TestMemoryBudgetBackPressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error { <-release; return nil }}
		const limit = 4096
		p := mustNew(t, rec, batchproc.WithMemoryLimit(limit), batchproc.WithMaxBatchBytes(1024),
			batchproc.WithMaxBatchEvents(8), batchproc.WithMaxInFlight(2))
		payload := bytes.Repeat([]byte("p"), 99) // costs 100 + 16 overhead
		added := 0
		for {
			if err := p.TryAdd(batchproc.Event{Payload: payload}); err != nil {
				if !errors.Is(err, batchproc.ErrFull) {
					t.Fatal(err)
				}
				break
			}
			added++
			if st := p.Stats(); st.BufferedBytes > limit {
				t.Fatalf("buffered %d bytes, over the limit %d", st.BufferedBytes, limit)
			}
		}
		if max := limit / 116; added > max || added < max/2 {
			t.Fatalf("accepted %d events before ErrFull, want about %d", added, max)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		err := p.Add(ctx, batchproc.Event{Payload: payload})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Add with full budget: %v, want deadline exceeded", err)
		}
		// A blocked Add proceeds as soon as the sink frees budget.
		done := make(chan error)
		go func() { done <- p.Add(t.Context(), batchproc.Event{Payload: payload}) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Add returned %v while the budget was full", err)
		default:
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		shutdown(t, p)
		st := p.Stats()
		checkIdentity(t, st)
		if st.Delivered != uint64(added+1) || st.Rejected != 2 || st.BufferedBytes != 0 {
			t.Fatalf("stats %+v: want %d delivered, 2 rejected, 0 buffered", st, added+1)
		}
	})
}

func TestShutdownWakesBlockedAdd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{Hook: func(ctx context.Context, _ *batchproc.Batch, _ int) error {
			<-ctx.Done()
			return ctx.Err()
		}}
		var failed atomic.Int64
		p := mustNew(t, rec, batchproc.WithMemoryLimit(1024), batchproc.WithMaxBatchBytes(512),
			batchproc.WithOnFailure(func(b *batchproc.Batch, err error) { failed.Add(int64(b.Len())) }))
		payload := bytes.Repeat([]byte("p"), 200)
		n := 0
		for p.TryAdd(batchproc.Event{Payload: payload}) == nil {
			n++
		}
		done := make(chan error)
		go func() { done <- p.Add(context.Background(), batchproc.Event{Payload: payload}) }()
		synctest.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v, want deadline exceeded (the sink never returns before ctx)", err)
		}
		if err := <-done; !errors.Is(err, batchproc.ErrClosed) {
			t.Fatalf("blocked Add: %v, want ErrClosed", err)
		}
		if failed.Load() != int64(n) {
			t.Fatalf("failure callback got %d events, want %d", failed.Load(), n)
		}
		checkIdentity(t, p.Stats())
	})
}

func TestAsyncMaxInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error { <-release; return nil }}
		p := mustNew(t, rec, batchproc.WithMaxBatchEvents(1), batchproc.WithMaxInFlight(3))
		for i := range 20 {
			_ = p.Add(t.Context(), ev(i))
		}
		synctest.Wait()
		if st := p.Stats(); st.InFlight != 3 {
			t.Fatalf("InFlight %d, want 3", st.InFlight)
		}
		close(release)
		shutdown(t, p)
		if got := rec.MaxInFlight(); got != 3 {
			t.Fatalf("max concurrent sends %d, want 3", got)
		}
	})
}

func TestWorkerPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error { <-release; return nil }}
		const workers = 4
		p := mustNew(t, rec, batchproc.WithWorkerPool(workers), batchproc.WithMaxBatchEvents(5))
		for i := range 200 {
			_ = p.Add(t.Context(), ev(i))
		}
		synctest.Wait()
		if st := p.Stats(); st.InFlight > workers || st.InFlight == 0 {
			t.Fatalf("InFlight %d, want 1..%d", st.InFlight, workers)
		}
		close(release)
		shutdown(t, p)
		if got := rec.MaxInFlight(); got > workers {
			t.Fatalf("max concurrent sends %d, want <= %d", got, workers)
		}
		seen := map[string]bool{}
		for _, e := range rec.Events() {
			if seen[e.ID] {
				t.Fatalf("event %s delivered twice", e.ID)
			}
			seen[e.ID] = true
		}
		if len(seen) != 200 {
			t.Fatalf("delivered %d distinct events, want 200", len(seen))
		}
	})
}

// In ordered mode the sink sees events in Add order, even when a batch has
// to be retried: the batches behind it wait.
func TestOrderedAcrossRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{Hook: func(_ context.Context, b *batchproc.Batch, attempt int) error {
			if attempt < 3 && strings.HasSuffix(b.Key(), "-2") {
				return errors.New("transient")
			}
			return nil
		}}
		p := mustNew(t, rec, batchproc.WithOrdered(), batchproc.WithMaxBatchEvents(7))
		for i := range 100 {
			if err := p.Add(t.Context(), ev(i)); err != nil {
				t.Fatal(err)
			}
		}
		shutdown(t, p)
		got := rec.Events()
		if len(got) != 100 {
			t.Fatalf("delivered %d, want 100", len(got))
		}
		for i, e := range got {
			if e.ID != "e"+strconv.Itoa(i) {
				t.Fatalf("event %d is %s: order broken", i, e.ID)
			}
		}
		if st := p.Stats(); st.Retries != 2 {
			t.Fatalf("Retries %d, want 2", st.Retries)
		}
	})
}

func TestRetryBackoffAndKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var at []time.Time
		pol := batchproc.RetryPolicy{MaxAttempts: 6, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond, MaxElapsed: time.Hour}
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
			return errors.New("down")
		}}
		var failErr error
		var failed atomic.Int32
		p := mustNew(t, rec, batchproc.WithRetry(pol), batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
			failed.Add(1)
			failErr = err
		}))
		_ = p.Add(t.Context(), ev(1))
		if err := p.Flush(t.Context()); err == nil || !strings.Contains(err.Error(), "down") {
			t.Fatalf("Flush: %v, want the failure reported", err)
		}
		sent := rec.Sent()
		if len(sent) != 6 || failed.Load() != 1 {
			t.Fatalf("%d sends and %d failures, want 6 and 1", len(sent), failed.Load())
		}
		for _, s := range sent {
			if s.Key != sent[0].Key {
				t.Fatalf("key changed across retries: %s vs %s", s.Key, sent[0].Key)
			}
		}
		for i := 1; i < len(at); i++ {
			ceil := min(pol.InitialBackoff<<(i-1), pol.MaxBackoff)
			if gap := at[i].Sub(at[i-1]); gap < 0 || gap >= ceil {
				t.Fatalf("wait before retry %d was %v, want in [0, %v)", i, gap, ceil)
			}
		}
		if ge, ok := errors.AsType[*batchproc.GiveUpError](failErr); !ok || ge.Attempts != 6 || ge.Err == nil {
			t.Fatalf("failure reason %v: want a GiveUpError after 6 attempts", failErr)
		}
		if !strings.Contains(failErr.Error(), "giving up after 6 attempts") {
			t.Fatalf("failure reason %q", failErr)
		}
		st := p.Stats()
		if st.Retries != 5 || st.Failed != 1 {
			t.Fatalf("stats %+v", st)
		}
		shutdown(t, p)
	})
}

func TestRetryAfterHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var at []time.Time
		rec := &batchproctest.Recorder{Hook: func(_ context.Context, _ *batchproc.Batch, attempt int) error {
			at = append(at, time.Now())
			if attempt == 1 {
				return batchproc.RetryAfter(errors.New("busy"), 7*time.Second)
			}
			return nil
		}}
		p := mustNew(t, rec)
		_ = p.Add(t.Context(), ev(1))
		if err := p.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		if len(at) != 2 || at[1].Sub(at[0]) < 7*time.Second {
			t.Fatalf("retried after %v, want >= 7s", at[1].Sub(at[0]))
		}
		shutdown(t, p)
	})
}

func TestRetryGivesUpAtMaxElapsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error {
			return batchproc.RetryAfter(errors.New("busy"), 40*time.Second)
		}}
		var reason error
		p := mustNew(t, rec, batchproc.WithOnFailure(func(_ *batchproc.Batch, err error) { reason = err }))
		start := time.Now()
		_ = p.Add(t.Context(), ev(1))
		_ = p.Flush(t.Context())
		// Default MaxElapsed is 5 minutes: seven 40 s waits fit, the eighth does not.
		if n := len(rec.Sent()); n != 8 {
			t.Fatalf("%d sends, want 8", n)
		}
		if el := time.Since(start); el > 5*time.Minute {
			t.Fatalf("gave up after %v, past MaxElapsed", el)
		}
		if reason == nil || !strings.Contains(reason.Error(), "would pass 5m0s") {
			t.Fatalf("reason %v", reason)
		}
		shutdown(t, p)
	})
}

func TestPermanentNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bad := errors.New("rejected")
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error { return batchproc.Permanent(bad) }}
		var got []error
		p := mustNew(t, rec, batchproc.WithOnFailure(func(_ *batchproc.Batch, err error) { got = append(got, err) }))
		_ = p.Add(t.Context(), ev(1))
		if err := p.Shutdown(t.Context()); !errors.Is(err, bad) {
			t.Fatalf("Shutdown: %v, want the failure reported", err)
		}
		if len(rec.Sent()) != 1 || len(got) != 1 || !errors.Is(got[0], bad) || !batchproc.IsPermanent(got[0]) {
			t.Fatalf("sends %d, failures %v", len(rec.Sent()), got)
		}
	})
}

// A drain must not sit out a long backoff past Shutdown's ctx: the batch
// goes to the failure callback with a ShutdownError when ctx ends.
func TestShutdownCutsBackoffShort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		last := errors.New("loader down")
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error {
			return batchproc.RetryAfter(last, 30*time.Second)
		}}
		var reason error
		var failedKeys []string
		p := mustNew(t, rec, batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
			reason = err
			failedKeys = append(failedKeys, b.Key())
		}))
		_ = p.Add(t.Context(), ev(1))
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v", err)
		}
		if el := time.Since(start); el != 2*time.Second {
			t.Fatalf("Shutdown took %v, want its 2s deadline", el)
		}
		var se *batchproc.ShutdownError
		if !errors.As(reason, &se) || !errors.Is(reason, context.DeadlineExceeded) || !errors.Is(reason, last) {
			t.Fatalf("reason %v: want a ShutdownError wrapping the deadline and the last send error", reason)
		}
		if len(failedKeys) != 1 {
			t.Fatalf("failed %v", failedKeys)
		}
		st := p.Stats()
		checkIdentity(t, st)
		if st.Failed != 1 || st.Pending != 0 {
			t.Fatalf("stats %+v", st)
		}
		// Shutdown is idempotent: a second call reports the drain again.
		if err := p.Shutdown(t.Context()); !errors.As(err, new(*batchproc.DeliveryError)) {
			t.Fatalf("second Shutdown: %v, want the drain's DeliveryError", err)
		}
		if err := p.Add(t.Context(), ev(2)); !errors.Is(err, batchproc.ErrClosed) {
			t.Fatalf("Add after Shutdown: %v", err)
		}
		if err := p.TryAdd(ev(2)); !errors.Is(err, batchproc.ErrClosed) {
			t.Fatalf("TryAdd after Shutdown: %v", err)
		}
	})
}

// When Shutdown's ctx ends, the sends under way see their ctx cancelled and
// every batch not delivered, in flight or queued, reaches the callback.
func TestShutdownCancelsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cancelled atomic.Int32
		rec := &batchproctest.Recorder{Hook: func(ctx context.Context, _ *batchproc.Batch, _ int) error {
			<-ctx.Done()
			cancelled.Add(1)
			return ctx.Err()
		}}
		var failed atomic.Int64
		p := mustNew(t, rec, batchproc.WithMaxBatchEvents(10), batchproc.WithMaxInFlight(2),
			batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("reason %v", err)
				}
				failed.Add(int64(b.Len()))
			}))
		for i := range 55 {
			_ = p.Add(t.Context(), ev(i))
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v", err)
		}
		if cancelled.Load() != 2 || failed.Load() != 55 {
			t.Fatalf("%d sends cancelled, %d events failed; want 2 and 55", cancelled.Load(), failed.Load())
		}
	})
}

func TestShutdownDrainsAndLogs(t *testing.T) {
	var logs testutil.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := &batchproctest.Recorder{Hook: func(_ context.Context, b *batchproc.Batch, attempt int) error {
		if attempt == 1 && strings.HasSuffix(b.Key(), "-1") {
			return errors.New("first send fails")
		}
		return nil
	}}
	p := mustNew(t, rec, batchproc.WithLogger(logger), batchproc.WithMaxBatchEvents(100),
		batchproc.WithRetry(batchproc.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}))
	const n = 1234
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < n; i += 8 {
				if err := p.Add(t.Context(), ev(i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	shutdown(t, p)
	out := logs.String()
	sum := 0
	for _, m := range regexp.MustCompile(`msg="batch delivered" count=(\d+)`).FindAllStringSubmatch(out, -1) {
		k, _ := strconv.Atoi(m[1])
		sum += k
	}
	if sum != n {
		t.Fatalf("count= lines sum to %d, want %d\n%s", sum, n, out)
	}
	if !strings.Contains(out, `level=WARN msg="send failed, retrying"`) {
		t.Error("no retry warning logged")
	}
	if !regexp.MustCompile(`msg="stopping, waiting for remaining events to be sent" pending=\d+`).MatchString(out) {
		t.Error("no drain line logged")
	}
	st := p.Stats()
	if st.Delivered != n || st.Added != n || st.Pending != 0 || st.Retries != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Many goroutines add while Stats is read: the identity holds in every
// snapshot. Run it many times under -race: go test -race -run ConcurrentSafe -count 100.
func TestConcurrentSafeAccounting(t *testing.T) {
	var fails atomic.Int64
	rec := &batchproctest.Recorder{Hook: func(_ context.Context, b *batchproc.Batch, attempt int) error {
		if attempt == 1 && len(b.Key())%3 == 0 {
			return errors.New("flaky")
		}
		if strings.HasSuffix(b.Key(), "7") {
			return batchproc.Permanent(errors.New("poison"))
		}
		return nil
	}}
	p := mustNew(t, rec, batchproc.WithMaxBatchEvents(16), batchproc.WithMemoryLimit(1<<16), batchproc.WithMaxBatchBytes(1<<12),
		batchproc.WithRetry(batchproc.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond}),
		batchproc.WithOnFailure(func(b *batchproc.Batch, err error) { fails.Add(int64(b.Len())) }))
	stop := make(chan struct{})
	watcher := make(chan error)
	go func() {
		for {
			s := p.Stats()
			if s.Added != s.Delivered+s.Failed+s.Pending {
				watcher <- fmt.Errorf("identity broken: %+v", s)
				return
			}
			select {
			case <-stop:
				watcher <- nil
				return
			default:
			}
		}
	}()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				if g%2 == 0 {
					_ = p.Add(t.Context(), ev(i))
				} else if err := p.TryAdd(ev(i)); err != nil && !errors.Is(err, batchproc.ErrFull) {
					t.Error(err)
				}
				if i%100 == 0 {
					_ = p.Flush(t.Context())
				}
			}
		})
	}
	wg.Wait()
	if err := p.Shutdown(t.Context()); err != nil && !errors.As(err, new(*batchproc.DeliveryError)) {
		t.Fatalf("Shutdown: %v", err) // poison batches fail: a DeliveryError is expected
	}
	close(stop)
	if err := <-watcher; err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	checkIdentity(t, st)
	if st.Pending != 0 || st.Failed != uint64(fails.Load()) || st.Delivered != uint64(len(rec.Events())) {
		t.Fatalf("stats %+v; callback saw %d failed; sink %d delivered", st, fails.Load(), len(rec.Events()))
	}
	if st.Added+st.Rejected != 8*500 {
		t.Fatalf("added %d + rejected %d != %d calls", st.Added, st.Rejected, 8*500)
	}
}

func TestWriterSink(t *testing.T) {
	var buf bytes.Buffer
	p := mustNew(t, batchproc.NewWriterSink(&buf), batchproc.WithMaxBatchEvents(2), batchproc.WithMaxInFlight(1)) // one at a time: in order
	for i := range 3 {
		_ = p.Add(t.Context(), ev(i))
	}
	shutdown(t, p)
	if want := "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n"; buf.String() != want {
		t.Fatalf("wrote %q, want %q", buf.String(), want)
	}
}

// Adds blocked on the budget are served in arrival order, and an Add that
// arrives later (or a TryAdd) cannot take the space from them.
func TestBlockedAddsServedInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		rec := &batchproctest.Recorder{Hook: func(context.Context, *batchproc.Batch, int) error { <-release; return nil }}
		p := mustNew(t, rec, batchproc.WithMemoryLimit(4096), batchproc.WithMaxBatchBytes(1024),
			batchproc.WithMaxBatchEvents(1), batchproc.WithMaxInFlight(1))
		payload := bytes.Repeat([]byte("p"), 100)
		for p.TryAdd(batchproc.Event{ID: "x", Payload: payload}) == nil { // costs what each waiter's event costs
		}
		order := make(chan string, 3)
		for _, name := range []string{"A", "B", "C"} {
			go func() {
				if err := p.Add(t.Context(), batchproc.Event{ID: name, Payload: payload}); err != nil {
					t.Error(err)
				}
				order <- name
			}()
			synctest.Wait() // each is blocked before the next arrives
		}
		for _, want := range []string{"A", "B", "C"} {
			release <- struct{}{} // one send completes, freeing one event's budget
			synctest.Wait()
			if err := p.TryAdd(batchproc.Event{Payload: payload}); !errors.Is(err, batchproc.ErrFull) {
				t.Fatalf("TryAdd barged past waiting Adds: %v", err)
			}
			if got := <-order; got != want {
				t.Fatalf("blocked Add %s admitted before %s", got, want)
			}
		}
		close(release)
		shutdown(t, p)
	})
}

// TestLargeBatchGrowsGeometrically builds one 20,000-event batch (4 MiB) and
// checks what Add allocated on the way: 1.8 times the batch, in a few
// buffers sized toward the projected full batch. append's own growth for
// large slices, a quarter at a time, cost 5.2 times and made such Adds 15x
// slower; slices.Grow's doubling cost 2.3 times and left the final buffer
// 2.5 times the batch. The GC is off so that no pool is emptied midway.
func TestLargeBatchGrowsGeometrically(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	const n = 20000
	payload := bytes.Repeat([]byte("x"), 199)
	sent := make(chan int, 1)
	p := mustNew(t, batchproc.SinkFunc(func(_ context.Context, b *batchproc.Batch) error {
		sent <- b.Len()
		return nil
	}), batchproc.WithMaxBatchEvents(n), batchproc.WithMaxBatchBytes(8<<20))
	defer shutdown(t, p)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		if err := p.Add(t.Context(), batchproc.Event{Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := <-sent; got != n {
		t.Fatalf("sent a batch of %d events, want %d", got, n)
	}
	batch := uint64(n * (len(payload) + 1 + 4 + 16)) // payload, newline, end offset, ID
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2*batch {
		t.Fatalf("adding a %d-byte batch allocated %d bytes (%.1fx); want at most 2x", batch, alloc, float64(alloc)/float64(batch))
	}
}

// TestPartialDelivery: when the sink reports with Partial that the last
// attempt delivered a prefix of the batch, that prefix counts as delivered
// (and is logged with count=), and only the rest reaches the failure
// callback, under the batch's key. A Partial on an attempt followed by a
// successful retry changes nothing, and an impossible prefix is ignored.
func TestPartialDelivery(t *testing.T) {
	rejected := errors.New("part 2 rejected")
	cases := []struct {
		name          string
		results       []error // of each attempt; nil is success
		delivered     uint64
		failedPayload []string
	}{
		{"permanent after 4", []error{batchproc.Partial(batchproc.Permanent(rejected), 4)}, 4,
			[]string{`{"n":4}`, `{"n":5}`, `{"n":6}`, `{"n":7}`, `{"n":8}`, `{"n":9}`}},
		{"retried, then the rest", []error{batchproc.Partial(rejected, 4), nil}, 10, nil},
		{"last attempt counts", []error{batchproc.Partial(rejected, 2), batchproc.Partial(batchproc.Permanent(rejected), 8)}, 8,
			[]string{`{"n":8}`, `{"n":9}`}},
		{"whole batch claimed", []error{batchproc.Partial(batchproc.Permanent(rejected), 10)}, 0, nil},
		{"nothing claimed", []error{batchproc.Partial(batchproc.Permanent(rejected), 0)}, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := &batchproctest.Recorder{Hook: func(_ context.Context, _ *batchproc.Batch, attempt int) error {
					return tc.results[attempt-1]
				}}
				var failed []string
				var failedKey string
				var reason error
				logs := &testutil.SyncBuffer{}
				p := mustNew(t, rec, batchproc.WithMaxBatchEvents(10),
					batchproc.WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
					batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
						failedKey, reason = b.Key(), err
						for i := range b.Len() {
							failed = append(failed, string(b.Event(i).Payload))
						}
						if string(b.NDJSON()) != strings.Join(failed, "\n")+"\n" {
							t.Errorf("failed batch's NDJSON %q does not match its events %q", b.NDJSON(), failed)
						}
					}))
				for i := range 10 {
					if err := p.Add(t.Context(), ev(i)); err != nil {
						t.Fatal(err)
					}
				}
				err := p.Shutdown(t.Context())
				// The batch is cut at its 10th Add and may fail before
				// Shutdown begins; if not, Shutdown reports it.
				if de, ok := errors.AsType[*batchproc.DeliveryError](err); err != nil &&
					(tc.delivered == 10 || !ok || de.Events != 10-int(tc.delivered) || !errors.Is(err, rejected)) {
					t.Fatalf("Shutdown: %v, want a DeliveryError for %d events", err, 10-tc.delivered)
				}
				st := p.Stats()
				checkIdentity(t, st)
				wantFailed := tc.failedPayload
				if tc.delivered == 0 { // the whole batch fails
					for i := range 10 {
						wantFailed = append(wantFailed, string(ev(i).Payload))
					}
				}
				if st.Delivered != tc.delivered || st.Failed != 10-tc.delivered || !slices.Equal(failed, wantFailed) {
					t.Fatalf("delivered %d, failed %d %q; want %d delivered, %q failed", st.Delivered, st.Failed, failed, tc.delivered, wantFailed)
				}
				if len(failed) > 0 {
					if sent := rec.Sent(); failedKey != sent[0].Key || !errors.Is(reason, rejected) {
						t.Errorf("failed under key %q with %v; want the batch's key %q and the sink's error", failedKey, reason, sent[0].Key)
					}
				}
				sum := 0
				for _, m := range regexp.MustCompile(` count=(\d+)`).FindAllStringSubmatch(logs.String(), -1) {
					n, _ := strconv.Atoi(m[1])
					sum += n
				}
				if sum != int(tc.delivered) {
					t.Errorf("count= lines sum to %d, want %d:\n%s", sum, tc.delivered, logs)
				}
			})
		})
	}
}
