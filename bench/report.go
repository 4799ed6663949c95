package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// AddLatency is the service-side latency of Add, in nanoseconds.
type AddLatency struct {
	P50  int64 `json:"p50"`
	P99  int64 `json:"p99"`
	P999 int64 `json:"p999"`
	Max  int64 `json:"max"`
}

// E2ELatency is Add to loader commit, in milliseconds (zero with -target,
// whose commits this process cannot see).
type E2ELatency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// DesignResult is one design's run. The JSON names are part of the
// harness's face (design.md): tests and CI read them.
type DesignResult struct {
	Name            string  `json:"name"`
	Load            string  `json:"load"` // closed, open, unpaced (saturate)
	Rate            float64 `json:"rate"` // events/s asked; 0 unpaced
	DurationS       float64 `json:"duration_s"`
	LoaderLatencyMs float64 `json:"loader_latency_ms"`
	Receiver        string  `json:"receiver"` // sqlite, discard, null, or the -target URL

	Target     int64 `json:"target"`      // rate x duration (0 unpaced)
	Requests   int64 `json:"requests"`    // Add calls made
	Offered    int64 `json:"offered"`     // Add returned nil
	Rejected   int64 `json:"rejected"`    // Add returned an error
	NotOffered int64 `json:"not_offered"` // open loop: due but not made (outstanding bound)
	// The paced closed loop's (-pacer-tick) skipped slots: while the
	// handler was in Add (the design held it), or while its previous slot
	// was still waiting to run (the process was starved: the run did not
	// keep the load).
	SlotsSkippedBusy  int64 `json:"slots_skipped_busy,omitempty"`
	SlotsSkippedLate  int64 `json:"slots_skipped_late,omitempty"`
	Delivered         int64 `json:"delivered"`           // the receiving side's count for this run
	DeliveredFromLogs int64 `json:"delivered_from_logs"` // sum of the design's count=N log lines
	Lost              int64 `json:"lost"`                // offered - delivered, after shutdown
	InFlightAtStop    int64 `json:"in_flight_at_stop"`   // offered - delivered when the load ended

	DeliveredPerMin      float64 `json:"delivered_per_min"`
	DeliveredPerSec      float64 `json:"delivered_per_sec"`
	DeliveredPctOfTarget float64 `json:"delivered_pct_of_target"`

	// CPUSecondsPerMillion is the design's CPU per million events offered:
	// isolated, the child's CPU time minus the calibration's load
	// generator (CPUSource "isolated"); in process, the profile's estimate
	// (ProfileCPUSecondsPerMillion, CPUSource "profile").
	CPUSecondsPerMillion       float64   `json:"cpu_seconds_per_million"`
	CPUSource                  string    `json:"cpu_source"`
	Isolated                   bool      `json:"isolated"`                       // the design ran in a child process
	ProcessCPUSeconds          float64   `json:"process_cpu_seconds"`            // CPU time of the process the design ran in, over its run (getrusage): the child, or the whole process in process
	LoadgenCPUSeconds          float64   `json:"loadgen_cpu_seconds"`            // isolated: the calibration's CPU per request x this run's requests, subtracted
	ClientCPUShare             float64   `json:"client_cpu_share"`               // isolated: of the child's CPU profile samples, the share labelled side=client (the design's goroutines, and Add)
	DirectCPUSecondsPerMillion float64   `json:"direct_cpu_seconds_per_million"` // isolated: process_cpu_seconds x client_cpu_share per million offered: the CPU on the design's goroutines and in Add only (no scheduler, GC); few samples
	DesignCPUSeconds           float64   `json:"design_cpu_seconds"`             // isolated: process_cpu_seconds - loadgen_cpu_seconds
	Repeat                     int       `json:"repeat,omitempty"`               // which of the repeated runs this is (1-based); 0 not repeated
	Runs                       int       `json:"runs,omitempty"`                 // a report row: how many runs it is the median of (by CPU)
	CPURunsPerMillion          []float64 `json:"cpu_runs_per_million,omitempty"` // those runs' cpu_seconds_per_million
	CPUSpreadPct               float64   `json:"cpu_spread_pct,omitempty"`       // (max - min) / 2 / median of those, in percent

	// Instructions, with -cpu callgrind (CPUMethod "callgrind"): the
	// child ran under valgrind's callgrind, which counted the
	// instructions it executed in the design's window (user space; the
	// kernel's work is not in them). See callgrind.go.
	CPUMethod               string    `json:"cpu_method,omitempty"`                 // "callgrind"; "" the kernel's CPU time (rusage)
	InstructionsTotal       int64     `json:"instructions_total,omitempty"`         // everything counted in the window
	InstructionsIdle        int64     `json:"instructions_idle,omitempty"`          // left out: the scheduler's search for work (runtime.findRunnable)
	InstructionsHarness     int64     `json:"instructions_harness,omitempty"`       // left out: the child harness's own code, heap-profile sampling, the peak-heap sampler
	Instructions            int64     `json:"instructions,omitempty"`               // total - idle - harness
	LoadgenInstructions     int64     `json:"loadgen_instructions,omitempty"`       // the calibration's instructions per request x this run's requests, subtracted
	DesignInstructions      int64     `json:"design_instructions,omitempty"`        // instructions - loadgen_instructions
	InstructionsPerEvent    float64   `json:"instructions_per_event,omitempty"`     // design_instructions per event offered: the figure
	InstructionRunsPerEvent []float64 `json:"instruction_runs_per_event,omitempty"` // a report row: its runs' instructions_per_event
	InstructionSpreadPct    float64   `json:"instruction_spread_pct,omitempty"`     // (max - min) / 2 / median of those, in percent
	InstructionRunsLostLoad []float64 `json:"instruction_runs_lost_load,omitempty"` // a report row: the runs left out because they did not keep the load (slots_skipped_late over 1%)
	NoRunKeptLoad           bool      `json:"no_run_kept_load,omitempty"`           // -cpu callgrind: none of the row's runs kept the load, so its figure is of them all

	CPUSeconds                  float64 `json:"cpu_seconds"`                     // the design's CPU, from the profile
	CPUSamples                  int64   `json:"cpu_samples"`                     // the profile samples behind cpu_seconds
	ReceiverCPUSeconds          float64 `json:"receiver_cpu_seconds"`            // left out: the in-process receiver's
	ProfileCPUSecondsPerMillion float64 `json:"profile_cpu_seconds_per_million"` // cpu_seconds per million events offered
	ClientCPUSecondsPerMillion  float64 `json:"client_cpu_seconds_per_million"`  // only samples labelled side=client (no unlabelled runtime work)
	ProcessCPUSecondsPerMillion float64 `json:"process_cpu_seconds_per_million"` // process_cpu_seconds per million events offered
	AllocBytesPerEvent          float64 `json:"alloc_bytes_per_event"`
	CopyAllocBytes              int64   `json:"copy_alloc_bytes"`
	CopyAllocShare              float64 `json:"copy_alloc_share"`
	SelectOverheadShare         float64 `json:"select_overhead_share"`
	SelectCPUSeconds            float64 `json:"select_cpu_seconds"` // the samples select_overhead_share is a share of
	SelectSamples               int64   `json:"select_samples"`     // how many samples that is
	RuntimeSyncShare            float64 `json:"runtime_sync_share"`
	GCCycles                    int64   `json:"gc_cycles"`
	GCPauseMs                   float64 `json:"gc_pause_total_ms"`

	AddLatencyNs      AddLatency `json:"add_latency_ns"`
	E2ELatencyMs      E2ELatency `json:"e2e_latency_ms"`
	PeakHeapBytes     uint64     `json:"peak_heap_bytes"`      // heap objects, unswept garbage included
	PeakLiveHeapBytes uint64     `json:"peak_live_heap_bytes"` // live heap as of each GC

	HTTPRequests     int64   `json:"http_requests"` // with -sink kafka: produce calls (one per batch)
	HTTPFailures     int64   `json:"http_failures"` // with -sink kafka: failed produce calls
	HTTP429          int64   `json:"http_429"`      // answers 429 Too Many Requests
	Rate429          float64 `json:"rate_429"`      // http_429 / http_requests
	MaxSendsInFlight int64   `json:"max_sends_in_flight"`
	ShutdownMs       float64 `json:"shutdown_ms"`
	ShutdownError    string  `json:"shutdown_error,omitempty"`
	Error            string  `json:"error,omitempty"`
}

// ReportFields are the per-design report.json fields design.md promises.
var ReportFields = []string{"name", "target", "offered", "delivered", "delivered_from_logs", "lost",
	"delivered_per_min", "cpu_seconds_per_million", "alloc_bytes_per_event", "copy_alloc_share",
	"select_overhead_share", "gc_cycles", "add_latency_ns", "e2e_latency_ms", "peak_heap_bytes"}

// Machine describes where the run happened.
type Machine struct {
	CPUs       int    `json:"cpus"`
	GoMaxProcs int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	CPUModel   string `json:"cpu_model,omitempty"`
}

// RunConfig is the configuration a report was made with.
type RunConfig struct {
	Mode            string   `json:"mode"`
	DurationS       float64  `json:"duration_s"`
	Rate            float64  `json:"rate"`
	Designs         []string `json:"designs"`
	Load            string   `json:"load"`
	Handlers        int      `json:"handlers"`
	SeedQueue       int      `json:"seed_queue"`
	Loader          string   `json:"loader"`
	LoaderLatencyMs float64  `json:"loader_latency_ms"`
	LoaderKnee      int      `json:"loader_knee,omitempty"`         // the null endpoint's capacity knee, 0 none
	LoaderLimit     int      `json:"loader_limit,omitempty"`        // its concurrency limit (429 past it), 0 none
	LoaderSlotWait  float64  `json:"loader_slot_wait_ms,omitempty"` // how long a request past the limit waits for a slot
	Target          string   `json:"target,omitempty"`
	Sink            string   `json:"sink"`
	EventSize       int      `json:"event_size"`
	MemProfileRate  int      `json:"mem_profile_rate"`
}

// Report is report.json.
type Report struct {
	Machine  Machine        `json:"machine"`
	Config   RunConfig      `json:"config"`
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Designs  []DesignResult `json:"designs"`         // fixed and saturate: one row per design (the median run)
	Sweep    []DesignResult `json:"sweep,omitempty"` // sweep: one per design, load and latency
	// Calibration is the no-op design's CPU per request, per kind of load
	// (isolated runs only).
	Calibration []CalibrationResult `json:"calibration,omitempty"`
	// Runs are every run, repeats and calibration included, in the order
	// they ran (written when -repeat > 1).
	Runs []DesignResult `json:"runs,omitempty"`
	// ChartErrors are the charts that could not be drawn, and why.
	ChartErrors []string `json:"chart_errors,omitempty"`

	chartsWritten []writtenChart
}

// CalibrationResult is what the calibration design's runs measured: the
// CPU its child spent per request (the load generator, the child's
// harness, and the runtime work they cause), which is subtracted from the
// design runs.
type CalibrationResult struct {
	Load         string    `json:"load"`
	Runs         int       `json:"runs"`
	NsPerRequest float64   `json:"ns_per_request"` // median over the runs
	RunsNs       []float64 `json:"runs_ns_per_request"`
	SpreadPct    float64   `json:"spread_pct"` // (max - min) / 2 / median, in percent
	// With -cpu callgrind: the calibration child's instructions per
	// request (counted as for a design: idle and harness left out).
	InstructionsPerRequest float64   `json:"instructions_per_request,omitempty"` // median over the runs
	RunsInstructions       []float64 `json:"runs_instructions_per_request,omitempty"`
	InstructionSpreadPct   float64   `json:"instruction_spread_pct,omitempty"`
	RunsLostLoad           []float64 `json:"runs_lost_load_instructions_per_request,omitempty"` // left out: did not keep the load
	NoRunKeptLoad          bool      `json:"no_run_kept_load,omitempty"`                        // none kept it: all of them are used, flagged
}

func newReport(cfg Config) *Report {
	r := &Report{
		Machine: Machine{CPUs: runtime.NumCPU(), GoMaxProcs: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
			OS: runtime.GOOS, Arch: runtime.GOARCH, CPUModel: cpuModel()},
		Config: RunConfig{Mode: cfg.Mode, DurationS: cfg.Duration.Seconds(), Rate: cfg.Rate, Designs: cfg.Designs,
			Load: cfg.Load, Handlers: cfg.Handlers, SeedQueue: cfg.SeedQueue, Loader: cfg.Loader,
			LoaderLatencyMs: ms(cfg.LoaderLatency), LoaderKnee: cfg.LoaderKnee, LoaderLimit: cfg.LoaderLimit, Target: cfg.Target, Sink: cfg.Sink, EventSize: cfg.EventSize,
			MemProfileRate: cfg.MemProfileRate},
		Started: time.Now().UTC(),
		Designs: []DesignResult{},
	}
	if cfg.LoaderLimit > 0 {
		r.Config.LoaderSlotWait = max(ms(cfg.LoaderSlotWait), 0)
	}
	return r
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// write writes report.json, report.md and the charts into dir.
// A chart that cannot be drawn is noted in report.md and ChartErrors, and
// does not fail the write.
func (r *Report) write(dir string) error {
	for i := range r.Designs {
		sanitize(&r.Designs[i])
	}
	for i := range r.Sweep {
		sanitize(&r.Sweep[i])
	}
	for i := range r.Runs {
		sanitize(&r.Runs[i])
	}
	written, errs := r.charts(dir)
	r.chartsWritten = written
	r.ChartErrors = nil
	for _, err := range errs {
		r.ChartErrors = append(r.ChartErrors, err.Error())
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.Markdown(true)), 0o644)
}

// SeedTable is the seed's own result table (mission.md), shown beside ours.
const SeedTable = `| design (seed)     | events delivered / min | select overhead (CPU) | memory overhead |
|-------------------|-----------------------:|----------------------:|----------------:|
| 10 workers, sync  | 83,663                 | 66%                   | 0%              |
| 100 workers, sync | 84,042                 | 85%                   | 0%              |
| 1 worker + async  | 119,720                | 50%                   | 1.22%           |

(120,000 events offered per minute: 2,000 requests/s for 1 minute.)
`

// seedRowFor maps our seed re-implementations to the seed's rows.
var seedRowFor = map[string]string{SeedPool10: "10 workers, sync", SeedPool100: "100 workers, sync", SeedAsync: "1 worker + async"}

// Markdown renders the report: the seed-style table, the extra measures,
// and (in the file) the seed's table and the definitions.
func (r *Report) Markdown(file bool) string {
	var b strings.Builder
	c := r.Config
	if file {
		fmt.Fprintf(&b, "# batchbench: %s mode, %s\n\n", c.Mode, r.Started.Format("2006-01-02 15:04 UTC"))
	}
	m := r.Machine
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), GOMAXPROCS %d, %s/%s, %s.\n", m.CPUs, orDash(m.CPUModel), m.GoMaxProcs, m.OS, m.Arch, m.GoVersion)
	recv := c.Loader + " loader in process"
	if c.Loader == LoaderNull {
		recv = "null endpoint in process (counts only)"
		if c.LoaderKnee > 0 {
			recv += fmt.Sprintf(", capacity knee at %d requests at once (past it, latency x at-once / %d)", c.LoaderKnee, c.LoaderKnee)
		}
		if c.LoaderLimit > 0 {
			recv += fmt.Sprintf(", at most %d requests at once (one more waits up to %gms for a slot, then 429 + Retry-After: 1; every answer says Ingest-Slots: %[1]d)", c.LoaderLimit, c.LoaderSlotWait)
		}
	}
	if c.Target != "" {
		recv = "external loader " + c.Target
	}
	if c.Sink == SinkKafka {
		recv = c.Loader + " loader in process, consuming an in-process Kafka topic (kfake, 1 broker)"
	}
	switch c.Mode {
	case ModeSaturate:
		fmt.Fprintf(&b, "Load: %d producers calling Add back to back for %gs per design, %d-byte events. Receiver: %s, +%gms per request.\n\n",
			c.Handlers, c.DurationS, c.EventSize, recv, c.LoaderLatencyMs)
	case ModeLimits:
		fmt.Fprintf(&b, "Load: %d producers calling Add back to back for %gs per design and point, %d-byte events. Receiver: %s; its added latency swept.\n\n",
			c.Handlers, c.DurationS, c.EventSize, recv)
	case ModeSweep:
		fmt.Fprintf(&b, "Load: %g events/s for %gs per point, closed loop (%d handlers) and open loop, %d-byte events. Receiver: %s; its added latency swept.\n\n",
			c.Rate, c.DurationS, c.Handlers, c.EventSize, recv)
	default:
		fmt.Fprintf(&b, "Load: %s loop, %g events/s for %gs per design (target %s), %d handlers, %d-byte events. Receiver: %s, +%gms per request. Seed queue capacity %d.\n\n",
			c.Load, c.Rate, c.DurationS, commas(int64(c.Rate*c.DurationS)), c.Handlers, c.EventSize, recv, c.LoaderLatencyMs, c.SeedQueue)
	}
	if len(r.Designs) > 0 {
		r.designTables(&b, file)
	}
	switch {
	case len(r.Sweep) > 0 && c.Mode == ModeLimits:
		r.limitsTables(&b)
	case len(r.Sweep) > 0:
		r.sweepTables(&b)
	}
	if file {
		if len(r.chartsWritten) > 0 || len(r.ChartErrors) > 0 {
			b.WriteString("\n## Charts\n\n")
		}
		for _, c := range r.chartsWritten {
			fmt.Fprintf(&b, "![%s](%s)\n\n", c.Title, c.File)
		}
		for _, e := range r.ChartErrors {
			fmt.Fprintf(&b, "- not drawn: %s\n", e)
		}
		b.WriteString("\n## The seed's table\n\n")
		b.WriteString(SeedTable)
		b.WriteString(definitions)
		b.WriteString("\nProfiles: <design>/cpu.pprof, <design>/heap.pprof (`go tool pprof -http : <file>`); logs: <design>/client.log, loader.log, child.log (the child process's stderr).\n")
	}
	return b.String()
}

func (r *Report) designTables(b *strings.Builder, file bool) {
	if file {
		b.WriteString("## This run\n\n")
	}
	b.WriteString("| design | events delivered / min | select overhead (CPU) | memory overhead | seed's row |\n")
	b.WriteString("|---|---:|---:|---:|---|\n")
	for _, d := range r.Designs {
		// The share's basis: at the seed's rate a design spends only tens
		// of milliseconds in select, a handful of 10 ms samples.
		sel := sampledShare(d.SelectOverheadShare, d.SelectSamples)
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", d.Name, commas(int64(d.DeliveredPerMin+0.5)),
			sel, pct2(d.CopyAllocShare), orDash(seedRowFor[d.Name]))
	}
	cpuHead := "CPU s / M events"
	if len(r.Designs) > 0 && r.Designs[0].CPUMethod == CPUCallgrind {
		cpuHead = "instructions / event (callgrind)"
	}
	b.WriteString("\n| design | offered | delivered | from logs | lost | % of target | " + cpuHead + " | profile CPU s / M (samples) | alloc B / event | runtime sync CPU | GC cycles | Add p50 / p99 / p99.9 / max | e2e p50 / p99 | peak heap (live) | sends in flight (max) | 429s (rate) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|\n")
	for _, d := range r.Designs {
		target := "-"
		if d.Target > 0 {
			target = fmt.Sprintf("%.2f%%", d.DeliveredPctOfTarget)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %.2f (%d) | %.0f | %s | %d | %s / %s / %s / %s | %.0f / %.0f ms | %s (%s) | %d | %s |\n",
			d.Name, commas(d.Offered), commas(d.Delivered), commas(d.DeliveredFromLogs), commas(d.Lost), target,
			cpuCell(d), d.ProfileCPUSecondsPerMillion, d.CPUSamples, d.AllocBytesPerEvent, sampledShare(d.RuntimeSyncShare, d.CPUSamples), d.GCCycles,
			dur(d.AddLatencyNs.P50), dur(d.AddLatencyNs.P99), dur(d.AddLatencyNs.P999), dur(d.AddLatencyNs.Max),
			d.E2ELatencyMs.P50, d.E2ELatencyMs.P99, mib(d.PeakHeapBytes), mib(d.PeakLiveHeapBytes), d.MaxSendsInFlight, rate429(d))
	}
	for _, d := range r.Designs {
		if d.Error != "" || d.ShutdownError != "" {
			fmt.Fprintf(b, "\n- %s: %s %s", d.Name, d.Error, d.ShutdownError)
		}
	}
	b.WriteString("\n")
	r.cpuNotes(b)
}

// cpuNotes says how the CPU column was measured and how repeatable it was.
func (r *Report) cpuNotes(b *strings.Builder) {
	rows := r.Designs
	if len(rows) == 0 {
		rows = r.Sweep
	}
	isolated := false
	for _, d := range rows {
		isolated = isolated || strings.HasPrefix(d.CPUSource, "isolated")
	}
	if len(rows) > 0 && rows[0].CPUMethod == CPUCallgrind {
		r.instructionNotes(b, rows)
		return
	}
	if !isolated {
		b.WriteString("\nCPU s / M events: from the CPU profile (100 Hz), the design's samples only; the profile column gives the sample count behind it, whose relative uncertainty is about 1/sqrt(samples).\n")
		return
	}
	b.WriteString("\nCPU s / M events: each design ran in a child process (the receiving side stayed in the parent); the child's CPU time over the run (getrusage), minus the calibration design's CPU per request times the run's requests (the load generator, the child's harness and the runtime work they cause), per million events offered.")
	for _, c := range r.Calibration {
		fmt.Fprintf(b, " Calibration (the no-op design), %s loop: %.2f µs per request subtracted", c.Load, c.NsPerRequest/1e3)
		if c.Runs > 1 {
			fmt.Fprintf(b, ", ±%.1f%% over %d runs; that spread, in µs per request, is the floor of any design's uncertainty in s per million events", c.SpreadPct, c.Runs)
		} else {
			b.WriteString(" (one run: -repeat 5 shows how much it varies)")
		}
		b.WriteString(".")
	}
	var spreads []string
	for _, d := range rows {
		if d.Runs > 1 {
			spreads = append(spreads, fmt.Sprintf("%s %s", d.Name, joinFloats(d.CPURunsPerMillion)))
		}
	}
	if len(spreads) > 0 {
		fmt.Fprintf(b, " The row is the median of %d runs; ± is half the range of the runs (every run within it): %s.", rows[0].Runs, strings.Join(spreads, "; "))
	}
	b.WriteString("\n")
}

// instructionNotes is cpuNotes for -cpu callgrind.
func (r *Report) instructionNotes(b *strings.Builder, rows []DesignResult) {
	b.WriteString("\nCPU column, -cpu callgrind: instructions per event offered, not CPU seconds. Each design ran in a child process under valgrind's callgrind (GOMAXPROCS=1, GOGC=off, one pacer releasing the handlers), which counted the instructions the child executed between the design's build and the end of its Shutdown (user space only: the kernel's work for its syscalls is not counted; nor is the garbage collector, which did not run). Left out of the count: the scheduler's search for the next goroutine (runtime.findRunnable and what it calls, which follows the timing), the child harness's own code (load generator, Add latency recording, log parsing), heap-profile sampling and the peak-heap sampler. From what is left, the calibration design's instructions per request times the run's requests is subtracted. Add latency, e2e latency and peak heap of these runs are under valgrind and not the design's.")
	for _, c := range r.Calibration {
		if c.InstructionsPerRequest == 0 {
			continue
		}
		fmt.Fprintf(b, " Calibration, %s loop: %.0f instructions per request subtracted", c.Load, c.InstructionsPerRequest)
		if len(c.RunsInstructions) > 1 {
			fmt.Fprintf(b, " (runs: %s; ±%.2f%%)", joinFloats0(c.RunsInstructions), c.InstructionSpreadPct)
		}
		if len(c.RunsLostLoad) > 0 {
			fmt.Fprintf(b, "; left out, as they did not keep the load: %s", joinFloats0(c.RunsLostLoad))
		}
		if c.NoRunKeptLoad {
			b.WriteString("; **none of them kept the load** (the machine starved the child), so every figure below subtracts a starved calibration")
		}
		b.WriteString(".")
	}
	var spreads []string
	for _, d := range rows {
		if d.Runs > 1 {
			spreads = append(spreads, fmt.Sprintf("%s %s", d.Name, joinFloats0(d.InstructionRunsPerEvent)))
		}
	}
	if len(spreads) > 0 {
		fmt.Fprintf(b, " The row is the median of the runs; ± is half the range of the runs (every run within it): %s.", strings.Join(spreads, "; "))
	}
	var lost []string
	for _, d := range rows {
		if len(d.InstructionRunsLostLoad) > 0 {
			lost = append(lost, fmt.Sprintf("%s %s", d.Name, joinFloats0(d.InstructionRunsLostLoad)))
		}
	}
	var starved []string
	for _, d := range rows {
		if d.NoRunKeptLoad {
			starved = append(starved, d.Name)
		}
	}
	if len(starved) > 0 {
		fmt.Fprintf(b, " **No run kept the load** for %s: their figures are of runs whose child fell behind, not at the asked rate; rerun on a quieter machine.", strings.Join(starved, ", "))
	}
	if len(lost) > 0 {
		fmt.Fprintf(b, " Left out of the rows: runs that did not keep the load (more than 1%% of their slots came while the previous one still waited to run: the machine starved the child; slots_skipped_late in report.json): %s.", strings.Join(lost, "; "))
	}
	b.WriteString("\n")
}

func joinFloats0(v []float64) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = fmt.Sprintf("%.0f", f)
	}
	return strings.Join(s, ", ")
}

func joinFloats(v []float64) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = fmt.Sprintf("%.2f", f)
	}
	return strings.Join(s, ", ")
}

// sampledShare prints a share of a profile's samples, or "n/a (k
// samples)" when k is below MinShareSamples.
func sampledShare(share float64, samples int64) string {
	if samples == 0 {
		return "-"
	}
	if samples < MinShareSamples {
		return fmt.Sprintf("n/a (%d samples)", samples)
	}
	return fmt.Sprintf("%s of %d samples", pct(share), samples)
}

func (r *Report) sweepTables(b *strings.Builder) {
	var lats []float64
	seenLat := map[float64]bool{}
	type key struct{ name, load string }
	var rows []key
	seenRow := map[key]bool{}
	cell := map[key]map[float64]DesignResult{}
	for _, d := range r.Sweep {
		if !seenLat[d.LoaderLatencyMs] {
			seenLat[d.LoaderLatencyMs] = true
			lats = append(lats, d.LoaderLatencyMs)
		}
		k := key{d.Name, d.Load}
		if !seenRow[k] {
			seenRow[k] = true
			rows = append(rows, k)
			cell[k] = map[float64]DesignResult{}
		}
		cell[k][d.LoaderLatencyMs] = d
	}
	header := func(title string) { latencyHeader(b, title, []string{"design", "load"}, lats) }
	header("Delivered per minute (% of target) against the loader's added latency:")
	for _, k := range rows {
		fmt.Fprintf(b, "| %s | %s |", k.name, k.load)
		for _, l := range lats {
			d := cell[k][l]
			fmt.Fprintf(b, " %s (%.1f%%) |", commas(int64(d.DeliveredPerMin+0.5)), d.DeliveredPctOfTarget)
		}
		b.WriteString("\n")
	}
	header("Add latency p99 against the loader's added latency:")
	for _, k := range rows {
		fmt.Fprintf(b, "| %s | %s |", k.name, k.load)
		for _, l := range lats {
			fmt.Fprintf(b, " %s |", dur(cell[k][l].AddLatencyNs.P99))
		}
		b.WriteString("\n")
	}
	header("CPU seconds per million events (the design's CPU) against the loader's added latency:")
	for _, k := range rows {
		fmt.Fprintf(b, "| %s | %s |", k.name, k.load)
		for _, l := range lats {
			fmt.Fprintf(b, " %s |", cpuCell(cell[k][l]))
		}
		b.WriteString("\n")
	}
	// Delivered per minute counts the drain at shutdown, so a design that
	// falls behind but buffers (batchproc-ordered: one batch per round trip)
	// still shows 100% there. Where it bends shows here: the backlog when
	// the load stopped, and the e2e latency growing past linger + latency.
	header("Events still in flight when the load stopped / e2e p99 (where a design falls behind):")
	for _, k := range rows {
		fmt.Fprintf(b, "| %s | %s |", k.name, k.load)
		for _, l := range lats {
			d := cell[k][l]
			fmt.Fprintf(b, " %s / %s |", commas(d.InFlightAtStop), dur(int64(d.E2ELatencyMs.P99*1e6)))
		}
		b.WriteString("\n")
	}
	r.cpuNotes(b)
}

// latencyHeader writes title and the head of a table whose columns are
// lead, then one per loader latency in lats.
func latencyHeader(b *strings.Builder, title string, lead []string, lats []float64) {
	fmt.Fprintf(b, "\n%s\n\n|", title)
	for _, c := range lead {
		fmt.Fprintf(b, " %s |", c)
	}
	for _, l := range lats {
		fmt.Fprintf(b, " %gms |", l)
	}
	b.WriteString("\n|" + strings.Repeat("---|", len(lead)) + strings.Repeat("---:|", len(lats)) + "\n")
}

// rate429 is a design's 429 answers and their share of its requests.
func rate429(d DesignResult) string {
	return fmt.Sprintf("%s (%.2f%%)", commas(d.HTTP429), 100*d.Rate429)
}

// limitsTables are -mode limits' tables: events/s per design against the
// loader's latency, batchproc (the adaptive limit) as a share of the best
// fixed limit at each latency, and each design's 429 rate and peak heap.
func (r *Report) limitsTables(b *strings.Builder) {
	lats, rows, cell := r.limitsGrid()
	header := func(title string) { latencyHeader(b, title, []string{"design"}, lats) }
	header("Events delivered per second (the drain included) against the loader's added latency:")
	for _, name := range rows {
		fmt.Fprintf(b, "| %s |", name)
		for _, l := range lats {
			d, ok := cell[name][l]
			switch {
			case !ok:
				b.WriteString(" - |")
			case d.Error != "" && d.Offered == 0:
				b.WriteString(" error |")
			default:
				fmt.Fprintf(b, " %s |", commas(int64(d.DeliveredPerSec+0.5)))
			}
		}
		b.WriteString("\n")
	}
	if ratios := r.LimitsRatios(); len(ratios) > 0 {
		b.WriteString("| **batchproc / best fixed** |")
		for _, l := range lats {
			if x, ok := ratios[l]; ok {
				fmt.Fprintf(b, " **%.1f%%** (%s) |", 100*x.Ratio, strings.TrimPrefix(x.BestFixed, "batchproc-"))
			} else {
				b.WriteString(" - |")
			}
		}
		b.WriteString("\n")
	}
	header("429 answers / requests (the 429 rate):")
	for _, name := range rows {
		fmt.Fprintf(b, "| %s |", name)
		for _, l := range lats {
			if d, ok := cell[name][l]; ok {
				fmt.Fprintf(b, " %s / %s (%.2f%%) |", commas(d.HTTP429), commas(d.HTTPRequests), 100*d.Rate429)
			} else {
				b.WriteString(" - |")
			}
		}
		b.WriteString("\n")
	}
	header("Peak heap (live) / sends in flight at most:")
	for _, name := range rows {
		fmt.Fprintf(b, "| %s |", name)
		for _, l := range lats {
			if d, ok := cell[name][l]; ok {
				fmt.Fprintf(b, " %s (%s) / %d |", mib(d.PeakHeapBytes), mib(d.PeakLiveHeapBytes), d.MaxSendsInFlight)
			} else {
				b.WriteString(" - |")
			}
		}
		b.WriteString("\n")
	}
	for _, d := range r.Sweep {
		if d.Error != "" || d.ShutdownError != "" {
			fmt.Fprintf(b, "\n- %s at %gms: %s %s", d.Name, d.LoaderLatencyMs, d.Error, d.ShutdownError)
		}
	}
	b.WriteString("\n")
}

// limitsGrid arranges -mode limits' rows: the latencies in order, the
// designs in order of first appearance, and each design's row per latency.
func (r *Report) limitsGrid() (lats []float64, names []string, cell map[string]map[float64]DesignResult) {
	cell = map[string]map[float64]DesignResult{}
	seenLat := map[float64]bool{}
	for _, d := range r.Sweep {
		if !seenLat[d.LoaderLatencyMs] {
			seenLat[d.LoaderLatencyMs] = true
			lats = append(lats, d.LoaderLatencyMs)
		}
		if cell[d.Name] == nil {
			names = append(names, d.Name)
			cell[d.Name] = map[float64]DesignResult{}
		}
		cell[d.Name][d.LoaderLatencyMs] = d
	}
	slices.Sort(lats)
	return lats, names, cell
}

// LimitsRatio is the adaptive limit against the fixed ones at one loader
// latency.
type LimitsRatio struct {
	BestFixed string  // the fixed-limit design that delivered most
	Ratio     float64 // batchproc's events/s over BestFixed's
}

// LimitsRatios returns, per loader latency (ms) of a -mode limits report,
// batchproc's events/s as a share of the best batchproc-fixed-N design's
// at that latency; latencies lacking either (or where it failed) are left
// out.
func (r *Report) LimitsRatios() map[float64]LimitsRatio {
	_, _, cell := r.limitsGrid()
	out := map[float64]LimitsRatio{}
	for lat, a := range cell[Batchproc] {
		if a.Error != "" && a.Offered == 0 {
			continue
		}
		var best DesignResult
		for name, row := range cell {
			if d, ok := row[lat]; ok && strings.HasPrefix(name, "batchproc-fixed-") && (d.Error == "" || d.Offered > 0) && d.DeliveredPerSec > best.DeliveredPerSec {
				best = d
			}
		}
		if best.DeliveredPerSec > 0 {
			out[lat] = LimitsRatio{BestFixed: best.Name, Ratio: a.DeliveredPerSec / best.DeliveredPerSec}
		}
	}
	return out
}

const definitions = `
## Definitions

- **events delivered / min**: events the receiving side stored in the design's run (its own count), per minute of load; the drain at shutdown counts, as the seed's final count=288 did. *from logs* is the sum of the design's count=N INFO lines, the seed's way.
- **offered**: Add calls that returned nil; **lost** = offered - delivered after shutdown (dropped, failed, or cut off by the shutdown deadline); **in flight at stop**: offered - delivered when the load ended.
- **select overhead (CPU)**: of the design's CPU samples whose stack contains runtime.selectgo, the share that also contains runtime.sellock or runtime.acquireSudog (the seed's figure; for its async design the seed also counted runtime.recv and the copy, we do not).
- **runtime sync CPU**: share of the design's CPU samples whose stack contains a runtime channel, lock or scheduler function (bench.RuntimeSyncFuncs: chansend/chanrecv/selectgo, lock2/unlock2/semacquire/futex, mutex slow paths, gopark/goready/schedule/findRunnable/park_m/...).
- **CPU s / M events** (the design's CPU per million events offered): by default (-isolate) each design runs in a child process with the load generator, the receiving side stays in the parent, and the kernel counts the child's CPU time exactly (getrusage; GetProcessTimes on Windows) over the design's life (build, load, shutdown). The calibration design (calibration-noop: Add returns at once) runs under the same load; its CPU per request, the load generator's and the child harness's, times the design run's requests is subtracted. With -repeat N every design runs N times, interleaved; the row is the median run and ± half the range of the N runs.
- **profile CPU s / M** (the estimate from the CPU profile, and the only one with -isolate=false): CPU-profile samples labelled side=client (the design's goroutines, and the load generator's handlers while inside Add), plus unlabelled runtime work, minus anything in the receiver's code; the load generator's pacing and event building and the harness are left out; runtime work without a goroutine (scheduler, GC workers) is counted with the design. At 100 Hz a design at 2,000 events/s gets a few dozen samples in 10 s, so it is uncertain by about 1/sqrt(samples). Shares of samples (select overhead, runtime sync) resting on fewer than 30 samples print n/a.
- **memory overhead**: share of the design's allocated bytes (heap profile alloc_space, delta over the run, receiver's stacks left out) allocated under deepCopy: buffer copies at flush. **alloc B / event**: the design's allocated bytes per event offered (the event the load generator builds and hands to Add is not counted; what Add and the sends allocate is).
- **Add p50 / p99 / p99.9 / max**: the time Add took, as the service's handler waits for it (HdrHistogram). **e2e**: from just before Add to the loader's commit (t0 in each event).
- **429 rate**: the design's HTTP answers 429 Too Many Requests over all its HTTP requests (retries included), counted by its transport. The null endpoint answers 429 with -loader-limit N, as the real loader does past its ingest slots: a request past N waits up to -loader-slot-wait for a slot, then is refused with Retry-After: 1.
- **batchproc / best fixed** (-mode limits): at each loader latency, batchproc's events delivered per second (the adaptive limit, no option set) over the most any batchproc-fixed-N design delivered there, all run one after another at that latency.
- **peak heap (live)**: the highest heap object bytes sampled every 10 ms, garbage not yet collected included, and in brackets the highest live heap as of a GC (/gc/heap/live:bytes); of the child process (the design and the load generator) when isolated, else of the whole process, receiver included. GC cycles and alloc B / event likewise come from the process the design ran in.
`

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func pct(f float64) string  { return fmt.Sprintf("%.0f%%", 100*f) }
func pct2(f float64) string { return fmt.Sprintf("%.2f%%", 100*f) }
func mib(b uint64) string   { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func dur(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	case d >= time.Microsecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	default:
		return fmt.Sprintf("%dns", ns)
	}
}

// commas formats n with thousands separators, as the seed's table.
func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
