package spoolotel_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/internal/testutil/spooltest"
	"github.com/batchproc/batchproc/metrics/batchotel/spoolotel"
	"github.com/batchproc/batchproc/spool"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

var quiet = batchproc.WithLogger(slog.New(slog.DiscardHandler))

func newMetrics(t *testing.T, opts ...spoolotel.Option) (*spoolotel.Metrics, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := spoolotel.New(append([]spoolotel.Option{spoolotel.WithMeterProvider(mp)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m, reader
}

// collect returns each instrument's single value (as float64) and the
// attribute set of its data point.
func collect(t *testing.T, r *sdkmetric.ManualReader) (map[string]float64, map[string]attribute.Set) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	vals, sets := map[string]float64{}, map[string]attribute.Set{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != spoolotel.ScopeName {
			t.Errorf("scope %q, want %q", sm.Scope.Name, spoolotel.ScopeName)
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				vals[m.Name], sets[m.Name] = float64(d.DataPoints[0].Value), d.DataPoints[0].Attributes
			case metricdata.Sum[float64]:
				vals[m.Name], sets[m.Name] = d.DataPoints[0].Value, d.DataPoints[0].Attributes
			case metricdata.Gauge[int64]:
				vals[m.Name], sets[m.Name] = float64(d.DataPoints[0].Value), d.DataPoints[0].Attributes
			case metricdata.Gauge[float64]:
				vals[m.Name], sets[m.Name] = d.DataPoints[0].Value, d.DataPoints[0].Attributes
			default:
				t.Errorf("%s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return vals, sets
}

// TestMetricsObserveSpoolStats: bound through the processor's hooks, the
// instruments report the spool's Stats exactly.
func TestMetricsObserveSpoolStats(t *testing.T) {
	attr := attribute.String("spool", "orders")
	m, reader := newMetrics(t, spoolotel.WithAttributes(attr))
	p, err := batchproc.New(&batchproctest.Recorder{}, quiet, spool.WithSpool(t.TempDir()),
		batchproc.WithMaxBatchEvents(10), batchproc.WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		if err := p.Add(t.Context(), batchproc.Event{Payload: []byte(`{"i":` + strings.Repeat("7", i+1) + `}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := spool.Of(p).Stats()
	if st.Appended != 3 || st.Fsyncs == 0 {
		t.Fatalf("spool Stats: Appended %d, Fsyncs %d; want 3 batches appended, fsynced (SyncBatch)", st.Appended, st.Fsyncs)
	}
	got, sets := collect(t, reader)
	want := map[string]float64{
		"batchproc.spool.usage":                 float64(st.Bytes),
		"batchproc.spool.batches":               float64(st.Batches),
		"batchproc.spool.segments":              float64(st.Segments),
		"batchproc.spool.batch.in_regions":      float64(st.InRegions),
		"batchproc.spool.failed":                0,
		"batchproc.spool.batch.recovered":       float64(st.Recovered),
		"batchproc.spool.batch.appended":        3,
		"batchproc.spool.batch.acked":           3,
		"batchproc.spool.batch.dropped":         float64(st.Dropped),
		"batchproc.spool.batch.replayed":        float64(st.Replayed),
		"batchproc.spool.append.full":           float64(st.Full),
		"batchproc.spool.batch.region_appended": float64(st.RegionAppends),
		"batchproc.spool.recovery.torn":         float64(st.TornBytes),
		"batchproc.spool.recovery.corrupt":      float64(st.CorruptFiles),
		"batchproc.spool.recovery.lost":         float64(st.LostBytes),
		"batchproc.spool.recovery.lost_batches": float64(st.LostBatches),
		"batchproc.spool.open_batch.recovered":  float64(st.OpenRecovered),
		"batchproc.spool.regions":               float64(st.OpenRegions),
		"batchproc.spool.open_batch.unguarded":  float64(st.OpenUnguarded),
		"batchproc.spool.open_batch.overflowed": float64(st.OpenOverflows),
		"batchproc.spool.fsync.count":           float64(st.Fsyncs),
		"batchproc.spool.fsync.duration":        st.FsyncLatency.Sum.Seconds(),
		"batchproc.spool.fsync.max":             st.FsyncLatency.Max.Seconds(),
	}
	if len(got) != len(want) {
		t.Errorf("%d instruments reported, want %d: %v", len(got), len(want), got)
	}
	wantValues(t, got, want)
	for name := range want {
		if s, ok := sets[name]; ok && (s.Len() != 1 || !s.HasValue(attr.Key)) {
			t.Errorf("%s: attributes %v, want %v", name, s.ToSlice(), attr)
		}
	}
}

// TestMetricsOpenBatches: the open batches' instruments, for a spool
// bound with Observe: the batches a crash left in their regions are
// rebuilt at Open (open_batch.recovered, within batch.recovered); then
// with two regions, two batches being filled hold them (regions), five
// more find none free (open_batch.unguarded), and the first's ids fill its
// region (open_batch.overflowed). The values differ, so that no
// instrument can read another's field.
func TestMetricsOpenBatches(t *testing.T) {
	if !spool.KeepsOpenBatches {
		t.Skip("the spool keeps no open batches on this platform (no mmap)")
	}
	s := spooltest.OpenBatches(t)
	m, reader := newMetrics(t)
	m.Observe(s)
	st := s.Stats()
	got, _ := collect(t, reader)
	wantValues(t, got, map[string]float64{
		"batchproc.spool.open_batch.recovered":  float64(st.OpenRecovered),
		"batchproc.spool.regions":               float64(st.OpenRegions),
		"batchproc.spool.open_batch.unguarded":  float64(st.OpenUnguarded),
		"batchproc.spool.open_batch.overflowed": float64(st.OpenOverflows),
		"batchproc.spool.batch.recovered":       float64(st.Recovered),
		"batchproc.spool.batch.in_regions":      float64(st.InRegions),
		"batchproc.spool.batch.region_appended": float64(st.RegionAppends),
	})
}

// TestMetricsRegionRecords: under SyncNever the region a batch was
// filled in is its record: with three batches cut, appended and held in
// the sink, batch.in_regions and batch.region_appended are 3, as the
// spool's Stats; once they are delivered and acked the up-down counter is
// back to 0 and the counter stays.
func TestMetricsRegionRecords(t *testing.T) {
	if !spool.KeepsOpenBatches {
		t.Skip("the spool keeps no open batches on this platform (no mmap)")
	}
	m, reader := newMetrics(t)
	p, deliver := spooltest.RegionRecords(t, batchproc.WithHooks(m))
	got, _ := collect(t, reader)
	st := spool.Of(p).Stats()
	wantValues(t, got, map[string]float64{
		"batchproc.spool.batch.in_regions":      float64(st.InRegions),
		"batchproc.spool.batch.region_appended": float64(st.RegionAppends),
		"batchproc.spool.batches":               float64(st.Batches),
		"batchproc.spool.batch.appended":        float64(st.Appended),
	})

	deliver()
	got, _ = collect(t, reader)
	if v := got["batchproc.spool.batch.in_regions"]; v != 0 {
		t.Errorf("after Shutdown, batch.in_regions = %v, want 0: the three were acked", v)
	}
	if v := got["batchproc.spool.batch.region_appended"]; v != 3 {
		t.Errorf("after Shutdown, batch.region_appended = %v, want 3", v)
	}
}

// TestMetricsUnbound: given to a processor without a spool, Metrics binds
// to nothing and reports nothing.
func TestMetricsUnbound(t *testing.T) {
	m, reader := newMetrics(t)
	p, err := batchproc.New(&batchproctest.Recorder{}, quiet, batchproc.WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	if got, _ := collect(t, reader); len(got) != 0 {
		t.Errorf("unbound: %v, want nothing", got)
	}
}

// TestMetricsErrors: an invalid attribute fails New; a second spool
// panics Observe.
func TestMetricsErrors(t *testing.T) {
	if _, err := spoolotel.New(spoolotel.WithAttributes(attribute.KeyValue{})); err == nil {
		t.Error("New with an invalid attribute: nil error")
	}
	m, _ := newMetrics(t)
	s1, err := spool.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, err := spool.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m.Observe(s1)
	m.Observe(s1)
	defer func() {
		if recover() == nil {
			t.Error("Observe of a second spool did not panic")
		}
	}()
	m.Observe(s2)
}

// wantValues checks that each metric in want was collected, with its value.
func wantValues(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for name, v := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: missing", name)
			continue
		}
		if g != v {
			t.Errorf("%s = %v, want %v", name, g, v)
		}
	}
}
