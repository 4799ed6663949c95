package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
)

// collect turns the runs into the report: the calibration per kind of
// load, each run's design CPU (isolated: its process's CPU minus the
// calibration's per request), and one row per design (per design, load and
// latency in a sweep): the median run by CPU, with the spread over the
// repeats.
func (r *Report) collect(cfg Config) {
	for i := range r.Runs {
		sanitize(&r.Runs[i])
	}
	r.calibrate()
	type key struct {
		name, load string
		latency    float64
	}
	var order []key
	groups := map[key][]DesignResult{}
	for _, d := range r.Runs {
		if d.Name == Calibration {
			continue
		}
		k := key{name: d.Name}
		if cfg.Mode == ModeSweep || cfg.Mode == ModeLimits {
			k.load, k.latency = d.Load, d.LoaderLatencyMs
		}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], d)
	}
	rows := []DesignResult{}
	for _, k := range order {
		rows = append(rows, medianRun(groups[k]))
	}
	if cfg.Mode == ModeSweep || cfg.Mode == ModeLimits {
		r.Sweep = rows
	} else {
		r.Designs = rows
	}
	if cfg.Repeat <= 1 {
		r.Runs = nil
	}
}

// calibrate fills r.Calibration from the calibration runs and applies it
// to the other runs.
//
// The child process of a design run spends CPU on the design and on the
// load generator (pacing the handlers, building each event, recording
// Add's latency), the child's harness (progress, heap sampling, the
// profiler) and the runtime work these cause. The calibration design's Add
// does nothing, so its child's CPU per request is the second part, which is
// charged per request: a design run's loadgen_cpu_seconds is that times its
// own requests (a closed loop whose Adds block makes fewer).
func (r *Report) calibrate() {
	perLoad := map[string][]float64{}
	var loads []string
	for _, d := range r.Runs {
		if d.Name != Calibration || d.Error != "" || d.Requests == 0 || !d.Isolated {
			continue
		}
		if _, ok := perLoad[d.Load]; !ok {
			loads = append(loads, d.Load)
		}
		perLoad[d.Load] = append(perLoad[d.Load], d.ProcessCPUSeconds/float64(d.Requests)*1e9)
	}
	// Instructions: the calibration runs that kept the load only (see
	// keptLoad), unless none did.
	instrPerLoad, instrLost := map[string][]float64{}, map[string][]float64{}
	for _, d := range r.Runs {
		if d.Name == Calibration && d.Error == "" && d.Requests > 0 && d.CPUMethod == CPUCallgrind {
			v := float64(d.Instructions) / float64(d.Requests)
			if keptLoad(d) {
				instrPerLoad[d.Load] = append(instrPerLoad[d.Load], v)
			} else {
				instrLost[d.Load] = append(instrLost[d.Load], v)
			}
		}
	}
	noneKept := map[string]bool{}
	for load, v := range instrLost {
		if len(instrPerLoad[load]) == 0 { // none kept the load: all of them, flagged
			instrPerLoad[load], instrLost[load], noneKept[load] = v, nil, true
		}
	}
	nsPer := map[string]float64{}
	instrPer := map[string]float64{}
	for _, load := range loads {
		v := perLoad[load]
		m := median(v)
		nsPer[load] = m
		c := CalibrationResult{Load: load, Runs: len(v), NsPerRequest: m, RunsNs: v, SpreadPct: spreadPct(v, m)}
		if iv := instrPerLoad[load]; len(iv) > 0 {
			im := median(iv)
			instrPer[load] = im
			c.InstructionsPerRequest, c.RunsInstructions, c.InstructionSpreadPct = im, iv, spreadPct(iv, im)
			c.RunsLostLoad, c.NoRunKeptLoad = instrLost[load], noneKept[load]
		}
		r.Calibration = append(r.Calibration, c)
	}
	for i := range r.Runs {
		d := &r.Runs[i]
		d.CPUSource = "profile"
		if !d.Isolated || d.Error != "" {
			continue
		}
		ns, ok := nsPer[d.Load]
		switch {
		case d.Name == Calibration:
			d.DesignCPUSeconds = d.ProcessCPUSeconds
			d.CPUSource = "isolated (calibration itself)"
		case ok:
			d.LoadgenCPUSeconds = ns * float64(d.Requests) / 1e9
			d.DesignCPUSeconds = d.ProcessCPUSeconds - d.LoadgenCPUSeconds
			d.CPUSource = "isolated"
		default:
			// Saturate (no calibration): the load generator stays in.
			d.DesignCPUSeconds = d.ProcessCPUSeconds
			d.CPUSource = "isolated, load generator included"
		}
		d.CPUSecondsPerMillion = 0
		if d.Offered > 0 {
			d.CPUSecondsPerMillion = d.DesignCPUSeconds / float64(d.Offered) * 1e6
		}
		if d.CPUMethod == CPUCallgrind {
			applyInstructions(d, instrPer)
		}
	}
}

// applyInstructions fills a -cpu callgrind run's design instructions:
// its count minus the calibration's per request times its requests. The
// child ran under valgrind, so its CPU time is valgrind's, not the
// design's: the CPU s figures are left at 0.
func applyInstructions(d *DesignResult, instrPer map[string]float64) {
	d.CPUSecondsPerMillion, d.DesignCPUSeconds, d.LoadgenCPUSeconds = 0, 0, 0
	d.CPUSource = "callgrind (instructions_per_event)"
	ip, ok := instrPer[d.Load]
	switch {
	case d.Name == Calibration:
		d.DesignInstructions = d.Instructions
		d.CPUSource = "callgrind (calibration itself)"
	case ok:
		d.LoadgenInstructions = int64(ip*float64(d.Requests) + 0.5)
		d.DesignInstructions = d.Instructions - d.LoadgenInstructions
	default:
		d.DesignInstructions = d.Instructions
		d.CPUSource = "callgrind, load generator included (instructions_per_event)"
	}
	d.InstructionsPerEvent = 0
	if n := d.Offered; d.Name == Calibration {
		if d.Requests > 0 {
			d.InstructionsPerEvent = float64(d.DesignInstructions) / float64(d.Requests)
		}
	} else if n > 0 {
		d.InstructionsPerEvent = float64(d.DesignInstructions) / float64(n)
	}
}

// keptLoad says whether a run kept the load it was given: at most 1% of
// its slots skipped because the process did not get to run its handlers
// in time (SlotsSkippedLate; skipped while the design held the handler in
// Add is the design's doing, and counts as kept). Under valgrind on a
// busy machine the child can fall behind; its count per request then
// changes (handlers find their next slot waiting and do not park), so
// the run does not measure the design at the asked rate.
func keptLoad(d DesignResult) bool {
	return d.Target <= 0 || d.SlotsSkippedLate*100 <= d.Target
}

// cpuFigure is the figure a row's runs are ranked by: instructions per
// event with -cpu callgrind, CPU s per million events otherwise.
func cpuFigure(d DesignResult) float64 {
	if d.CPUMethod == CPUCallgrind {
		return d.InstructionsPerEvent
	}
	return d.CPUSecondsPerMillion
}

// medianRun returns the run whose CPU per million is the median of runs
// (the lower middle one of an even count), with Runs, CPURunsPerMillion and
// CPUSpreadPct set. Failed runs are left out unless every run failed.
func medianRun(runs []DesignResult) DesignResult {
	repeated := len(runs) > 1
	ok := make([]DesignResult, 0, len(runs))
	for _, d := range runs {
		if d.Error == "" {
			ok = append(ok, d)
		}
	}
	if len(ok) == 0 {
		return runs[0]
	}
	// Instructions: of the runs that kept the load, unless none did.
	var lost []float64
	noneKept := false
	if ok[0].CPUMethod == CPUCallgrind {
		kept := make([]DesignResult, 0, len(ok))
		for _, d := range ok {
			if keptLoad(d) {
				kept = append(kept, d)
			} else {
				lost = append(lost, d.InstructionsPerEvent)
			}
		}
		if len(kept) > 0 {
			ok = kept
		} else {
			lost = nil
			noneKept = true
		}
	}
	runs = slices.DeleteFunc(slices.Clone(runs), func(d DesignResult) bool {
		return d.Error == "" && !slices.ContainsFunc(ok, func(k DesignResult) bool { return k.Repeat == d.Repeat })
	})
	slices.SortStableFunc(ok, func(a, b DesignResult) int {
		return cmpFloat(cpuFigure(a), cpuFigure(b))
	})
	row := ok[(len(ok)-1)/2]
	row.NoRunKeptLoad = row.CPUMethod == CPUCallgrind && !keptLoad(row)
	if !repeated {
		return row
	}
	row.Repeat = 0
	row.Runs = len(ok)
	row.CPURunsPerMillion, row.InstructionRunsPerEvent = nil, nil
	for _, d := range runs { // in run order
		if d.Error == "" {
			row.CPURunsPerMillion = append(row.CPURunsPerMillion, d.CPUSecondsPerMillion)
			if d.CPUMethod == CPUCallgrind {
				row.InstructionRunsPerEvent = append(row.InstructionRunsPerEvent, d.InstructionsPerEvent)
			}
		}
	}
	row.CPUSpreadPct = spreadPct(row.CPURunsPerMillion, row.CPUSecondsPerMillion)
	row.InstructionSpreadPct = spreadPct(row.InstructionRunsPerEvent, row.InstructionsPerEvent)
	row.InstructionRunsLostLoad, row.NoRunKeptLoad = lost, noneKept
	if n := len(runs) - len(ok); n > 0 && row.Error == "" {
		row.Error = fmt.Sprintf("%d of %d runs failed: %s", n, len(runs), firstError(runs))
	}
	return row
}

func firstError(runs []DesignResult) string {
	for _, d := range runs {
		if d.Error != "" {
			return d.Error
		}
	}
	return ""
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// median of v (the mean of the middle two of an even count); 0 when empty.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// spreadPct is half the range of v as a percentage of m: ±spread covers
// every run. 0 when m is 0 or there is one value.
func spreadPct(v []float64, m float64) float64 {
	if len(v) < 2 || m == 0 {
		return 0
	}
	return 100 * (slices.Max(v) - slices.Min(v)) / 2 / math.Abs(m)
}

// sanitize sets every non-finite float of d (NaN, ±Inf: a division by a
// zero that slipped through, a broken profile) to 0, so that report.json
// can be written (encoding/json refuses them) and no chart sees them, and
// bounds every figure by ±maxFigure, so that no chart's axis reaches
// ranges the rasteriser cannot draw (a report.json edited by hand).
//
// maxFigure is far above any real figure: 1e15 ns is 11 days, 1e15 events
// per minute no machine delivers.
func sanitize(d *DesignResult) {
	sanitizeValue(reflect.ValueOf(d).Elem())
}

const maxFigure = 1e15

func sanitizeValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		switch f := v.Float(); {
		case math.IsNaN(f) || math.IsInf(f, 0):
			v.SetFloat(0)
		case math.Abs(f) > maxFigure:
			v.SetFloat(math.Copysign(maxFigure, f))
		}
	case reflect.Int, reflect.Int64:
		if n := v.Int(); n > maxFigure || n < -maxFigure {
			v.SetInt(int64(math.Copysign(maxFigure, float64(n))))
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				sanitizeValue(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			sanitizeValue(v.Index(i))
		}
	}
}

// Summary is what the terminal shows at the end: one line per design.
// The wide tables are in report.md.
func (r *Report) Summary() string {
	var b strings.Builder
	rows := r.Designs
	if len(rows) == 0 {
		rows = r.Sweep
	}
	if len(rows) == 0 {
		return "no design ran\n"
	}
	nameW := len("design")
	for _, d := range rows {
		nameW = max(nameW, len(summaryName(d, r.Config.Mode)))
	}
	cpuHead := "CPU s/M events"
	if rows[0].CPUMethod == CPUCallgrind {
		cpuHead = "instr/event"
	}
	// The 429 rate, where the receiver refuses (-loader-limit) or did.
	show429 := r.Config.LoaderLimit > 0
	for _, d := range rows {
		show429 = show429 || d.HTTP429 > 0
	}
	fmt.Fprintf(&b, "%-*s  %13s  %8s  %14s  %9s  %8s", nameW, "design", "delivered/min", "% target", cpuHead, "Add p99", "e2e p99")
	if show429 {
		fmt.Fprintf(&b, "  %8s", "429 rate")
	}
	b.WriteString("\n")
	for _, d := range rows {
		name := summaryName(d, r.Config.Mode)
		if d.Error != "" && d.Offered == 0 {
			fmt.Fprintf(&b, "%-*s  error: %s\n", nameW, name, d.Error)
			continue
		}
		target := "-"
		if d.Target > 0 {
			target = fmt.Sprintf("%.1f%%", d.DeliveredPctOfTarget)
		}
		e2e := "-"
		if d.E2ELatencyMs.P99 > 0 {
			e2e = dur(int64(d.E2ELatencyMs.P99 * 1e6))
		}
		fmt.Fprintf(&b, "%-*s  %13s  %8s  %14s  %9s  %8s", nameW, name, commas(int64(d.DeliveredPerMin+0.5)), target,
			cpuCell(d), dur(d.AddLatencyNs.P99), e2e)
		if show429 {
			fmt.Fprintf(&b, "  %7.2f%%", 100*d.Rate429)
		}
		if d.Error != "" {
			fmt.Fprintf(&b, "  (%s)", d.Error)
		}
		b.WriteString("\n")
	}
	var starved []string
	for _, d := range rows {
		if d.NoRunKeptLoad {
			starved = append(starved, summaryName(d, r.Config.Mode))
		}
	}
	if len(starved) > 0 {
		fmt.Fprintf(&b, "warning: no run of %s kept the load (the machine starved the child under valgrind): those instruction figures are not at the asked rate\n", strings.Join(starved, ", "))
	}
	if r.Config.Mode == ModeLimits {
		ratios := r.LimitsRatios()
		lats, _, _ := r.limitsGrid()
		for _, l := range lats {
			if x, ok := ratios[l]; ok {
				fmt.Fprintf(&b, "batchproc / best fixed at %gms: %.1f%% (%s)\n", l, 100*x.Ratio, x.BestFixed)
			}
		}
	}
	for _, c := range r.Calibration {
		if c.NoRunKeptLoad {
			fmt.Fprintf(&b, "warning: no calibration run (%s loop) kept the load: every figure subtracts a starved calibration\n", c.Load)
		}
		if c.InstructionsPerRequest > 0 {
			fmt.Fprintf(&b, "calibration (%s loop, subtracted): %.0f instructions per request", c.Load, c.InstructionsPerRequest)
			if len(c.RunsInstructions) > 1 {
				fmt.Fprintf(&b, ", ±%.2f%% over %d runs", c.InstructionSpreadPct, len(c.RunsInstructions))
			}
			b.WriteString(" (callgrind; Add latency and e2e are under valgrind)\n")
			continue
		}
		fmt.Fprintf(&b, "calibration (%s loop, subtracted): %.1f µs CPU per request", c.Load, c.NsPerRequest/1e3)
		if c.Runs > 1 {
			fmt.Fprintf(&b, ", ±%.1f%% over %d runs", c.SpreadPct, c.Runs)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func summaryName(d DesignResult, mode string) string {
	switch mode {
	case ModeSweep:
		return fmt.Sprintf("%s %s %gms", d.Name, d.Load, d.LoaderLatencyMs)
	case ModeLimits:
		return fmt.Sprintf("%s %gms", d.Name, d.LoaderLatencyMs)
	}
	return d.Name
}

// cpuCell is the CPU per million events (with -cpu callgrind the
// instructions per event) with its spread over repeats.
func cpuCell(d DesignResult) string {
	if d.CPUMethod == CPUCallgrind {
		s := commas(int64(math.Round(d.InstructionsPerEvent))) + " instr"
		if d.Runs > 1 {
			s += fmt.Sprintf(" ±%.1f%%", d.InstructionSpreadPct)
		}
		return s
	}
	s := fmt.Sprintf("%.2f", d.CPUSecondsPerMillion)
	if d.Runs > 1 {
		s += fmt.Sprintf(" ±%.0f%%", d.CPUSpreadPct)
	}
	return s
}

// Render rewrites report.md and the charts of a finished run's directory
// from its report.json, without running anything (batchbench -render).
func Render(dir string) (*Report, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("bench: %s/report.json: %w", dir, err)
	}
	return &r, r.write(dir)
}
