package batchproc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the adaptive concurrency limit of async dispatch (issue
// 10): how many sends may be under way at once, found from the endpoint's
// answers instead of a fixed number.
//
// # What it learns from
//
// Each send is bracketed by acquire and release; release reports the
// outcome (ok, overload, timeout, error, or ignored) and the limiter
// measures the round trip from acquire to release. Time is cut into epochs:
// an epoch starts at every decision, marks the first sends acquired in it
// that take one of its top slots (a quarter of its limit, at least 2; half
// in slow start) and decides when all of them are back. So there is one
// decision per round trip, and a decision judges only sends made under the
// limit it judges, beside as many others as it allows: after a growth the
// sends filling the new slots start together, and the first of them run
// beside no more than the old limit (judged by them, slow start at x4 went
// on past a knee for a round trip, to 8·K). Slow start judges by half its
// sends because its few round trips are all the baseline is learned from
// before it meets the endpoint's capacity (judged by a quarter, the prior
// spread below kept that baseline high enough to hold the limit at 1.5·K).
// Waiting for every marked send, not
// for the first that return, keeps the fast ones from hiding a queue. Per
// epoch the limiter keeps m, the mean RTT of the marked sends that came
// back ok, whether the limit was reached (an acquirer had to wait, or in
// flight met the limit) and whether any send failed.
//
// A delivered send whose endpoint said how long it held the request
// (ReportServerTime; the loader's Server-Timing) is judged not by its
// round trip but by that time plus rest, the lowest part of a round trip
// seen outside the endpoint (the network both ways, the client's own work
// and waits): only a queue at the endpoint then reads as one. On a busy
// client host round trips grow with every send in flight, the CPU being
// the queue, while the endpoint's time does not; batchbench's null
// endpoint at 0 ms on two cores held the limit at 4 to 15 by round trips
// alone, where fixed 64 and 256 carried 22 to 32% more, each send costing
// less CPU the more of them overlap (TestLimiterSimBusyClientToldServerTime).
// rest is a minimum, which noise cannot push below the path's true floor;
// a path that becomes slower for good is no queue at the endpoint either.
// A queue in front of the endpoint that it does not see (a proxy's) is
// then seen only when it times out or refuses; the budget still bounds
// what is in flight.
//
// se, the noise of m, is cv·m/√n, where cv², the spread of single RTTs,
// is pooled over epochs (an EWMA, weight 1/8, of Σ(x−m)²/m² over Σ(n−1))
// and starts from a prior of 0.25 worth 8 samples: two samples that agree
// by chance must not make the first epoch look precise.
//
// The baseline b, the RTT of an unloaded endpoint, is the lowest m + 2·se
// seen: the lowest of many noisy means is biased low, and a baseline set
// by a lucky epoch read ±30 % jitter as a queue and cut the limit to 1 in
// the simulations; 2·se corrects that. A minimum cannot creep upward under
// a standing queue, which is how gradient limiters built on a long RTT
// average grow without bound under modest overload (Netflix
// concurrency-limits #134; with an EWMA baseline the limit in the knee
// simulation ran to 2.3–3.3·K) and how a minRTT re-measured under load climbs
// (Envoy #11579). It is re-learned where the limit adds no load of its own:
// at the floor of latency cuts (the starting limit, below) b is each
// epoch's m + 2·se, so a loader that became slower for good (not busier)
// does not hold the limit at the floor for ever, the "stuck at the
// minimum" reports against Envoy.
//
// # The decision rule
//
//   - A failed send (overload: 429/503 or Retry-After; timeout; error: 5xx
//     or transport) acquired since the last decrease cuts the limit at
//     once: ×0.75 for overload and errors, ×0.5 for timeouts (a timeout
//     costs a whole timeout period). Timeouts are never RTT samples:
//     Gradient2 grew to its maximum while every request timed out (#137)
//     because a constant RTT looked healthy. Failures of sends acquired
//     before the last decrease are the same congestion seen late and cut
//     nothing (at most one cut per round trip), but they forbid growth in
//     the epoch they arrive in. Growth then approaches lastMax, the whole
//     limit below the one that failed (after a cascade of timeout or error
//     cuts, an outage, the one where it began), closing half the gap per
//     round trip (BIC TCP's binary search), and probes past it from +1/16,
//     doubling: a plateau of a few round trips just under a limit that drew
//     429s. Each failure at the same limit as the one before (a hard limit:
//     fixed slots, a rate limit) halves that first probe, down to +1/256,
//     so the probes that draw a 429 become rarer (one per ~13 round trips).
//     The x0.75 of an overload is made at the first 429, before the
//     endpoint has answered the other sends then in flight; once it has
//     delivered one of them, each of them it refuses lowers the limit to
//     the sends of them it has not refused (never raising it, nor going
//     below half the limit before the cut). Slow start's x4 step past a
//     loader's slots (16 to 64 against 32, whose slot wait is shorter
//     than a request) has all 32 sends past them refused, and x0.75 alone
//     left 48, then 36, sent past the slots again: 54 429s in 50 round
//     trips, 34 with the count. A loader that refuses every send is still
//     cut once per round trip.
//   - m > b·1.3 + min(3·se, 0.1·b): the endpoint is queueing. The limit is
//     multiplied by b·1.1/m, clamped to [0.25, 0.9]. For a loader that
//     queues beyond K concurrent sends, m/b ≈ limit/K, so one cut lands
//     near 1.1·K (Vector's fixed ×0.9 steps took 47 round trips to follow
//     a step from 32 to 8 in the simulation, against 4 here). lastMax is
//     set to the new limit: the knee is about there, not where the queue
//     was. Latency cuts stop at the starting limit (4, the old fixed
//     default; only failures go below it): on a busy host round trips of
//     a few milliseconds double with a few sends in flight, the CPU being
//     the queue, and a limit cut to 1 to 3 by that carried less than a
//     fixed 4 (batchbench's null endpoint at 0 ms on two loaded cores: 392
//     against 476 k events/s; TestLimiterSimBusyHostKeepsTheStartingLimit).
//   - m ≤ b·1.1, the limit was reached, nothing failed: grow. Until the
//     first cut, ×4 (slow start: Vector starts at 1 and adds 1 per round
//     trip, the slow ramp its users report; doubling from 4 took 6 round
//     trips to the ~270 sends a 64 MiB budget holds, 2.4 s of a 5 s run at
//     400 ms, and delivered 0.51x seed-async's events/s there; ×4 takes 3).
//     The price is a larger first overshoot: past a knee one round trip
//     at up to 4·K (the latency cut, clamped at ×0.25, still lands near
//     1.1·K), past a hard limit L up to 3·L sends refused once, where
//     doubling refused up to L. An endpoint that says how many sends it
//     serves at once (ReportCapacity; the loader's Ingest-Slots header)
//     removes that price: slow start's step stops at its count and slow
//     start ends there, as at a 429 just past it (lastMax and the last
//     failure's limit are set to the count), so the first send past the
//     slots is a probe's +1, and a 429 to it halves the probes after it.
//     The count is no hard ceiling: the loader holds a slot while it
//     decodes and stores a batch, not while the answer travels (nor during
//     -latency), so a distant client serves many more sends than slots,
//     and a ceiling at the default 2·CPUs slots would bring back the fixed
//     4 of issue 10 (TestLimiterSimCapacityIsNoCeiling). A count that rises
//     later raises lastMax to it; one that falls cuts nothing by itself
//     (the 429s past it are counted, below). After slow start, below
//     lastMax approach it as above; at or past it probe +1, +2, +4, ...
//     per round trip, so a capacity that grew is found in log₂ round trips.
//   - Otherwise hold; the probe restarts from +1 (or below, after a
//     failure). The band between 1.1·b and 1.3·b where the limit holds
//     still is what keeps it from oscillating around a knee.
//
// The limit never goes below the minimum (1) nor above the lower of the
// maximum and the budget cap ([adaptiveLimit.setBudgetCap]). Growth needs
// the limit reached, so a lightly loaded processor does not ratchet it up
// to the cap (Vector checks reached_limit for the same reason), and it
// never grows on timeouts or failures.
//
// limiter_sim_test.go holds the evidence: synctest simulations of a knee,
// 429s above a limit, a capacity step, jitter, all-timeouts and recovery.
const (
	growTolerance   = 0.10      // m within 10 % of the baseline: no queue of our making
	shrinkTolerance = 0.30      // m more than 30 % above it: a queue
	shrinkSigmas    = 3.0       // a rise must exceed the shrink line by this many standard errors,
	maxShrinkNoise  = 0.10      // or this share of the baseline, whichever is less
	baseSigmas      = 2.0       // an epoch offers m + 2·se as the baseline
	cvWeight        = 0.125     // EWMA weight of an epoch in the pooled RTT spread
	cvPrior         = 0.25      // the spread assumed before any epoch (pessimistic),
	cvPriorWeight   = 8         // worth this many samples
	minLatencyCut   = 0.25      // a latency cut at most quarters the limit
	maxLatencyCut   = 0.9       // and cuts at least 10 %
	overloadCut     = 0.75      // 429, 503, Retry-After
	errorCut        = 0.75      // 5xx, transport errors
	timeoutCut      = 0.5       // the send's own deadline expired
	failureProbe    = 1.0 / 16  // the first probe step past a limit where sends failed,
	minFailureProbe = 1.0 / 256 // halved down to this while they fail at the same limit
	minEpochSamples = 2         // marked sends per epoch, at least
	slowStartFactor = 4         // slow start multiplies the limit by this per round trip
)

// sendOutcome is what a send told about the endpoint.
type sendOutcome uint8

const (
	sendOK       sendOutcome = iota // delivered: its RTT is a sample
	sendOverload                    // 429 or 503, or a RetryAfter error
	sendTimeout                     // the send's deadline expired (net timeout, context.DeadlineExceeded)
	sendError                       // another retryable failure: 5xx, connection refused or reset
	sendIgnored                     // says nothing about capacity: a permanent rejection, a shutdown abort
)

var outcomeNames = [...]string{"ok", "overload", "timeout", "error", "ignored"}

func (o sendOutcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("sendOutcome(%d)", o)
}

// outcomeOf classifies the error a Sink's Send returned. ctx is the context
// the send ran under: once it is done (Shutdown's abort), the failure says
// nothing about the endpoint.
//
// A sink that reports a 429 or 503 without Retry-After as a plain error
// (httpsink does) is classified sendError, which cuts by the same factor as
// sendOverload; only the reason recorded differs.
func outcomeOf(ctx context.Context, err error) sendOutcome {
	switch {
	case err == nil:
		return sendOK
	case ctx.Err() != nil, IsPermanent(err):
		return sendIgnored
	}
	if _, ok := errors.AsType[*RetryAfterError](err); ok {
		return sendOverload
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return sendTimeout
	}
	if te, ok := errors.AsType[interface {
		error
		Timeout() bool
	}](err); ok && te.Timeout() {
		return sendTimeout
	}
	return sendError
}

// limitConfig configures an [adaptiveLimit]. The zero value is the default
// adaptive limit: initial 4, minimum 1, no maximum but the budget cap.
// A fixed limit n (WithMaxInFlight(n)) is Initial = Min = Max = n: it still
// honours pauseUntil.
type limitConfig struct {
	Initial int // the limit at start; 0 means 4, today's WithMaxInFlight default
	Min     int // the limit never goes below it; 0 means 1
	Max     int // the limit never goes above it; 0 means no bound but the budget cap

	// OnChange, if set, is called after each change of the limit, from the
	// goroutine whose release (or setBudgetCap) made it, without the
	// limiter's lock held. Calls from different goroutines may arrive out
	// of order; limitChange.Seq orders them.
	OnChange func(limitChange)
}

const defaultInitialLimit = 4

func (c limitConfig) withDefaults() limitConfig {
	if c.Initial == 0 {
		c.Initial = defaultInitialLimit
	}
	if c.Min == 0 {
		c.Min = 1
	}
	if c.Max > 0 {
		c.Initial = min(c.Initial, c.Max)
	}
	c.Initial = max(c.Initial, c.Min)
	return c
}

// validate reports a configuration the caller should refuse.
func (c limitConfig) validate() error {
	var errs []error
	if c.Initial < 0 || c.Min < 0 || c.Max < 0 {
		errs = append(errs, fmt.Errorf("batchproc: concurrency limit: initial %d, min %d, max %d: must not be negative", c.Initial, c.Min, c.Max))
	}
	if c.Max > 0 && c.Min > c.Max {
		errs = append(errs, fmt.Errorf("batchproc: concurrency limit: min %d above max %d", c.Min, c.Max))
	}
	return errors.Join(errs...)
}

// limitReason says why the limit changed.
type limitReason string

const (
	reasonSlowStart limitReason = "slow start" // x4: reached, RTT at the baseline
	reasonGrow      limitReason = "grow"       // grew: reached, RTT at the baseline
	reasonLatency   limitReason = "latency"    // RTT rose past the baseline's tolerance
	reasonOverload  limitReason = "overload"   // 429/503 or Retry-After
	reasonTimeout   limitReason = "timeout"    // a send timed out
	reasonError     limitReason = "error"      // a send failed otherwise
	reasonBudget    limitReason = "budget"     // the memory budget's cap fell below the limit
	reasonCapacity  limitReason = "capacity"   // slow start stopped at the endpoint's advertised capacity
)

// limitChange records one change of the limit, for Stats, hooks and the log.
type limitChange struct {
	Seq      uint64      // 1 for the first change, +1 for each after it
	From, To int         // the limit before and after
	Reason   limitReason // why
	At       time.Time
	RTT      time.Duration // the epoch's mean RTT of ok sends (latency decisions and growth), else 0; for sends whose endpoint told its time, that time plus rest (ReportServerTime)
	Baseline time.Duration // the baseline RTT then, 0 before the first epoch ended
}

// limitSnapshot is the limiter's state for Stats.
type limitSnapshot struct {
	Limit    int         // sends allowed at once now
	InFlight int         // sends under way
	Waiting  int         // acquirers waiting
	Changes  uint64      // how many times the limit changed
	Last     limitChange // the latest change (zero if none)
	Baseline time.Duration
	Paused   time.Time // sends wait until then (Retry-After); zero or past when not paused
}

// token is what acquire hands out and release takes back: when and in
// which epoch the send began.
type token struct {
	epoch  uint64
	start  time.Time
	marked bool // one of the epoch's first sends, whose RTTs decide it
}

type limitWaiter struct {
	ch chan token // capacity 1: the grant never blocks the granter
}

// adaptiveLimit decides how many sends may be under way at once; see the
// comment at the top of this file for the rule. It is safe for concurrent
// use. Its clock is time.Now (and time.AfterFunc for pauses), so tests run
// it in a testing/synctest bubble.
type adaptiveLimit struct {
	cfg limitConfig

	mu       sync.Mutex
	lim      float64 // fractional, so additive steps below 1 accumulate; clamped to [Min, ceiling()]
	budget   int     // the budget cap, 0 = none
	inFlight int
	waiters  []*limitWaiter // FIFO

	pausedUntil time.Time
	timer       *time.Timer // wakes the waiters when a pause ends
	timerAt     time.Time

	// The current epoch.
	epoch         uint64
	decreaseEpoch uint64  // the epoch the last decrease started; failures of older sends are late
	epochLimit    int     // the limit when the epoch started
	need          int     // marked sends the epoch waits for: its first ones
	marks, back   int     // marked sends acquired, and back (any outcome)
	n             int     // ok sends of this epoch back so far
	mean, m2      float64 // Welford's running mean and sum of squares of their RTT, in seconds
	reached       bool    // the limit held a send back, or in flight met it
	failed        bool    // a send failed (late or not) during the epoch

	base         float64 // baseline RTT, seconds; 0 = none yet
	grown        bool    // the limit grew since the last decrease
	cvNum, cvDen float64 // pooled squared coefficient of variation of single RTTs: EWMA of Σ(x-m)²/m² over Σ(n-1)
	slowStart    bool
	lastMax      float64 // where the last failure happened (or the knee a latency cut estimated)
	probe        float64 // the next step past lastMax
	failedAt     float64 // the limit at the last failure cut
	failProbe    float64 // the first probe after it

	// The endpoint's advertised capacity ([ReportCapacity]): slow start
	// stops there. hintSeen mirrors hint for the lock-free check of the
	// repeats every response brings.
	hint     int // 0 = none
	hintSeen atomic.Int64

	// Refusals counted after an overload cut: the sends in flight at the
	// cut that the endpoint goes on to refuse say how many it serves.
	hardEpoch   uint64  // sends of epochs before it were in flight at the cut; 0 = not counting
	hardIn      int     // how many were in flight then
	hardBack    int     // of them, back since
	hardRefused int     // of them, refused
	hardOK      bool    // one of them was delivered
	hardFloor   float64 // the count goes no lower: half the limit before the cut

	// rest is the lowest part of a delivered send's round trip spent
	// outside the endpoint (the round trip less the time the endpoint said
	// it held the request, ReportServerTime); -1 before the first.
	rest time.Duration

	changes uint64
	last    limitChange
}

// newAdaptiveLimit returns a limiter configured by cfg (see limitConfig for
// the zero values). The caller has checked cfg.validate.
func newAdaptiveLimit(cfg limitConfig) *adaptiveLimit {
	cfg = cfg.withDefaults()
	l := &adaptiveLimit{cfg: cfg, lim: float64(cfg.Initial), slowStart: true, probe: 1, failProbe: failureProbe,
		cvNum: cvPriorWeight * cvPrior * cvPrior, cvDen: cvPriorWeight, rest: -1}
	l.newEpochLocked()
	return l
}

// ceiling is the highest the limit may be: the lower of Max and the budget
// cap, 0 when neither is set.
func (l *adaptiveLimit) ceilingLocked() int {
	c := l.cfg.Max
	if l.budget > 0 && (c == 0 || l.budget < c) {
		c = max(l.budget, l.cfg.Min)
	}
	return c
}

// unboundedLimit bounds a limit that neither a maximum nor a budget cap
// does, so slow start cannot overflow.
const unboundedLimit = 1 << 20

func (l *adaptiveLimit) clampLocked(v float64) float64 {
	c := l.ceilingLocked()
	if c <= 0 {
		c = unboundedLimit
	}
	return max(min(v, float64(c)), float64(l.cfg.Min))
}

func (l *adaptiveLimit) curLocked() int { return int(l.lim) }

// limit returns how many sends may be under way at once now.
func (l *adaptiveLimit) limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.curLocked()
}

// snapshot returns the limiter's state.
func (l *adaptiveLimit) snapshot() limitSnapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return limitSnapshot{
		Limit: l.curLocked(), InFlight: l.inFlight, Waiting: len(l.waiters),
		Changes: l.changes, Last: l.last, Baseline: seconds(l.base), Paused: l.pausedUntil,
	}
}

// acquire waits until a send may start: fewer than limit() sends are under
// way, no earlier acquirer is still waiting (FIFO), and no pause is in
// force. It returns ctx's error if ctx ends first. Every token must be
// given back to release exactly once.
func (l *adaptiveLimit) acquire(ctx context.Context) (token, error) {
	l.mu.Lock()
	now := time.Now()
	if len(l.waiters) == 0 && l.admitLocked(now) {
		t := l.takeLocked(now)
		l.mu.Unlock()
		return t, nil
	}
	if err := ctx.Err(); err != nil {
		l.mu.Unlock()
		return token{}, err
	}
	if l.inFlight >= l.curLocked() {
		l.reached = true // demand beyond the limit: evidence for growth
	}
	w := &limitWaiter{ch: make(chan token, 1)}
	l.waiters = append(l.waiters, w)
	l.armLocked(now)
	l.mu.Unlock()

	select {
	case t := <-w.ch:
		return t, nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-w.ch: // granted as ctx ended: hand the slot on, unused
		l.inFlight--
		l.grantLocked(time.Now())
	default:
		for i, o := range l.waiters {
			if o == w {
				l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
				break
			}
		}
	}
	return token{}, ctx.Err()
}

func (l *adaptiveLimit) admitLocked(now time.Time) bool {
	return l.inFlight < l.curLocked() && !now.Before(l.pausedUntil)
}

func (l *adaptiveLimit) takeLocked(now time.Time) token {
	l.inFlight++
	if l.inFlight >= l.curLocked() {
		l.reached = true
	}
	// The epoch's samples are sends that run at its limit: those taking one
	// of its top need slots. After a growth the sends that fill the new
	// slots start together, and the first of them run beside no more than
	// the old limit; judging by them let slow start past a knee unseen for
	// a round trip (at x4 per round trip, to 8x the knee in the simulation).
	top := min(l.epochLimit, l.curLocked()) - l.need
	t := token{epoch: l.epoch, start: now, marked: l.marks < l.need && l.inFlight > top}
	if t.marked {
		l.marks++
	}
	return t
}

// grantLocked lets waiters go, in order, while there is room.
func (l *adaptiveLimit) grantLocked(now time.Time) {
	i := 0
	for ; i < len(l.waiters) && l.admitLocked(now); i++ {
		l.waiters[i].ch <- l.takeLocked(now)
		l.waiters[i] = nil
	}
	if i > 0 {
		l.waiters = append(l.waiters[:0], l.waiters[i:]...)
	}
}

// armLocked makes sure a timer wakes the waiters when the pause ends.
func (l *adaptiveLimit) armLocked(now time.Time) {
	if len(l.waiters) == 0 || !now.Before(l.pausedUntil) || l.timerAt.Equal(l.pausedUntil) {
		return
	}
	l.timerAt = l.pausedUntil
	d := l.pausedUntil.Sub(now)
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.wake)
	} else {
		l.timer.Reset(d)
	}
}

func (l *adaptiveLimit) wake() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.grantLocked(now)
	l.armLocked(now) // the pause may have been extended meanwhile
}

// pauseUntil holds every acquire until t: the endpoint asked (Retry-After)
// not to be sent to before then. A later t extends the pause, an earlier one
// does not shorten it. Sends already under way are not affected.
func (l *adaptiveLimit) pauseUntil(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.After(l.pausedUntil) {
		l.pausedUntil = t
	}
	l.armLocked(time.Now())
}

// setBudgetCap bounds the limit by n, the number of sends the memory budget
// can hold at once (what is in flight is budget); n <= 0 removes the
// bound. A limit above the new cap is lowered to it; sends under way
// beyond it finish, and no new one starts until in flight is below it.
func (l *adaptiveLimit) setBudgetCap(n int) {
	l.mu.Lock()
	l.budget = max(n, 0)
	old := l.curLocked()
	l.lim = l.clampLocked(l.lim)
	var ch *limitChange
	if cur := l.curLocked(); cur != old {
		l.probe = 1
		ch = l.recordLocked(old, reasonBudget, time.Now(), 0)
	}
	l.grantLocked(time.Now())
	l.mu.Unlock()
	l.notify(ch)
}

// release gives back t, the token of a send that has ended with outcome.
// The send's RTT is the time since its acquire.
func (l *adaptiveLimit) release(t token, outcome sendOutcome) { l.releaseServed(t, outcome, -1) }

// releaseServed is release for a send whose endpoint said how long it held
// the request (served; negative: not told, see ReportServerTime).
func (l *adaptiveLimit) releaseServed(t token, outcome sendOutcome, served time.Duration) {
	l.mu.Lock()
	now := time.Now()
	l.inFlight--
	rtt := now.Sub(t.start)
	if outcome == sendOK {
		rtt = l.judgedLocked(rtt, served)
	}
	ch := l.observeLocked(t, rtt, outcome, now)
	l.grantLocked(now)
	l.mu.Unlock()
	l.notify(ch)
}

// judgedLocked is the latency a delivered send is judged by: its round
// trip, or, if the endpoint said how long it held the request (served),
// that time plus the lowest rest of a round trip seen (the network both
// ways, the client's own work and waits), so that only a queue at the
// endpoint reads as one (ReportServerTime).
func (l *adaptiveLimit) judgedLocked(rtt, served time.Duration) time.Duration {
	if served < 0 {
		return rtt
	}
	served = min(served, rtt)
	rest := rtt - served
	if l.rest < 0 || rest < l.rest {
		l.rest = rest
	}
	return served + l.rest
}

func (l *adaptiveLimit) notify(ch *limitChange) {
	if ch != nil && l.cfg.OnChange != nil {
		l.cfg.OnChange(*ch)
	}
}

// observeLocked takes one send's outcome into account and, when it ends the
// epoch, decides. It returns the change made, if any.
func (l *adaptiveLimit) observeLocked(t token, rtt time.Duration, outcome sendOutcome, now time.Time) *limitChange {
	// A send in flight at the last overload cut may lower the limit
	// further; it is no sample of this epoch, but a failure still forbids
	// growth in it, below.
	counted := l.countRefusalsLocked(t, outcome, now)
	if ch := l.judgeLocked(t, rtt, outcome, now); ch != nil {
		return ch
	}
	return counted
}

// judgeLocked is observeLocked but for the refusal count.
func (l *adaptiveLimit) judgeLocked(t token, rtt time.Duration, outcome sendOutcome, now time.Time) *limitChange {
	sample := t.epoch == l.epoch && t.marked // else sent under an earlier limit, or not among the first
	switch outcome {
	case sendIgnored:
	case sendOK:
		if sample {
			l.n++
			x := rtt.Seconds()
			d := x - l.mean
			l.mean += d / float64(l.n)
			l.m2 += d * (x - l.mean)
		}
	default:
		l.failed = true
		if t.epoch < l.decreaseEpoch {
			break // sent before the last decrease: already answered
		}
		cut, reason := errorCut, reasonError
		switch outcome {
		case sendOverload:
			cut, reason = overloadCut, reasonOverload
		case sendTimeout:
			cut, reason = timeoutCut, reasonTimeout
		}
		old := l.curLocked()
		// Approach again the highest limit not known to fail; in a cascade
		// of cuts by timeouts or errors (an outage) the one where it began.
		// A cascade of 429s says the limit is lower still.
		below := float64(max(old-1, l.cfg.Min)) // the whole limit below the one that failed
		if l.grown || outcome == sendOverload {
			l.lastMax = below
		} else {
			l.lastMax = max(l.lastMax, below)
		}
		// A failure at the same limit as the last one is a hard limit (a
		// fixed number of slots, a rate limit): each time, probe past it
		// half as fast, so 429s become rarer the longer it stays.
		if math.Abs(float64(old)-l.failedAt) <= 1 {
			l.failProbe = max(l.failProbe/2, minFailureProbe)
		} else {
			l.failProbe = failureProbe
		}
		l.failedAt = float64(old)
		ch := l.decreaseLocked(old, l.lim*cut, reason, now, 0)
		l.probe = l.failProbe
		if outcome == sendOverload {
			l.hardEpoch, l.hardIn, l.hardBack, l.hardRefused, l.hardOK = l.epoch, l.inFlight, 0, 0, false
			l.hardFloor = float64(old) / 2
		}
		return ch
	}
	if !sample {
		return nil
	}
	l.back++
	if l.back < l.need {
		return nil
	}
	if l.n == 0 { // no sample came back ok: nothing to judge by
		return l.holdLocked()
	}
	return l.decideLocked(now)
}

// countRefusalsLocked follows the sends that were in flight at the last
// overload cut. The cut (x0.75) is made at the first 429, before the
// endpoint has answered the others; once it has delivered one of them,
// each one it refuses says it serves one fewer, and the limit falls to the
// sends it has not refused (never raised by this, nor taken below half the
// limit before the cut: at most x0.5 in a round trip). Slow start's x4 step
// past a loader's slots (16 to 64 against 32) had all 32 sends past them
// refused; the x0.75 cut alone left 48 and then 36, sent past the slots
// again in the next round trips: 54 429s in 50 round trips where the
// overshoot made 32 (TestLimiterSimSlotWaitOvershootOnce). Until one of
// them is delivered it counts nothing: sends that all fail say nothing of
// a capacity (a loader that refuses everything is cut once per round trip,
// like any failure).
func (l *adaptiveLimit) countRefusalsLocked(t token, outcome sendOutcome, now time.Time) *limitChange {
	if l.hardEpoch == 0 || t.epoch >= l.hardEpoch {
		return nil
	}
	l.hardBack++
	switch outcome {
	case sendOK:
		l.hardOK = true
	case sendOverload:
		l.hardRefused++
	}
	if l.hardBack >= l.hardIn {
		defer func() { l.hardEpoch = 0 }() // all back
	}
	if !l.hardOK || outcome == sendIgnored {
		return nil
	}
	old := l.curLocked()
	est := max(float64(l.hardIn-l.hardRefused), l.hardFloor)
	if est >= l.lim {
		return nil
	}
	l.lim = l.clampLocked(est)
	l.lastMax = min(l.lastMax, l.lim)
	l.failedAt = float64(l.curLocked())
	if l.curLocked() == old {
		return nil
	}
	return l.recordLocked(old, reasonOverload, now, 0)
}

// decideLocked ends the epoch on its RTT samples.
func (l *adaptiveLimit) decideLocked(now time.Time) *limitChange {
	m := l.mean
	// The noise of m: the spread of single RTTs (their coefficient of
	// variation, pooled over epochs, as the few samples of one epoch at a
	// low limit say little about it) over the root of the sample count.
	if l.n > 1 && m > 0 {
		// Each epoch weighs by its degrees of freedom, so two samples that
		// agree by chance do not outweigh the prior.
		l.cvNum = l.cvNum*(1-cvWeight) + l.m2/(m*m)
		l.cvDen = l.cvDen*(1-cvWeight) + float64(l.n-1)
	}
	se := math.Sqrt(l.cvNum/l.cvDen) * m / math.Sqrt(float64(l.n))
	if l.base == 0 {
		l.base = m + baseSigmas*se
	}
	// A rise must stand out of the epoch's noise, but by no more than a
	// fixed share of the baseline: the spread of RTTs within an epoch also
	// grows with a queue, and must not excuse it.
	growLine := l.base * (1 + growTolerance)
	shrinkLine := l.base*(1+shrinkTolerance) + min(shrinkSigmas*se, maxShrinkNoise*l.base)
	old := l.curLocked()
	// Latency cuts stop at the starting limit, today's fixed default of 4:
	// only failures take the limit below it. On a busy host round trips of
	// a few milliseconds double with a few sends in flight (the CPU, not
	// the endpoint, is the queue), and a limit cut to 1 or 2 by that
	// carried less than the old fixed 4 did.
	floor := max(l.cfg.Min, min(l.cfg.Initial, l.ceilingLocked()))
	if l.ceilingLocked() <= 0 {
		floor = max(l.cfg.Min, l.cfg.Initial)
	}
	atMin := old <= floor

	// The baseline follows the lowest mean, and at the minimum limit (where
	// no queue is ours) re-learns a slower endpoint.
	defer func() {
		if b := m + baseSigmas*se; b < l.base || atMin {
			l.base = b
		}
	}()

	switch {
	case l.failed:
		// A failure arrived late (its send predates the last decrease):
		// no evidence the limit is safe to raise.
		return l.holdLocked()
	case m > shrinkLine:
		cut := min(max(growLine/m, minLatencyCut), maxLatencyCut)
		v := max(l.lim*cut, float64(floor))
		if int(v) >= old {
			return l.holdLocked() // at the floor already
		}
		ch := l.decreaseLocked(old, v, reasonLatency, now, m)
		l.lastMax = l.lim // the knee is about here, not where the queue was
		l.grown = true    // a later failure cascade starts from here
		return ch
	case m <= growLine && l.reached:
		next, reason := l.lim, reasonGrow
		switch {
		case l.slowStart:
			next, reason = slowStartFactor*l.lim, reasonSlowStart
			if h := float64(l.hint); h > 0 && next >= h && l.fitsLocked(h) {
				// The endpoint serves h at once: slow start's step stops
				// there and slow start ends, as at a 429 at h+1.
				next, reason = max(h, l.lim), reasonCapacity
				l.stopSlowStartLocked(next)
			}
		case l.lim < l.lastMax:
			next = min(next+max(1, (l.lastMax-l.lim)/2), l.lastMax)
		default:
			next += l.probe
			l.probe = min(2*l.probe, max(l.lim, 1)) // at most doubling
		}
		l.lim = l.clampLocked(next)
		l.grown = true
		l.newEpochLocked()
		if l.curLocked() == old {
			return nil
		}
		return l.recordLocked(old, reason, now, m)
	default:
		return l.holdLocked()
	}
}

// fitsLocked reports whether a limit of v is within the ceiling.
func (l *adaptiveLimit) fitsLocked(v float64) bool {
	c := l.ceilingLocked()
	return c <= 0 || v <= float64(c)
}

// stopSlowStartLocked ends slow start at the endpoint's advertised
// capacity v, as a 429 just past v would: growth then probes past v from
// +1, and a 429 there counts as a second failure at the same limit (a hard
// limit), so the probes after it are rarer.
func (l *adaptiveLimit) stopSlowStartLocked(v float64) {
	l.slowStart = false
	l.lastMax = v
	l.failedAt = v
	l.failProbe = failureProbe
	l.probe = 1
}

// reportCapacity takes the endpoint's word that it serves at most n sends
// at once ([ReportCapacity]); n <= 0 withdraws it. Every response repeats
// it, so a repeat costs an atomic load. The count stops slow start (in
// decideLocked), and a count that rises after slow start is approached as
// a limit known to hold. It never lowers the limit: the endpoint counts
// only the sends it is working on, not those whose answer is on its way,
// and a count it lowered (a restart with fewer slots) is found by the
// 429s past it, whose refusals are counted.
func (l *adaptiveLimit) reportCapacity(n int) {
	n = max(n, 0)
	if l.hintSeen.Load() == int64(n) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == l.hint {
		return
	}
	l.hint = n
	l.hintSeen.Store(int64(n))
	h := float64(n)
	switch {
	case n == 0:
	case l.slowStart && l.lim >= h && l.fitsLocked(h):
		l.stopSlowStartLocked(l.lim) // already there: no step past it
	case !l.slowStart && h > l.lim:
		l.lastMax = max(l.lastMax, h)
	}
}

func (l *adaptiveLimit) holdLocked() *limitChange {
	// A hold is no decrease: slow start goes on (noise alone can hold an
	// epoch), but the probe past the last limit starts again from +1 (or
	// less, after a failure).
	l.probe = min(l.probe, 1)
	l.newEpochLocked()
	return nil
}

// decreaseLocked sets the limit to v (clamped) and starts an epoch that
// only failures of sends acquired from now on can cut again.
func (l *adaptiveLimit) decreaseLocked(old int, v float64, reason limitReason, now time.Time, m float64) *limitChange {
	l.lim = l.clampLocked(min(v, l.lim))
	l.grown = false
	l.slowStart = false
	l.probe = 1
	l.newEpochLocked()
	l.decreaseEpoch = l.epoch
	if l.curLocked() == old {
		return nil
	}
	return l.recordLocked(old, reason, now, m)
}

func (l *adaptiveLimit) newEpochLocked() {
	l.epoch++
	l.epochLimit = l.curLocked()
	l.need = max(minEpochSamples, (l.epochLimit+3)/4)
	if l.slowStart {
		// Slow start has few epochs to learn the baseline from before it
		// meets the endpoint's capacity: each judges by more sends.
		l.need = max(minEpochSamples, (l.epochLimit+1)/2)
	}
	l.marks, l.back = 0, 0
	l.n, l.mean, l.m2 = 0, 0, 0
	l.reached = l.inFlight >= l.epochLimit || len(l.waiters) > 0
	l.failed = false
}

func (l *adaptiveLimit) recordLocked(old int, reason limitReason, now time.Time, m float64) *limitChange {
	l.changes++
	l.last = limitChange{
		Seq: l.changes, From: old, To: l.curLocked(), Reason: reason, At: now,
		RTT: seconds(m), Baseline: seconds(l.base),
	}
	ch := l.last
	return &ch
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
