package batchotel_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/metrics/batchotel"
	"github.com/batchproc/batchproc/metrics/internal/metricstest"
	"github.com/batchproc/batchproc/spool"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
)

// newMetrics returns a Metrics on a provider whose reader the test
// collects from.
func newMetrics(t testing.TB, opts ...batchotel.Option) (*batchotel.Metrics, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := batchotel.New(append([]batchotel.Option{batchotel.WithMeterProvider(mp)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m, reader
}

// collect returns the batchotel scope's metrics by name.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != batchotel.ScopeName {
			t.Errorf("scope %q, want %q", sm.Scope.Name, batchotel.ScopeName)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// statsMetrics is what the asynchronous instruments must report for s.
func statsMetrics(s batchproc.Stats, attrs ...attribute.KeyValue) []metricdata.Metrics {
	set := attribute.NewSet(attrs...)
	sum := func(name, unit, desc string, v int64, monotonic bool) metricdata.Metrics {
		return metricdata.Metrics{Name: name, Unit: unit, Description: desc, Data: metricdata.Sum[int64]{
			Temporality: metricdata.CumulativeTemporality, IsMonotonic: monotonic,
			DataPoints: []metricdata.DataPoint[int64]{{Attributes: set, Value: v}},
		}}
	}
	return []metricdata.Metrics{
		sum("batchproc.event.added", "{event}", "Events accepted by Add or TryAdd (Stats.Added).", int64(s.Added), true),
		sum("batchproc.event.delivered", "{event}", "Events in batches the sink accepted (Stats.Delivered).", int64(s.Delivered), true),
		sum("batchproc.event.failed", "{event}", "Events handed to the failure callback (Stats.Failed).", int64(s.Failed), true),
		sum("batchproc.batch.delivered", "{batch}", "Batches the sink accepted (Stats.Batches).", int64(s.Batches), true),
		sum("batchproc.send.retried", "{send}", "Sends that were retries of a failed send (Stats.Retries).", int64(s.Retries), true),
		sum("batchproc.event.pending", "{event}", "Events buffered, queued or being sent (Stats.Pending).", int64(s.Pending), false),
		sum("batchproc.send.inflight", "{send}", "Sink.Send calls under way (Stats.InFlight).", int64(s.InFlight), false),
		sum("batchproc.send.limit", "{send}", "Sends allowed at once now by async dispatch; 0 in the other modes (Stats.InFlightLimit).", int64(s.InFlightLimit), false),
		sum("batchproc.buffer.usage", "By", "Bytes held against the memory limit (Stats.BufferedBytes).", s.BufferedBytes, false),
		sum("batchproc.event.replayed", "{event}", "Events a previous process left in the journal, read back to be sent (Stats.Replayed).", int64(s.Replayed), true),
		sum("batchproc.batch.journaled", "{batch}", "Batches written to the journal before their first send (Stats.Journaled).", int64(s.Journaled), true),
		sum("batchproc.batch.unjournaled", "{batch}", "Batches the journal refused, sent from memory only (Stats.Unjournaled).", int64(s.Unjournaled), true),
		sum("batchproc.batch.unguarded", "{batch}", "Batches filled without the journal keeping them open, its JournalOpener out of room: a crash of the process may lose them (Stats.Unguarded).", int64(s.Unguarded), true),
	}
}

func checkStatsMetrics(t *testing.T, got map[string]metricdata.Metrics, s batchproc.Stats, attrs ...attribute.KeyValue) {
	t.Helper()
	for _, want := range statsMetrics(s, attrs...) {
		g, ok := got[want.Name]
		if !ok {
			t.Errorf("%s: not reported", want.Name)
			continue
		}
		metricdatatest.AssertEqual(t, want, g, metricdatatest.IgnoreTimestamp())
	}
}

// counts returns a counter's values by the value of attribute k.
func counts(t *testing.T, m metricdata.Metrics, k attribute.Key) map[string]int64 {
	t.Helper()
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s: %T, want an int64 sum", m.Name, m.Data)
	}
	out := map[string]int64{}
	for _, dp := range sum.DataPoints {
		v, _ := dp.Attributes.Value(k)
		out[v.AsString()] += dp.Value
	}
	return out
}

func total(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

// buckets returns bucket counts for bounds with n values in bucket i.
func buckets(bounds []float64, n uint64, i int) []uint64 {
	c := make([]uint64, len(bounds)+1)
	c[i] = n
	return c
}

func TestMetricsMatchStats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, reader := newMetrics(t)
		p := metricstest.Basic(t, m, m.Observe)
		s := p.Stats()
		want := metricstest.BasicStats
		if got := s; func() bool { got.InFlightLimit = 0; return got != want }() {
			t.Fatalf("Stats after the scenario: %+v, want %+v", s, want)
		}
		got := collect(t, reader)
		checkStatsMetrics(t, got, s)

		// The first attempt of e0,e1 took SlowSend (0.05 s, the bucket
		// (0.025, 0.05]) and is retried; the others took no time on the
		// bubble's clock.
		b := batchotel.DurationBoundaries
		point := func(outcome string, v float64, bucket int) metricdata.HistogramDataPoint[float64] {
			return metricdata.HistogramDataPoint[float64]{
				Attributes: attribute.NewSet(batchotel.OutcomeKey.String(outcome)),
				Count:      1, Sum: v, Bounds: b, BucketCounts: buckets(b, 1, bucket),
				Min: metricdata.NewExtrema(v), Max: metricdata.NewExtrema(v),
			}
		}
		metricdatatest.AssertEqual(t, metricdata.Metrics{
			Name: "batchproc.send.duration", Unit: "s", Description: "How long each Sink.Send attempt took.",
			Data: metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality, DataPoints: []metricdata.HistogramDataPoint[float64]{
				point("retrying", metricstest.SlowSend.Seconds(), slices.Index(b, 0.05)),
				point("delivered", 0, 0),
				point("failed", 0, 0),
			}},
		}, got["batchproc.send.duration"], metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars())

		// Two batches, each 2 events of 8 bytes, seen at their first send.
		sizes := func(name, unit, desc string, v int64, bounds []float64, bucket int) metricdata.Metrics {
			return metricdata.Metrics{Name: name, Unit: unit, Description: desc, Data: metricdata.Histogram[int64]{
				Temporality: metricdata.CumulativeTemporality,
				DataPoints: []metricdata.HistogramDataPoint[int64]{{
					Attributes: attribute.NewSet(), Count: 2, Sum: 2 * v, Bounds: bounds, BucketCounts: buckets(bounds, 2, bucket),
					Min: metricdata.NewExtrema(v), Max: metricdata.NewExtrema(v),
				}},
			}}
		}
		metricdatatest.AssertEqual(t, sizes("batchproc.batch.events", "{event}", "Events per batch, recorded at the batch's first send.",
			2, []float64{1, 4, 16, 64, 256, 1024, 4096, 16384}, 1), got["batchproc.batch.events"], metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars())
		metricdatatest.AssertEqual(t, sizes("batchproc.batch.size", "By", "NDJSON bytes per batch, recorded at the batch's first send.",
			16, []float64{1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24}, 0), got["batchproc.batch.size"], metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars())

		rejected := counts(t, got["batchproc.event.rejected"], batchotel.ErrorTypeKey)
		if want := map[string]int64{"invalid": 1, "too_large": 1, "closed": 1}; !equal(rejected, want) {
			t.Errorf("batchproc.event.rejected by error.type: %v, want %v", rejected, want)
		}
		if total(rejected) != int64(s.Rejected) {
			t.Errorf("batchproc.event.rejected sums to %d, Stats.Rejected is %d", total(rejected), s.Rejected)
		}
		if failed := counts(t, got["batchproc.batch.failed"], batchotel.ErrorTypeKey); !equal(failed, map[string]int64{"permanent": 1}) {
			t.Errorf("batchproc.batch.failed by error.type: %v, want permanent: 1", failed)
		}
		if n := total(counts(t, got["batchproc.send.limit_changes"], batchotel.LimitReasonKey)); n == 0 {
			t.Error("batchproc.send.limit_changes: no change counted after a failed send")
		}
	})
}

func equal(a, b map[string]int64) bool {
	return fmt.Sprint(a) == fmt.Sprint(b) // fmt sorts map keys
}

func TestMetricsReasons(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, reader := newMetrics(t)
		p := metricstest.Reasons(t, m, m.Observe)
		s := p.Stats()
		got := collect(t, reader)
		checkStatsMetrics(t, got, s)
		rejected := counts(t, got["batchproc.event.rejected"], batchotel.ErrorTypeKey)
		want := map[string]int64{"full": 1, "canceled": 1, "deadline_exceeded": 1, "invalid": 1, "too_large": 1, "closed": 1}
		if !equal(rejected, want) {
			t.Errorf("batchproc.event.rejected by error.type: %v, want %v", rejected, want)
		}
		if total(rejected) != int64(s.Rejected) {
			t.Errorf("batchproc.event.rejected sums to %d, Stats.Rejected is %d", total(rejected), s.Rejected)
		}
		failed := counts(t, got["batchproc.batch.failed"], batchotel.ErrorTypeKey)
		if want := map[string]int64{"permanent": 1, "retries_exhausted": 1, "shutdown": 1}; !equal(failed, want) {
			t.Errorf("batchproc.batch.failed by error.type: %v, want %v", failed, want)
		}
		aborted := false
		for _, dp := range got["batchproc.send.duration"].Data.(metricdata.Histogram[float64]).DataPoints {
			if v, _ := dp.Attributes.Value(batchotel.OutcomeKey); v.AsString() == "aborted" {
				aborted = dp.Count == 1
			}
		}
		if !aborted {
			t.Error("batchproc.send.duration: no single aborted send (the hung batch)")
		}
	})
}

func TestMetricsAttributesAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		proc := attribute.String("batchproc.processor", "orders")
		m, reader := newMetrics(t, batchotel.WithAttributes(proc))
		p := metricstest.Basic(t, m, m.Observe)
		got := collect(t, reader)
		checkStatsMetrics(t, got, p.Stats(), proc)
		if len(got) != 19 {
			t.Errorf("%d instruments reported, want 19", len(got))
		}
		for name, mt := range got {
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				metricdatatest.AssertHasAttributes(t, d, proc)
			case metricdata.Histogram[float64]:
				metricdatatest.AssertHasAttributes(t, d, proc)
			case metricdata.Histogram[int64]:
				metricdatatest.AssertHasAttributes(t, d, proc)
			default:
				t.Errorf("%s: unexpected %T", name, d)
			}
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		got = collect(t, reader)
		for _, want := range statsMetrics(p.Stats()) {
			if mt, ok := got[want.Name]; ok && len(mt.Data.(metricdata.Sum[int64]).DataPoints) > 0 {
				t.Errorf("%s still observed after Close", want.Name)
			}
		}
		if _, ok := got["batchproc.send.duration"]; !ok {
			t.Error("batchproc.send.duration gone after Close: only the Stats callback should be")
		}
	})
}

// With a journal: a spool keeping no open batches (WithOpenBatches(0))
// leaves every batch unguarded, and the journal instruments match Stats.
func TestMetricsJournalCounters(t *testing.T) {
	m, reader := newMetrics(t)
	s := metricstest.Unguarded(t, m, spool.WithSpool(t.TempDir(), spool.WithOpenBatches(0)))
	checkStatsMetrics(t, collect(t, reader), s)
}

func TestMetricsBeforeObserve(t *testing.T) {
	m, reader := newMetrics(t)
	if got := collect(t, reader); len(got) != 0 {
		t.Errorf("before Observe and any hook: %d instruments reported, want none", len(got))
	}
	rec := &batchproctest.Recorder{}
	p, err := batchproc.New(rec, batchproc.WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Add(t.Context(), metricstest.Event(1)); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := collect(t, reader)
	if _, ok := got["batchproc.event.added"]; !ok {
		t.Error("batchproc.event.added missing: New binds the hook to its processor (OnNew)")
	}
	if _, ok := got["batchproc.send.duration"]; !ok {
		t.Error("batchproc.send.duration missing")
	}
	m.Observe(p)
	m.Observe(p) // the same processor again: a no-op
	checkStatsMetrics(t, collect(t, reader), p.Stats())
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "another processor") {
			t.Errorf("Observe of a second processor: recovered %v, want a panic naming the misuse", r)
		}
	}()
	other, err := batchproc.New(&batchproctest.Recorder{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Shutdown(context.Background())
	m.Observe(other)
}

func TestMetricsBadOptions(t *testing.T) {
	for name, tc := range map[string]struct {
		attr attribute.KeyValue
		want string
	}{
		"reserved key": {batchotel.ErrorTypeKey.String("x"), "error.type"},
		"empty key":    {attribute.String("", "x"), "invalid attribute"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := batchotel.New(batchotel.WithMeterProvider(sdkmetric.NewMeterProvider()), batchotel.WithAttributes(tc.attr))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// Without WithMeterProvider, the global provider (a no-op one unless the
// service set one) is used, and the hooks cost nothing more.
func TestMetricsGlobalProvider(t *testing.T) {
	m, err := batchotel.New()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p, err := batchproc.New(&batchproctest.Recorder{}, batchproc.WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	m.Observe(p)
	if err := p.Add(t.Context(), metricstest.Event(1)); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}
