package batchproc

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"
)

// Defaults used when an option is not given. They suit a typical service:
// batches of at most 1,000 events or 1 MiB, sent at the latest 1 s after
// their first event, 64 MiB of events held at most, 4 sends under way.
const (
	DefaultMaxBatchEvents = 1000
	DefaultMaxBatchBytes  = 1 << 20
	DefaultFlushInterval  = time.Second
	DefaultMemoryLimit    = 64 << 20
	DefaultMaxInFlight    = 4 // where the adaptive send limit starts
)

// Upper bounds of the options that take a count or a size.
const (
	// MaxBatchBytesLimit is the largest WithMaxBatchBytes: event offsets in
	// a batch are 32-bit.
	MaxBatchBytesLimit = math.MaxInt32
	// MaxSendersLimit is the largest WithMaxInFlight and WithWorkerPool:
	// each sender is a goroutine, and far fewer saturate any receiver.
	MaxSendersLimit = 1024
)

// DefaultRetryPolicy returns the retry policy used without [WithRetry]:
// retry by elapsed time, as Kafka's delivery.timeout.ms does, with no cap
// on attempts: back off from 100 ms up to 10 s between attempts, and give up
// on a batch 5 minutes after its first send.
//
// What that survives: an outage of the receiver shorter than 5 minutes
// loses nothing, as long as the memory budget holds what arrives meanwhile
// (Add blocks, and TryAdd returns ErrFull, once it does not). At 2,000
// events/s of 200-byte events the default 64 MiB budget holds about 2
// minutes of events; the batches keep being retried meanwhile, and are
// delivered, oldest first, when the receiver is back.
//
// It is a function so that no caller can change the default for everyone.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		InitialBackoff: 100 * time.Millisecond,
		MaxBackoff:     10 * time.Second,
		MaxElapsed:     5 * time.Minute,
	}
}

// RetryPolicy says how a failed send is retried: exponential backoff with
// full jitter (each wait is uniform in [0, min(MaxBackoff,
// InitialBackoff*2^n))), a [RetryAfter] hint raising the wait, until
// MaxAttempts sends were made or the next wait would end past MaxElapsed
// since the first send. A zero MaxAttempts or MaxElapsed means no limit of
// that kind, but not both.
type RetryPolicy struct {
	MaxAttempts    int           // sends of one batch in all, the first included; 1 disables retries
	InitialBackoff time.Duration // upper bound of the first wait
	MaxBackoff     time.Duration // cap of every wait's upper bound
	MaxElapsed     time.Duration // give up rather than wait past this since the first send
}

func (r RetryPolicy) validate() error {
	var errs []error
	if r.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("retry: MaxAttempts %d is negative", r.MaxAttempts))
	}
	if r.InitialBackoff <= 0 && r.MaxAttempts != 1 {
		errs = append(errs, fmt.Errorf("retry: InitialBackoff %v must be positive", r.InitialBackoff))
	}
	if r.MaxBackoff < r.InitialBackoff {
		errs = append(errs, fmt.Errorf("retry: MaxBackoff %v is below InitialBackoff %v", r.MaxBackoff, r.InitialBackoff))
	}
	if r.MaxElapsed < 0 {
		errs = append(errs, fmt.Errorf("retry: MaxElapsed %v is negative", r.MaxElapsed))
	}
	if r.MaxAttempts == 0 && r.MaxElapsed == 0 {
		errs = append(errs, errors.New("retry: MaxAttempts and MaxElapsed are both unlimited; a failing sink would hold batches forever"))
	}
	return errors.Join(errs...)
}

// config is the processor's settings after all options were applied.
type config struct {
	maxEvents   int
	maxBytes    int
	interval    time.Duration
	memLimit    int
	maxInFlight int
	adaptiveMax int // WithAdaptiveInFlight's ceiling; 0: the budget alone bounds it
	adaptiveSet bool
	workers     int // > 0: worker-pool dispatch (the seed's design 1)
	workersSet  bool
	ordered     bool
	retry       RetryPolicy
	logger      *slog.Logger // nil: failures to slog.Default(), deliveries unlogged
	loggerSet   bool
	onFailure   func(*Batch, error)
	hooks       []Hook
	openJournal func() (Journal, error)

	inFlightSet bool // WithMaxInFlight was given (it conflicts with the other modes)
}

func defaultConfig() config {
	return config{
		maxEvents:   DefaultMaxBatchEvents,
		maxBytes:    DefaultMaxBatchBytes,
		interval:    DefaultFlushInterval,
		memLimit:    DefaultMemoryLimit,
		maxInFlight: DefaultMaxInFlight,
		retry:       DefaultRetryPolicy(),
	}
}

func (c *config) validate() error {
	var errs []error
	if c.maxEvents < 1 || c.maxEvents > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("WithMaxBatchEvents(%d): must be between 1 and %d", c.maxEvents, math.MaxInt32))
	}
	if c.maxBytes < 2 || c.maxBytes > MaxBatchBytesLimit {
		errs = append(errs, fmt.Errorf("WithMaxBatchBytes(%d): must be between 2 (one byte and its newline) and %d (event offsets are 32-bit)", c.maxBytes, MaxBatchBytesLimit))
	}
	if c.interval <= 0 {
		errs = append(errs, fmt.Errorf("WithFlushInterval(%v): must be positive", c.interval))
	}
	if minMem := c.maxBytes + eventOverhead + batchOverhead; c.memLimit < minMem {
		errs = append(errs, fmt.Errorf("WithMemoryLimit(%d): must be at least %d: the batch byte limit %d plus one event's and one batch's overhead (%d + %d), so that every event within the batch limit fits", c.memLimit, minMem, c.maxBytes, eventOverhead, batchOverhead))
	}
	if c.maxInFlight < 1 || c.maxInFlight > MaxSendersLimit {
		errs = append(errs, fmt.Errorf("WithMaxInFlight(%d): must be between 1 and %d", c.maxInFlight, MaxSendersLimit))
	}
	if c.workersSet && (c.workers < 1 || c.workers > MaxSendersLimit) {
		errs = append(errs, fmt.Errorf("WithWorkerPool(%d): must be between 1 and %d", c.workers, MaxSendersLimit))
	}
	if c.ordered && c.workersSet {
		errs = append(errs, errors.New("WithOrdered and WithWorkerPool exclude each other: a pool sends from many buffers at once"))
	}
	if c.adaptiveSet && (c.adaptiveMax < 0 || c.adaptiveMax > 0 && c.adaptiveMax < DefaultMaxInFlight) {
		errs = append(errs, fmt.Errorf("WithAdaptiveInFlight(%d): must be 0 (no ceiling but the budget) or at least %d", c.adaptiveMax, DefaultMaxInFlight))
	}
	if c.adaptiveSet && (c.inFlightSet || c.workersSet || c.ordered) {
		errs = append(errs, errors.New("WithAdaptiveInFlight is async dispatch's adaptive limit: it excludes WithMaxInFlight, WithWorkerPool and WithOrdered"))
	}
	if c.ordered && c.inFlightSet && c.maxInFlight != 1 {
		errs = append(errs, fmt.Errorf("WithOrdered sends one batch at a time; WithMaxInFlight(%d) contradicts it", c.maxInFlight))
	}
	if c.workersSet && c.inFlightSet {
		errs = append(errs, errors.New("WithWorkerPool(n) sends n batches at most at once; do not combine it with WithMaxInFlight"))
	}
	if c.loggerSet && c.logger == nil {
		errs = append(errs, errors.New("WithLogger(nil): pass a logger; slog.New(slog.DiscardHandler) silences the processor"))
	}
	for i, h := range c.hooks {
		if h == nil || !new(hookSet).add(h) {
			errs = append(errs, fmt.Errorf("WithHooks: hook %d (%T) implements no hook interface", i, h))
		}
	}
	if err := c.retry.validate(); err != nil {
		errs = append(errs, fmt.Errorf("WithRetry: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("batchproc: invalid configuration: %w", err)
	}
	return nil
}

// An Option configures a [Processor]. Options are made by the With
// functions of this package.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithMaxBatchEvents sends a batch once it holds n events, 1 <= n <=
// 2,147,483,647. It overrides the default of 1,000 events.
func WithMaxBatchEvents(n int) Option {
	return optionFunc(func(c *config) { c.maxEvents = n })
}

// WithMaxBatchBytes bounds a batch's size in bytes, counted as
// [Batch.NDJSON] is: every payload plus its newline. A batch is sent before
// an event would take it past n, so no batch exceeds n; an event that alone
// exceeds n is refused with [ErrEventTooLarge]. It overrides the default of
// 1 MiB (1,048,576 bytes); n ranges from 2 to [MaxBatchBytesLimit].
func WithMaxBatchBytes(n int) Option {
	return optionFunc(func(c *config) { c.maxBytes = n })
}

// WithFlushInterval sends a batch at the latest d after its first event was
// added (linger), however few events it holds. It overrides the default of
// 1 s. d must be positive; a very large d (up to math.MaxInt64) means the
// batch waits for its size limits, a Flush or Shutdown, or, when Adds
// wait for budget and nothing is being sent, for them.
func WithFlushInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.interval = d })
}

// WithMemoryLimit sets the memory budget, in bytes, for events that are
// buffered or being sent: each event counts its payload, its newline, its
// ID and 20 bytes (its offset and ID header in the batch), and each batch
// 256 bytes more. When the budget is full, [Processor.Add] blocks and
// [Processor.TryAdd] returns [ErrFull]. It must be at least the batch byte
// limit plus 276 bytes, so that every event within the batch limit fits.
// It overrides the default of 64 MiB (67,108,864 bytes).
//
// What the processor's heap holds for its events is bounded by the budget,
// not equal to it: a batch being filled has buffers sized ahead of its
// events, up to WithMaxBatchBytes plus 20 bytes per event of
// WithMaxBatchEvents, and a batch cut with mostly empty buffers is compacted
// into buffers of its size. So the heap held is at most 1.25 times
// Stats.BufferedBytes plus, for each shard, one batch buffer: shards are
// twice GOMAXPROCS with async dispatch (at most 256), n with
// WithWorkerPool(n), one with WithOrdered. A test holds a stuck processor
// to this bound.
func WithMemoryLimit(bytes int) Option {
	return optionFunc(func(c *config) { c.memLimit = bytes })
}

// WithMaxInFlight fixes how many [Sink.Send] calls async dispatch runs at
// once, 1 <= n <= [MaxSendersLimit], instead of the adaptive limit (see
// [WithAdaptiveInFlight]). A Retry-After answer still pauses every send. It
// cannot be combined with [WithWorkerPool], and only n = 1 with
// [WithOrdered].
func WithMaxInFlight(n int) Option {
	return optionFunc(func(c *config) { c.maxInFlight = n; c.inFlightSet = true })
}

// WithAdaptiveInFlight sets the ceiling of async dispatch's adaptive
// concurrency limit, the default: the number of sends under way at once
// starts at 4 ([DefaultMaxInFlight]), grows while it is reached and round
// trips stay near their baseline, and shrinks multiplicatively when they
// rise, and on timeouts, 429/503 and other failures, at most once per round
// trip (limiter.go documents the rule). The memory budget always bounds it:
// at most as many sends as the budget holds batches of the average size.
// max = 0 (the default) means no other ceiling; otherwise max >= 4. A
// [RetryAfter] answer pauses every send until it has passed. A sink that
// reports how many sends its endpoint serves at once ([ReportCapacity];
// httpsink does, from the loader's Ingest-Slots) stops slow start there;
// one that reports how long the endpoint held each request
// ([ReportServerTime]; httpsink does, from the loader's Server-Timing) has
// its sends judged by that time, so that a busy client host is not read
// as a queue at the endpoint.
func WithAdaptiveInFlight(max int) Option {
	return optionFunc(func(c *config) { c.adaptiveMax = max; c.adaptiveSet = true })
}

// WithWorkerPool selects the seed's design 1: n workers, each filling its own
// buffer and sending it synchronously, so at most n sends run at once and
// each worker sends its batches in turn; 1 <= n <= [MaxSendersLimit]. Events
// go to the workers that can send them: a worker with a batch queued or
// being sent gets new events only when the others are as busy, as a seed
// worker blocked in its send stops taking from the queue. Without it the
// processor uses async dispatch ([WithMaxInFlight]).
func WithWorkerPool(n int) Option {
	return optionFunc(func(c *config) { c.workers = n; c.workersSet = true })
}

// WithOrdered makes the sink see batches, and events within them, in the
// order of the Add calls that returned: one buffer, one send at a time, and a
// batch being retried holds back every batch behind it. Throughput is then
// bounded by one batch per round trip.
func WithOrdered() Option {
	return optionFunc(func(c *config) { c.ordered = true })
}

// WithRetry sets how failed sends are retried. It overrides
// [DefaultRetryPolicy]().
func WithRetry(p RetryPolicy) Option {
	return optionFunc(func(c *config) { c.retry = p })
}

// WithLogger sets the structured logger. The processor logs at Info one line
// per delivered batch with count=N (the number of events, as the original
// study's logs did, so deliveries can be summed from logs) and the drain
// when Shutdown begins; each retry at Warn (events=N); each failed batch at
// Error, once (events=N failed, and count=N for a prefix that was
// delivered). Without it, retries and failures go to [slog.Default] and
// deliveries are not logged: failures are never silent.
// slog.New(slog.DiscardHandler) silences the processor.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger = l; c.loggerSet = true })
}

// WithOnFailure sets a function called once for every batch that will not be
// delivered: its sends failed permanently, retries ran out, or
// [Processor.Shutdown]'s context ended first ([ShutdownError]). The batch is
// valid only during the call; the function must not keep it. It is called
// from the processor's goroutines, one batch at a time per sender, and should
// return quickly (write the batch to a spool, count it, log it). By default
// failed batches are logged and counted in [Stats].Failed, and reported by
// the Flush or Shutdown that covered them ([DeliveryError]).
//
// Callback rules (they hold for [Sink.Send] too): f may call Add, TryAdd
// and Stats. Add does not wait there: it returns [ErrFull] when the budget
// is full, since the budget it would wait for may be the failing batch's.
// Flush returns [ErrInCallback] at once, and Shutdown begins the shutdown
// and returns [ErrInCallback] at once: both would wait for f itself.
func WithOnFailure(f func(b *Batch, err error)) Option {
	return optionFunc(func(c *config) { c.onFailure = f })
}

// WithJournal makes every cut batch durable before its first send: New
// calls open and fails with its error; the processor then writes each
// batch to the journal, acks it once delivered or failed permanently,
// sends first what a previous processor left there (Stats.Replayed), and
// closes the journal at the end of Shutdown. The spool package's WithSpool
// is this option with a disk journal; its documentation states what each
// sync mode survives.
//
// With a journal:
//   - a batch in the journal is never given up on a retryable error (the
//     retry policy's MaxAttempts and MaxElapsed do not apply to it; its
//     backoff does), and while it waits for its next attempt its events
//     leave memory (it keeps 128 bytes of budget), so an outage fills the
//     journal, not the memory budget; so do queued batches when an Add
//     waits for budget. A batch read back for its send takes its budget
//     even past the limit: with the sends under way bounded by the send
//     limit, the heap stays within about twice the budget;
//   - with ordered dispatch, what a previous processor left is sent first;
//   - a batch the journal refuses (full, or failed) is sent from memory
//     only and counted in Stats.Unjournaled: the memory budget then pushes
//     back as without a journal;
//   - when Shutdown's context ends, batches not delivered stay in the
//     journal (a [*LeftInJournalError] says how many) instead of failing.
//
// A journal that is a [JournalOpener] (the spool is) also keeps the
// batches being filled, and a cut batch until its Append returned: each
// event is in it before Add returns (an [OpenBuffer], as the spool's
// regions are, is the batch's buffer itself), so a crash of the process
// loses no event whose Add returned nil. Otherwise, or for a batch that
// found the JournalOpener without room (Stats.Unguarded), those are what a
// crash of the process loses: the batch being filled in each shard (the
// events of at most one flush interval, WithFlushInterval, or one full
// batch), and at most three cut batches per appender not yet written to
// the journal (async dispatch has four appenders, the worker pool and
// ordered dispatch one per lane; a cut finding three waiting waits for the
// journal, so an Add that fills a batch may wait for a slow disk).
func WithJournal(open func() (Journal, error)) Option {
	return optionFunc(func(c *config) { c.openJournal = open })
}
