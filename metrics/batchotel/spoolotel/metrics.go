// Package spoolotel records a [spool.Spool]'s Stats with an OpenTelemetry
// meter, beside the processor's metrics of batchotel:
//
//	m, err := batchotel.New()
//	sm, err := spoolotel.New()
//	p, err := batchproc.New(sink, spool.WithSpool(dir), batchproc.WithHooks(m, sm))
//
// Metrics is a [batchproc.NewHook]: given to the processor with WithHooks,
// it binds itself to the processor's spool ([spool.Of]). A service that
// opens its spool itself binds it with [Metrics.Observe]. It is a package
// of its own so that a service without a spool does not build the spool
// package.
//
// # Instruments
//
// All asynchronous, observed from one [spool.Stats] snapshot at every
// collection:
//
//	batchproc.spool.usage                 updown   By        Stats.Bytes: the disk budget in use
//	batchproc.spool.batches               updown   {batch}   Stats.Batches: batches not yet acked
//	batchproc.spool.segments              updown   {file}    Stats.Segments
//	batchproc.spool.batch.in_regions      updown   {batch}   Stats.InRegions: batches whose record is their region (SyncNever)
//	batchproc.spool.failed                gauge    1         1 once a write or fsync failed (Stats.Err), else 0
//	batchproc.spool.batch.recovered       counter  {batch}   Stats.Recovered: found at Open
//	batchproc.spool.batch.appended        counter  {batch}   Stats.Appended
//	batchproc.spool.batch.acked           counter  {batch}   Stats.Acked
//	batchproc.spool.batch.dropped         counter  {batch}   Stats.Dropped (WithDropOldest)
//	batchproc.spool.batch.replayed        counter  {batch}   Stats.Replayed
//	batchproc.spool.append.full           counter  {append}  Stats.Full: Appends refused, back-pressure
//	batchproc.spool.batch.region_appended counter  {batch}   Stats.RegionAppends: Appends that kept the batch in its region
//	batchproc.spool.recovery.torn         counter  By        Stats.TornBytes: torn tails trimmed at Open
//	batchproc.spool.recovery.corrupt      counter  {file}    Stats.CorruptFiles
//	batchproc.spool.recovery.lost         counter  By        Stats.LostBytes
//	batchproc.spool.recovery.lost_batches counter  {batch}   Stats.LostBatches
//	batchproc.spool.open_batch.recovered  counter  {batch}   Stats.OpenRecovered: open batches a crash left, rebuilt at Open
//	batchproc.spool.regions               updown   {file}    Stats.OpenRegions: region files mapped (WithOpenBatches)
//	batchproc.spool.open_batch.unguarded  counter  {batch}   Stats.OpenUnguarded: batches that found no region free
//	batchproc.spool.open_batch.overflowed counter  {batch}   Stats.OpenOverflows: batches whose ids filled their region
//	batchproc.spool.fsync.count           counter  {fsync}   Stats.Fsyncs
//	batchproc.spool.fsync.duration        counter  s         Stats.FsyncLatency.Sum: fsync time in total
//	batchproc.spool.fsync.max             gauge    s         Stats.FsyncLatency.Max since Open
//
// batchproc.spool.batch.in_regions counts within batchproc.spool.batches
// (and those batches are not in batchproc.spool.usage), and
// batchproc.spool.batch.region_appended within batchproc.spool.batch.appended.
//
// OpenTelemetry's API has no asynchronous histogram, so the fsync latency
// is exported as a count and a total (their rates' ratio is the mean
// latency) and the maximum; spoolprom exports the whole distribution
// (buckets [spool.FsyncBuckets]).
//
// batchproc.spool.open_batch.unguarded and .overflowed rising mean batches
// being filled that the spool does not keep, which a crash of the process
// may lose: raise spool.WithOpenBatches, or the batch byte limit.
package spoolotel

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/metrics/batchotel/internal/instr"
	"github.com/batchproc/batchproc/spool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of the meter Metrics uses.
const ScopeName = "github.com/batchproc/batchproc/metrics/batchotel/spoolotel"

// Metrics observes one spool's Stats, and is a [batchproc.NewHook] that
// binds it to its processor's spool.
type Metrics struct {
	s    atomic.Pointer[spool.Spool]
	reg  metric.Registration
	opts []metric.ObserveOption

	usage, batches, segments, inRegions, regions   metric.Int64ObservableUpDownCounter
	failed                                         metric.Int64ObservableGauge
	recovered, appended, acked, dropped, replayed  metric.Int64ObservableCounter
	full, torn, corrupt, lost, lostBatches, fsyncs metric.Int64ObservableCounter
	regionAppended                                 metric.Int64ObservableCounter
	openRecovered, unguarded, overflowed           metric.Int64ObservableCounter
	fsyncTime                                      metric.Float64ObservableCounter
	fsyncMax                                       metric.Float64ObservableGauge
}

// An Option configures [New].
type Option func(*config)

type config struct {
	provider metric.MeterProvider
	attrs    []attribute.KeyValue
}

// WithMeterProvider sets the provider of the meter. The default is the
// global one, [otel.GetMeterProvider].
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.provider = mp }
}

// WithAttributes adds attributes to every measurement, to tell apart the
// spools of one service, each with its own Metrics.
func WithAttributes(kv ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, kv...) }
}

// New creates the instruments and registers the callback that observes
// the bound spool's Stats. It returns an error if an attribute is invalid
// or the meter refuses an instrument or the callback. Close unregisters
// the callback.
func New(opts ...Option) (*Metrics, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.provider == nil {
		cfg.provider = otel.GetMeterProvider()
	}
	for _, kv := range cfg.attrs {
		if !kv.Valid() {
			return nil, fmt.Errorf("spoolotel: WithAttributes: invalid attribute %q", kv.Key)
		}
	}
	meter := cfg.provider.Meter(ScopeName)
	m := &Metrics{opts: []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(cfg.attrs...))}}
	b := &instr.Builder{Meter: meter}
	counter, updown := b.Counter, b.UpDown
	m.usage = updown("batchproc.spool.usage", "By", "Total size of the spool's segment files: the disk budget in use (Stats.Bytes).")
	m.batches = updown("batchproc.spool.batches", "{batch}", "Batches in the spool, appended or recovered and not acked (Stats.Batches).")
	m.segments = updown("batchproc.spool.segments", "{file}", "Segment files (Stats.Segments).")
	m.inRegions = updown("batchproc.spool.batch.in_regions", "{batch}", "Batches in the spool, within batchproc.spool.batches, whose record is the memory-mapped region they were filled in, under SyncNever: no segment record, not in batchproc.spool.usage (Stats.InRegions).")
	m.recovered = counter("batchproc.spool.batch.recovered", "{batch}", "Batches found in the spool at Open, not acked (Stats.Recovered).")
	m.appended = counter("batchproc.spool.batch.appended", "{batch}", "Batches appended (Stats.Appended).")
	m.acked = counter("batchproc.spool.batch.acked", "{batch}", "Batches acked: delivered, or failed permanently (Stats.Acked).")
	m.dropped = counter("batchproc.spool.batch.dropped", "{batch}", "Batches dropped to make room, WithDropOldest (Stats.Dropped).")
	m.replayed = counter("batchproc.spool.batch.replayed", "{batch}", "Batches replayed from the spool (Stats.Replayed).")
	m.full = counter("batchproc.spool.append.full", "{append}", "Appends refused because the disk budget was full (Stats.Full).")
	m.regionAppended = counter("batchproc.spool.batch.region_appended", "{batch}", "Batches appended, within batchproc.spool.batch.appended, that the spool kept in their region rather than writing a segment record (Stats.RegionAppends).")
	m.torn = counter("batchproc.spool.recovery.torn", "By", "Bytes of torn tails trimmed at Open (Stats.TornBytes).")
	m.corrupt = counter("batchproc.spool.recovery.corrupt", "{file}", "Segment files found corrupt at Open, and region files whose batch did not decode, set aside (Stats.CorruptFiles).")
	m.lost = counter("batchproc.spool.recovery.lost", "By", "Bytes of the unreadable parts of corrupt files (Stats.LostBytes).")
	m.lostBatches = counter("batchproc.spool.recovery.lost_batches", "{batch}", "Batches in the unreadable parts of corrupt files, a region's one batch included (Stats.LostBatches).")
	m.openRecovered = counter("batchproc.spool.open_batch.recovered", "{batch}", "Batches rebuilt at Open from the regions of batches being filled when the last process died, included in batchproc.spool.batch.recovered (Stats.OpenRecovered).")
	m.regions = updown("batchproc.spool.regions", "{file}", "Region files mapped to keep batches being filled, WithOpenBatches (Stats.OpenRegions).")
	m.unguarded = counter("batchproc.spool.open_batch.unguarded", "{batch}", "Batches that found no region free, not kept until cut and appended: a crash of the process may lose them (Stats.OpenUnguarded).")
	m.overflowed = counter("batchproc.spool.open_batch.overflowed", "{batch}", "Batches whose ids filled their region, their later events not kept: a crash of the process may lose them (Stats.OpenOverflows).")
	m.fsyncs = counter("batchproc.spool.fsync.count", "{fsync}", "Fsyncs of segment files (Stats.Fsyncs).")
	var err error
	m.failed, err = meter.Int64ObservableGauge("batchproc.spool.failed", metric.WithUnit("1"),
		metric.WithDescription("1 once a write or fsync failed and the spool takes no more writes (Stats.Err), else 0."))
	b.Add(err)
	m.fsyncTime, err = meter.Float64ObservableCounter("batchproc.spool.fsync.duration", metric.WithUnit("s"),
		metric.WithDescription("Time spent in fsyncs of segment files, in total (Stats.FsyncLatency.Sum)."))
	b.Add(err)
	m.fsyncMax, err = meter.Float64ObservableGauge("batchproc.spool.fsync.max", metric.WithUnit("s"),
		metric.WithDescription("The longest fsync since Open (Stats.FsyncLatency.Max)."))
	b.Add(err)
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("spoolotel: %w", err)
	}
	m.reg, err = meter.RegisterCallback(m.observe, m.usage, m.batches, m.segments, m.inRegions, m.failed, m.recovered, m.appended,
		m.acked, m.dropped, m.replayed, m.full, m.regionAppended, m.torn, m.corrupt, m.lost, m.lostBatches, m.openRecovered, m.regions, m.unguarded, m.overflowed,
		m.fsyncs, m.fsyncTime, m.fsyncMax)
	if err != nil {
		return nil, fmt.Errorf("spoolotel: registering the Stats callback: %w", err)
	}
	return m, nil
}

// OnNew implements [batchproc.NewHook]: it binds m to the spool of the
// processor [batchproc.New] built, if it has one ([spool.Of]).
func (m *Metrics) OnNew(p *batchproc.Processor) {
	if s := spool.Of(p); s != nil {
		m.Observe(s)
	}
}

// Observe binds m to s, whose Stats the instruments then observe at every
// collection; until then they report nothing. It panics if m already
// observes another spool.
func (m *Metrics) Observe(s *spool.Spool) {
	if s == nil {
		panic("spoolotel: Observe(nil)")
	}
	if !m.s.CompareAndSwap(nil, s) && m.s.Load() != s {
		panic("spoolotel: Metrics already observes another spool; use one Metrics per spool")
	}
}

// Close unregisters the callback: the instruments stop reporting.
func (m *Metrics) Close() error { return m.reg.Unregister() }

func (m *Metrics) observe(_ context.Context, o metric.Observer) error {
	s := m.s.Load()
	if s == nil {
		return nil
	}
	st := s.Stats()
	opts := m.opts
	o.ObserveInt64(m.usage, st.Bytes, opts...)
	o.ObserveInt64(m.batches, int64(st.Batches), opts...)
	o.ObserveInt64(m.segments, int64(st.Segments), opts...)
	o.ObserveInt64(m.inRegions, int64(st.InRegions), opts...)
	failed := int64(0)
	if st.Err != nil {
		failed = 1
	}
	o.ObserveInt64(m.failed, failed, opts...)
	o.ObserveInt64(m.recovered, clamp(st.Recovered), opts...)
	o.ObserveInt64(m.appended, clamp(st.Appended), opts...)
	o.ObserveInt64(m.acked, clamp(st.Acked), opts...)
	o.ObserveInt64(m.dropped, clamp(st.Dropped), opts...)
	o.ObserveInt64(m.replayed, clamp(st.Replayed), opts...)
	o.ObserveInt64(m.full, clamp(st.Full), opts...)
	o.ObserveInt64(m.regionAppended, clamp(st.RegionAppends), opts...)
	o.ObserveInt64(m.torn, st.TornBytes, opts...)
	o.ObserveInt64(m.corrupt, int64(st.CorruptFiles), opts...)
	o.ObserveInt64(m.lost, st.LostBytes, opts...)
	o.ObserveInt64(m.lostBatches, clamp(st.LostBatches), opts...)
	o.ObserveInt64(m.openRecovered, clamp(st.OpenRecovered), opts...)
	o.ObserveInt64(m.regions, int64(st.OpenRegions), opts...)
	o.ObserveInt64(m.unguarded, clamp(st.OpenUnguarded), opts...)
	o.ObserveInt64(m.overflowed, clamp(st.OpenOverflows), opts...)
	o.ObserveInt64(m.fsyncs, clamp(st.Fsyncs), opts...)
	o.ObserveFloat64(m.fsyncTime, st.FsyncLatency.Sum.Seconds(), opts...)
	o.ObserveFloat64(m.fsyncMax, st.FsyncLatency.Max.Seconds(), opts...)
	return nil
}

var clamp = instr.Clamp
