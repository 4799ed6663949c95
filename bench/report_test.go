package bench

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	cfg := Config{}
	_ = cfg.defaults()
	r := newReport(cfg)
	r.Designs = []DesignResult{
		{Name: SeedPool10, Load: LoadClosed, Target: 120000, Offered: 84000, Delivered: 83663, DeliveredFromLogs: 83663,
			Lost: 337, DeliveredPerMin: 83663, DeliveredPctOfTarget: 69.72, SelectOverheadShare: 0.66, SelectCPUSeconds: 0.5, SelectSamples: 50,
			AddLatencyNs: AddLatency{P50: 800, P99: 400e6, P999: 410e6, Max: 420e6}, E2ELatencyMs: E2ELatency{P50: 500, P99: 1400}},
		{Name: SeedAsync, Load: LoadClosed, Target: 120000, Offered: 120000, Delivered: 119720, DeliveredPerMin: 119720,
			CopyAllocShare: 0.0122, SelectOverheadShare: 0.5, SelectCPUSeconds: 1.25, SelectSamples: 125, AddLatencyNs: AddLatency{P50: 900, P99: 20e3, P999: 50e3, Max: 1e6}},
		{Name: Batchproc, Load: LoadClosed, Target: 120000, Offered: 120000, Delivered: 120000, DeliveredPerMin: 120000,
			AddLatencyNs: AddLatency{P50: 0, P99: 4e3, P999: 90e3, Max: 1e6}},
	}
	for _, lat := range []float64{0, 400, 1000} {
		for _, load := range []string{LoadClosed, LoadOpen} {
			r.Sweep = append(r.Sweep, DesignResult{Name: Batchproc, Load: load, LoaderLatencyMs: lat, DeliveredPerMin: 120000, DeliveredPctOfTarget: 100},
				DesignResult{Name: SeedPool10, Load: load, LoaderLatencyMs: lat, DeliveredPerMin: 120000 - 30*lat, DeliveredPctOfTarget: 100 - lat/40})
		}
	}
	r.Finished = r.Started.Add(time.Minute)
	return r
}

func TestReportFiles(t *testing.T) {
	dir := t.TempDir()
	r := sampleReport()
	if err := r.write(dir); err != nil {
		t.Fatal(err)
	}

	// report.json carries design.md's field names.
	raw, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Machine map[string]any   `json:"machine"`
		Designs []map[string]any `json:"designs"`
		Sweep   []map[string]any `json:"sweep"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cpus", "go_version", "os"} {
		if _, ok := j.Machine[k]; !ok {
			t.Errorf("machine lacks %q", k)
		}
	}
	if len(j.Designs) != 3 || len(j.Sweep) != 12 {
		t.Fatalf("%d designs, %d sweep rows", len(j.Designs), len(j.Sweep))
	}
	for _, k := range ReportFields {
		if _, ok := j.Designs[0][k]; !ok {
			t.Errorf("design lacks %q", k)
		}
	}
	add := j.Designs[0]["add_latency_ns"].(map[string]any)
	e2e := j.Designs[0]["e2e_latency_ms"].(map[string]any)
	if add["p99"].(float64) != 400e6 || add["p999"] == nil || add["max"] == nil || add["p50"] == nil || e2e["p99"].(float64) != 1400 || e2e["p50"] == nil {
		t.Errorf("latency objects: %v %v", add, e2e)
	}

	// report.md: the seed-style table, ours and the seed's.
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| design | events delivered / min | select overhead (CPU) | memory overhead |",
		"| seed-pool-10 | 83,663 | 66% of 50 samples | 0.00% | 10 workers, sync |",
		"| seed-async | 119,720 | 50% of 125 samples | 1.22% | 1 worker + async |",
		"| batchproc | 120,000 | - | 0.00% | - |",
		"| 1 worker + async  | 119,720 ",
		"400.0ms",
		"Delivered per minute (% of target) against the loader's added latency",
		"| seed-pool-10 | closed | 120,000 (100.0%) | 108,000 (90.0%) | 90,000 (75.0%) |",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}

	for _, f := range []string{"delivered_per_min.png", "cpu_per_million.png", "add_latency.png", "sweep_closed.png", "sweep_open.png"} {
		fh, err := os.Open(filepath.Join(dir, f))
		if err != nil {
			t.Error(err)
			continue
		}
		img, err := png.Decode(fh)
		fh.Close()
		if err != nil || img.Bounds().Dx() < 100 {
			t.Errorf("%s: not a chart: %v", f, err)
		}
	}
}

func TestCommas(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 119720: "119,720", 1234567: "1,234,567", -84042: "-84,042"} {
		if got := commas(n); got != want {
			t.Errorf("commas(%d) = %q, want %q", n, got, want)
		}
	}
}
