package batchprom_test

import (
	"testing"

	"github.com/batchproc/batchproc/metrics/batchprom"
	"github.com/batchproc/batchproc/metrics/internal/metricstest"
	"github.com/prometheus/client_golang/prometheus"
)

// Scrapes racing with the processor's goroutines and the hooks: each one
// adds up, and after Shutdown the metrics match Stats.
func TestCollectorConcurrentSafe(t *testing.T) {
	c := batchprom.New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	p := metricstest.Concurrent(t, c, c.Observe, func() (a, d, f, pe float64) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			m := mf.GetMetric()[0]
			switch mf.GetName() {
			case "batchproc_events_added_total":
				a = m.GetCounter().GetValue()
			case "batchproc_events_delivered_total":
				d = m.GetCounter().GetValue()
			case "batchproc_events_failed_total":
				f = m.GetCounter().GetValue()
			case "batchproc_events_pending":
				pe = m.GetGauge().GetValue()
			}
		}
		return a, d, f, pe
	})
	s := p.Stats()
	if s.Failed == 0 || s.Rejected == 0 {
		t.Fatalf("Stats %+v: the load should have failed and refused some", s)
	}
	mfs := gather(t, c)
	if got := sum(byLabel(mfs["batchproc_events_rejected_total"], "reason")); got != float64(s.Rejected) {
		t.Errorf("events_rejected_total sums to %v, Stats.Rejected is %d", got, s.Rejected)
	}
	for name, want := range map[string]uint64{
		"batchproc_events_added_total":     s.Added,
		"batchproc_events_delivered_total": s.Delivered,
		"batchproc_events_failed_total":    s.Failed,
	} {
		if got := mfs[name].GetMetric()[0].GetCounter().GetValue(); got != float64(want) {
			t.Errorf("%s = %v after Shutdown, Stats say %d", name, got, want)
		}
	}
}
