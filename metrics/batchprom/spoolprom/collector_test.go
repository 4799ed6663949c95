package spoolprom_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/internal/testutil/spooltest"
	"github.com/batchproc/batchproc/metrics/batchprom/spoolprom"
	"github.com/batchproc/batchproc/spool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

var quiet = batchproc.WithLogger(slog.New(slog.DiscardHandler))

// gather returns the registry's metrics by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.Metric{}
	for _, mf := range mfs {
		if len(mf.Metric) != 1 {
			t.Fatalf("%s: %d series, want 1", mf.GetName(), len(mf.Metric))
		}
		got[mf.GetName()] = mf.Metric[0]
	}
	return got
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return -1
}

// TestCollectorReadsSpoolStats: bound through the processor's hooks, the
// collector exposes the spool's Stats exactly, fsync histogram included,
// and the names pass client_golang's lint.
func TestCollectorReadsSpoolStats(t *testing.T) {
	sc := spoolprom.New(spoolprom.WithConstLabels(prometheus.Labels{"spool": "orders"}))
	p, err := batchproc.New(&batchproctest.Recorder{}, quiet, spool.WithSpool(t.TempDir()),
		batchproc.WithMaxBatchEvents(10), batchproc.WithHooks(sc))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 35 {
		if err := p.Add(t.Context(), batchproc.Event{Payload: []byte(`{"i":` + strings.Repeat("1", i+1) + `}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(sc)
	st := spool.Of(p).Stats()
	if st.Appended != 4 || st.Fsyncs == 0 {
		t.Fatalf("spool Stats: Appended %d, Fsyncs %d; want 4 batches appended, fsynced (SyncBatch)", st.Appended, st.Fsyncs)
	}
	got := gather(t, reg)
	want := map[string]float64{
		"batchproc_spool_bytes":                        float64(st.Bytes),
		"batchproc_spool_batches":                      float64(st.Batches),
		"batchproc_spool_segments":                     float64(st.Segments),
		"batchproc_spool_batches_in_regions":           float64(st.InRegions),
		"batchproc_spool_failed":                       0,
		"batchproc_spool_batches_recovered_total":      float64(st.Recovered),
		"batchproc_spool_batches_appended_total":       float64(st.Appended),
		"batchproc_spool_batches_acked_total":          float64(st.Acked),
		"batchproc_spool_batches_dropped_total":        float64(st.Dropped),
		"batchproc_spool_batches_replayed_total":       float64(st.Replayed),
		"batchproc_spool_appends_full_total":           float64(st.Full),
		"batchproc_spool_region_appends_total":         float64(st.RegionAppends),
		"batchproc_spool_recovery_torn_bytes_total":    float64(st.TornBytes),
		"batchproc_spool_recovery_corrupt_files_total": float64(st.CorruptFiles),
		"batchproc_spool_recovery_lost_batches_total":  float64(st.LostBatches),
		"batchproc_spool_recovery_lost_bytes_total":    float64(st.LostBytes),
		"batchproc_spool_open_batches_recovered_total": float64(st.OpenRecovered),
		"batchproc_spool_open_regions":                 float64(st.OpenRegions),
		"batchproc_spool_open_unguarded_total":         float64(st.OpenUnguarded),
		"batchproc_spool_open_overflows_total":         float64(st.OpenOverflows),
	}
	wantValues(t, got, want)
	for name := range want {
		if m := got[name]; m != nil {
			if l := m.GetLabel(); len(l) != 1 || l[0].GetName() != "spool" || l[0].GetValue() != "orders" {
				t.Errorf("%s: labels %v, want spool=orders", name, l)
			}
		}
	}
	if a := got["batchproc_spool_batches_acked_total"]; value(a) != 4 {
		t.Errorf("acked %v, want the 4 batches delivered", value(a))
	}
	h := got["batchproc_spool_fsync_duration_seconds"].GetHistogram()
	if h.GetSampleCount() != st.FsyncLatency.Count || h.GetSampleCount() != st.Fsyncs {
		t.Errorf("fsync histogram: %d samples, want Stats.Fsyncs %d", h.GetSampleCount(), st.Fsyncs)
	}
	if h.GetSampleSum() != st.FsyncLatency.Sum.Seconds() {
		t.Errorf("fsync histogram sum %v, want %v", h.GetSampleSum(), st.FsyncLatency.Sum.Seconds())
	}
	if len(h.Bucket) != len(spool.FsyncBuckets) {
		t.Fatalf("fsync histogram: %d buckets, want %d", len(h.Bucket), len(spool.FsyncBuckets))
	}
	var cum uint64
	for i, b := range h.Bucket {
		cum += st.FsyncLatency.Counts[i]
		if b.GetUpperBound() != spool.FsyncBuckets[i].Seconds() || b.GetCumulativeCount() != cum {
			t.Errorf("bucket %d: le=%v count %d, want le=%v count %d", i, b.GetUpperBound(), b.GetCumulativeCount(), spool.FsyncBuckets[i].Seconds(), cum)
		}
	}
	problems, err := testutil.CollectAndLint(sc)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("lint: %s: %s", pr.Metric, pr.Text)
	}
}

// TestCollectorRecoveryCounters: a torn tail trimmed at Open shows in
// recovery_torn_bytes_total, and the recovered batch in
// batches_recovered_total, for a spool bound with Observe.
func TestCollectorRecoveryCounters(t *testing.T) {
	dir := t.TempDir()
	s, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := batchproc.NewBatch("k1", batchproc.Event{Payload: []byte(`{"a":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v, %v; want one", segs, err)
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{7, 0, 0, 0, 1, 2}); err != nil { // a record cut short
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sc := spoolprom.New(spoolprom.WithNamespace("svc"))
	sc.Observe(s)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(sc)
	got := gather(t, reg)
	if v := value(got["svc_batchproc_spool_recovery_torn_bytes_total"]); v != 6 {
		t.Errorf("torn bytes %v, want the 6 written", v)
	}
	if v := value(got["svc_batchproc_spool_batches_recovered_total"]); v != 1 {
		t.Errorf("recovered %v, want 1", v)
	}
	if v := value(got["svc_batchproc_spool_batches"]); v != 1 {
		t.Errorf("batches %v, want 1", v)
	}
}

// TestCollectorOpenBatches: the open batches' metrics, for a spool bound
// with Observe: the batches a crash left in their regions are rebuilt at
// Open (open_batches_recovered_total, within batches_recovered_total);
// then with two regions, two batches being filled hold them
// (open_regions), five more find none free (open_unguarded_total), and
// the first's ids fill its region (open_overflows_total). The values
// differ, so that no metric can read another's field.
func TestCollectorOpenBatches(t *testing.T) {
	if !spool.KeepsOpenBatches {
		t.Skip("the spool keeps no open batches on this platform (no mmap)")
	}
	s := spooltest.OpenBatches(t)
	sc := spoolprom.New()
	sc.Observe(s)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(sc)
	st := s.Stats()
	got := gather(t, reg)
	wantValues(t, got, map[string]float64{
		"batchproc_spool_open_batches_recovered_total": float64(st.OpenRecovered),
		"batchproc_spool_open_regions":                 float64(st.OpenRegions),
		"batchproc_spool_open_unguarded_total":         float64(st.OpenUnguarded),
		"batchproc_spool_open_overflows_total":         float64(st.OpenOverflows),
		"batchproc_spool_batches_recovered_total":      float64(st.Recovered),
		"batchproc_spool_batches_in_regions":           float64(st.InRegions),
		"batchproc_spool_region_appends_total":         float64(st.RegionAppends),
	})
	if m := got["batchproc_spool_open_regions"]; m != nil && m.Gauge == nil {
		t.Error("open_regions: not a gauge")
	}
}

// TestCollectorRegionRecords: under SyncNever the region a batch was
// filled in is its record: with three batches cut, appended and held in
// the sink, batches_in_regions and region_appends_total are 3, as the
// spool's Stats; once they are delivered and acked the gauge is back to 0
// and the counter stays.
func TestCollectorRegionRecords(t *testing.T) {
	if !spool.KeepsOpenBatches {
		t.Skip("the spool keeps no open batches on this platform (no mmap)")
	}
	sc := spoolprom.New()
	p, deliver := spooltest.RegionRecords(t, batchproc.WithHooks(sc))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(sc)
	got := gather(t, reg)
	st := spool.Of(p).Stats()
	wantValues(t, got, map[string]float64{
		"batchproc_spool_batches_in_regions":     float64(st.InRegions),
		"batchproc_spool_region_appends_total":   float64(st.RegionAppends),
		"batchproc_spool_batches":                float64(st.Batches),
		"batchproc_spool_batches_appended_total": float64(st.Appended),
	})
	if m := got["batchproc_spool_batches_in_regions"]; m != nil && m.Gauge == nil {
		t.Error("batches_in_regions: not a gauge")
	}
	if m := got["batchproc_spool_region_appends_total"]; m != nil && m.Counter == nil {
		t.Error("region_appends_total: not a counter")
	}

	deliver()
	got = gather(t, reg)
	if v := value(got["batchproc_spool_batches_in_regions"]); v != 0 {
		t.Errorf("after Shutdown, batches_in_regions = %v, want 0: the three were acked", v)
	}
	if v := value(got["batchproc_spool_region_appends_total"]); v != 3 {
		t.Errorf("after Shutdown, region_appends_total = %v, want 3", v)
	}
}

// TestCollectorUnbound: a collector given to a processor without a spool
// binds to nothing and exposes nothing; it does not panic.
func TestCollectorUnbound(t *testing.T) {
	sc := spoolprom.New()
	p, err := batchproc.New(&batchproctest.Recorder{}, quiet, batchproc.WithHooks(sc))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(sc)
	if got := gather(t, reg); len(got) != 0 {
		t.Errorf("unbound collector exposed %d metrics, want none", len(got))
	}
}

// TestCollectorErrors: a bad namespace fails Register; a second spool
// panics Observe.
func TestCollectorErrors(t *testing.T) {
	if err := prometheus.NewRegistry().Register(spoolprom.New(spoolprom.WithNamespace("my-service"))); err == nil || !strings.Contains(err.Error(), "my-service") {
		t.Errorf("Register with namespace my-service: %v, want an error naming it", err)
	}
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
	sc := spoolprom.New()
	sc.Observe(s1)
	sc.Observe(s1) // the same spool again is fine
	defer func() {
		if recover() == nil {
			t.Error("Observe of a second spool did not panic")
		}
	}()
	sc.Observe(s2)
}

// wantValues checks that each metric in want was gathered, with its value.
func wantValues(t *testing.T, got map[string]*dto.Metric, want map[string]float64) {
	t.Helper()
	for name, v := range want {
		m, ok := got[name]
		if !ok {
			t.Errorf("%s: missing", name)
			continue
		}
		if value(m) != v {
			t.Errorf("%s = %v, want %v", name, value(m), v)
		}
	}
}
