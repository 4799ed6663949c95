package bench

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"image/png"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// degenerateReports are results no chart or table may panic on: nothing
// ran, every design failed (as at a dead -target), every figure zero, one
// design, NaN and infinities.
func degenerateReports() map[string]*Report {
	base := func() *Report {
		cfg := Config{}
		_ = cfg.defaults()
		return newReport(cfg)
	}
	out := map[string]*Report{}
	out["empty"] = base()
	r := base()
	for _, n := range []string{SeedPool10, SeedAsync, Batchproc} {
		r.Designs = append(r.Designs, DesignResult{Name: n, Error: "bench: target http://127.0.0.1:1: connection refused"})
	}
	out["all failed"] = r
	r = base()
	for _, n := range AllDesigns {
		r.Designs = append(r.Designs, DesignResult{Name: n, Offered: 1})
	}
	out["all zero"] = r
	r = base()
	r.Config.LoaderLatencyMs = 0 // no reference line to give the log axis a range
	for _, n := range AllDesigns {
		r.Designs = append(r.Designs, DesignResult{Name: n, Offered: 1})
	}
	out["all zero, no loader latency"] = r
	r = base()
	r.Designs = []DesignResult{{Name: Batchproc, Offered: 10, Delivered: 10, DeliveredPerMin: 600, AddLatencyNs: AddLatency{P50: 100, P99: 100, P999: 100, Max: 100}}}
	out["one design"] = r
	r = base()
	nan, inf := math.NaN(), math.Inf(1)
	r.Designs = []DesignResult{
		{Name: Batchproc, Offered: 5, DeliveredPerMin: nan, CPUSecondsPerMillion: inf, DeliveredPctOfTarget: -inf,
			CopyAllocShare: nan, E2ELatencyMs: E2ELatency{P50: nan, P99: inf}, SelectOverheadShare: nan, SelectCPUSeconds: inf},
		{Name: SeedAsync, Offered: 5, DeliveredPerMin: inf, CPUSecondsPerMillion: nan, AddLatencyNs: AddLatency{P99: math.MaxInt64}},
	}
	r.Sweep = []DesignResult{{Name: Batchproc, Load: LoadClosed, LoaderLatencyMs: nan, DeliveredPctOfTarget: inf, Offered: 1},
		{Name: Batchproc, Load: LoadOpen, LoaderLatencyMs: 0, DeliveredPctOfTarget: 0, Offered: 1}}
	out["NaN and Inf"] = r
	r = base()
	for _, lat := range []float64{0, 0, 0} {
		r.Sweep = append(r.Sweep, DesignResult{Name: SeedPool10, Load: LoadClosed, LoaderLatencyMs: lat, Offered: 1})
	}
	out["sweep all zero"] = r
	return out
}

// No result, however degenerate, makes the report panic or fail: the
// charts that have something to show are drawn, the rest left out, and
// report.json stays valid JSON.
func TestReportDegenerateResults(t *testing.T) {
	for name, r := range degenerateReports() {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := r.write(dir); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(filepath.Join(dir, "report.json"))
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(raw) {
				t.Fatalf("report.json is not JSON:\n%s", raw)
			}
			if len(r.ChartErrors) > 0 {
				t.Errorf("charts failed: %v", r.ChartErrors)
			}
			md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
			for _, c := range r.chartsWritten {
				if !strings.Contains(string(md), "]("+c.File+")") {
					t.Errorf("report.md does not embed %s", c.File)
				}
				checkPNG(t, filepath.Join(dir, c.File))
			}
			_ = r.Summary()
		})
	}
}

func checkPNG(t *testing.T, file string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if w := img.Bounds().Dx(); w != 720 {
		t.Errorf("%s is %d px wide, want 720 (README width)", file, w)
	}
}

// -target at a dead loader: one clear error before any design runs, and
// no chart code reached (it used to panic on the all-zero latencies).
func TestRunDeadTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := Config{Duration: 200 * time.Millisecond, Designs: []string{Batchproc, SeedAsync}, Target: "http://" + addr,
		Out: t.TempDir(), Progress: io.Discard, InProcess: true}
	_, err = Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "is a Batch Loader running there?") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Run = %v, want a clear error naming %s", err, addr)
	}
}

// A share resting on fewer than MinShareSamples CPU samples is printed as
// n/a with its sample count, not as a percentage.
func TestFewSamplesShareIsNA(t *testing.T) {
	r := sampleReport()
	r.Designs[0].SelectSamples, r.Designs[0].CPUSamples = 3, 12
	r.Designs[1].SelectSamples, r.Designs[1].CPUSamples = 125, 400
	md := r.Markdown(true)
	for _, want := range []string{"| seed-pool-10 | 83,663 | n/a (3 samples) |", "| seed-async | 119,720 | 50% of 125 samples |", "n/a (12 samples)"} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "66% of") {
		t.Error("a share of 3 samples printed as a percentage")
	}
}

// The terminal summary: one line per design, narrow enough for a terminal,
// with delivered/min, % of target, CPU per million (± over repeats), Add
// p99 and e2e p99; none of report.md's wide tables.
func TestSummaryIsCompact(t *testing.T) {
	r := sampleReport()
	r.Designs[2].Runs, r.Designs[2].CPUSpreadPct, r.Designs[2].CPUSecondsPerMillion = 5, 3.2, 11.6
	r.Designs[0].DeliveredPctOfTarget = 69.7
	r.Calibration = []CalibrationResult{{Load: LoadClosed, Runs: 5, NsPerRequest: 25600, SpreadPct: 1.5}}
	s := r.Summary()
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) != 1+len(r.Designs)+1 {
		t.Fatalf("%d lines, want a header, one per design and the calibration:\n%s", len(lines), s)
	}
	for _, l := range lines {
		if n := len([]rune(l)); n > 100 {
			t.Errorf("line of %d characters: %q", n, l)
		}
	}
	for _, want := range []string{"delivered/min", "seed-pool-10", "83,663", "69.7%", "400.0ms", "1.40s", "11.60 ±3%", "25.6 µs CPU per request, ±1.5% over 5 runs"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "|") {
		t.Errorf("summary has a table:\n%s", s)
	}
}

func TestETA(t *testing.T) {
	e := newETA(10*time.Second, 4)
	if got := e.remaining(0); got != 4*13*time.Second {
		t.Errorf("before any run: %v", got)
	}
	e.done(12 * time.Second)
	e.done(14 * time.Second)
	if got := e.remaining(2); got != 2*13*time.Second {
		t.Errorf("after two runs of 12 and 14 s: %v", got)
	}
	if roundETA(94*time.Second) != 90*time.Second || roundETA(7400*time.Millisecond) != 7*time.Second {
		t.Error("roundETA")
	}
}

// calibrate subtracts the calibration's CPU per request from each isolated
// run, and medianRun reports the median run with the spread of all.
func TestCalibrateAndMedian(t *testing.T) {
	cfg := Config{Repeat: 3}
	_ = cfg.defaults()
	r := newReport(cfg)
	for i, cal := range []float64{0.24, 0.26, 0.25} { // 25 µs per request, median
		r.Runs = append(r.Runs, DesignResult{Name: Calibration, Load: LoadClosed, Isolated: true, Requests: 10000, Offered: 10000, ProcessCPUSeconds: cal, Repeat: i + 1})
	}
	for i, cpu := range []float64{0.35, 0.37, 0.36} {
		r.Runs = append(r.Runs, DesignResult{Name: Batchproc, Load: LoadClosed, Isolated: true, Requests: 10000, Offered: 10000, ProcessCPUSeconds: cpu, Repeat: i + 1})
	}
	r.collect(cfg)
	if len(r.Calibration) != 1 || math.Abs(r.Calibration[0].NsPerRequest-25000) > 1e-6 || math.Abs(r.Calibration[0].SpreadPct-4) > 1e-9 {
		t.Fatalf("calibration %+v", r.Calibration)
	}
	if len(r.Designs) != 1 {
		t.Fatalf("%d rows, want batchproc only", len(r.Designs))
	}
	d := r.Designs[0]
	// (0.36 - 0.25) s per 10,000 events = 11 s per million; runs 10, 12, 11.
	if d.Runs != 3 || math.Abs(d.CPUSecondsPerMillion-11) > 1e-9 || math.Abs(d.CPUSpreadPct-100.0/11) > 1e-9 || d.CPUSource != "isolated" {
		t.Fatalf("row %+v", d)
	}
	if len(d.CPURunsPerMillion) != 3 || math.Abs(d.CPURunsPerMillion[0]-10) > 1e-9 {
		t.Fatalf("runs %v", d.CPURunsPerMillion)
	}
	if len(r.Runs) != 6 {
		t.Fatalf("%d runs kept, want all 6", len(r.Runs))
	}
}

// cpuBurner is a design whose Add does a fixed amount of hashing: the CPU
// it costs can be measured apart, in this process.
type cpuBurner struct{}

const testBurner = "test-cpu-burner"

var burnBuf = make([]byte, 64<<10)

func burn() {
	for range 6 {
		sha256.Sum256(burnBuf)
	}
}

func (cpuBurner) Add(context.Context, string, []byte) error { burn(); return nil }
func (cpuBurner) Shutdown(context.Context) error            { return nil }

func init() {
	// Registered in init, not in the test, so that the child process (this
	// test binary again) knows it too.
	designSpecs[testBurner] = designSpec{name: testBurner, newClient: func(designEnv) (Client, error) { return cpuBurner{}, nil }}
}

// Isolated, the design's CPU is its child process's CPU time minus the
// calibration's: for a design that hashes a known amount per event it
// matches what that hashing costs when measured alone, although the child
// also runs the load generator. The receiving side, here in the parent, is
// not in it.
func TestIsolatedCPUIsTheDesigns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two child processes for 2 s each")
	}
	// What one burn costs, measured here.
	const n = 200
	c0 := processCPU()
	for range n {
		burn()
	}
	perBurn := (processCPU() - c0).Seconds() / n
	if perBurn <= 0 {
		t.Fatal("processCPU measured nothing")
	}

	cfg := testConfig(t, testBurner)
	cfg.InProcess = false
	cfg.Duration = 2 * time.Second
	cfg.Rate = 300
	pr := newProgress(io.Discard)
	rep := newReport(cfg)
	for _, d := range []string{Calibration, testBurner} {
		s := runSpec{design: d, load: LoadClosed, rate: cfg.Rate, dir: filepath.Join(cfg.Out, d), profiles: true}
		res := runDesign(context.Background(), cfg, s, pr, "[test]")
		if res.Error != "" {
			t.Fatalf("%s: %s", d, res.Error)
		}
		if !res.Isolated || res.ProcessCPUSeconds <= 0 || res.Offered == 0 {
			t.Fatalf("%s: isolated %v, CPU %v s, offered %d", d, res.Isolated, res.ProcessCPUSeconds, res.Offered)
		}
		rep.Runs = append(rep.Runs, res)
	}
	rep.collect(cfg)
	d := rep.Designs[0]
	got := d.DesignCPUSeconds / float64(d.Offered)
	t.Logf("burn %.1f µs measured alone, %.1f µs per event isolated (child %.3f s, calibration %.1f µs/request)",
		perBurn*1e6, got*1e6, d.ProcessCPUSeconds, rep.Calibration[0].NsPerRequest/1e3)
	if got < perBurn*0.7 || got > perBurn*1.3 {
		t.Errorf("isolated design CPU %.1f µs per event, the work costs %.1f µs", got*1e6, perBurn*1e6)
	}
}

// A child that cannot run its design says why, and the run's row carries
// it: a design registered in this process only is unknown to the child.
func TestIsolatedChildErrorIsReported(t *testing.T) {
	registerTestDesign(t, "test-parent-only", func(designEnv) (Client, error) { return noopClient{}, nil })
	cfg := testConfig(t, "test-parent-only")
	cfg.InProcess = false
	s := runSpec{design: "test-parent-only", load: LoadClosed, rate: cfg.Rate, dir: filepath.Join(cfg.Out, "x")}
	res := runDesign(context.Background(), cfg, s, newProgress(io.Discard), "[test]")
	if !strings.Contains(res.Error, `unknown design "test-parent-only"`) {
		t.Fatalf("error %q", res.Error)
	}
}

// report.json is an on-disk format that -render reads back: whatever it
// holds, writing the report from it never panics and never fails (a chart
// that cannot be drawn is noted, not fatal).
func FuzzReportFromJSON(f *testing.F) {
	seed, err := json.Marshal(sampleReport())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"designs":[{"name":"batchproc","offered":1,"add_latency_ns":{"p50":0,"p99":0}}]}`))
	f.Add([]byte(`{"config":{"mode":"sweep","rate":2000},"sweep":[{"name":"seed-pool-10","load":"closed","loader_latency_ms":1e308,"delivered_pct_of_target":-1e308,"offered":1}]}`))
	f.Add([]byte(`{"designs":[{"name":"x","offered":5,"delivered_per_min":1e308,"cpu_seconds_per_million":-1e308,"runs":3,"cpu_runs_per_million":[1e308,-1e308,0]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 16<<10 {
			return
		}
		var r Report
		if json.Unmarshal(data, &r) != nil || len(r.Designs)+len(r.Sweep)+len(r.Runs) > 40 {
			return
		}
		if err := r.write(t.TempDir()); err != nil {
			t.Fatalf("write: %v", err)
		}
		_ = r.Summary()
	})
}
