package batchprom_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/metrics/batchprom"
	"github.com/batchproc/batchproc/metrics/internal/metricstest"
	"github.com/batchproc/batchproc/spool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// statsText is the exposition of the Stats-based metrics for s, with no
// namespace or const labels.
func statsText(s batchproc.Stats) string {
	return fmt.Sprintf(`# HELP batchproc_events_added_total Events accepted by Add or TryAdd (Stats.Added).
# TYPE batchproc_events_added_total counter
batchproc_events_added_total %d
# HELP batchproc_events_delivered_total Events in batches the sink accepted (Stats.Delivered).
# TYPE batchproc_events_delivered_total counter
batchproc_events_delivered_total %d
# HELP batchproc_events_failed_total Events handed to the failure callback (Stats.Failed).
# TYPE batchproc_events_failed_total counter
batchproc_events_failed_total %d
# HELP batchproc_batches_delivered_total Batches the sink accepted (Stats.Batches).
# TYPE batchproc_batches_delivered_total counter
batchproc_batches_delivered_total %d
# HELP batchproc_send_retries_total Sends that were retries of a failed send (Stats.Retries).
# TYPE batchproc_send_retries_total counter
batchproc_send_retries_total %d
# HELP batchproc_events_pending Events buffered, queued or being sent (Stats.Pending).
# TYPE batchproc_events_pending gauge
batchproc_events_pending %d
# HELP batchproc_sends_in_flight Sink.Send calls under way (Stats.InFlight).
# TYPE batchproc_sends_in_flight gauge
batchproc_sends_in_flight %d
# HELP batchproc_sends_in_flight_limit Sends allowed at once now by async dispatch; 0 in the other modes (Stats.InFlightLimit).
# TYPE batchproc_sends_in_flight_limit gauge
batchproc_sends_in_flight_limit %d
# HELP batchproc_buffered_bytes Bytes held against the memory limit (Stats.BufferedBytes).
# TYPE batchproc_buffered_bytes gauge
batchproc_buffered_bytes %d
# HELP batchproc_events_replayed_total Events a previous process left in the journal, read back to be sent (Stats.Replayed).
# TYPE batchproc_events_replayed_total counter
batchproc_events_replayed_total %d
# HELP batchproc_batches_journaled_total Batches written to the journal before their first send (Stats.Journaled).
# TYPE batchproc_batches_journaled_total counter
batchproc_batches_journaled_total %d
# HELP batchproc_batches_unjournaled_total Batches the journal refused, sent from memory only (Stats.Unjournaled).
# TYPE batchproc_batches_unjournaled_total counter
batchproc_batches_unjournaled_total %d
# HELP batchproc_batches_unguarded_total Batches filled without the journal keeping them open, its JournalOpener out of room: a crash of the process may lose them (Stats.Unguarded).
# TYPE batchproc_batches_unguarded_total counter
batchproc_batches_unguarded_total %d
`, s.Added, s.Delivered, s.Failed, s.Batches, s.Retries, s.Pending, s.InFlight, s.InFlightLimit, s.BufferedBytes, s.Replayed, s.Journaled, s.Unjournaled, s.Unguarded)
}

var statsNames = []string{
	"batchproc_events_added_total", "batchproc_events_delivered_total", "batchproc_events_failed_total",
	"batchproc_batches_delivered_total", "batchproc_send_retries_total", "batchproc_events_pending",
	"batchproc_sends_in_flight", "batchproc_sends_in_flight_limit", "batchproc_buffered_bytes",
	"batchproc_events_replayed_total", "batchproc_batches_journaled_total", "batchproc_batches_unjournaled_total",
	"batchproc_batches_unguarded_total",
}

func checkStats(t *testing.T, got, want batchproc.Stats) {
	t.Helper()
	got.InFlightLimit = 0
	if got != want {
		t.Fatalf("Stats after the scenario: %+v, want %+v", got, want)
	}
}

// gather returns the families c exposes, by name, through a pedantic
// registry (which checks that every collected metric was described).
func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// byLabel returns a counter family's values by the value of label l.
func byLabel(mf *dto.MetricFamily, l string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == l {
				out[lp.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func sum(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

func TestCollectorMatchesStats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := batchprom.New(batchprom.WithSendDurationBuckets(0.01, 0.1), batchprom.WithBatchSizeBuckets([]float64{2, 4}, []float64{16, 32}))
		p := metricstest.Basic(t, c, c.Observe)
		s := p.Stats()
		checkStats(t, s, metricstest.BasicStats)

		// The first attempt of e0,e1 took SlowSend (0.05 s) and is retried;
		// its second attempt and e2,e3's only one took no time on the
		// bubble's clock. Each batch, 2 events of 8 bytes, is seen once.
		hooks := `# HELP batchproc_send_duration_seconds How long each Sink.Send attempt took, by outcome: delivered, retrying, failed, aborted.
# TYPE batchproc_send_duration_seconds histogram
batchproc_send_duration_seconds_bucket{outcome="aborted",le="0.01"} 0
batchproc_send_duration_seconds_bucket{outcome="aborted",le="0.1"} 0
batchproc_send_duration_seconds_bucket{outcome="aborted",le="+Inf"} 0
batchproc_send_duration_seconds_sum{outcome="aborted"} 0
batchproc_send_duration_seconds_count{outcome="aborted"} 0
batchproc_send_duration_seconds_bucket{outcome="delivered",le="0.01"} 1
batchproc_send_duration_seconds_bucket{outcome="delivered",le="0.1"} 1
batchproc_send_duration_seconds_bucket{outcome="delivered",le="+Inf"} 1
batchproc_send_duration_seconds_sum{outcome="delivered"} 0
batchproc_send_duration_seconds_count{outcome="delivered"} 1
batchproc_send_duration_seconds_bucket{outcome="failed",le="0.01"} 1
batchproc_send_duration_seconds_bucket{outcome="failed",le="0.1"} 1
batchproc_send_duration_seconds_bucket{outcome="failed",le="+Inf"} 1
batchproc_send_duration_seconds_sum{outcome="failed"} 0
batchproc_send_duration_seconds_count{outcome="failed"} 1
batchproc_send_duration_seconds_bucket{outcome="retrying",le="0.01"} 0
batchproc_send_duration_seconds_bucket{outcome="retrying",le="0.1"} 1
batchproc_send_duration_seconds_bucket{outcome="retrying",le="+Inf"} 1
batchproc_send_duration_seconds_sum{outcome="retrying"} 0.05
batchproc_send_duration_seconds_count{outcome="retrying"} 1
# HELP batchproc_batch_events Events per batch, observed at the batch's first send.
# TYPE batchproc_batch_events histogram
batchproc_batch_events_bucket{le="2"} 2
batchproc_batch_events_bucket{le="4"} 2
batchproc_batch_events_bucket{le="+Inf"} 2
batchproc_batch_events_sum 4
batchproc_batch_events_count 2
# HELP batchproc_batch_bytes NDJSON bytes per batch, observed at the batch's first send.
# TYPE batchproc_batch_bytes histogram
batchproc_batch_bytes_bucket{le="16"} 2
batchproc_batch_bytes_bucket{le="32"} 2
batchproc_batch_bytes_bucket{le="+Inf"} 2
batchproc_batch_bytes_sum 32
batchproc_batch_bytes_count 2
# HELP batchproc_events_rejected_total Add or TryAdd calls refused, by reason: full, closed, too_large, invalid, canceled, deadline_exceeded, other. They sum to Stats.Rejected.
# TYPE batchproc_events_rejected_total counter
batchproc_events_rejected_total{reason="canceled"} 0
batchproc_events_rejected_total{reason="closed"} 1
batchproc_events_rejected_total{reason="deadline_exceeded"} 0
batchproc_events_rejected_total{reason="full"} 0
batchproc_events_rejected_total{reason="invalid"} 1
batchproc_events_rejected_total{reason="other"} 0
batchproc_events_rejected_total{reason="too_large"} 1
# HELP batchproc_batches_failed_total Batches (or failed rests of batches) handed to the failure callback, by reason: permanent, retries_exhausted, shutdown, dropped.
# TYPE batchproc_batches_failed_total counter
batchproc_batches_failed_total{reason="dropped"} 0
batchproc_batches_failed_total{reason="permanent"} 1
batchproc_batches_failed_total{reason="retries_exhausted"} 0
batchproc_batches_failed_total{reason="shutdown"} 0
`
		names := append([]string{"batchproc_send_duration_seconds", "batchproc_batch_events", "batchproc_batch_bytes", "batchproc_events_rejected_total", "batchproc_batches_failed_total"}, statsNames...)
		if err := testutil.CollectAndCompare(c, strings.NewReader(statsText(s)+hooks), names...); err != nil {
			t.Error(err)
		}
		mfs := gather(t, c)
		if got := sum(byLabel(mfs["batchproc_events_rejected_total"], "reason")); got != float64(s.Rejected) {
			t.Errorf("events_rejected_total sums to %v, Stats.Rejected is %d", got, s.Rejected)
		}
		if got := sum(byLabel(mfs["batchproc_send_limit_changes_total"], "reason")); got == 0 {
			t.Error("send_limit_changes_total: no change counted after a failed send")
		}
	})
}

func TestCollectorReasons(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := batchprom.New()
		p := metricstest.Reasons(t, c, c.Observe)
		s := p.Stats()
		want := `# HELP batchproc_events_rejected_total Add or TryAdd calls refused, by reason: full, closed, too_large, invalid, canceled, deadline_exceeded, other. They sum to Stats.Rejected.
# TYPE batchproc_events_rejected_total counter
batchproc_events_rejected_total{reason="canceled"} 1
batchproc_events_rejected_total{reason="closed"} 1
batchproc_events_rejected_total{reason="deadline_exceeded"} 1
batchproc_events_rejected_total{reason="full"} 1
batchproc_events_rejected_total{reason="invalid"} 1
batchproc_events_rejected_total{reason="other"} 0
batchproc_events_rejected_total{reason="too_large"} 1
# HELP batchproc_batches_failed_total Batches (or failed rests of batches) handed to the failure callback, by reason: permanent, retries_exhausted, shutdown, dropped.
# TYPE batchproc_batches_failed_total counter
batchproc_batches_failed_total{reason="dropped"} 0
batchproc_batches_failed_total{reason="permanent"} 1
batchproc_batches_failed_total{reason="retries_exhausted"} 1
batchproc_batches_failed_total{reason="shutdown"} 1
`
		if err := testutil.CollectAndCompare(c, strings.NewReader(want+statsText(s)), append([]string{"batchproc_events_rejected_total", "batchproc_batches_failed_total"}, statsNames...)...); err != nil {
			t.Error(err)
		}
		if s.Rejected != 6 || s.Failed != 3 || s.Pending != 0 {
			t.Errorf("Stats %+v: want 6 rejected, 3 failed, none pending", s)
		}
		mfs := gather(t, c)
		for _, m := range mfs["batchproc_send_duration_seconds"].GetMetric() {
			if m.GetLabel()[0].GetValue() == "aborted" && m.GetHistogram().GetSampleCount() != 1 {
				t.Errorf("aborted sends: %d, want 1 (the hung batch)", m.GetHistogram().GetSampleCount())
			}
		}
	})
}

func TestCollectorLint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := batchprom.New(batchprom.WithNamespace("myservice"), batchprom.WithConstLabels(prometheus.Labels{"processor": "orders"}))
		metricstest.Basic(t, c, c.Observe)
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		problems, err = testutil.GatherAndLint(reg)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
		mfs := gather(t, c)
		if len(mfs) != 19 {
			t.Errorf("%d families, want 19", len(mfs))
		}
		for name, mf := range mfs {
			if !strings.HasPrefix(name, "myservice_batchproc_") {
				t.Errorf("%s: not under myservice_batchproc_", name)
			}
			for _, m := range mf.GetMetric() {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == "processor" && l.GetValue() == "orders" }) {
					t.Errorf("%s: no processor=orders label: %v", name, m)
				}
			}
		}
	})
}

// A real scrape: promhttp over loopback, parsed as Prometheus would.
func TestCollectorScrapeOverHTTP(t *testing.T) {
	c := batchprom.New()
	rec := &batchproctest.Recorder{}
	p, err := batchproc.New(rec, batchproc.WithHooks(c), batchproc.WithMaxBatchEvents(10))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	c.Observe(p)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()

	for i := range 25 {
		if err := p.Add(t.Context(), metricstest.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := p.Stats() // nothing moves until the next Add: the scrape must see these
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string) float64 {
		mf, ok := mfs[name]
		if !ok || len(mf.GetMetric()) != 1 {
			t.Fatalf("scrape: no single %s", name)
		}
		m := mf.GetMetric()[0]
		if mf.GetType() == dto.MetricType_COUNTER {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	for name, want := range map[string]uint64{
		"batchproc_events_added_total":        s.Added,
		"batchproc_events_delivered_total":    s.Delivered,
		"batchproc_events_failed_total":       s.Failed,
		"batchproc_batches_delivered_total":   s.Batches,
		"batchproc_send_retries_total":        s.Retries,
		"batchproc_events_pending":            s.Pending,
		"batchproc_sends_in_flight":           uint64(s.InFlight),
		"batchproc_sends_in_flight_limit":     uint64(s.InFlightLimit),
		"batchproc_buffered_bytes":            uint64(s.BufferedBytes),
		"batchproc_events_replayed_total":     s.Replayed,
		"batchproc_batches_journaled_total":   s.Journaled,
		"batchproc_batches_unjournaled_total": s.Unjournaled,
		"batchproc_batches_unguarded_total":   s.Unguarded,
	} {
		if got := value(name); got != float64(want) {
			t.Errorf("%s = %v, Stats say %d", name, got, want)
		}
	}
	if s.Added != 25 || s.Delivered != 25 || int(s.Batches) != len(rec.Delivered()) {
		t.Errorf("Stats %+v after 25 events, %d batches delivered", s, len(rec.Delivered()))
	}
	if s.InFlightLimit == 0 {
		t.Errorf("InFlightLimit 0 with async dispatch")
	}
	var sends uint64
	for _, m := range mfs["batchproc_send_duration_seconds"].GetMetric() {
		sends += m.GetHistogram().GetSampleCount()
	}
	if sends != uint64(len(rec.Sent())) {
		t.Errorf("send_duration_seconds counts %d sends, the sink saw %d", sends, len(rec.Sent()))
	}
}

// With a journal: a spool keeping no open batches (WithOpenBatches(0))
// leaves every batch unguarded, and the journal metrics match Stats.
func TestCollectorJournalCounters(t *testing.T) {
	c := batchprom.New()
	s := metricstest.Unguarded(t, c, spool.WithSpool(t.TempDir(), spool.WithOpenBatches(0)))
	if err := testutil.CollectAndCompare(c, strings.NewReader(statsText(s)), statsNames...); err != nil {
		t.Error(err)
	}
}

func TestCollectorBeforeObserve(t *testing.T) {
	c := batchprom.New()
	mfs := gather(t, c)
	if _, ok := mfs["batchproc_events_added_total"]; ok {
		t.Error("events_added_total exposed before Observe: there is no processor to read")
	}
	if _, ok := mfs["batchproc_events_rejected_total"]; !ok {
		t.Error("events_rejected_total missing before Observe: its series start at zero")
	}
	p, err := batchproc.New(&batchproctest.Recorder{}, batchproc.WithHooks(c))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	if _, ok := gather(t, c)["batchproc_events_added_total"]; !ok {
		t.Error("events_added_total missing after New: New binds the collector (OnNew)")
	}
	c.Observe(p) // the same processor again: a no-op
	other, err := batchproc.New(&batchproctest.Recorder{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Shutdown(context.Background())
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "another processor") {
			t.Errorf("Observe of a second processor: recovered %v, want a panic naming the misuse", r)
		}
	}()
	c.Observe(other)
}

func TestCollectorBadOptions(t *testing.T) {
	for name, tc := range map[string]struct {
		opts []batchprom.Option
		want string
	}{
		"unsorted buckets":    {[]batchprom.Option{batchprom.WithSendDurationBuckets(1, 0.5)}, "strictly increasing"},
		"no buckets":          {[]batchprom.Option{batchprom.WithSendDurationBuckets()}, "at least one bound"},
		"repeated bound":      {[]batchprom.Option{batchprom.WithBatchSizeBuckets([]float64{1, 1}, []float64{1})}, "batch events"},
		"invalid namespace":   {[]batchprom.Option{batchprom.WithNamespace("my-service")}, "snake_case"},
		"label clash":         {[]batchprom.Option{batchprom.WithConstLabels(prometheus.Labels{"reason": "x"})}, "reason"},
		"invalid label value": {[]batchprom.Option{batchprom.WithConstLabels(prometheus.Labels{"processor": "\xff"})}, "not valid UTF-8"},
	} {
		t.Run(name, func(t *testing.T) {
			err := prometheus.NewRegistry().Register(batchprom.New(tc.opts...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Register: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
