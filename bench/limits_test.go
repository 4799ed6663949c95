package bench

import (
	"context"
	"errors"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/loader"
)

// The null endpoint with -loader-limit N admits as the loader does: with
// all N slots taken, a request is answered 429 with Retry-After: 1 (at
// once without a slot wait; with one, when no slot frees in time), and
// served once a slot is free; the design's transport counts the 429s.
// The slots are taken by the test itself, so nothing depends on timing.
func TestNullEndpointLimit(t *testing.T) {
	post := func(t *testing.T, n *nullEndpoint, rt *countingTransport) error {
		t.Helper()
		return newPoster(n.URL(), rt).post(t.Context(), []byte(`{"id":"1","type":"t","ts":"2026-01-01T00:00:00Z"}`+"\n"), "")
	}
	t.Run("no slot wait", func(t *testing.T) {
		n, err := startNullEndpointShaped(0, endpointShape{limit: 2, slotWait: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(context.Background())
		rt := &countingTransport{rt: newTransport()}
		defer rt.rt.(*http.Transport).CloseIdleConnections()
		n.slots <- struct{}{}
		n.slots <- struct{}{} // both slots busy
		err = post(t, n, rt)
		var ra *batchproc.RetryAfterError
		var se *statusError
		if !errors.As(err, &ra) || ra.After != time.Second || !errors.As(err, &se) || se.Code != http.StatusTooManyRequests {
			t.Fatalf("with every slot busy: %v, want 429 with Retry-After: 1", err)
		}
		<-n.slots // one frees
		if err := post(t, n, rt); err != nil {
			t.Fatalf("with a slot free: %v", err)
		}
		if got := rt.status429.Load(); got != 1 || rt.requests.Load() != 2 || n.rejected.Load() != 1 || n.rec.events.Load() != 1 {
			t.Errorf("429s counted %d of %d requests (endpoint: %d refused, %d events); want 1 of 2, 1 event", got, rt.requests.Load(), n.rejected.Load(), n.rec.events.Load())
		}
		if len(n.slots) != 1 {
			t.Errorf("%d slots taken after the requests, want the test's 1 (a served request gives its slot back)", len(n.slots))
		}
	})
	t.Run("slot wait", func(t *testing.T) {
		n, err := startNullEndpointShaped(0, endpointShape{limit: 1, slotWait: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(context.Background())
		rt := &countingTransport{rt: newTransport()}
		defer rt.rt.(*http.Transport).CloseIdleConnections()
		n.slots <- struct{}{}
		done := make(chan error, 1)
		go func() { done <- post(t, n, rt) }()
		<-n.slots // the waiting request takes the slot this frees
		if err := <-done; err != nil {
			t.Fatalf("a request waiting for a slot that freed: %v", err)
		}
		if rt.status429.Load() != 0 || n.rec.events.Load() != 1 {
			t.Errorf("%d 429s, %d events; want none and 1", rt.status429.Load(), n.rec.events.Load())
		}
	})
	if err := (&Config{Loader: LoaderSQLite, LoaderLimit: 8}).defaults(); err == nil || !strings.Contains(err.Error(), "-loader-limit") {
		t.Error("-loader-limit without -loader null accepted")
	}
}

// -mode limits: its defaults, one run per design at each latency in order
// (a point's designs in a row), and no calibration.
func TestLimitsModeSpecs(t *testing.T) {
	cfg := Config{Mode: ModeLimits}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	if cfg.Loader != LoaderNull || strings.Join(cfg.Designs, ",") != strings.Join(LimitsDesigns, ",") || cfg.calibrates() {
		t.Fatalf("defaults: loader %s, designs %v, calibrates %v", cfg.Loader, cfg.Designs, cfg.calibrates())
	}
	specs := cfg.specs()
	if len(specs) != len(LimitsLatencies)*len(LimitsDesigns) {
		t.Fatalf("%d runs, want %d", len(specs), len(LimitsLatencies)*len(LimitsDesigns))
	}
	for i, s := range specs {
		lat, d := LimitsLatencies[i/len(LimitsDesigns)], LimitsDesigns[i%len(LimitsDesigns)]
		if s.latency != lat || s.design != d || s.rate != 0 {
			t.Errorf("run %d: %s at %v (rate %v), want %s at %v unpaced", i, s.design, s.latency, s.rate, d, lat)
		}
	}
	for _, bad := range []Config{{Mode: ModeLimits, Target: "http://127.0.0.1:1"}, {Mode: ModeLimits, Sink: SinkKafka, Loader: LoaderDiscard}} {
		if err := bad.defaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// A -mode limits report: events/s per design and latency, batchproc over
// the best fixed limit at each, the 429 rates, both charts, and the
// summary's ratio lines.
func TestLimitsReport(t *testing.T) {
	cfg := Config{Mode: ModeLimits, LoaderKnee: 32, LoaderLimit: 48}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	r := newReport(cfg)
	for _, lat := range []float64{0, 400, 1000} {
		per := 2e6 / (1 + lat/10) // falls with latency
		for _, d := range []struct {
			name  string
			share float64
			r429  int64
		}{{Batchproc, 0.95, 3}, {FixedDesign(4), 0.3, 0}, {FixedDesign(64), 1, 500}, {FixedDesign(256), 0.98, 4000}} {
			share := d.share
			if lat == 1000 && d.name == FixedDesign(256) {
				share = 1.2 // the best fixed limit differs by point
			}
			r.Sweep = append(r.Sweep, DesignResult{Name: d.name, Load: "unpaced", LoaderLatencyMs: lat, Offered: 1,
				DeliveredPerSec: per * share, DeliveredPerMin: 60 * per * share, HTTPRequests: 10000, HTTP429: d.r429, Rate429: float64(d.r429) / 10000})
		}
	}
	ratios := r.LimitsRatios()
	if x := ratios[400]; x.BestFixed != FixedDesign(64) || x.Ratio < 0.949 || x.Ratio > 0.951 {
		t.Errorf("at 400ms: %+v, want 95%% of batchproc-fixed-64", x)
	}
	if x := ratios[1000]; x.BestFixed != FixedDesign(256) || x.Ratio < 0.79 || x.Ratio > 0.80 {
		t.Errorf("at 1s: %+v, want 79%% of batchproc-fixed-256", x)
	}
	dir := t.TempDir()
	if err := r.write(dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"capacity knee at 32", "at most 48 requests at once", "| design | 0ms | 400ms | 1000ms |",
		"| **batchproc / best fixed** | **95.0%** (fixed-64) | **95.0%** (fixed-64) | **79.2%** (fixed-256) |",
		"| batchproc | 3 / 10,000 (0.03%) |", "429 rate",
		chartLimitsEvents, chartLimitsRatio,
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	for _, f := range []string{chartLimitsEvents, chartLimitsRatio} {
		fh, err := os.Open(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(fh)
		fh.Close()
		if err != nil || img.Bounds().Dx() < 100 {
			t.Errorf("%s: not a chart: %v", f, err)
		}
	}
	s := r.Summary()
	for _, want := range []string{"batchproc 400ms", "batchproc / best fixed at 1000ms: 79.2% (batchproc-fixed-256)", "429 rate", "40.00%"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}

// The null endpoint with -loader-limit N tells its N slots as the loader
// does (Ingest-Slots), on a 200 and on a 429; without a limit it tells
// nothing.
func TestNullEndpointTellsSlots(t *testing.T) {
	post := func(t *testing.T, n *nullEndpoint) *http.Response {
		t.Helper()
		resp, err := http.Post(n.URL()+"/v1/batches", "application/x-ndjson", strings.NewReader(`{"id":"1"}`+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	n, err := startNullEndpointShaped(0, endpointShape{limit: 3, slotWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	defer http.DefaultClient.CloseIdleConnections()
	if r := post(t, n); r.StatusCode != http.StatusOK || r.Header.Get(loader.IngestSlotsHeader) != "3" {
		t.Errorf("a slot free: %d, %s %q; want 200 and 3", r.StatusCode, loader.IngestSlotsHeader, r.Header.Get(loader.IngestSlotsHeader))
	}
	for range 3 {
		n.slots <- struct{}{}
	}
	if r := post(t, n); r.StatusCode != http.StatusTooManyRequests || r.Header.Get(loader.IngestSlotsHeader) != "3" {
		t.Errorf("every slot busy: %d, %s %q; want 429 and 3", r.StatusCode, loader.IngestSlotsHeader, r.Header.Get(loader.IngestSlotsHeader))
	}
	for range 3 {
		<-n.slots
	}

	free, err := startNullEndpoint(0)
	if err != nil {
		t.Fatal(err)
	}
	defer free.Close(context.Background())
	if r := post(t, free); r.Header.Values(loader.IngestSlotsHeader) != nil {
		t.Errorf("no limit: %s %q, want none", loader.IngestSlotsHeader, r.Header.Values(loader.IngestSlotsHeader))
	}
}
