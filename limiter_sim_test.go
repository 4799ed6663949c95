package batchproc

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The simulations drive an adaptiveLimit with many sender goroutines (more
// demand than any limit it reaches) against simulated loaders, inside a
// synctest bubble: time.Sleep is the simulated latency and costs no real
// time, so minutes of traffic run in milliseconds. Numbers are in round
// trips of the loader's unloaded latency (simRTT): a round trip under a
// queue is longer, so "within 10 round trips" measured this way is the
// stricter reading.

const (
	simRTT     = 100 * time.Millisecond
	simTick    = simRTT / 10 // the limit is sampled this often
	simSenders = 256
)

// simLoader is an endpoint: serve blocks for as long as the request takes
// and says how it ended.
type simLoader interface {
	serve(ctx context.Context) sendOutcome
}

// A timedLoader also says how long of the request was its own, as the
// loader's Server-Timing does (ReportServerTime): simulate calls
// serveTimed instead of serve.
type timedLoader interface {
	simLoader
	serveTimed(ctx context.Context) (sendOutcome, time.Duration)
}

// queueLoader has k workers, each taking latency per request; requests
// beyond k queue (FIFO), so past k the RTT grows linearly with concurrency:
// a capacity knee. jitter spreads each request's latency uniformly by
// ±jitter. setWorkers changes k while it runs.
type queueLoader struct {
	slots   chan struct{} // capacity maxWorkers; a token per busy or disabled worker
	latency time.Duration
	jitter  float64

	mu       sync.Mutex
	disabled int
	wg       sync.WaitGroup
}

func newQueueLoader(maxWorkers, workers int, latency time.Duration, jitter float64) *queueLoader {
	q := &queueLoader{slots: make(chan struct{}, maxWorkers), latency: latency, jitter: jitter}
	q.setWorkers(workers)
	return q
}

func (q *queueLoader) serve(ctx context.Context) sendOutcome {
	select {
	case q.slots <- struct{}{}:
	case <-ctx.Done():
		return sendIgnored
	}
	d := q.latency
	if q.jitter > 0 {
		d = time.Duration(float64(d) * (1 + q.jitter*(2*rand.Float64()-1)))
	}
	time.Sleep(d)
	<-q.slots
	return sendOK
}

// setWorkers disables or re-enables workers: a disabled worker is a token
// held in slots, taken as soon as a request leaves it.
func (q *queueLoader) setWorkers(k int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	want := cap(q.slots) - k
	for ; q.disabled < want; q.disabled++ {
		q.wg.Go(func() { q.slots <- struct{}{} })
	}
	for ; q.disabled > want; q.disabled-- {
		<-q.slots // a disabling goroutine has or will put one; wait for it
	}
}

func (q *queueLoader) close() { q.setWorkers(cap(q.slots)); q.wg.Wait() }

// kneeLoader takes latency per request while at most k requests are under
// way, and past k grows linearly with their number: a request arriving as
// the c-th takes latency·c/k, which is what a queue in front of k workers
// converges to. k may change while it runs.
type kneeLoader struct {
	k       atomic.Int64
	latency time.Duration
	busy    atomic.Int64
}

func newKneeLoader(k int, latency time.Duration) *kneeLoader {
	l := &kneeLoader{latency: latency}
	l.k.Store(int64(k))
	return l
}

func (l *kneeLoader) serve(ctx context.Context) sendOutcome {
	c, k := l.busy.Add(1), l.k.Load()
	defer l.busy.Add(-1)
	time.Sleep(time.Duration(int64(l.latency) * max(c, k) / k))
	return sendOK
}

// rejectLoader answers 429 at once (after rejectLatency) to a request that
// arrives while limit requests are being served; the rest take latency.
type rejectLoader struct {
	limit         int64
	latency       time.Duration
	rejectLatency time.Duration
	busy          atomic.Int64
	rejected      atomic.Int64
	served        atomic.Int64
}

func (r *rejectLoader) serve(ctx context.Context) sendOutcome {
	if r.busy.Add(1) > r.limit {
		r.busy.Add(-1)
		r.rejected.Add(1)
		time.Sleep(r.rejectLatency)
		return sendOverload
	}
	time.Sleep(r.latency)
	r.busy.Add(-1)
	r.served.Add(1)
	return sendOK
}

// retryAfterLoader is a rejectLoader whose 429s carry Retry-After.
type retryAfterLoader struct {
	*rejectLoader
	after time.Duration
}

func (r retryAfterLoader) retryAfter() time.Duration { return r.after }

// waitLoader has limit slots; a request that finds none waits up to wait
// for one and is answered 429 if none frees: the loader meeting the
// limiter halfway (issue 10 item 3).
type waitLoader struct {
	slots    chan struct{}
	latency  time.Duration
	wait     time.Duration
	rejected atomic.Int64
	served   atomic.Int64
}

func (w *waitLoader) serve(ctx context.Context) sendOutcome {
	select {
	case w.slots <- struct{}{}:
	default:
		t := time.NewTimer(w.wait)
		defer t.Stop()
		select {
		case w.slots <- struct{}{}:
		case <-t.C:
			w.rejected.Add(1)
			return sendOverload
		case <-ctx.Done():
			return sendIgnored
		}
	}
	time.Sleep(w.latency)
	<-w.slots
	w.served.Add(1)
	return sendOK
}

// rejectCounts snapshots a loader's served and rejected counts.
type rejectCounts struct{ served, rejected int64 }

// rates returns the 429 share of all answers and of those after snap, and
// the throughput after snap as a share of limit sends per round trip.
func rates(served, rejected *atomic.Int64, snap rejectCounts, limit int64, rounds float64) (all, steady, eff float64) {
	sv, rj := served.Load(), rejected.Load()
	all = float64(rj) / float64(sv+rj)
	steady = float64(rj-snap.rejected) / float64(sv-snap.served+rj-snap.rejected)
	eff = float64(sv-snap.served) / (float64(limit) * rounds)
	return all, steady, eff
}

// switchLoader serves with whichever loader is current.
type switchLoader struct{ cur atomic.Pointer[simLoader] }

func (s *switchLoader) set(l simLoader)                       { s.cur.Store(&l) }
func (s *switchLoader) serve(ctx context.Context) sendOutcome { return (*s.cur.Load()).serve(ctx) }

// hangLoader never answers: every request ends in the client's timeout.
type hangLoader struct{ timeout time.Duration }

func (h hangLoader) serve(ctx context.Context) sendOutcome {
	select {
	case <-time.After(h.timeout):
		return sendTimeout
	case <-ctx.Done():
		return sendIgnored
	}
}

// simRun is what one simulation recorded.
type simRun struct {
	limits  []int           // the limit every simTick, from t = 0
	rtts    []time.Duration // the mean RTT of the sends that ended in each tick (0: none)
	ok      int64           // sends delivered
	failed  int64           // sends that failed (any reason)
	changes []limitChange
}

// at returns the index of the sample at round trip r.
func at(r float64) int { return int(r * float64(simRTT/simTick)) }

// window returns the samples between round trips from and to.
func (s simRun) window(from, to float64) []int { return s.limits[at(from):min(at(to), len(s.limits))] }

// simulate runs senders against ld for the given number of round trips;
// events run at their round trip (in order). It must be called inside a
// synctest bubble.
func simulate(t *testing.T, cfg limitConfig, budget int, ld simLoader, rounds float64, events map[float64]func()) simRun {
	t.Helper()
	var run simRun
	var mu sync.Mutex
	cfg.OnChange = func(c limitChange) {
		mu.Lock()
		run.changes = append(run.changes, c)
		mu.Unlock()
	}
	l := newAdaptiveLimit(cfg)
	l.setBudgetCap(budget)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var ok, failed, rttSum, rttN atomic.Int64
	for range simSenders {
		wg.Go(func() {
			for {
				tok, err := l.acquire(ctx)
				if err != nil {
					return
				}
				t0 := time.Now()
				served := time.Duration(-1)
				var out sendOutcome
				if tl, ok := ld.(timedLoader); ok {
					out, served = tl.serveTimed(ctx)
				} else {
					out = ld.serve(ctx)
				}
				rttSum.Add(int64(time.Since(t0)))
				rttN.Add(1)
				if ctx.Err() != nil {
					l.release(tok, sendIgnored)
					return
				}
				if c, ok := ld.(interface{ capacity() int }); ok {
					l.reportCapacity(c.capacity()) // as httpsink does with Ingest-Slots, before Send returns
				}
				if ra, ok := ld.(interface{ retryAfter() time.Duration }); ok && out == sendOverload {
					l.pauseUntil(time.Now().Add(ra.retryAfter())) // as dispatch does (issue 10 item 2)
				}
				l.releaseServed(tok, out, served) // as dispatch does, with what the sink reported (ReportServerTime)
				if out == sendOK {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	start := time.Now()
	wg.Go(func() {
		for _, r := range sortedKeys(events) {
			time.Sleep(time.Until(start.Add(time.Duration(r * float64(simRTT)))))
			events[r]()
		}
	})
	n := at(rounds)
	run.limits = make([]int, 0, n)
	tick := time.NewTicker(simTick)
	for range n {
		run.limits = append(run.limits, l.limit())
		<-tick.C
		var mean time.Duration
		if c := rttN.Swap(0); c > 0 {
			mean = time.Duration(rttSum.Swap(0) / c)
		}
		run.rtts = append(run.rtts, mean)
	}
	tick.Stop()
	cancel()
	wg.Wait()
	run.ok, run.failed = ok.Load(), failed.Load()
	return run
}

func sortedKeys(m map[float64]func()) []float64 {
	var ks []float64
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks { // few keys
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

// roundTrips returns how many round trips, as the senders experienced
// them, fit between round trip (of simRTT) from and from+d: the sum of tick
// over the RTT measured in each tick.
func (s simRun) roundTrips(from, d float64) float64 {
	var n float64
	last := simRTT
	for i := at(from); i < at(from+d) && i < len(s.rtts); i++ {
		if s.rtts[i] > 0 {
			last = s.rtts[i]
		}
		n += float64(simTick) / float64(last)
	}
	return n
}

// converge returns the round trips after from until the limit entered
// [lo, hi] for good (until to), or -1 if it did not.
func (s simRun) converge(from, to float64, lo, hi int) float64 {
	w := s.window(from, to)
	last := -1
	for i, v := range w {
		if v < lo || v > hi {
			last = i
		}
	}
	if last == len(w)-1 {
		return -1
	}
	return float64(last+1) * float64(simTick) / float64(simRTT)
}

type stats struct {
	mean, sd float64
	lo, hi   int
}

func statsOf(w []int) stats {
	s := stats{lo: math.MaxInt}
	for _, v := range w {
		s.mean += float64(v)
		s.lo, s.hi = min(s.lo, v), max(s.hi, v)
	}
	s.mean /= float64(len(w))
	for _, v := range w {
		s.sd += (float64(v) - s.mean) * (float64(v) - s.mean)
	}
	s.sd = math.Sqrt(s.sd / float64(len(w)))
	return s
}

// percentile returns the p-quantile of w.
func percentile(w []int, p float64) int {
	c := slices.Clone(w)
	slices.Sort(c)
	return c[int(p*float64(len(c)-1))]
}

func (s simRun) decreases() (n int) {
	for _, c := range s.changes {
		if c.To < c.From {
			n++
		}
	}
	return n
}

// firstAt returns the first round trip at which the limit was at least v.
func (s simRun) firstAt(v int) float64 {
	for i, x := range s.limits {
		if x >= v {
			return float64(i) * float64(simTick) / float64(simRTT)
		}
	}
	return -1
}

// Constant latency, no knee: the limit grows to the budget cap by slow
// start and never shrinks.
func TestLimiterSimConstantLatencyGrowsToCap(t *testing.T) {
	for _, tc := range []struct {
		name     string
		max, cap int
	}{{"budget 128", 0, 128}, {"max 50 under budget 128", 50, 128}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ld := newQueueLoader(1024, 1024, simRTT, 0)
				defer ld.close()
				run := simulate(t, limitConfig{Max: tc.max}, tc.cap, ld, 60, nil)
				want := tc.cap
				if tc.max > 0 {
					want = tc.max
				}
				reached := run.firstAt(want)
				if reached < 0 {
					t.Fatalf("limit never reached %d in 60 round trips (last %d)", want, run.limits[len(run.limits)-1])
				}
				s := statsOf(run.window(reached, 60))
				t.Logf("limit reached %d after %.1f round trips; afterwards [%d, %d]; %d changes, %d decreases",
					want, reached, s.lo, s.hi, len(run.changes), run.decreases())
				if reached < 0 || reached > 10 {
					t.Errorf("limit reached %d after %.1f round trips, want within 10", want, reached)
				}
				if run.decreases() > 0 || s.lo != want || s.hi != want {
					t.Errorf("limit moved within [%d, %d] after reaching %d, %d decreases; want no shrink", s.lo, s.hi, want, run.decreases())
				}
			})
		})
	}
}

// Slow start multiplies the limit by 4 per round trip while it is reached
// and round trips stay at their baseline: from 4 to a budget cap of 256 in
// 3 decisions (4, 16, 64, 256), where doubling took 6. A service that
// starts against a slow loader (400 ms, the seed's) carries its budget's
// worth of sends after about a second and a half, not three (issue 10: at
// 5 s, doubling delivered 0.51x seed-async's events/s).
func TestLimiterSimRampToBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ld := newQueueLoader(1024, 1024, simRTT, 0)
		defer ld.close()
		run := simulate(t, limitConfig{}, 256, ld, 20, nil)
		reached := run.firstAt(256)
		var steps []string
		for _, c := range run.changes {
			steps = append(steps, strconv.Itoa(c.To))
		}
		t.Logf("the limit reached the cap of 256 after %.1f round trips: 4 -> %v", reached, steps)
		if reached < 0 || reached > 3.5 {
			t.Errorf("limit reached 256 after %.1f round trips, want within 3.5 (three x4 steps)", reached)
		}
	})
}

// A capacity knee: past K concurrent sends the RTT grows linearly. The
// limit settles within [K, 1.5·K + 1] (the +1 is the granularity of a
// whole send, which matters at K = 4), keeps the loader busy, and does not
// oscillate. Slow start goes at most one x4 step past the knee, and for
// K of 32 and more the limit holds at 1.46·K at most on average.
func TestLimiterSimKnee(t *testing.T) {
	for _, k := range []int{4, 32, 100} {
		t.Run("K="+strconv.Itoa(k), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ld := newKneeLoader(k, simRTT)
				const rounds = 200
				run := simulate(t, limitConfig{}, 512, ld, rounds, nil)
				hi := k + k/2 + 1
				settle := run.converge(0, rounds, k, hi)
				s := statsOf(run.window(30, rounds))
				peak := statsOf(run.limits).hi
				eff := float64(run.ok) / (float64(k) * rounds)
				t.Logf("K=%d: peak %d (%.2fK); settled in [K, 1.5K+1] after %.1f round trips; from round trip 30: mean %.1f (%.2fK), sd %.2f, range [%d, %d] (%.2fK max); throughput %.1f%% of capacity; %d decreases",
					k, peak, float64(peak)/float64(k), settle, s.mean, s.mean/float64(k), s.sd, s.lo, s.hi, float64(s.hi)/float64(k), 100*eff, run.decreases())
				// A round trip's samples are the sends that fill its top
				// slots: judged by the first sends after a x4 step, which
				// run beside no more than the old limit, slow start went
				// on past the knee unseen for a round trip (to 8K at K=32).
				if peak > 4*k {
					t.Errorf("the limit peaked at %d, %.1fK: slow start went more than one x4 step past the knee", peak, float64(peak)/float64(k))
				}
				// Slow start judges each round trip by half its sends, so
				// the baseline it learns in its few round trips is not
				// inflated by the pessimistic prior spread: judged by a
				// quarter, the limit held at 1.50-1.53K (K=32) in 87 of 100
				// runs, the edge of the band, where doubling's six round
				// trips held 1.22K; by half, at most 1.44K in 100 runs.
				if k >= 32 && s.mean > 1.46*float64(k) {
					t.Errorf("the limit held at %.2fK on average, want at most 1.46K", s.mean/float64(k))
				}
				if settle < 0 || settle > 30 {
					t.Errorf("limit did not settle in [%d, %d] within 30 round trips (%.1f)", k, hi, settle)
				}
				if s.lo < k || s.hi > hi {
					t.Errorf("after round trip 30 the limit ranged over [%d, %d], want within [K, 1.5K+1] = [%d, %d]", s.lo, s.hi, k, hi)
				}
				if s.sd > 0.1*float64(k)+0.5 {
					t.Errorf("the limit oscillates: sd %.2f > 0.1K", s.sd)
				}
				if eff < 0.95 {
					t.Errorf("throughput %.1f%% of the loader's capacity, want >= 95%%", 100*eff)
				}
			})
		})
	}
}

// The same knee as a FIFO queue in front of K workers with a fixed service
// time: the senders fall into lockstep, each round trip's first sends find
// an idle worker and the rest wait a whole service time. Judging an epoch
// by the sends that return first would see no queue at all (it did, before
// epochs waited for all their marked sends).
func TestLimiterSimKneeQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const k = 32
		ld := newQueueLoader(1024, k, simRTT, 0)
		defer ld.close()
		const rounds = 200
		run := simulate(t, limitConfig{}, 512, ld, rounds, nil)
		w := run.window(30, rounds)
		s, p95 := statsOf(w), percentile(w, 0.95)
		eff := float64(run.ok) / (float64(k) * rounds)
		t.Logf("K=%d as a queue: from round trip 30 mean %.1f (%.2fK), p95 %d (%.2fK), range [%d, %d]; throughput %.1f%% of capacity; %d decreases",
			k, s.mean, s.mean/k, p95, float64(p95)/k, s.lo, s.hi, 100*eff, run.decreases())
		// Lockstep makes each sample coarse (a whole service time or none),
		// so the limit moves more than against the smooth knee above.
		if s.lo < k*3/4 || s.hi > 2*k || float64(p95) > 1.75*k || s.mean > 1.4*k {
			t.Errorf("after round trip 30 the limit ranged over [%d, %d], p95 %d, mean %.1f: want within [0.75K, 2K], p95 at most 1.75K, mean at most 1.4K", s.lo, s.hi, p95, s.mean)
		}
		if eff < 0.95 {
			t.Errorf("throughput %.1f%% of the loader's capacity, want >= 95%%", 100*eff)
		}
	})
}

// 429s above L concurrent requests: the limit settles near L and few sends
// are refused once it has (slow start's one overshoot past L is counted
// apart).
func TestLimiterSim429AboveLimit(t *testing.T) {
	for _, L := range []int64{8, 32} {
		t.Run("L="+strconv.Itoa(int(L)), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ld := &rejectLoader{limit: L, latency: simRTT, rejectLatency: time.Millisecond}
				const rounds, from = 300, 30
				var snap rejectCounts
				run := simulate(t, limitConfig{}, 512, ld, rounds, map[float64]func(){
					from: func() { snap = rejectCounts{ld.served.Load(), ld.rejected.Load()} },
				})
				s := statsOf(run.window(from, rounds))
				all, steady, eff := rates(&ld.served, &ld.rejected, snap, L, rounds-from)
				t.Logf("L=%d: from round trip %d the limit averaged %.1f (%.2fL), range [%d, %d]; 429 rate %.2f%% from round trip %d (%.2f%% with the slow-start overshoot); throughput %.1f%% of L per round trip",
					L, from, s.mean, s.mean/float64(L), s.lo, s.hi, 100*steady, from, 100*all, 100*eff)
				if s.mean < 0.75*float64(L) || s.mean > 1.1*float64(L) {
					t.Errorf("mean limit %.1f, want within [0.75L, 1.1L]", s.mean)
				}
				// One 429 per probe past L, about every 13 round trips: the
				// fewer sends a round trip carries, the larger their share.
				maxRate := map[int64]float64{8: 0.013, 32: 0.005}[L]
				if steady > maxRate {
					t.Errorf("429 rate %.2f%% from round trip %d, want under %.1f%%", 100*steady, from, 100*maxRate)
				}
				if eff < 0.85 {
					t.Errorf("throughput %.1f%% of the loader's limit, want >= 85%%", 100*eff)
				}
			})
		})
	}
}

// 429s above L again, with a Retry-After of half a round trip that pauses
// every sender (item 2), and with the loader waiting up to half a round
// trip for a slot before it answers 429 (item 3).
func TestLimiterSim429Variants(t *testing.T) {
	const L, rounds, from = 32, 300, 30
	check := func(t *testing.T, name string, run simRun, served, rejected *atomic.Int64, snap rejectCounts) {
		s := statsOf(run.window(from, rounds))
		all, steady, eff := rates(served, rejected, snap, L, rounds-from)
		t.Logf("L=%d, %s: limit mean %.1f (%.2fL), range [%d, %d]; 429 rate %.2f%% from round trip %d (%.2f%% overall); throughput %.1f%% of L per round trip",
			L, name, s.mean, s.mean/L, s.lo, s.hi, 100*steady, from, 100*all, 100*eff)
		if steady > 0.005 || eff < 0.85 {
			t.Errorf("429 rate %.2f%%, throughput %.1f%%: want under 0.5%% and at least 85%%", 100*steady, 100*eff)
		}
	}
	t.Run("Retry-After", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := &rejectLoader{limit: L, latency: simRTT, rejectLatency: time.Millisecond}
			var snap rejectCounts
			run := simulate(t, limitConfig{}, 512, retryAfterLoader{r, simRTT / 2}, rounds, map[float64]func(){
				from: func() { snap = rejectCounts{r.served.Load(), r.rejected.Load()} },
			})
			check(t, "Retry-After "+(simRTT/2).String(), run, &r.served, &r.rejected, snap)
		})
	})
	t.Run("loader waits for a slot", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w := &waitLoader{slots: make(chan struct{}, L), latency: simRTT, wait: simRTT / 2}
			var snap rejectCounts
			run := simulate(t, limitConfig{}, 512, w, rounds, map[float64]func(){
				from: func() { snap = rejectCounts{w.served.Load(), w.rejected.Load()} },
			})
			check(t, "the loader waits up to "+(simRTT/2).String(), run, &w.served, &w.rejected, snap)
		})
	})
}

// The loader's capacity steps down from 32 to 8 and back up: the limit
// converges within 10 round trips after each step. A round trip is counted
// as the senders experienced it: after the step down, a queue makes it up
// to 4.5 times the unloaded latency (both figures are logged).
func TestLimiterSimCapacityStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hiK, loK = 32, 8
		ld := newKneeLoader(hiK, simRTT)
		run := simulate(t, limitConfig{}, 512, ld, 300, map[float64]func(){
			100: func() { ld.k.Store(loK) },
			200: func() { ld.k.Store(hiK) },
		})
		before := run.converge(0, 100, hiK, hiK+hiK/2)
		down := run.converge(100, 200, loK, loK+loK/2)
		up := run.converge(200, 300, hiK, hiK+hiK/2)
		downRT, upRT := run.roundTrips(100, down), run.roundTrips(200, up)
		sDown, sUp := statsOf(run.window(100+down, 200)), statsOf(run.window(200+up, 300))
		t.Logf("K=%d: in [K, 1.5K] after %.1f round trips; step to K=%d: after %.1f round trips as experienced (%.1f of the unloaded %v), then [%d, %d]; step back to K=%d: after %.1f (%.1f of %v), then [%d, %d]",
			hiK, before, loK, downRT, down, simRTT, sDown.lo, sDown.hi, hiK, upRT, up, simRTT, sUp.lo, sUp.hi)
		for _, c := range []struct {
			name     string
			rt, base float64
		}{{"step down", downRT, down}, {"step up", upRT, up}} {
			if c.base < 0 || c.rt > 10 {
				t.Errorf("%s: converged after %.1f round trips (%.1f of %v), want within 10", c.name, c.rt, c.base, simRTT)
			}
		}
	})
}

// ±30 % latency noise on every request: the noise is not read as
// congestion, so the limit does not collapse; it still finds the cap (no
// knee) or the knee.
func TestLimiterSimJitter(t *testing.T) {
	t.Run("no knee", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ld := newQueueLoader(1024, 1024, simRTT, 0.3)
			defer ld.close()
			run := simulate(t, limitConfig{}, 64, ld, 200, nil)
			s := statsOf(run.window(20, 200))
			t.Logf("cap 64, ±30%% jitter: from round trip 20 mean %.1f, range [%d, %d]; %d decreases", s.mean, s.lo, s.hi, run.decreases())
			if s.mean < 0.9*64 || s.lo < 32 {
				t.Errorf("limit mean %.1f, min %d: want mean >= 0.9·64 and never below 32", s.mean, s.lo)
			}
		})
	})
	t.Run("knee 32", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const k = 32
			ld := newQueueLoader(1024, k, simRTT, 0.3)
			defer ld.close()
			const rounds = 200
			run := simulate(t, limitConfig{}, 512, ld, rounds, nil)
			w := run.window(30, rounds)
			s, p95 := statsOf(w), percentile(w, 0.95)
			eff := float64(run.ok) / (float64(k) * rounds)
			t.Logf("K=%d, ±30%% jitter: from round trip 30 mean %.1f (%.2fK), p95 %d (%.2fK), range [%d, %d]; throughput %.1f%% of capacity; %d decreases",
				k, s.mean, s.mean/k, p95, float64(p95)/k, s.lo, s.hi, 100*eff, run.decreases())
			// The noise allowance widens the band the limit holds in, so
			// the margin over the knee is wider than without jitter. Slow
			// start at x4 learns the baseline in 3 round trips, not 5,
			// and the jitter inflates it more: over 100 runs the mean
			// reached 1.60K and the p95 1.66K, so the bounds, 1.6K and
			// 1.65K with doubling, are 1.65K and 1.75K (DESIGN.md).
			if s.lo < k*3/4 || float64(p95) > 1.75*k || s.mean > 1.65*k {
				t.Errorf("limit ranged over [%d, %d], p95 %d, mean %.1f: want at least 0.75K, p95 at most 1.75K, mean at most 1.65K", s.lo, s.hi, p95, s.mean)
			}
			if eff < 0.9 {
				t.Errorf("throughput %.1f%% of capacity, want >= 90%%", 100*eff)
			}
		})
	})
}

// Every request times out (the loader hangs): the limit falls to the
// minimum and stays there, however long it lasts; when the loader
// recovers, the limit climbs back to its capacity.
func TestLimiterSimAllTimeoutsThenRecovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const k = 32
		const timeout = 10 * simRTT
		q := newKneeLoader(k, simRTT)
		ld := &switchLoader{}
		ld.set(q)
		const hangAt, recoverAt, end = 50, 350, 400
		run := simulate(t, limitConfig{}, 512, ld, end, map[float64]func(){
			hangAt:    func() { ld.set(hangLoader{timeout: timeout}) },
			recoverAt: func() { ld.set(q) },
		})
		timeouts := float64(timeout / simRTT)
		pre := statsOf(run.window(30, hangAt))
		fell := run.converge(hangAt, recoverAt, 1, 1)
		during := statsOf(run.window(hangAt+fell, recoverAt))
		back := -1.0
		if i := (simRun{limits: run.limits[at(recoverAt):]}).firstAt(k); i >= 0 {
			back = i
		}
		settle := run.converge(recoverAt, end, k, k+k/2)
		t.Logf("before: limit %d..%d; all timeouts (%v each): at the minimum after %.1f round trips (%.1f timeouts) and in [%d, %d] for the remaining %.0f round trips; recovered: limit >= K=%d after %.1f round trips, in [K, 1.5K] for good after %.1f",
			pre.lo, pre.hi, timeout, fell, fell/timeouts, during.lo, during.hi, recoverAt-hangAt-fell, k, back, settle)
		if fell < 0 || fell > 8*timeouts {
			t.Errorf("limit reached the minimum after %.1f round trips, want within 8 timeouts (%.0f)", fell, 8*timeouts)
		}
		if during.hi != 1 {
			t.Errorf("under all-timeouts the limit rose to %d, want it to stay at 1", during.hi)
		}
		if back < 0 || back > 15 {
			t.Errorf("after recovery the limit reached K=%d after %.1f round trips, want within 15", k, back)
		}
		if settle < 0 || settle > 20 {
			t.Errorf("after recovery the limit settled in [K, 1.5K] after %.1f round trips, want within 20", settle)
		}
	})
}

// The loader becomes three times slower for good without getting busier
// (a slower disk, a longer network path): the limit falls, since that
// looks like a queue, but the baseline is re-learned at the minimum and the
// limit climbs back to the knee instead of staying at the minimum.
func TestLimiterSimSlowerLoaderIsRelearned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const k = 32
		ld := newKneeLoader(k, simRTT)
		sw := &switchLoader{}
		sw.set(ld)
		slower := newKneeLoader(k, 3*simRTT)
		const stepAt, end = 50, 350
		run := simulate(t, limitConfig{}, 512, sw, end, map[float64]func(){
			stepAt: func() { sw.set(slower) },
		})
		low := statsOf(run.window(stepAt, end))
		after := run.limits[at(stepAt):]
		lowAt := slices.Index(after, low.lo)
		back := (simRun{limits: after[lowAt:]}).firstAt(k) + float64(lowAt)*float64(simTick)/float64(simRTT)
		settle := run.converge(stepAt, end, k, k+k/2)
		tail := statsOf(run.window(end-50, end))
		t.Logf("latency 100ms -> 300ms at K=%d: the limit fell to %d, was >= K again after %.1f round trips of 100ms (%.1f of 300ms), in [K, 1.5K] for good after %.1f; last 50: [%d, %d]",
			k, low.lo, back, back/3, settle, tail.lo, tail.hi)
		if back < 0 || settle < 0 || settle > 150 {
			t.Errorf("after the loader slowed down the limit settled in [K, 1.5K] after %.1f round trips (of 100ms), want within 150 (50 of the new latency)", settle)
		}
	})
}

// cpuLoader is a busy host rather than a queue at the endpoint: a request
// arriving as the c-th under way takes latency·(1 + (c−1)/4) on average,
// exponentially distributed (a busy host's scheduling and GC pauses), so
// round trips grow from the first send on (the CPU is shared) while the
// sends in flight still buy throughput (c/(1 + (c−1)/4) per latency: 1 at
// c = 1, 2.3 at 4, 3.4 at 16, 4 at most). It is batchbench's null
// endpoint at 0 ms on two loaded cores, where round trips of a few
// milliseconds double with a few sends in flight.
type cpuLoader struct {
	latency time.Duration
	busy    atomic.Int64
}

func (l *cpuLoader) serve(ctx context.Context) sendOutcome {
	c := l.busy.Add(1)
	defer l.busy.Add(-1)
	d := float64(l.latency) * (1 + float64(c-1)/4) * rand.ExpFloat64()
	time.Sleep(time.Duration(d))
	return sendOK
}

// On a busy host (cpuLoader) round trips grow with every send in flight,
// which a delay-based limit reads as a queue: without a floor it was cut
// below the starting limit of 4, to as low as 1 (at 0 ms in batchbench,
// 447 cuts in 20 s, the limit mostly at 1 to 3), carrying less than the
// old fixed default. Latency cuts stop at the starting limit; only
// failures go below it.
func TestLimiterSimBusyHostKeepsTheStartingLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ld := &cpuLoader{latency: simRTT}
		const rounds = 200
		run := simulate(t, limitConfig{}, 512, ld, rounds, nil)
		s := statsOf(run.window(10, rounds))
		// Fixed 4 delivers 4/(1 + 3/4) sends per latency.
		fixed4 := 4 / 1.75 * rounds
		t.Logf("busy host: from round trip 10 the limit averaged %.1f, range [%d, %d]; %d changes, %d decreases; delivered %.0f%% of fixed 4's sends",
			s.mean, s.lo, s.hi, len(run.changes), run.decreases(), 100*float64(run.ok)/fixed4)
		if s.lo < defaultInitialLimit {
			t.Errorf("the limit fell to %d on latency alone, below the starting %d", s.lo, defaultInitialLimit)
		}
		if float64(run.ok) < 0.97*fixed4 {
			t.Errorf("delivered %d sends, %.0f%% of fixed 4's %.0f: want at least 97%%", run.ok, 100*float64(run.ok)/fixed4, fixed4)
		}
	})
}

// retryAfterWait is a waitLoader whose 429s carry Retry-After, as the
// loader's do.
type retryAfterWait struct {
	*waitLoader
	after time.Duration
}

func (r retryAfterWait) retryAfter() time.Duration { return r.after }

// batchbench's -loader-limit 32 at 400 ms in simulation: 32 slots, a
// request that finds none waits up to 250/400 of the latency for one, then
// is answered 429 with a Retry-After of 2.5 round trips (1 s). Slow start's
// x4 step from 16 to 64 sends 32 requests past the slots at once, and all
// of them are refused (the wait is shorter than a request): that overshoot
// is the price of the ramp (TestLimiterSimRampToBudget). What must not
// follow are more waves: cut x0.75 at the first 429, the limit (48, then
// 36) sent past the slots again in the next round trips, which made 52 to
// 55 429s in a 20 s batchbench run. The limit falls to the sends the
// loader did not refuse once it has served some of them.
func TestLimiterSimSlotWaitOvershootOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const L, rounds = 32, 50
		w := &waitLoader{slots: make(chan struct{}, L), latency: simRTT, wait: simRTT * 250 / 400}
		run := simulate(t, limitConfig{}, 512, retryAfterWait{w, simRTT * 10 / 4}, rounds, nil)
		sv, rj := w.served.Load(), w.rejected.Load()
		var steps []string
		for _, c := range run.changes {
			steps = append(steps, strconv.Itoa(c.To)+" "+string(c.Reason))
		}
		t.Logf("L=%d over %d round trips: %d served, %d refused (%.2f%%); the limit went 4 -> %v", L, rounds, sv, rj, 100*float64(rj)/float64(sv+rj), steps)
		if rj > L+L/8 {
			t.Errorf("%d requests refused, want at most %d: the overshoot's %d and a few probes", rj, L+L/8, L)
		}
	})
}

// advertised is a loader that says how many requests it serves at once in
// every answer, as the loader's Ingest-Slots header does.
type advertised struct {
	simLoader
	slots int
}

func (a advertised) capacity() int { return a.slots }

func (a advertised) retryAfter() time.Duration {
	if ra, ok := a.simLoader.(interface{ retryAfter() time.Duration }); ok {
		return ra.retryAfter()
	}
	return 0
}

// TestLimiterSimSlotWaitOvershootOnce's loader again, once telling its 32
// slots (ReportCapacity) and once not: told, slow start stops at 32
// instead of stepping from 16 to 64, and what is refused are the probes
// past 32, each of them one request, rarer after each 429 there; not
// told, the step's 32 requests past the slots are all refused.
func TestLimiterSimCapacityStopsSlowStart(t *testing.T) {
	const L, rounds = 32, 50
	run := func(tell bool) (served, refused int64, run simRun) {
		synctest.Test(t, func(t *testing.T) {
			w := &waitLoader{slots: make(chan struct{}, L), latency: simRTT, wait: simRTT * 250 / 400}
			var ld simLoader = retryAfterWait{w, simRTT * 10 / 4}
			if tell {
				ld = advertised{ld, L}
			}
			run = simulate(t, limitConfig{}, 512, ld, rounds, nil)
			served, refused = w.served.Load(), w.rejected.Load()
		})
		return served, refused, run
	}
	for _, tell := range []bool{true, false} {
		sv, rj, r := run(tell)
		var steps []string
		for _, c := range r.changes {
			steps = append(steps, strconv.Itoa(c.To)+" "+string(c.Reason))
		}
		t.Logf("told %v: %d served, %d refused (%.2f%%) in %d round trips; the limit went 4 -> %v", tell, sv, rj, 100*float64(rj)/float64(sv+rj), rounds, steps)
		if tell {
			if len(r.changes) < 2 || r.changes[1].Reason != reasonCapacity || r.changes[1].To != L {
				t.Errorf("told: want slow start 4 -> 16 -> %d (%s), got %v", L, reasonCapacity, steps)
			}
			if rj > L/8 {
				t.Errorf("told: %d requests refused, want at most %d (probes past the slots)", rj, L/8)
			}
			// Within 1% of the sends: batchbench's target.
			if 100*rj > sv+rj {
				t.Errorf("told: 429 rate %.2f%%, want under 1%%", 100*float64(rj)/float64(sv+rj))
			}
		} else if rj < L {
			t.Errorf("not told: %d requests refused, want the overshoot's %d at least (is the count used without being told?)", rj, L)
		}
	}
}

// remoteLoader is a loader at a network distance: a request travels net/2
// each way and holds one of the loader's slots only while it is served
// there, as the real loader holds an ingest slot while it decodes and
// stores a batch, not while the answer travels (nor during -latency).
type remoteLoader struct {
	*waitLoader
	net time.Duration
}

func (r remoteLoader) serve(ctx context.Context) sendOutcome {
	time.Sleep(r.net / 2)
	out := r.waitLoader.serve(ctx)
	time.Sleep(r.net / 2)
	return out
}

// A loader's count of slots is no ceiling on the sends a client may have
// under way: 4 slots (the default on 2 CPUs), each request holding one for
// 1/100 of its round trip, serve about 400 requests at once. A limit held
// at the count would carry a hundredth of that, the fixed 4 issue 10 set
// out to remove.
func TestLimiterSimCapacityIsNoCeiling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const slots, rounds = 4, 30
		w := &waitLoader{slots: make(chan struct{}, slots), latency: simRTT / 100, wait: simRTT * 25 / 10}
		run := simulate(t, limitConfig{}, 256, advertised{remoteLoader{w, simRTT - simRTT/100}, slots}, rounds, nil)
		s := statsOf(run.window(rounds-10, rounds))
		t.Logf("4 slots held 1/100 of a round trip: the limit over the last 10 round trips: %+v; first at 64 at round trip %.1f; %d served, %d refused", s, run.firstAt(64), w.served.Load(), w.rejected.Load())
		if s.lo < 64 {
			t.Errorf("the limit fell to %d in the last 10 round trips, want at least 64: the count of 4 slots held it", s.lo)
		}
		if r := run.firstAt(64); r < 0 || r > 15 {
			t.Errorf("the limit first reached 64 at round trip %.1f, want within 15", r)
		}
	})
}

// stepAdvertised serves with whichever advertised loader is current.
type stepAdvertised struct{ cur atomic.Pointer[advertised] }

func (s *stepAdvertised) serve(ctx context.Context) sendOutcome { return s.cur.Load().serve(ctx) }
func (s *stepAdvertised) capacity() int                         { return s.cur.Load().capacity() }
func (s *stepAdvertised) retryAfter() time.Duration             { return s.cur.Load().retryAfter() }

// A loader restarted with twice the slots, telling them: the limit
// approaches the new count by halves (32 -> 48 -> 56 -> ...) rather than
// probing past the old one from a step made small by its 429s.
func TestLimiterSimCapacityRises(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rounds, step = 50, 30
		loader := func(slots int) *advertised {
			w := &waitLoader{slots: make(chan struct{}, slots), latency: simRTT, wait: simRTT * 250 / 400}
			return &advertised{retryAfterWait{w, simRTT * 10 / 4}, slots}
		}
		ld := &stepAdvertised{}
		ld.cur.Store(loader(32))
		run := simulate(t, limitConfig{}, 512, ld, rounds, map[float64]func(){step: func() { ld.cur.Store(loader(64)) }})
		var steps []string
		for _, c := range run.changes {
			steps = append(steps, strconv.Itoa(c.To)+" "+string(c.Reason))
		}
		at60 := -1.0
		for i, x := range run.window(step, rounds) {
			if x >= 60 {
				at60 = float64(i) * float64(simTick) / float64(simRTT)
				break
			}
		}
		t.Logf("32 slots, then 64 at round trip %d: at 60 or more %.1f round trips later; the limit went 4 -> %v", step, at60, steps)
		if at60 < 0 || at60 > 8 {
			t.Errorf("the limit reached 60 %.1f round trips after the slots doubled, want within 8", at60)
		}
	})
}

// busyClient is cpuLoader's busy host, told apart: the endpoint holds each
// request a constant own time (a tenth of the unloaded round trip) and
// says so, and what grows with the sends in flight is the rest, the
// client's own CPU. At 0 ms in batchbench (both sides on two cores) fixed
// limits of 64 and 256 carried 22 to 32% more than the adaptive limit
// held at 4 to 15 by round trips that grew so, each send costing less CPU
// the more of them overlap; here a limit of 512 carries 1.74x what 4 does.
type busyClient struct{ cpuLoader }

func (b *busyClient) serveTimed(ctx context.Context) (sendOutcome, time.Duration) {
	own := b.latency / 10
	c := b.busy.Add(1)
	defer b.busy.Add(-1)
	rest := float64(b.latency-own) * (1 + float64(c-1)/4) * rand.ExpFloat64()
	time.Sleep(own + time.Duration(rest))
	return sendOK, own
}

// A round trip that grows while the endpoint says its own time does not
// is no queue at the endpoint: told the endpoint's time, the limit grows
// on the busy host to the budget (256 sends) and never falls, where untold
// it is held at 4 to 30 (the model carries 3.95 sends per latency at 256,
// 3.3 at 14 and 2.3 at 4; over the run told carried 1.49x the sends untold
// did). Round trips at 256 sends take 65 unloaded ones, so the run is long
// in those. The runs are random, and the bounds sit past the tails of
// 2,000 of them (2026-12-02): told reached the budget by round trip 179
// (slow start, its round trips growing on the way; bound 300); untold's
// mean limit after round trip 100 was at most 38 (bound 64), though it
// peaked once at 256; told carried 1.21x to 2x what untold did (median
// 1.64x; bound 1.15x). Bounds on told's lowest limit from round trip 100,
// on untold's highest, and a 1.3x ratio failed about 3% of runs under
// load, in CI too. Left: in one run of 6,000 more, untold's limit went to
// the budget and stayed (mean 217), and this test fails.
func TestLimiterSimBusyClientToldServerTime(t *testing.T) {
	const rounds, budget = 400, 256
	var sent [2]int64
	for i, told := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			var ld simLoader = &busyClient{cpuLoader{latency: simRTT}}
			if !told {
				ld = &cpuLoader{latency: simRTT}
			}
			run := simulate(t, limitConfig{}, budget, ld, rounds, nil)
			s := statsOf(run.window(100, rounds))
			sent[i] = run.ok
			t.Logf("told %v: the limit from round trip 100 %+v, first at %d at round trip %.1f; %d sends delivered, %d decreases",
				told, s, budget, run.firstAt(budget), run.ok, run.decreases())
			switch at := run.firstAt(budget); {
			case told && (run.decreases() > 0 || at < 0 || at > rounds*3/4):
				t.Errorf("told: %d decreases, the budget's %d first reached at round trip %.1f; want none, and the budget within %d round trips: the client's CPU was read as a queue at the endpoint",
					run.decreases(), budget, at, rounds*3/4)
			case !told && s.mean >= budget/4:
				t.Errorf("untold: the limit averaged %.0f after round trip 100: the round trips' growth went unseen (is the endpoint's time used when not told?)", s.mean)
			}
		})
	}
	if r := float64(sent[0]) / float64(sent[1]); r < 1.15 {
		t.Errorf("told, the limit carried %.2fx the sends it carried untold, want at least 1.15x", r)
	}
}

// toldKnee is a kneeLoader at a network distance that tells its own time:
// the knee is at the endpoint, so what it tells grows past K, and the
// limit must settle near K as it does judged by whole round trips
// (TestLimiterSimKnee).
type toldKnee struct {
	*kneeLoader
	net time.Duration
}

func (k toldKnee) serveTimed(ctx context.Context) (sendOutcome, time.Duration) {
	time.Sleep(k.net / 2)
	t0 := time.Now()
	out := k.kneeLoader.serve(ctx)
	own := time.Since(t0)
	time.Sleep(k.net / 2)
	return out, own
}

func TestLimiterSimKneeToldServerTime(t *testing.T) {
	for _, net := range []time.Duration{0, simRTT} {
		t.Run("net="+net.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const k, rounds = 32, 200
				run := simulate(t, limitConfig{}, 512, toldKnee{newKneeLoader(k, simRTT), net}, rounds, nil)
				// At a network distance a send spends net outside the
				// endpoint and simRTT in it, so K sends at the endpoint
				// take K·(1 + net/simRTT) under way.
				kk := k * int((net+simRTT)/simRTT)
				hi := kk + kk/2 + 1
				s := statsOf(run.window(30, rounds))
				t.Logf("K=%d, net %v: from round trip 30 the limit averaged %.1f (%.2f of %d), range [%d, %d]; %d decreases",
					k, net, s.mean, s.mean/float64(kk), kk, s.lo, s.hi, run.decreases())
				if s.lo < kk || s.hi > hi {
					t.Errorf("after round trip 30 the limit ranged over [%d, %d], want within [%d, %d]", s.lo, s.hi, kk, hi)
				}
			})
		})
	}
}
