package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchproc/batchproc/bench"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if bench.IsChild() { // the design runs of TestCommand*, in a child process
		os.Exit(bench.ChildMain())
	}
	goleak.VerifyTestMain(m)
}

// The whole command, a few seconds per design, against the in-process
// SQLite loader: CI's check of the harness. It reads report.json as a
// consumer would, by field name.
func TestCommandEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every design for 2 s")
	}
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-duration", "2s", "-rate", "500", "-loader-latency", "50ms", "-out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	t.Logf("\n%s", stdout.String())
	// The terminal gets the compact summary; the wide tables are in report.md.
	if !strings.Contains(stdout.String(), "delivered/min  % target  CPU s/M events") || strings.Contains(stdout.String(), "| design |") {
		t.Error("the compact summary was not printed (or a wide table was)")
	}
	raw, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Machine map[string]any   `json:"machine"`
		Designs []map[string]any `json:"designs"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cpus", "go_version", "os"} {
		if rep.Machine[k] == nil {
			t.Errorf("machine.%s missing", k)
		}
	}
	byName := map[string]map[string]any{}
	num := func(d map[string]any, k string) float64 { v, _ := d[k].(float64); return v }
	for _, d := range rep.Designs {
		for _, k := range bench.ReportFields {
			if _, ok := d[k]; !ok {
				t.Errorf("%v: field %q missing", d["name"], k)
			}
		}
		if e, ok := d["error"]; ok {
			t.Errorf("%v: %v", d["name"], e)
		}
		// Isolated by default: the design's CPU from its child process.
		if d["cpu_source"] != "isolated" || d["isolated"] != true || num(d, "process_cpu_seconds") <= 0 {
			t.Errorf("%v: cpu_source %v, isolated %v, process CPU %v s", d["name"], d["cpu_source"], d["isolated"], d["process_cpu_seconds"])
		}
		byName[d["name"].(string)] = d
	}
	for _, n := range append(bench.AllDesigns, bench.SeedAsyncDefaultT) {
		if byName[n] == nil {
			t.Errorf("design %s not in the report", n)
		}
	}
	for _, n := range []string{bench.Batchproc, bench.BatchprocPool10, bench.BatchprocOrdered, bench.SeedAsync} {
		d := byName[n]
		if d == nil {
			continue
		}
		// 500/s for 2 s: a design that keeps up delivers all 1,000, and
		// both ways of counting agree.
		if num(d, "target") != 1000 || num(d, "lost") != 0 || num(d, "delivered") < 950 ||
			num(d, "delivered") != num(d, "delivered_from_logs") || num(d, "offered") != num(d, "delivered") {
			t.Errorf("%s: target %v offered %v delivered %v from logs %v lost %v", n, d["target"], d["offered"],
				d["delivered"], d["delivered_from_logs"], d["lost"])
		}
		if num(d, "delivered_per_min") != num(d, "delivered")*30 {
			t.Errorf("%s: delivered_per_min %v for %v in 2 s", n, d["delivered_per_min"], d["delivered"])
		}
		e2e := d["e2e_latency_ms"].(map[string]any)
		if p99, _ := e2e["p99"].(float64); p99 < 50 {
			t.Errorf("%s: e2e p99 %v ms, below the loader's 50 ms", n, p99)
		}
		if num(d, "alloc_bytes_per_event") <= 0 || num(d, "peak_heap_bytes") <= 0 {
			t.Errorf("%s: alloc %v B/event, peak heap %v", n, d["alloc_bytes_per_event"], d["peak_heap_bytes"])
		}
	}
	if d := byName[bench.SeedAsync]; d != nil && num(d, "copy_alloc_share") <= 0 {
		t.Errorf("seed-async copies its buffer at each flush, yet copy_alloc_share is %v", d["copy_alloc_share"])
	}
	for _, n := range []string{bench.SeedPool10, bench.Batchproc} {
		if d := byName[n]; d != nil && num(d, "copy_alloc_share") != 0 {
			t.Errorf("%s makes no buffer copy, yet copy_alloc_share is %v", n, d["copy_alloc_share"])
		}
	}
	for _, f := range []string{"report.md", "delivered_per_min.png", "cpu_per_million.png", "add_latency.png",
		"batchproc/cpu.pprof", "batchproc/heap.pprof", "seed-pool-10/client.log", "seed-pool-10/loader.log"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	for _, want := range []string{"![Events delivered per minute](delivered_per_min.png)", "(cpu_per_million.png)", "(add_latency.png)", "Calibration (the no-op design), closed loop"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	// -render rewrites the report from report.json, running nothing.
	os.Remove(filepath.Join(out, "add_latency.png"))
	stdout.Reset()
	if code := run(context.Background(), []string{"-render", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("-render: exit %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(out, "add_latency.png")); err != nil || !strings.Contains(stdout.String(), "batchproc") {
		t.Errorf("-render: %v, %q", err, stdout.String())
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-designs", "nope"}, {"-mode", "fast"}, {"-no-such-flag"}, {"extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append(args, "-out", t.TempDir()), &out, &errb); code == 0 {
			t.Errorf("%v: exit 0", args)
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"-sink", "kafka", "-loader", "null", "-out", t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "-loader sqlite or discard") {
		t.Errorf("-sink kafka -loader null: exit %d, %q", code, errb.String())
	}
}

// -sink kafka: the designs produce to an in-process Kafka topic and the
// loader consumes it into SQLite; every event offered is stored, and the
// count=N log lines agree.
func TestCommandKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two designs for 2 s")
	}
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-sink", "kafka", "-duration", "2s", "-rate", "500",
		"-designs", "batchproc,seed-async", "-out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	t.Logf("\n%s", stdout.String())
	raw, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Config  map[string]any   `json:"config"`
		Designs []map[string]any `json:"designs"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Config["sink"] != "kafka" {
		t.Errorf("config.sink = %v", rep.Config["sink"])
	}
	num := func(d map[string]any, k string) float64 { v, _ := d[k].(float64); return v }
	var names []string
	for _, d := range rep.Designs {
		n, _ := d["name"].(string)
		names = append(names, n)
		if e, ok := d["error"]; ok {
			t.Errorf("%s: %v", n, e)
		}
		if num(d, "offered") < 950 || num(d, "delivered") != num(d, "offered") || num(d, "lost") != 0 ||
			num(d, "delivered_from_logs") != num(d, "delivered") {
			t.Errorf("%s: target %v offered %v delivered %v from logs %v lost %v", n, d["target"], d["offered"],
				d["delivered"], d["delivered_from_logs"], d["lost"])
		}
		if num(d, "http_requests") == 0 || num(d, "http_failures") != 0 {
			t.Errorf("%s: %v produce calls, %v failed", n, d["http_requests"], d["http_failures"])
		}
	}
	if strings.Join(names, ",") != "batchproc,seed-async" {
		t.Errorf("designs %v, want batchproc, seed-async (no default-transport variant with kafka)", names)
	}
}

// -mode limits takes the null endpoint with a knee and the adaptive and
// fixed-limit designs unless the flags say otherwise; other modes keep
// their flags' defaults.
func TestLimitsModeDefaults(t *testing.T) {
	cfg := bench.Config{Mode: bench.ModeLimits, Loader: bench.LoaderSQLite}
	designs := "all"
	modeDefaults(&cfg, &designs, map[string]bool{})
	if cfg.Loader != bench.LoaderNull || cfg.LoaderKnee != bench.DefaultLimitsKnee || designs != strings.Join(bench.LimitsDesigns, ",") {
		t.Errorf("limits defaults: loader %s, knee %d, designs %s", cfg.Loader, cfg.LoaderKnee, designs)
	}
	cfg = bench.Config{Mode: bench.ModeLimits, Loader: bench.LoaderNull, LoaderKnee: 0}
	designs = "batchproc"
	modeDefaults(&cfg, &designs, map[string]bool{"loader-knee": true, "designs": true})
	if cfg.LoaderKnee != 0 || designs != "batchproc" {
		t.Errorf("given flags overridden: knee %d, designs %s", cfg.LoaderKnee, designs)
	}
	cfg = bench.Config{Mode: bench.ModeSaturate, Loader: bench.LoaderSQLite}
	designs = "all"
	modeDefaults(&cfg, &designs, map[string]bool{})
	if cfg.Loader != bench.LoaderSQLite || cfg.LoaderKnee != 0 || designs != "all" {
		t.Errorf("saturate changed: loader %s, knee %d, designs %s", cfg.Loader, cfg.LoaderKnee, designs)
	}
}
