package batchproc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
)

// With no option set, async dispatch finds a slow receiver's capacity: a
// constant 400 ms round trip that does not queue lets the limit grow past
// the initial 4, as far as the memory budget holds batches.
func TestAdaptiveInFlightGrowsToBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{Hook: func(ctx context.Context, _ *batchproc.Batch, _ int) error {
			time.Sleep(400 * time.Millisecond) // fake time: the loader's latency
			return nil
		}}
		const budget = 1 << 20
		p := mustNew(t, rec, batchproc.WithMemoryLimit(budget), batchproc.WithMaxBatchBytes(64<<10), batchproc.WithMaxBatchEvents(100))
		payload := bytes.Repeat([]byte("x"), 199)
		start := time.Now()
		const n = 200_000
		for range n {
			if err := p.Add(t.Context(), batchproc.Event{Payload: payload}); err != nil {
				t.Fatal(err)
			}
		}
		shutdown(t, p)
		el := time.Since(start)
		// A batch of 100 events costs about 22 KiB: the budget holds ~46.
		batchCost := 100*(200+20) + 256
		maxByBudget := budget / batchCost
		got := rec.MaxInFlight()
		rate := float64(n) / el.Seconds()
		t.Logf("%d events in %v of fake time (%.0f events/s); max sends in flight %d, budget holds %d", n, el, rate, got, maxByBudget)
		if got <= batchproc.DefaultMaxInFlight*2 || got > maxByBudget+1 {
			t.Fatalf("max in flight %d: want well past %d and at most what the budget holds (%d)", got, batchproc.DefaultMaxInFlight, maxByBudget)
		}
		// A fixed 4 would carry 4 x 100 events / 0.4 s = 1,000 events/s.
		if rate < 5*1000 {
			t.Fatalf("%.0f events/s: the limit did not find the capacity", rate)
		}
	})
}

// WithMaxInFlight keeps meaning a fixed limit.
func TestFixedInFlightStaysFixed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{Hook: func(ctx context.Context, _ *batchproc.Batch, _ int) error {
			time.Sleep(400 * time.Millisecond)
			return nil
		}}
		p := mustNew(t, rec, batchproc.WithMaxInFlight(3), batchproc.WithMaxBatchEvents(10))
		for i := range 2000 {
			_ = p.Add(t.Context(), ev(i))
		}
		if l := p.Stats().InFlightLimit; l != 3 {
			t.Fatalf("InFlightLimit %d, want 3", l)
		}
		shutdown(t, p)
		if got := rec.MaxInFlight(); got != 3 {
			t.Fatalf("max in flight %d, want 3", got)
		}
	})
}

// A Retry-After answer pauses every sender, not only the batch that got it.
func TestRetryAfterPausesEverySender(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var starts []time.Duration
		start := time.Now()
		var first sync.Once
		rec := &batchproctest.Recorder{Hook: func(ctx context.Context, _ *batchproc.Batch, attempt int) error {
			mu.Lock()
			starts = append(starts, time.Since(start))
			mu.Unlock()
			var err error
			first.Do(func() { err = batchproc.RetryAfter(errors.New("429"), 5*time.Second) })
			time.Sleep(10 * time.Millisecond)
			return err
		}}
		p := mustNew(t, rec, batchproc.WithMaxBatchEvents(1))
		_ = p.Add(t.Context(), ev(0))
		synctest.Wait() // the first send is under way
		for i := 1; i < 20; i++ {
			_ = p.Add(t.Context(), ev(i))
		}
		shutdown(t, p)
		mu.Lock()
		defer mu.Unlock()
		// The first send began at 0 and got its answer at 10 ms; sends
		// begun before the answer may run, none may begin in the pause.
		for _, s := range starts[1:] {
			if s > 10*time.Millisecond && s < 5*time.Second+10*time.Millisecond {
				t.Fatalf("a send began at %v, inside the 5 s Retry-After pause (starts %v)", s, starts)
			}
		}
		if len(rec.Events()) != 20 {
			t.Fatalf("delivered %d events, want 20", len(rec.Events()))
		}
	})
}

// limitLog is a LimitHook recording the changes.
type limitLog struct {
	mu      sync.Mutex
	changes []string
}

func (l *limitLog) OnLimitChange(from, to int, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, fmt.Sprintf("%d->%d %s", from, to, reason))
}

// limitChanges adds n events in batches of 10 through a processor sending
// to rec, shuts it down, and returns its limit's changes.
func limitChanges(t *testing.T, rec *batchproctest.Recorder, n int) []string {
	t.Helper()
	log := &limitLog{}
	p := mustNew(t, rec, batchproc.WithMaxBatchEvents(10), batchproc.WithHooks(log))
	for i := range n {
		_ = p.Add(t.Context(), ev(i))
	}
	shutdown(t, p)
	return log.get()
}

func (l *limitLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.changes)
}

// A sink that reports its endpoint's capacity (ReportCapacity, with Send's
// ctx) stops slow start there: 4 -> 8, not 4 -> 16. Growth past it is by
// probes, later.
func TestReportCapacityStopsSlowStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{Hook: func(ctx context.Context, _ *batchproc.Batch, _ int) error {
			time.Sleep(400 * time.Millisecond)
			batchproc.ReportCapacity(ctx, 8)
			return nil
		}}
		got := limitChanges(t, rec, 2000)
		t.Logf("limit changes: %v", got)
		if len(got) == 0 || got[0] != "4->8 capacity" {
			t.Fatalf("limit changes %v: want 4->8 capacity first", got)
		}
	})
}

// A sink that reports its endpoint's own time (ReportServerTime, with
// Send's ctx) keeps a round trip that grows outside the endpoint from
// reading as a queue: the round trips here grow with the sends in flight
// (a busy client host) while the endpoint's time stays 10 ms. Reported,
// the limit is never cut for latency and grows past 64; not reported, it
// is cut for latency.
func TestReportServerTimeSparesABusyClient(t *testing.T) {
	for _, report := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			var busy sync.Mutex
			inFlight := 0
			rec := &batchproctest.Recorder{Hook: func(ctx context.Context, _ *batchproc.Batch, _ int) error {
				busy.Lock()
				inFlight++
				c := inFlight
				busy.Unlock()
				time.Sleep(10*time.Millisecond + time.Duration(c)*5*time.Millisecond)
				busy.Lock()
				inFlight--
				busy.Unlock()
				if report {
					batchproc.ReportServerTime(ctx, 10*time.Millisecond)
				}
				return nil
			}}
			got := limitChanges(t, rec, 50_000)
			cut := slices.ContainsFunc(got, func(c string) bool { return strings.HasSuffix(c, " latency") })
			peak := 0
			for _, c := range got {
				var from, to int
				if _, err := fmt.Sscanf(c, "%d->%d", &from, &to); err == nil {
					peak = max(peak, to)
				}
			}
			t.Logf("reported %v: peak %d; changes %v", report, peak, got)
			if report && (cut || peak <= 64) {
				t.Errorf("reported: the limit peaked at %d, cut for latency: %v; want no latency cut and a peak past 64", peak, cut)
			}
			if !report && !cut {
				t.Errorf("not reported: no latency cut (%v): the round trips' growth went unseen", got)
			}
		})
	}
}
