// Package spoolprom exposes a [spool.Spool]'s Stats to Prometheus, through
// client_golang, beside the processor's metrics of batchprom:
//
//	c := batchprom.New()
//	sc := spoolprom.New()
//	p, err := batchproc.New(sink, spool.WithSpool(dir), batchproc.WithHooks(c, sc))
//	...
//	prometheus.MustRegister(c, sc)
//
// The Collector is a [batchproc.NewHook]: given to the processor with
// WithHooks, it binds itself to the processor's spool ([spool.Of]). A
// service that opens its spool itself binds it with [Collector.Observe].
// It is a package of its own so that a service without a spool does not
// build the spool package.
//
// # Metrics
//
// Read from one [spool.Stats] snapshot at every scrape; the names start
// with batchproc_spool_ (after the namespace, if any):
//
//	batchproc_spool_bytes                         gauge      Stats.Bytes: the disk budget in use
//	batchproc_spool_batches                       gauge      Stats.Batches: batches not yet acked
//	batchproc_spool_segments                      gauge      Stats.Segments
//	batchproc_spool_batches_in_regions            gauge      Stats.InRegions: batches whose record is their region (SyncNever)
//	batchproc_spool_failed                        gauge      1 once a write or fsync failed (Stats.Err), else 0
//	batchproc_spool_batches_recovered_total       counter    Stats.Recovered: found at Open
//	batchproc_spool_batches_appended_total        counter    Stats.Appended
//	batchproc_spool_batches_acked_total           counter    Stats.Acked
//	batchproc_spool_batches_dropped_total         counter    Stats.Dropped (WithDropOldest)
//	batchproc_spool_batches_replayed_total        counter    Stats.Replayed
//	batchproc_spool_appends_full_total            counter    Stats.Full: Appends refused, back-pressure
//	batchproc_spool_region_appends_total          counter    Stats.RegionAppends: Appends that kept the batch in its region
//	batchproc_spool_recovery_torn_bytes_total     counter    Stats.TornBytes: torn tails trimmed at Open
//	batchproc_spool_recovery_corrupt_files_total  counter    Stats.CorruptFiles
//	batchproc_spool_recovery_lost_batches_total   counter    Stats.LostBatches
//	batchproc_spool_recovery_lost_bytes_total     counter    Stats.LostBytes
//	batchproc_spool_open_batches_recovered_total  counter    Stats.OpenRecovered: open batches a crash left, rebuilt at Open
//	batchproc_spool_open_regions                  gauge      Stats.OpenRegions: region files mapped (WithOpenBatches)
//	batchproc_spool_open_unguarded_total          counter    Stats.OpenUnguarded: batches that found no region free
//	batchproc_spool_open_overflows_total          counter    Stats.OpenOverflows: batches whose ids filled their region
//	batchproc_spool_fsync_duration_seconds        histogram  Stats.FsyncLatency, buckets spool.FsyncBuckets
//
// They satisfy recovered + appended == acked + dropped + batches in every
// scrape, as Stats does; batches_in_regions counts within batches (and
// those batches are not in bytes), region_appends_total within
// batches_appended_total. Alert on batchproc_spool_failed (the spool takes
// no more writes: batches are sent from memory only), on the lost
// counters (data found corrupt at Open), on appends_full_total rising
// (the disk budget is full: Add waits), and on open_unguarded_total or
// open_overflows_total rising: batches are being filled that the spool
// does not keep, which a crash of the process may lose (raise
// spool.WithOpenBatches, or the batch byte limit).
package spoolprom

import (
	"fmt"
	"sync/atomic"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/spool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
)

// Collector is a [prometheus.Collector] of one spool's Stats, and a
// [batchproc.NewHook] that binds it to its processor's spool.
type Collector struct {
	err error // a bad option: Describe reports it, so Register fails
	s   atomic.Pointer[spool.Spool]

	bytes, batches, segments, inRegions, failed  *prometheus.Desc
	recovered, appended, acked, dropped, replays *prometheus.Desc
	full, regionAppends                          *prometheus.Desc
	torn, corrupt, lostBatches, lostBytes        *prometheus.Desc
	openRecovered, regions, unguarded, overflows *prometheus.Desc
	fsync                                        *prometheus.Desc
	bounds                                       []float64 // spool.FsyncBuckets in seconds
}

// An Option configures a [Collector].
type Option func(*config)

type config struct {
	namespace   string
	constLabels prometheus.Labels
}

// WithNamespace puts namespace_ before every metric name, as
// batchprom.WithNamespace does: WithNamespace("myservice") exposes
// myservice_batchproc_spool_bytes. It must match [a-zA-Z_][a-zA-Z0-9_]*.
func WithNamespace(namespace string) Option {
	return func(c *config) { c.namespace = namespace }
}

// WithConstLabels adds labels with fixed values to every metric, to tell
// apart the spools of one service, each with its own Collector.
func WithConstLabels(labels prometheus.Labels) Option {
	return func(c *config) { c.constLabels = labels }
}

// New returns a Collector, bound to no spool yet. A bad option does not
// panic here: Describe reports it, so that Register returns it as an error.
func New(opts ...Option) *Collector {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	c := &Collector{}
	if cfg.namespace != "" && !model.LegacyValidation.IsValidMetricName(cfg.namespace) {
		c.err = fmt.Errorf("spoolprom: WithNamespace(%q): want snake_case, [a-zA-Z_][a-zA-Z0-9_]*", cfg.namespace)
	}
	desc := func(n, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(cfg.namespace, "batchproc_spool", n), help, nil, cfg.constLabels)
	}
	c.bytes = desc("bytes", "Total size of the spool's segment files: the disk budget in use (Stats.Bytes).")
	c.batches = desc("batches", "Batches in the spool, appended or recovered and not acked (Stats.Batches).")
	c.segments = desc("segments", "Segment files (Stats.Segments).")
	c.inRegions = desc("batches_in_regions", "Batches in the spool, within batches, whose record is the memory-mapped region they were filled in, under SyncNever: no segment record, not in bytes (Stats.InRegions).")
	c.failed = desc("failed", "1 once a write or fsync failed and the spool takes no more writes (Stats.Err), else 0.")
	c.recovered = desc("batches_recovered_total", "Batches found in the spool at Open, not acked (Stats.Recovered).")
	c.appended = desc("batches_appended_total", "Batches appended (Stats.Appended).")
	c.acked = desc("batches_acked_total", "Batches acked: delivered, or failed permanently (Stats.Acked).")
	c.dropped = desc("batches_dropped_total", "Batches dropped to make room, WithDropOldest (Stats.Dropped).")
	c.replays = desc("batches_replayed_total", "Batches replayed from the spool (Stats.Replayed).")
	c.full = desc("appends_full_total", "Appends refused because the disk budget was full (Stats.Full).")
	c.regionAppends = desc("region_appends_total", "Appends, within batches_appended_total, that kept the batch in its region rather than writing a segment record (Stats.RegionAppends).")
	c.torn = desc("recovery_torn_bytes_total", "Bytes of torn tails trimmed at Open (Stats.TornBytes).")
	c.corrupt = desc("recovery_corrupt_files_total", "Segment files found corrupt at Open, and region files whose batch did not decode, set aside (Stats.CorruptFiles).")
	c.lostBatches = desc("recovery_lost_batches_total", "Batches in the unreadable parts of corrupt files, a region's one batch included (Stats.LostBatches).")
	c.lostBytes = desc("recovery_lost_bytes_total", "Bytes of the unreadable parts of corrupt files (Stats.LostBytes).")
	c.openRecovered = desc("open_batches_recovered_total", "Batches rebuilt at Open from the regions of batches being filled when the last process died, included in batches_recovered_total (Stats.OpenRecovered).")
	c.regions = desc("open_regions", "Region files mapped to keep batches being filled, WithOpenBatches (Stats.OpenRegions).")
	c.unguarded = desc("open_unguarded_total", "Batches that found no region free, not kept until cut and appended: a crash of the process may lose them (Stats.OpenUnguarded).")
	c.overflows = desc("open_overflows_total", "Batches whose ids filled their region, their later events not kept: a crash of the process may lose them (Stats.OpenOverflows).")
	c.fsync = desc("fsync_duration_seconds", "How long each fsync of a segment file took (Stats.FsyncLatency).")
	for _, b := range spool.FsyncBuckets {
		c.bounds = append(c.bounds, b.Seconds())
	}
	return c
}

// OnNew implements [batchproc.NewHook]: it binds c to the spool of the
// processor [batchproc.New] built, if it has one ([spool.Of]).
func (c *Collector) OnNew(p *batchproc.Processor) {
	if s := spool.Of(p); s != nil {
		c.Observe(s)
	}
}

// Observe binds c to s, whose Stats it then reads at every scrape. Until
// then a scrape has nothing from c. It panics if c already observes
// another spool.
func (c *Collector) Observe(s *spool.Spool) {
	if s == nil {
		panic("spoolprom: Observe(nil)")
	}
	if !c.s.CompareAndSwap(nil, s) && c.s.Load() != s {
		panic("spoolprom: Collector already observes another spool; use one Collector per spool")
	}
}

func (c *Collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{c.bytes, c.batches, c.segments, c.inRegions, c.failed, c.recovered, c.appended, c.acked, c.dropped,
		c.replays, c.full, c.regionAppends, c.torn, c.corrupt, c.lostBatches, c.lostBytes, c.openRecovered, c.regions, c.unguarded, c.overflows, c.fsync}
}

// Describe implements [prometheus.Collector].
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	if c.err != nil {
		ch <- prometheus.NewInvalidDesc(c.err)
		return
	}
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements [prometheus.Collector], from one Stats snapshot.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s.Load()
	if c.err != nil || s == nil {
		return
	}
	st := s.Stats()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(c.bytes, float64(st.Bytes))
	gauge(c.batches, float64(st.Batches))
	gauge(c.segments, float64(st.Segments))
	gauge(c.inRegions, float64(st.InRegions))
	failed := 0.0
	if st.Err != nil {
		failed = 1
	}
	gauge(c.failed, failed)
	counter(c.recovered, float64(st.Recovered))
	counter(c.appended, float64(st.Appended))
	counter(c.acked, float64(st.Acked))
	counter(c.dropped, float64(st.Dropped))
	counter(c.replays, float64(st.Replayed))
	counter(c.full, float64(st.Full))
	counter(c.regionAppends, float64(st.RegionAppends))
	counter(c.torn, float64(st.TornBytes))
	counter(c.corrupt, float64(st.CorruptFiles))
	counter(c.lostBatches, float64(st.LostBatches))
	counter(c.lostBytes, float64(st.LostBytes))
	counter(c.openRecovered, float64(st.OpenRecovered))
	gauge(c.regions, float64(st.OpenRegions))
	counter(c.unguarded, float64(st.OpenUnguarded))
	counter(c.overflows, float64(st.OpenOverflows))
	h := st.FsyncLatency
	buckets := make(map[float64]uint64, len(c.bounds))
	var cum uint64
	for i, bound := range c.bounds {
		cum += h.Counts[i]
		buckets[bound] = cum
	}
	ch <- prometheus.MustNewConstHistogram(c.fsync, h.Count, h.Sum.Seconds(), buckets)
}
