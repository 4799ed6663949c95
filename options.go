package batchproc

import (
	"errors"
	"fmt"
	"log/slog"
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
	DefaultMaxInFlight    = 4
)

// DefaultRetryPolicy is the retry policy used without [WithRetry]: up to 10
// attempts over at most a minute, backing off from 100 ms to 10 s.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:    10,
	InitialBackoff: 100 * time.Millisecond,
	MaxBackoff:     10 * time.Second,
	MaxElapsed:     time.Minute,
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
	workers     int // > 0: worker-pool dispatch (the seed's design 1)
	ordered     bool
	retry       RetryPolicy
	logger      *slog.Logger
	onFailure   func(*Batch, error)

	inFlightSet bool // WithMaxInFlight was given (it conflicts with the other modes)
}

func defaultConfig() config {
	return config{
		maxEvents:   DefaultMaxBatchEvents,
		maxBytes:    DefaultMaxBatchBytes,
		interval:    DefaultFlushInterval,
		memLimit:    DefaultMemoryLimit,
		maxInFlight: DefaultMaxInFlight,
		retry:       DefaultRetryPolicy,
		logger:      slog.New(slog.DiscardHandler),
	}
}

func (c *config) validate() error {
	var errs []error
	if c.maxEvents < 1 {
		errs = append(errs, fmt.Errorf("WithMaxBatchEvents(%d): must be at least 1", c.maxEvents))
	}
	if c.maxBytes < 2 {
		errs = append(errs, fmt.Errorf("WithMaxBatchBytes(%d): must be at least 2 (one byte and its newline)", c.maxBytes))
	}
	if c.interval <= 0 {
		errs = append(errs, fmt.Errorf("WithFlushInterval(%v): must be positive", c.interval))
	}
	if c.memLimit < c.maxBytes {
		errs = append(errs, fmt.Errorf("WithMemoryLimit(%d): must be at least the batch byte limit %d", c.memLimit, c.maxBytes))
	}
	if c.maxInFlight < 1 {
		errs = append(errs, fmt.Errorf("WithMaxInFlight(%d): must be at least 1", c.maxInFlight))
	}
	if c.workers < 0 {
		errs = append(errs, fmt.Errorf("WithWorkerPool(%d): must be at least 1", c.workers))
	}
	if c.ordered && c.workers > 0 {
		errs = append(errs, errors.New("WithOrdered and WithWorkerPool exclude each other: a pool sends from many buffers at once"))
	}
	if c.ordered && c.inFlightSet && c.maxInFlight != 1 {
		errs = append(errs, fmt.Errorf("WithOrdered sends one batch at a time; WithMaxInFlight(%d) contradicts it", c.maxInFlight))
	}
	if c.workers > 0 && c.inFlightSet {
		errs = append(errs, errors.New("WithWorkerPool(n) sends n batches at most at once; do not combine it with WithMaxInFlight"))
	}
	if c.logger == nil {
		errs = append(errs, errors.New("WithLogger(nil): pass a logger, or omit the option for silence"))
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

// WithMaxBatchEvents sends a batch once it holds n events. n must be at
// least 1. It overrides the default of 1,000 events.
func WithMaxBatchEvents(n int) Option {
	return optionFunc(func(c *config) { c.maxEvents = n })
}

// WithMaxBatchBytes bounds a batch's size in bytes, counted as
// [Batch.NDJSON] is: every payload plus its newline. A batch is sent before
// an event would take it past n, so no batch exceeds n; an event that alone
// exceeds n is refused with [ErrEventTooLarge]. It overrides the default of
// 1 MiB (1,048,576 bytes).
func WithMaxBatchBytes(n int) Option {
	return optionFunc(func(c *config) { c.maxBytes = n })
}

// WithFlushInterval sends a batch at the latest d after its first event was
// added (linger), however few events it holds. It overrides the default of
// 1 s. d must be positive.
func WithFlushInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.interval = d })
}

// WithMemoryLimit bounds, in bytes, what the processor holds for events that
// are buffered or being sent: each event counts its payload, its newline, its
// ID and a fixed overhead of 16 bytes. When the budget is full, [Processor.Add]
// blocks and [Processor.TryAdd] returns [ErrFull]. It must be at least the
// batch byte limit. It overrides the default of 64 MiB (67,108,864 bytes).
func WithMemoryLimit(bytes int) Option {
	return optionFunc(func(c *config) { c.memLimit = bytes })
}

// WithMaxInFlight bounds how many [Sink.Send] calls the default async
// dispatch runs at once. It overrides the default of 4. It cannot be combined
// with [WithWorkerPool], and only n = 1 with [WithOrdered].
func WithMaxInFlight(n int) Option {
	return optionFunc(func(c *config) { c.maxInFlight = n; c.inFlightSet = true })
}

// WithWorkerPool selects the seed's design 1: n workers, each filling its own
// buffer and sending it synchronously, so at most n sends run at once and
// each worker sends its batches in turn. Events are spread over the workers.
// Without it the processor uses async dispatch ([WithMaxInFlight]).
func WithWorkerPool(n int) Option {
	return optionFunc(func(c *config) { c.workers = n })
}

// WithOrdered makes the sink see batches, and events within them, in the
// order of the Add calls that returned: one buffer, one send at a time, and a
// batch being retried holds back every batch behind it. Throughput is then
// bounded by one batch per round trip.
func WithOrdered() Option {
	return optionFunc(func(c *config) { c.ordered = true })
}

// WithRetry sets how failed sends are retried. It overrides
// [DefaultRetryPolicy].
func WithRetry(p RetryPolicy) Option {
	return optionFunc(func(c *config) { c.retry = p })
}

// WithLogger sets the structured logger. The processor logs at Info one line
// per delivered batch with count=N (the number of events), retries at Warn,
// failed batches at Error, and the drain when Shutdown begins. By default it
// logs nothing.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger = l })
}

// WithOnFailure sets a function called once for every batch that will not be
// delivered: its sends failed permanently, retries ran out, or
// [Processor.Shutdown]'s context ended first ([ShutdownError]). The batch is
// valid only during the call; the function must not keep it. It is called
// from the processor's goroutines, one batch at a time per sender, and should
// return quickly (write the batch to a spool, count it, log it). By default
// failed batches are only logged and counted in [Stats].Failed.
func WithOnFailure(f func(b *Batch, err error)) Option {
	return optionFunc(func(c *config) { c.onFailure = f })
}
