package batchotel

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/metrics/batchotel/internal/instr"
	"github.com/batchproc/batchproc/metrics/internal/reason"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of the meter Metrics uses.
const ScopeName = "github.com/batchproc/batchproc/metrics/batchotel"

// Attribute keys Metrics sets.
const (
	// ErrorTypeKey is OpenTelemetry's error.type: the reason class of a
	// refused Add or a failed batch.
	ErrorTypeKey = attribute.Key("error.type")
	// OutcomeKey is what became of a send attempt: delivered, retrying,
	// failed or aborted ([batchproc.SendOutcome]).
	OutcomeKey = attribute.Key("batchproc.send.outcome")
	// LimitReasonKey is why async dispatch's send limit changed.
	LimitReasonKey = attribute.Key("batchproc.send.limit_change.reason")
)

// DurationBoundaries are the explicit bucket boundaries, in seconds,
// advised for batchproc.send.duration: those the semantic conventions give
// for network operation durations (messaging.client.operation.duration,
// http.client.request.duration). A View overrides them.
var DurationBoundaries = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Metrics is a [batchproc.Hook] that records a processor's metrics with an
// OpenTelemetry meter. Pass it to [batchproc.WithHooks], then bind it to the
// processor with [Metrics.Observe]. One Metrics serves one processor.
type Metrics struct {
	p   atomic.Pointer[batchproc.Processor]
	reg metric.Registration

	// WithAttributes alone, as the option slices the API takes: passed
	// with ..., a slice made once costs a measurement no allocation.
	observeOpts []metric.ObserveOption
	recordOpts  []metric.RecordOption

	// Observed from Stats at every collection.
	added, delivered, failed, batches, retries  metric.Int64ObservableCounter
	pending, inflight, limit, buffer            metric.Int64ObservableUpDownCounter
	replayed, journaled, unjournaled, unguarded metric.Int64ObservableCounter // with a journal

	// Recorded by the hooks.
	duration     metric.Float64Histogram
	batchEvents  metric.Int64Histogram
	batchSize    metric.Int64Histogram
	rejected     metric.Int64Counter
	batchFailed  metric.Int64Counter
	limitChanges metric.Int64Counter

	// Attribute sets made once, so that a hook allocates none.
	byOutcome map[batchproc.SendOutcome][]metric.RecordOption
	byReject  map[string][]metric.AddOption
	byFailure map[string][]metric.AddOption
	base      []attribute.KeyValue
	mu        sync.Mutex
	byLimit   map[string][]metric.AddOption
}

// An Option configures [New].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	provider metric.MeterProvider
	attrs    []attribute.KeyValue
}

// WithMeterProvider sets the provider of the meter. The default is the
// global one, [otel.GetMeterProvider]; instruments made from it before the
// service calls otel.SetMeterProvider forward to that provider once set.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.provider = mp })
}

// WithAttributes adds attributes to every measurement, to tell apart the
// processors of one service (say batchproc.processor=orders), each with
// its own Metrics. The default is none.
func WithAttributes(kv ...attribute.KeyValue) Option {
	return optionFunc(func(c *config) { c.attrs = append(c.attrs, kv...) })
}

// New creates the instruments (see the package documentation) and
// registers the callback that observes the bound processor's Stats. It
// returns an error if the meter refuses an instrument or the callback.
// Close unregisters the callback.
func New(opts ...Option) (*Metrics, error) {
	var cfg config
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.provider == nil {
		cfg.provider = otel.GetMeterProvider()
	}
	for _, kv := range cfg.attrs {
		if kv.Key == ErrorTypeKey || kv.Key == OutcomeKey || kv.Key == LimitReasonKey {
			return nil, fmt.Errorf("batchotel: WithAttributes(%s): the key is one Metrics sets itself", kv.Key)
		}
		if !kv.Valid() {
			return nil, fmt.Errorf("batchotel: WithAttributes: invalid attribute %q", kv.Key)
		}
	}
	meter := cfg.provider.Meter(ScopeName)
	m := &Metrics{base: cfg.attrs}
	m.observeOpts = []metric.ObserveOption{m.with()}
	m.recordOpts = []metric.RecordOption{m.with()}

	b := &instr.Builder{Meter: meter}
	counter, updown := b.Counter, b.UpDown
	m.added = counter("batchproc.event.added", "{event}", "Events accepted by Add or TryAdd (Stats.Added).")
	m.delivered = counter("batchproc.event.delivered", "{event}", "Events in batches the sink accepted (Stats.Delivered).")
	m.failed = counter("batchproc.event.failed", "{event}", "Events handed to the failure callback (Stats.Failed).")
	m.batches = counter("batchproc.batch.delivered", "{batch}", "Batches the sink accepted (Stats.Batches).")
	m.retries = counter("batchproc.send.retried", "{send}", "Sends that were retries of a failed send (Stats.Retries).")
	m.pending = updown("batchproc.event.pending", "{event}", "Events buffered, queued or being sent (Stats.Pending).")
	m.inflight = updown("batchproc.send.inflight", "{send}", "Sink.Send calls under way (Stats.InFlight).")
	m.limit = updown("batchproc.send.limit", "{send}", "Sends allowed at once now by async dispatch; 0 in the other modes (Stats.InFlightLimit).")
	m.buffer = updown("batchproc.buffer.usage", "By", "Bytes held against the memory limit (Stats.BufferedBytes).")
	m.replayed = counter("batchproc.event.replayed", "{event}", "Events a previous process left in the journal, read back to be sent (Stats.Replayed).")
	m.journaled = counter("batchproc.batch.journaled", "{batch}", "Batches written to the journal before their first send (Stats.Journaled).")
	m.unjournaled = counter("batchproc.batch.unjournaled", "{batch}", "Batches the journal refused, sent from memory only (Stats.Unjournaled).")
	m.unguarded = counter("batchproc.batch.unguarded", "{batch}", "Batches filled without the journal keeping them open, its JournalOpener out of room: a crash of the process may lose them (Stats.Unguarded).")

	var err error
	m.duration, err = meter.Float64Histogram("batchproc.send.duration", metric.WithUnit("s"),
		metric.WithDescription("How long each Sink.Send attempt took."),
		metric.WithExplicitBucketBoundaries(DurationBoundaries...))
	b.Add(err)
	m.batchEvents, err = meter.Int64Histogram("batchproc.batch.events", metric.WithUnit("{event}"),
		metric.WithDescription("Events per batch, recorded at the batch's first send."),
		metric.WithExplicitBucketBoundaries(1, 4, 16, 64, 256, 1024, 4096, 16384))
	b.Add(err)
	m.batchSize, err = meter.Int64Histogram("batchproc.batch.size", metric.WithUnit("By"),
		metric.WithDescription("NDJSON bytes per batch, recorded at the batch's first send."),
		metric.WithExplicitBucketBoundaries(1<<10, 1<<12, 1<<14, 1<<16, 1<<18, 1<<20, 1<<22, 1<<24))
	b.Add(err)
	m.rejected, err = meter.Int64Counter("batchproc.event.rejected", metric.WithUnit("{event}"),
		metric.WithDescription("Add or TryAdd calls refused, by error.type; they sum to Stats.Rejected."))
	b.Add(err)
	m.batchFailed, err = meter.Int64Counter("batchproc.batch.failed", metric.WithUnit("{batch}"),
		metric.WithDescription("Batches (or failed rests of batches) handed to the failure callback, by error.type."))
	b.Add(err)
	m.limitChanges, err = meter.Int64Counter("batchproc.send.limit_changes", metric.WithUnit("{change}"),
		metric.WithDescription("Changes of async dispatch's send limit, by reason."))
	b.Add(err)
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("batchotel: %w", err)
	}

	m.byOutcome = make(map[batchproc.SendOutcome][]metric.RecordOption)
	for _, o := range []batchproc.SendOutcome{batchproc.SendDelivered, batchproc.SendRetrying, batchproc.SendFailed, batchproc.SendAborted} {
		m.byOutcome[o] = []metric.RecordOption{m.with(OutcomeKey.String(string(o)))}
	}
	m.byReject = make(map[string][]metric.AddOption)
	for _, r := range reason.Rejects {
		m.byReject[r] = []metric.AddOption{m.with(ErrorTypeKey.String(errorType(r)))}
	}
	m.byFailure = make(map[string][]metric.AddOption)
	for _, r := range reason.Failures {
		m.byFailure[r] = []metric.AddOption{m.with(ErrorTypeKey.String(r))}
	}
	m.byLimit = make(map[string][]metric.AddOption)

	m.reg, err = meter.RegisterCallback(m.observe, m.added, m.delivered, m.failed, m.batches, m.retries, m.pending, m.inflight, m.limit, m.buffer, m.replayed, m.journaled, m.unjournaled, m.unguarded)
	if err != nil {
		return nil, fmt.Errorf("batchotel: registering the Stats callback: %w", err)
	}
	return m, nil
}

// errorType maps a reason to error.type, whose convention for an
// unclassified error is _OTHER.
func errorType(r string) string {
	if r == reason.Other {
		return "_OTHER"
	}
	return r
}

func (m *Metrics) with(kv ...attribute.KeyValue) metric.MeasurementOption {
	all := append(append([]attribute.KeyValue(nil), m.base...), kv...)
	return metric.WithAttributeSet(attribute.NewSet(all...))
}

// OnNew implements [batchproc.NewHook]: [batchproc.New] binds m to
// the processor it builds, as [Metrics.Observe] does, so calling Observe
// after New is not needed.
func (m *Metrics) OnNew(p *batchproc.Processor) { m.Observe(p) }

// Observe binds m to p, whose Stats the instruments then observe at every
// collection. Call it once, after [batchproc.New] took m in
// [batchproc.WithHooks]; until then only the hook-fed instruments have
// data. Observe panics if m already observes another processor: its
// hook-fed instruments would mix two processors' sends.
func (m *Metrics) Observe(p *batchproc.Processor) {
	if p == nil {
		panic("batchotel: Observe(nil)")
	}
	if !m.p.CompareAndSwap(nil, p) && m.p.Load() != p {
		panic("batchotel: Metrics already observes another processor; use one Metrics per processor")
	}
}

// Close unregisters the callback that observes Stats: the Stats-based
// instruments stop reporting. The hooks keep recording. Close is
// idempotent in effect (a second call returns the meter's answer again).
func (m *Metrics) Close() error {
	return m.reg.Unregister()
}

// observe reports one Stats snapshot, so that the values agree with each
// other (added = delivered + failed + pending) and with Stats exactly.
func (m *Metrics) observe(_ context.Context, o metric.Observer) error {
	p := m.p.Load()
	if p == nil {
		return nil
	}
	s := p.Stats()
	opts := m.observeOpts
	o.ObserveInt64(m.added, clamp(s.Added), opts...)
	o.ObserveInt64(m.delivered, clamp(s.Delivered), opts...)
	o.ObserveInt64(m.failed, clamp(s.Failed), opts...)
	o.ObserveInt64(m.batches, clamp(s.Batches), opts...)
	o.ObserveInt64(m.retries, clamp(s.Retries), opts...)
	o.ObserveInt64(m.pending, clamp(s.Pending), opts...)
	o.ObserveInt64(m.inflight, int64(s.InFlight), opts...)
	o.ObserveInt64(m.limit, int64(s.InFlightLimit), opts...)
	o.ObserveInt64(m.buffer, s.BufferedBytes, opts...)
	o.ObserveInt64(m.replayed, clamp(s.Replayed), opts...)
	o.ObserveInt64(m.journaled, clamp(s.Journaled), opts...)
	o.ObserveInt64(m.unjournaled, clamp(s.Unjournaled), opts...)
	o.ObserveInt64(m.unguarded, clamp(s.Unguarded), opts...)
	return nil
}

var clamp = instr.Clamp

// OnSend implements [batchproc.SendHook]: the attempt's duration by
// outcome, and the batch's size at its first attempt.
func (m *Metrics) OnSend(i batchproc.SendInfo) {
	ctx := context.Background()
	opts, ok := m.byOutcome[i.Outcome]
	if !ok {
		opts = []metric.RecordOption{m.with(OutcomeKey.String(string(i.Outcome)))}
	}
	m.duration.Record(ctx, i.Duration.Seconds(), opts...)
	if i.Attempt == 1 {
		m.batchEvents.Record(ctx, int64(i.Events), m.recordOpts...)
		m.batchSize.Record(ctx, int64(i.Bytes), m.recordOpts...)
	}
}

// OnBatchFailed implements [batchproc.FailureHook].
func (m *Metrics) OnBatchFailed(i batchproc.FailureInfo) {
	m.batchFailed.Add(context.Background(), 1, m.byFailure[reason.Failure(i.Err)]...)
}

// OnReject implements [batchproc.RejectHook].
func (m *Metrics) OnReject(err error) {
	m.rejected.Add(context.Background(), 1, m.byReject[reason.Reject(err)]...)
}

// OnLimitChange implements [batchproc.LimitHook].
func (m *Metrics) OnLimitChange(_, _ int, why string) {
	m.mu.Lock()
	opts, ok := m.byLimit[why]
	if !ok {
		opts = []metric.AddOption{m.with(LimitReasonKey.String(why))}
		m.byLimit[why] = opts
	}
	m.mu.Unlock()
	m.limitChanges.Add(context.Background(), 1, opts...)
}
