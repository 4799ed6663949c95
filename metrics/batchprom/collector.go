package batchprom

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/metrics/internal/reason"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
)

// Collector is a [batchproc.Hook] and a [prometheus.Collector]. Pass it to
// [batchproc.WithHooks], bind it to the processor with [Collector.Observe],
// and register it. One Collector serves one processor.
type Collector struct {
	err error // a bad option: Describe reports it, so Register fails
	p   atomic.Pointer[batchproc.Processor]

	// Read from Stats at scrape time.
	added, delivered, failed, batches, retries  *prometheus.Desc
	pending, inFlight, inFlightLimit, buffered  *prometheus.Desc
	replayed, journaled, unjournaled, unguarded *prometheus.Desc // with a journal

	// Fed by the hooks.
	rejected     *prometheus.CounterVec
	failedByWhy  *prometheus.CounterVec
	limitChanges *prometheus.CounterVec
	sendDuration *prometheus.HistogramVec
	batchEvents  prometheus.Histogram
	batchBytes   prometheus.Histogram
	durationBy   map[batchproc.SendOutcome]prometheus.Observer
	rejectedBy   map[string]prometheus.Counter
	failedBy     map[string]prometheus.Counter
}

// An Option configures a [Collector].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	namespace       string
	constLabels     prometheus.Labels
	durationBuckets []float64
	eventBuckets    []float64
	byteBuckets     []float64
}

// WithNamespace puts namespace_ before every metric name:
// WithNamespace("myservice") exposes myservice_batchproc_events_added_total.
// The namespace must match [a-zA-Z_][a-zA-Z0-9_]*. The default is no
// namespace (batchproc_events_added_total).
func WithNamespace(namespace string) Option {
	return optionFunc(func(c *config) { c.namespace = namespace })
}

// WithConstLabels adds labels with fixed values to every metric, to tell
// apart the processors of one service (say {"processor": "orders"}), each
// with its own Collector. The default is none.
func WithConstLabels(labels prometheus.Labels) Option {
	return optionFunc(func(c *config) { c.constLabels = labels })
}

// WithSendDurationBuckets sets the upper bounds, in seconds and
// increasing, of the send_duration_seconds histogram's buckets. The
// default is [prometheus.DefBuckets] (5 ms to 10 s).
func WithSendDurationBuckets(bounds ...float64) Option {
	return optionFunc(func(c *config) { c.durationBuckets = bounds })
}

// WithBatchSizeBuckets sets the upper bounds of the batch_events (events)
// and batch_bytes (bytes) histograms' buckets, each increasing. The
// defaults are 1, 4, 16, ..., 16384 events and 1 KiB, 4 KiB, ..., 16 MiB,
// which cover batchproc's default limits (1,000 events, 1 MiB).
func WithBatchSizeBuckets(events, bytes []float64) Option {
	return optionFunc(func(c *config) { c.eventBuckets, c.byteBuckets = events, bytes })
}

// New returns a Collector. A bad option (buckets not increasing, say)
// does not panic here: the Collector's Describe reports it, so that
// [prometheus.Registerer.Register] returns it as an error (and
// MustRegister panics with it).
func New(opts ...Option) *Collector {
	cfg := config{
		durationBuckets: prometheus.DefBuckets,
		eventBuckets:    prometheus.ExponentialBuckets(1, 4, 8),
		byteBuckets:     prometheus.ExponentialBuckets(1024, 4, 8),
	}
	for _, o := range opts {
		o.apply(&cfg)
	}
	c := &Collector{}
	for name, b := range map[string][]float64{"send duration": cfg.durationBuckets, "batch events": cfg.eventBuckets, "batch bytes": cfg.byteBuckets} {
		if len(b) == 0 || !slices.IsSorted(b) || len(slices.Compact(slices.Clone(b))) != len(b) {
			c.err = errors.Join(c.err, fmt.Errorf("batchprom: %s buckets %v: want at least one bound, strictly increasing", name, b))
		}
	}
	if cfg.namespace != "" && !model.LegacyValidation.IsValidMetricName(cfg.namespace) {
		// client_golang accepts any UTF-8 name now; the naming
		// conventions, and scrapers still on the classic format, do not.
		c.err = errors.Join(c.err, fmt.Errorf("batchprom: WithNamespace(%q): want snake_case, [a-zA-Z_][a-zA-Z0-9_]*", cfg.namespace))
	}
	if c.err != nil {
		cfg.durationBuckets, cfg.eventBuckets, cfg.byteBuckets = nil, nil, nil // the defaults, so that the vectors below can be built
	}

	name := func(n string) string { return prometheus.BuildFQName(cfg.namespace, "batchproc", n) }
	desc := func(n, help string) *prometheus.Desc {
		return prometheus.NewDesc(name(n), help, nil, cfg.constLabels)
	}
	c.added = desc("events_added_total", "Events accepted by Add or TryAdd (Stats.Added).")
	c.delivered = desc("events_delivered_total", "Events in batches the sink accepted (Stats.Delivered).")
	c.failed = desc("events_failed_total", "Events handed to the failure callback (Stats.Failed).")
	c.batches = desc("batches_delivered_total", "Batches the sink accepted (Stats.Batches).")
	c.retries = desc("send_retries_total", "Sends that were retries of a failed send (Stats.Retries).")
	c.pending = desc("events_pending", "Events buffered, queued or being sent (Stats.Pending).")
	c.inFlight = desc("sends_in_flight", "Sink.Send calls under way (Stats.InFlight).")
	c.inFlightLimit = desc("sends_in_flight_limit", "Sends allowed at once now by async dispatch; 0 in the other modes (Stats.InFlightLimit).")
	c.buffered = desc("buffered_bytes", "Bytes held against the memory limit (Stats.BufferedBytes).")
	c.replayed = desc("events_replayed_total", "Events a previous process left in the journal, read back to be sent (Stats.Replayed).")
	c.journaled = desc("batches_journaled_total", "Batches written to the journal before their first send (Stats.Journaled).")
	c.unjournaled = desc("batches_unjournaled_total", "Batches the journal refused, sent from memory only (Stats.Unjournaled).")
	c.unguarded = desc("batches_unguarded_total", "Batches filled without the journal keeping them open, its JournalOpener out of room: a crash of the process may lose them (Stats.Unguarded).")

	c.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("events_rejected_total"), ConstLabels: cfg.constLabels,
		Help: "Add or TryAdd calls refused, by reason: full, closed, too_large, invalid, canceled, deadline_exceeded, other. They sum to Stats.Rejected.",
	}, []string{"reason"})
	c.failedByWhy = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("batches_failed_total"), ConstLabels: cfg.constLabels,
		Help: "Batches (or failed rests of batches) handed to the failure callback, by reason: permanent, retries_exhausted, shutdown, dropped.",
	}, []string{"reason"})
	c.limitChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("send_limit_changes_total"), ConstLabels: cfg.constLabels,
		Help: "Changes of async dispatch's send limit, by reason.",
	}, []string{"reason"})
	c.sendDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: name("send_duration_seconds"), ConstLabels: cfg.constLabels, Buckets: cfg.durationBuckets,
		Help: "How long each Sink.Send attempt took, by outcome: delivered, retrying, failed, aborted.",
	}, []string{"outcome"})
	c.batchEvents = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: name("batch_events"), ConstLabels: cfg.constLabels, Buckets: cfg.eventBuckets,
		Help: "Events per batch, observed at the batch's first send.",
	})
	c.batchBytes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: name("batch_bytes"), ConstLabels: cfg.constLabels, Buckets: cfg.byteBuckets,
		Help: "NDJSON bytes per batch, observed at the batch's first send.",
	})

	// Every label value known in advance gets its series now, at zero, so
	// that rate() and absent() work before the first event of each kind;
	// the hooks then look their child up without hashing labels.
	c.durationBy = make(map[batchproc.SendOutcome]prometheus.Observer)
	for _, o := range []batchproc.SendOutcome{batchproc.SendDelivered, batchproc.SendRetrying, batchproc.SendFailed, batchproc.SendAborted} {
		c.durationBy[o] = c.sendDuration.WithLabelValues(string(o))
	}
	c.rejectedBy = make(map[string]prometheus.Counter)
	for _, r := range reason.Rejects {
		c.rejectedBy[r] = c.rejected.WithLabelValues(r)
	}
	c.failedBy = make(map[string]prometheus.Counter)
	for _, r := range reason.Failures {
		c.failedBy[r] = c.failedByWhy.WithLabelValues(r)
	}
	return c
}

// OnNew implements [batchproc.NewHook]: [batchproc.New] binds c to
// the processor it builds, as [Collector.Observe] does, so calling Observe
// after New is not needed.
func (c *Collector) OnNew(p *batchproc.Processor) { c.Observe(p) }

// Observe binds c to p, whose Stats it then reads at every scrape. Call it
// once, after [batchproc.New] took c in [batchproc.WithHooks]; until then a
// scrape has only the hook-fed metrics. Observe panics if c already
// observes another processor: a Collector's hook-fed metrics would mix
// two processors' sends.
func (c *Collector) Observe(p *batchproc.Processor) {
	if p == nil {
		panic("batchprom: Observe(nil)")
	}
	if !c.p.CompareAndSwap(nil, p) && c.p.Load() != p {
		panic("batchprom: Collector already observes another processor; use one Collector per processor")
	}
}

// Describe implements [prometheus.Collector].
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	if c.err != nil {
		ch <- prometheus.NewInvalidDesc(c.err)
		return
	}
	for _, d := range []*prometheus.Desc{c.added, c.delivered, c.failed, c.batches, c.retries, c.pending, c.inFlight, c.inFlightLimit, c.buffered, c.replayed, c.journaled, c.unjournaled, c.unguarded} {
		ch <- d
	}
	c.rejected.Describe(ch)
	c.failedByWhy.Describe(ch)
	c.limitChanges.Describe(ch)
	c.sendDuration.Describe(ch)
	c.batchEvents.Describe(ch)
	c.batchBytes.Describe(ch)
}

// Collect implements [prometheus.Collector]. The Stats-based metrics come
// from one [batchproc.Processor.Stats] snapshot, so they agree with each
// other (added = delivered + failed + pending) and with Stats exactly.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.err != nil {
		return
	}
	if p := c.p.Load(); p != nil {
		s := p.Stats()
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
		}
		counter(c.added, s.Added)
		counter(c.delivered, s.Delivered)
		counter(c.failed, s.Failed)
		counter(c.batches, s.Batches)
		counter(c.retries, s.Retries)
		gauge(c.pending, float64(s.Pending))
		gauge(c.inFlight, float64(s.InFlight))
		gauge(c.inFlightLimit, float64(s.InFlightLimit))
		gauge(c.buffered, float64(s.BufferedBytes))
		counter(c.replayed, s.Replayed)
		counter(c.journaled, s.Journaled)
		counter(c.unjournaled, s.Unjournaled)
		counter(c.unguarded, s.Unguarded)
	}
	c.rejected.Collect(ch)
	c.failedByWhy.Collect(ch)
	c.limitChanges.Collect(ch)
	c.sendDuration.Collect(ch)
	c.batchEvents.Collect(ch)
	c.batchBytes.Collect(ch)
}

// OnSend implements [batchproc.SendHook]: the send duration by outcome,
// and the batch's size at its first attempt.
func (c *Collector) OnSend(i batchproc.SendInfo) {
	if o, ok := c.durationBy[i.Outcome]; ok {
		o.Observe(i.Duration.Seconds())
	} else {
		c.sendDuration.WithLabelValues(string(i.Outcome)).Observe(i.Duration.Seconds())
	}
	if i.Attempt == 1 {
		c.batchEvents.Observe(float64(i.Events))
		c.batchBytes.Observe(float64(i.Bytes))
	}
}

// OnBatchFailed implements [batchproc.FailureHook].
func (c *Collector) OnBatchFailed(i batchproc.FailureInfo) {
	c.failedBy[reason.Failure(i.Err)].Inc()
}

// OnReject implements [batchproc.RejectHook].
func (c *Collector) OnReject(err error) {
	c.rejectedBy[reason.Reject(err)].Inc()
}

// OnLimitChange implements [batchproc.LimitHook].
func (c *Collector) OnLimitChange(_, _ int, why string) {
	c.limitChanges.WithLabelValues(why).Inc()
}
