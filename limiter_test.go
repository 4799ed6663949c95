package batchproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// pauseUntil holds every acquirer, those waiting and those arriving, until
// the pause ends, even with the limit far from reached; a later pause
// extends it, an earlier one does not shorten it.
func TestLimiterPauseHoldsEveryAcquirer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAdaptiveLimit(limitConfig{Initial: 8})
		start := time.Now()
		l.pauseUntil(start.Add(5 * time.Second))
		l.pauseUntil(start.Add(2 * time.Second)) // earlier: no effect

		var got atomic.Int32
		var wg sync.WaitGroup
		at := make(chan time.Duration, 6)
		for range 6 {
			wg.Go(func() {
				tok, err := l.acquire(t.Context())
				if err != nil {
					t.Error(err)
					return
				}
				got.Add(1)
				at <- time.Since(start)
				l.release(tok, sendOK)
			})
		}
		synctest.Wait()
		if n := got.Load(); n != 0 {
			t.Fatalf("%d of 6 acquirers got through a pause", n)
		}
		// One arriving during the pause with a shorter deadline gives up.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		if _, err := l.acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("acquire during the pause with a 1s deadline: %v, want DeadlineExceeded", err)
		}
		cancel()
		time.Sleep(3 * time.Second) // now start+4s
		l.pauseUntil(start.Add(7 * time.Second))
		synctest.Wait()
		if n := got.Load(); n != 0 {
			t.Fatalf("%d of 6 acquirers got through the extended pause", n)
		}
		wg.Wait()
		close(at)
		for d := range at {
			if d != 7*time.Second {
				t.Errorf("an acquirer went at %v, want at the pause's end, 7s", d)
			}
		}
		if s := l.snapshot(); s.InFlight != 0 || s.Waiting != 0 {
			t.Errorf("after all released: %+v", s)
		}
	})
}

// acquire admits limit() sends at once, first come first served; a
// cancelled waiter leaves the queue and its turn goes to the next.
func TestLimiterAcquireHoldsTheLimitInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAdaptiveLimit(limitConfig{Initial: 2, Min: 2, Max: 2})
		a, _ := l.acquire(t.Context())
		b, _ := l.acquire(t.Context())
		order := make(chan int, 3)
		finish := make(chan struct{})
		ctx1, cancel1 := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for i, ctx := range []context.Context{t.Context(), ctx1, t.Context()} {
			wg.Go(func() {
				tok, err := l.acquire(ctx)
				if err != nil {
					return
				}
				order <- i
				<-finish
				l.release(tok, sendOK)
			})
			synctest.Wait() // queue them in this order
		}
		if s := l.snapshot(); s.InFlight != 2 || s.Waiting != 3 {
			t.Fatalf("in flight %d, waiting %d: want 2 and 3", s.InFlight, s.Waiting)
		}
		cancel1()
		synctest.Wait()
		for _, want := range []int{0, 2} {
			l.release(a, sendOK)
			a = b
			synctest.Wait()
			select {
			case got := <-order:
				if got != want {
					t.Errorf("waiter %d got the freed slot, want %d (1 cancelled)", got, want)
				}
			default:
				t.Errorf("no waiter got the freed slot, want %d", want)
			}
		}
		close(finish)
		wg.Wait()
		if s := l.snapshot(); s.InFlight != 0 || s.Waiting != 0 || s.Limit != 2 || s.Changes != 0 {
			t.Errorf("a fixed limit after the run: %+v", s)
		}
	})
}

// drive runs n rounds of limit() sends that all end with outcome after rtt.
func drive(l *adaptiveLimit, rounds int, rtt time.Duration, outcome sendOutcome) {
	for range rounds {
		toks := start(l, l.limit(), rtt)
		for _, tok := range toks {
			l.release(tok, outcome)
		}
	}
}

// start acquires n sends from l and lets rtt pass (in the synctest
// bubble's time), as n sends under way for a round trip.
func start(l *adaptiveLimit, n int, rtt time.Duration) []token {
	toks := make([]token, n)
	for i := range toks {
		toks[i], _ = l.acquire(context.Background())
	}
	time.Sleep(rtt)
	return toks
}

// The budget cap bounds growth and lowers a limit above it; the maximum
// bounds growth too; neither lets the limit below the minimum.
func TestLimiterBudgetCapAndMax(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var changes []limitChange
		l := newAdaptiveLimit(limitConfig{OnChange: func(c limitChange) { changes = append(changes, c) }})
		l.setBudgetCap(20)
		drive(l, 10, 100*time.Millisecond, sendOK)
		if got := l.limit(); got != 20 {
			t.Fatalf("limit %d after 10 fast round trips under a budget cap of 20, want 20", got)
		}
		l.setBudgetCap(6)
		if got := l.limit(); got != 6 {
			t.Errorf("limit %d after the cap fell to 6", got)
		}
		if c := changes[len(changes)-1]; c.Reason != reasonBudget || c.From != 20 || c.To != 6 {
			t.Errorf("last change %+v, want budget 20->6", c)
		}
		l.setBudgetCap(0) // no cap
		drive(l, 10, 100*time.Millisecond, sendOK)
		if got := l.limit(); got <= 20 {
			t.Errorf("limit %d with no cap after 10 more fast round trips, want above 20", got)
		}

		m := newAdaptiveLimit(limitConfig{Max: 9, Min: 3})
		m.setBudgetCap(1000)
		drive(m, 10, 100*time.Millisecond, sendOK)
		if got := m.limit(); got != 9 {
			t.Errorf("limit %d with Max 9, want 9", got)
		}
		drive(m, 10, 100*time.Millisecond, sendTimeout)
		if got := m.limit(); got != 3 {
			t.Errorf("limit %d after timeouts with Min 3, want 3", got)
		}
	})
}

// Growth needs the limit reached: a processor that never has more than 3
// sends under way leaves the limit where it was.
func TestLimiterGrowsOnlyWhenReached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAdaptiveLimit(limitConfig{})
		for range 50 {
			var toks [3]token
			for i := range toks {
				toks[i], _ = l.acquire(t.Context())
			}
			time.Sleep(100 * time.Millisecond)
			for _, tok := range toks {
				l.release(tok, sendOK)
			}
		}
		if got := l.limit(); got != defaultInitialLimit {
			t.Errorf("limit %d after 50 round trips of 3 sends, want it left at %d", got, defaultInitialLimit)
		}
	})
}

// A failure cuts at once, but failures of sends that began before that cut
// (the same congestion, seen late) do not cut again.
func TestLimiterOneCutPerRoundTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAdaptiveLimit(limitConfig{Initial: 16})
		toks := start(l, 16, 100*time.Millisecond)
		for _, tok := range toks {
			l.release(tok, sendOverload)
		}
		if got := l.limit(); got != 12 {
			t.Errorf("16 sends of one round trip answered 429: limit %d, want one cut to 12", got)
		}
		tok, _ := l.acquire(t.Context())
		l.release(tok, sendError)
		if got := l.limit(); got != 9 {
			t.Errorf("a send begun after the cut failed: limit %d, want 9", got)
		}
		if s := l.snapshot(); s.Last.Reason != reasonError || s.Changes != 2 {
			t.Errorf("snapshot %+v, want 2 changes, the last for an error", s)
		}
	})
}

func TestOutcomeOf(t *testing.T) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		want sendOutcome
	}{
		{live, nil, sendOK},
		{live, RetryAfter(errors.New("429"), time.Second), sendOverload},
		{live, fmt.Errorf("wrapped: %w", RetryAfter(errors.New("503"), 0)), sendOverload},
		{live, context.DeadlineExceeded, sendTimeout},
		{live, &net.OpError{Op: "read", Err: timeoutErr{}}, sendTimeout},
		{live, errors.New("500 Internal Server Error"), sendError},
		{live, Permanent(errors.New("400")), sendIgnored},
		{done, errors.New("aborted"), sendIgnored},
	} {
		if got := outcomeOf(tc.ctx, tc.err); got != tc.want {
			t.Errorf("outcomeOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestLimitConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg limitConfig
		ok  bool
	}{
		{limitConfig{}, true},
		{limitConfig{Initial: 4, Min: 4, Max: 4}, true},
		{limitConfig{Min: 5, Max: 4}, false},
		{limitConfig{Max: -1}, false},
	} {
		if err := tc.cfg.validate(); (err == nil) != tc.ok {
			t.Errorf("%+v.validate() = %v", tc.cfg, err)
		}
	}
	if got := newAdaptiveLimit(limitConfig{Max: 2}).limit(); got != 2 {
		t.Errorf("initial limit with Max 2: %d, want 2", got)
	}
}

// The cost of an acquire/release pair, next to a plain channel semaphore
// and to the cheapest send there is: a 7 kB POST over loopback to a server
// that discards it.
func BenchmarkLimiter(b *testing.B) {
	b.Run("adaptive", func(b *testing.B) {
		l := newAdaptiveLimit(limitConfig{})
		l.setBudgetCap(64)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				tok, err := l.acquire(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				l.release(tok, sendOK)
			}
		})
	})
	b.Run("chan", func(b *testing.B) {
		sem := make(chan struct{}, 64)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				sem <- struct{}{}
				<-sem
			}
		})
	})
	b.Run("loopback-http-post", func(b *testing.B) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
		}))
		defer srv.Close()
		body := bytes.Repeat([]byte(`{"n":1}`+"\n"), 1000)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := srv.Client().Post(srv.URL, "application/x-ndjson", bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	})
	b.Run("adaptive-serial", func(b *testing.B) {
		l := newAdaptiveLimit(limitConfig{})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			tok, _ := l.acquire(ctx)
			l.release(tok, sendOK)
		}
	})
}

// After an overload cut, the sends that were in flight at the cut and are
// refused lower the limit to those not refused, once one of them was
// delivered, but never below half the limit before the cut.
func TestLimiterRefusalCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAdaptiveLimit(limitConfig{Initial: 16})
		toks := start(l, 16, 100*time.Millisecond)
		for _, tok := range toks[:10] {
			l.release(tok, sendOK)
		}
		l.release(toks[10], sendOverload) // 5 others in flight
		if got := l.limit(); got != 12 {
			t.Fatalf("limit %d after the first 429, want 12 (x0.75)", got)
		}
		l.release(toks[11], sendOverload) // none delivered yet: counts nothing
		if got := l.limit(); got != 12 {
			t.Errorf("limit %d after a second 429 with none of the sends in flight at the cut delivered, want 12", got)
		}
		l.release(toks[12], sendOK) // 5 in flight at the cut, 1 refused: 4, but not below 16/2
		if got := l.limit(); got != 8 {
			t.Errorf("limit %d once one of the sends in flight at the cut was delivered, want 8 (half of 16; the count says 4)", got)
		}
		for _, tok := range toks[13:] {
			l.release(tok, sendOK)
		}
		if s := l.snapshot(); s.Limit != 8 || s.Last.Reason != reasonOverload {
			t.Errorf("snapshot %+v, want the limit at 8, last changed for overload", s)
		}
	})
}

// ReportCapacity's count stops slow start where it is; a later count
// replaces it, and 0 withdraws it. Each case drives fast round trips, all
// at the limit: slow start goes on until the count it knows then.
func TestLimiterCapacityCount(t *testing.T) {
	rtt := 100 * time.Millisecond
	run := func(t *testing.T, counts ...int) (limit int, slowStart bool) {
		t.Helper()
		synctest.Test(t, func(t *testing.T) {
			l := newAdaptiveLimit(limitConfig{})
			for _, n := range counts {
				l.reportCapacity(n)
			}
			drive(l, 3, rtt, sendOK) // 4 -> 16 -> 64 -> 256 untold
			limit = l.limit()
			l.mu.Lock()
			slowStart = l.slowStart
			l.mu.Unlock()
		})
		return limit, slowStart
	}
	for _, tc := range []struct {
		name   string
		counts []int
		limit  int // after 3 round trips: x4 per round trip up to the count, then probes past it: +1, +2, ...
		slow   bool
	}{
		{"none", nil, 256, true},
		{"20", []int{20}, 21, false},               // 4 -> 16 -> 20 (capacity) -> 21 (probe)
		{"replaced", []int{20, 50}, 51, false},     // 4 -> 16 -> 50 -> 51
		{"withdrawn", []int{20, 0}, 256, true},     // as none
		{"negative", []int{20, -1}, 256, true},     // as 0
		{"below the start", []int{2}, 11, false},   // slow start ends at 4, then probes: 5, 7, 11
		{"repeated", []int{20, 20, 20}, 21, false}, // as one
		{"far above", []int{1 << 21}, 256, true},   // not reached yet: still slow start
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit, slow := run(t, tc.counts...)
			if limit != tc.limit || slow != tc.slow {
				t.Errorf("counts %v: limit %d (slow start %v), want %d (%v)", tc.counts, limit, slow, tc.limit, tc.slow)
			}
		})
	}
}
