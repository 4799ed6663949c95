package batchotel_test

import (
	"testing"

	"github.com/batchproc/batchproc/metrics/internal/metricstest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Collections racing with the processor's goroutines and the hooks: each
// one adds up, and after Shutdown the instruments match Stats.
func TestMetricsConcurrentSafe(t *testing.T) {
	m, reader := newMetrics(t)
	value := func(got map[string]metricdata.Metrics, name string) float64 {
		sum := got[name].Data.(metricdata.Sum[int64])
		return float64(sum.DataPoints[0].Value)
	}
	p := metricstest.Concurrent(t, m, m.Observe, func() (a, d, f, pe float64) {
		got := collect(t, reader)
		return value(got, "batchproc.event.added"), value(got, "batchproc.event.delivered"), value(got, "batchproc.event.failed"), value(got, "batchproc.event.pending")
	})
	s := p.Stats()
	if s.Failed == 0 || s.Rejected == 0 {
		t.Fatalf("Stats %+v: the load should have failed and refused some", s)
	}
	got := collect(t, reader)
	checkStatsMetrics(t, got, s)
	if n := total(counts(t, got["batchproc.event.rejected"], "error.type")); n != int64(s.Rejected) {
		t.Errorf("batchproc.event.rejected sums to %d, Stats.Rejected is %d", n, s.Rejected)
	}
}
