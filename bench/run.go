// Package bench is the profiling harness behind cmd/batchbench: it runs the
// seed's study (mission.md) on this machine, every design side by side
// against a fresh Batch Loader, and writes what it measured.
//
// # A run
//
// For each design [Run] starts a receiving side (the in-process loader on a
// temporary SQLite file, its discard store, a null endpoint, or an external
// -target), builds the design with the shared HTTP transport, drives it with
// the load generator for the duration, then shuts it down with a deadline
// and counts what arrived: the receiving side's own count, and the sum of
// the design's count=N log lines, as the seed counted.
//
// With -sink kafka the receiving side is an in-process Kafka cluster (kfake)
// with one topic, and the in-process loader consuming it with its Kafka
// consumer; the batchproc designs produce with kafkasink, the others produce
// each body they would have posted as one record. After the design's
// Shutdown the harness waits (up to the stop timeout) for the loader to
// have consumed the whole topic before counting. -loader-latency is ignored
// (it is added to HTTP answers; a produce has no answer from the loader).
//
// By default each design run is a child process (this program again, see
// [IsChild]): the receiving side stays here, the child runs the design
// and the load generator and reports what it measured, its own CPU time
// included, from which the calibration design's (a no-op Add under the
// same load) is subtracted. With -cpu callgrind the child runs under
// valgrind's callgrind instead and the figure is the instructions the
// design executed per event (see callgrind.go). A CPU profile and a heap profile (allocation
// delta) cover each design's run, and are parsed for the seed's figures
// ([AnalyzeCPU], [AnalyzeHeap]).
//
// The terminal gets progress with the study's ETA and a one-line summary
// per design ([Report.Summary]); report.md holds the tables and embeds the
// charts.
//
// # Modes
//
//   - fixed: the seed's study, at -rate for -duration per design.
//   - saturate: unpaced producers (-handlers of them) call Add back to back
//     for -duration: the sustained delivered events/s, what was lost, and
//     the peak heap.
//   - sweep: delivered per minute and Add latency against the loader's added
//     latency (0 to 1 s), per design, closed and open loop.
//   - limits: the adaptive send limit against fixed ones (issue 10): at
//     each loader latency of [LimitsLatencies], every design (default
//     [LimitsDesigns]: batchproc and batchproc-fixed-N) saturating the null
//     endpoint, by default with a capacity knee ([DefaultLimitsKnee]); the
//     report has events/s against latency per design, and batchproc as a
//     share of the best fixed limit at each point.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/google/pprof/profile"
	"golang.org/x/term"

	"github.com/batchproc/batchproc/loader"
)

// Modes.
const (
	ModeFixed    = "fixed"
	ModeSaturate = "saturate"
	ModeSweep    = "sweep"
	ModeLimits   = "limits"
)

// LimitsLatencies are the loader latencies -mode limits visits.
var LimitsLatencies = []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
	700 * time.Millisecond, time.Second}

// LimitsDesigns are -mode limits' default designs: the adaptive limit and
// the fixed ones it is set against.
var LimitsDesigns = func() []string {
	d := []string{Batchproc}
	for _, n := range FixedLimits {
		d = append(d, FixedDesign(n))
	}
	return d
}()

// DefaultLimitsKnee is cmd/batchbench's -loader-knee in -mode limits when
// the flag is not given: the null endpoint's latency grows past 32
// requests at once, so that the best fixed limit is not simply the largest.
const DefaultLimitsKnee = 32

// SweepLatencies are the loader latencies the sweep visits.
var SweepLatencies = []time.Duration{0, 10 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond, time.Second}

// Config is one invocation of the harness; cmd/batchbench fills it from its
// flags. Zero values take the defaults named.
type Config struct {
	Mode          string        // fixed (default), saturate, sweep, limits
	Duration      time.Duration // per design (and per sweep point); default 60s
	Rate          float64       // events (requests) per second; default 2,000; saturate ignores it
	Designs       []string      // default AllDesigns
	Load          string        // closed (default) or open; sweep runs both
	Handlers      int           // closed-loop handlers, saturate producers; default 100
	SeedQueue     int           // the seed designs' channel capacity; default 0 (unbuffered)
	Loader        string        // sqlite (default), discard, null
	LoaderLatency time.Duration // added per request by the in-process receiver; default 400ms (saturate: 0)
	// LoaderKnee, with the null endpoint, gives the receiver a capacity
	// knee: past LoaderKnee requests at once, each waits LoaderLatency
	// times (requests at once / LoaderKnee), as a server queueing work
	// beyond its capacity does. 0: no knee.
	LoaderKnee int
	// LoaderLimit, with the null endpoint, gives the receiver the real
	// loader's admission (protocol.md): at most LoaderLimit requests served
	// at once; one more waits up to LoaderSlotWait for a slot and is then
	// answered 429 with Retry-After (the loader's default, 1 s). 0: no
	// limit. Each design's 429 rate is in the report.
	LoaderLimit int
	// LoaderSlotWait is how long a request past LoaderLimit waits for a
	// slot; default the loader's -slot-wait (250ms). Negative: none.
	LoaderSlotWait time.Duration
	// LoaderLatencySet says LoaderLatency was given (so 0 means 0, not the default).
	LoaderLatencySet bool
	Target           string // URL of an external loader; overrides Loader
	Sink             string // http (default), or kafka: the in-process loader consumes an in-process topic (see the package doc)
	Out              string // output directory; default results/<timestamp>

	EventSize   int           // bytes per event; default 200
	StopTimeout time.Duration // deadline of each design's Shutdown; default 30s
	// Progress receives the progress display and the final table; default
	// os.Stdout. A bar is drawn when it is a terminal, plain lines otherwise.
	Progress io.Writer
	// NoDefaultTransportVariant skips the extra seed-async run on Go's
	// default transport (run once in fixed mode when seed-async is chosen).
	NoDefaultTransportVariant bool
	// MemProfileRate is runtime.MemProfileRate during the run; default 16 KiB.
	MemProfileRate int

	// InProcess runs the designs in this process, next to the receiving
	// side, as before isolation existed: the design's CPU is then only the
	// profile's estimate. By default each design run is a child process
	// (this program re-executed; its main must call [ChildMain] when
	// [IsChild]), whose own CPU time the kernel counts exactly; see
	// calibrate.
	InProcess bool
	// ProfileHz is the CPU profile's sampling rate; default 100. Linux
	// checks CPU-time timers at its scheduler tick, so rates above the
	// kernel's HZ (often 250) give no more samples.
	ProfileHz int
	// Repeat runs every design (and the calibration) this many times,
	// interleaved, and reports the median run with the spread of its CPU
	// figure; default 1.
	Repeat int
	// CPUMethod is how an isolated design's CPU is measured: CPURusage
	// (default: the kernel's CPU time) or CPUCallgrind (instructions,
	// counted by valgrind's callgrind; needs valgrind, amd64).
	CPUMethod string
	// Valgrind is the valgrind program for CPUCallgrind; default
	// "valgrind" (found in PATH).
	Valgrind string
	// PacerTick paces the closed loop with one pacer goroutine waking
	// every PacerTick instead of a timer per handler (see
	// pacedClosedLoop); 0 (with CPURusage, the default): a timer per
	// handler. With CPUCallgrind it defaults to 10ms: the load generator's
	// instructions per request then do not depend on how the child's
	// timers happen to coincide. Negative: a timer per handler always.
	PacerTick time.Duration
}

func (c *Config) defaults() error {
	if c.Mode == "" {
		c.Mode = ModeFixed
	}
	switch c.Mode {
	case ModeFixed, ModeSaturate, ModeSweep, ModeLimits:
	default:
		return fmt.Errorf("bench: unknown -mode %q (fixed, saturate, sweep, limits)", c.Mode)
	}
	if c.Duration == 0 {
		c.Duration = 60 * time.Second
	}
	if c.Duration < 0 {
		return fmt.Errorf("bench: -duration %v is negative", c.Duration)
	}
	if c.Rate == 0 {
		c.Rate = 2000
	}
	if c.Rate < 0 {
		return fmt.Errorf("bench: -rate %v is negative", c.Rate)
	}
	if len(c.Designs) == 0 {
		c.Designs = append([]string(nil), AllDesigns...)
		if c.Mode == ModeLimits {
			c.Designs = append([]string(nil), LimitsDesigns...)
		}
	}
	for _, d := range c.Designs {
		if _, ok := designSpecs[d]; !ok {
			return fmt.Errorf("bench: unknown design %q", d)
		}
	}
	if c.Load == "" {
		c.Load = LoadClosed
	}
	if c.Load != LoadClosed && c.Load != LoadOpen {
		return fmt.Errorf("bench: unknown -load %q (closed, open)", c.Load)
	}
	if c.Handlers == 0 {
		c.Handlers = 100
	}
	if c.Handlers < 0 || c.SeedQueue < 0 {
		return errors.New("bench: -handlers and -seed-queue must not be negative")
	}
	if c.Loader == "" {
		c.Loader = LoaderSQLite
		if c.Mode == ModeLimits {
			c.Loader = LoaderNull
		}
	}
	switch c.Loader {
	case LoaderSQLite, LoaderDiscard, LoaderNull:
	default:
		return fmt.Errorf("bench: unknown -loader %q (sqlite, discard, null)", c.Loader)
	}
	if !c.LoaderLatencySet && c.LoaderLatency == 0 && !c.unpaced() {
		// Saturate measures how fast a design can go; a loader latency
		// would measure max in-flight / latency instead, so there it is 0
		// unless asked for.
		c.LoaderLatency = 400 * time.Millisecond
	}
	if c.LoaderKnee < 0 || c.LoaderKnee > 0 && c.Loader != LoaderNull {
		return fmt.Errorf("bench: -loader-knee %d: want 0 (none) or a positive count with -loader null", c.LoaderKnee)
	}
	if c.LoaderLimit < 0 || c.LoaderLimit > 0 && c.Loader != LoaderNull {
		return fmt.Errorf("bench: -loader-limit %d: want 0 (none) or a positive count with -loader null", c.LoaderLimit)
	}
	if c.LoaderSlotWait == 0 {
		c.LoaderSlotWait = loader.DefaultSlotWait
	}
	if c.LoaderLatency < 0 {
		return errors.New("bench: -loader-latency is negative")
	}
	if c.Sink == "" {
		c.Sink = SinkHTTP
	}
	switch c.Sink {
	case SinkHTTP:
	case SinkKafka:
		switch {
		case c.Target != "":
			return errors.New("bench: -sink kafka produces to an in-process Kafka topic that the in-process loader consumes; it cannot use -target")
		case c.Loader == LoaderNull:
			return errors.New("bench: -sink kafka needs the loader's Kafka consumer: use -loader sqlite or discard, not null")
		case c.Mode == ModeSweep || c.Mode == ModeLimits:
			return fmt.Errorf("bench: -mode %s varies the loader's latency, which -sink kafka ignores", c.Mode)
		}
		// The loader adds its latency to HTTP answers; a produce is
		// answered by Kafka.
		c.LoaderLatency = 0
	default:
		return fmt.Errorf("bench: unknown -sink %q (http, kafka)", c.Sink)
	}
	if c.Target != "" && (c.Mode == ModeSweep || c.Mode == ModeLimits) {
		return fmt.Errorf("bench: -mode %s varies the in-process loader's latency; it cannot use -target", c.Mode)
	}
	if c.Out == "" {
		c.Out = filepath.Join("results", time.Now().Format("20060102-150405"))
	}
	if c.EventSize == 0 {
		c.EventSize = 200
	}
	if c.EventSize < 128 {
		return fmt.Errorf("bench: event size %d is below 128 bytes", c.EventSize)
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 30 * time.Second
	}
	if c.Progress == nil {
		c.Progress = os.Stdout
	}
	if c.MemProfileRate == 0 {
		c.MemProfileRate = 16 << 10
	}
	if c.Repeat == 0 {
		c.Repeat = 1
	}
	if c.ProfileHz == 0 {
		c.ProfileHz = 100
	}
	if c.ProfileHz < 0 {
		return fmt.Errorf("bench: profile rate %d Hz is negative", c.ProfileHz)
	}
	if c.CPUMethod == "" {
		c.CPUMethod = CPURusage
	}
	switch c.CPUMethod {
	case CPURusage:
	case CPUCallgrind:
		if c.InProcess {
			return errors.New("bench: -cpu callgrind counts a child process's instructions; it needs -isolate")
		}
		if !valgrindSupported || runtime.GOOS != "linux" {
			return fmt.Errorf("bench: -cpu callgrind needs linux/amd64 (valgrind client requests), not %s/%s", runtime.GOOS, runtime.GOARCH)
		}
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: finding this program to run the design in a child: %w", err)
		}
		if err := checkSymbols(exe); err != nil {
			return err
		}
		if c.Valgrind == "" {
			c.Valgrind = "valgrind"
		}
		if _, err := exec.LookPath(c.Valgrind); err != nil {
			return fmt.Errorf("bench: -cpu callgrind needs valgrind: %w (install it, e.g. apt-get install valgrind, or use -cpu rusage)", err)
		}
	default:
		return fmt.Errorf("bench: unknown -cpu %q (rusage, callgrind)", c.CPUMethod)
	}
	if c.PacerTick == 0 && c.CPUMethod == CPUCallgrind {
		c.PacerTick = 10 * time.Millisecond
	}
	if c.PacerTick < 0 {
		c.PacerTick = 0
	}
	if c.Repeat < 0 {
		return fmt.Errorf("bench: -repeat %d is negative", c.Repeat)
	}
	return nil
}

// runSpec is one design run.
type runSpec struct {
	design   string
	load     string
	rate     float64 // 0: unpaced
	latency  time.Duration
	dir      string // where its files go; "" writes none
	profiles bool
	repeat   int // 1-based; 0 when runs are not repeated
	// cpuMethod is how the child's CPU is measured: CPURusage, or
	// CPUCallgrind (the child runs under valgrind; see callgrind.go).
	cpuMethod string
}

// specDir is where a run's files go: dir/name, or dir/name/rN when runs
// are repeated.
func specDir(cfg Config, name string, r int) string {
	if cfg.Repeat > 1 {
		return filepath.Join(cfg.Out, name, fmt.Sprintf("r%d", r))
	}
	return filepath.Join(cfg.Out, name)
}

// Run runs the harness and writes its report under cfg.Out. It returns the
// report also when some design failed (that design's row says why); the
// error is for what stopped the whole run.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	latencyIgnored := cfg.Sink == SinkKafka && cfg.LoaderLatencySet && cfg.LoaderLatency > 0
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	if latencyIgnored {
		fmt.Fprintln(cfg.Progress, "note: -loader-latency is ignored with -sink kafka (the loader adds it to HTTP answers only)")
	}
	oldRate := runtime.MemProfileRate
	runtime.MemProfileRate = cfg.MemProfileRate
	defer func() { runtime.MemProfileRate = oldRate }()

	if IsChild() {
		return nil, errors.New("bench: this process was started as a batchbench child (" + childEnv + " is set) but its main did not call bench.ChildMain")
	}
	if cfg.Target != "" {
		// One clear error before any design runs, not one per design.
		if _, err := newExternalEndpoint(ctx, strings.TrimRight(cfg.Target, "/")); err != nil {
			return nil, fmt.Errorf("%w (is a Batch Loader running there? start one with `go run ./cmd/batchloader`, or leave -target out to use an in-process one)", err)
		}
	}

	rep := newReport(cfg)
	pr := newProgress(cfg.Progress)
	specs := cfg.specs()
	eta := newETA(cfg.Duration, len(specs))
	for i, s := range specs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		pr.eta = eta.remaining(i)
		t := time.Now()
		res := runDesign(ctx, cfg, s, pr, fmt.Sprintf("[%d/%d]", i+1, len(specs)))
		eta.done(time.Since(t))
		rep.Runs = append(rep.Runs, res)
	}
	rep.collect(cfg)
	rep.Finished = time.Now().UTC()
	werr := rep.write(cfg.Out)
	fmt.Fprintln(cfg.Progress)
	fmt.Fprint(cfg.Progress, rep.Summary())
	fmt.Fprintf(cfg.Progress, "\nreport: %s (tables, charts, definitions)\n", filepath.Join(cfg.Out, "report.md"))
	return rep, werr
}

// calibrates says whether the runs include the calibration design: only
// isolated runs (in process, the CPU figure is the profile's, which leaves
// the load generator out by its labels) at a paced rate (unpaced, a no-op
// Add would only measure how fast the generator spins).
func (c *Config) calibrates() bool { return !c.InProcess && !c.unpaced() }

// unpaced says whether the mode's producers call Add back to back.
func (c *Config) unpaced() bool { return c.Mode == ModeSaturate || c.Mode == ModeLimits }

// specs lists the runs of cfg, in order: repeat by repeat, each repeat
// every design (and first, the calibration), so that a change in the
// machine's load during the study spreads over all designs alike.
func (c *Config) specs() []runSpec {
	var specs []runSpec
	rep := func(r int) int {
		if c.Repeat > 1 {
			return r
		}
		return 0
	}
	switch c.Mode {
	case ModeFixed, ModeSaturate:
		rate := c.Rate
		load := c.Load
		if c.Mode == ModeSaturate {
			rate, load = 0, LoadOpen
		}
		names := c.Designs
		if c.Mode == ModeFixed && c.Sink == SinkHTTP && !c.NoDefaultTransportVariant && contains(names, SeedAsync) && !contains(names, SeedAsyncDefaultT) {
			names = append(append([]string(nil), names...), SeedAsyncDefaultT)
		}
		if c.calibrates() {
			names = append([]string{Calibration}, names...)
		}
		for r := 1; r <= c.Repeat; r++ {
			for _, d := range names {
				specs = append(specs, runSpec{design: d, load: load, rate: rate, latency: c.LoaderLatency,
					dir: specDir(*c, d, r), profiles: true, repeat: rep(r), cpuMethod: c.cpuMethodFor()})
			}
		}
	case ModeLimits:
		// One latency at a time, all designs at it in a row: the designs
		// of a point are compared with each other, under the same load of
		// the machine.
		for r := 1; r <= c.Repeat; r++ {
			for _, lat := range LimitsLatencies {
				for _, d := range c.Designs {
					specs = append(specs, runSpec{design: d, load: LoadOpen, rate: 0, latency: lat,
						dir: specDir(*c, fmt.Sprintf("%s-%dms", d, lat.Milliseconds()), r), profiles: true, repeat: rep(r)})
				}
			}
		}
	case ModeSweep:
		for r := 1; r <= c.Repeat; r++ {
			if c.calibrates() {
				for _, load := range []string{LoadClosed, LoadOpen} {
					specs = append(specs, runSpec{design: Calibration, load: load, rate: c.Rate, latency: 0,
						dir: specDir(*c, Calibration+"-"+load, r), profiles: true, repeat: rep(r), cpuMethod: c.cpuMethodFor()})
				}
			}
			for _, lat := range SweepLatencies {
				for _, load := range []string{LoadClosed, LoadOpen} {
					for _, d := range c.Designs {
						specs = append(specs, runSpec{design: d, load: load, rate: c.Rate, latency: lat,
							dir: specDir(*c, fmt.Sprintf("%s-%s-%dms", d, load, lat.Milliseconds()), r), profiles: true, repeat: rep(r), cpuMethod: c.cpuMethodFor()})
					}
				}
			}
		}
	}
	return specs
}

// cpuMethodFor is the CPU method of the runs: CPUMethod when isolated;
// in process there is no child to count.
func (c *Config) cpuMethodFor() string {
	if c.InProcess {
		return ""
	}
	return c.CPUMethod
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// startEndpoint starts the run's receiving side.
func startEndpoint(ctx context.Context, cfg Config, s runSpec) (endpoint, error) {
	if cfg.Target != "" {
		return newExternalEndpoint(ctx, strings.TrimRight(cfg.Target, "/"))
	}
	if cfg.Loader == LoaderNull {
		return startNullEndpointShaped(s.latency, endpointShape{knee: cfg.LoaderKnee, limit: cfg.LoaderLimit, slotWait: cfg.LoaderSlotWait})
	}
	var logW io.WriteCloser
	if s.dir != "" {
		f, err := os.Create(filepath.Join(s.dir, "loader.log"))
		if err != nil {
			return nil, err
		}
		logW = f
	}
	if cfg.Sink == SinkKafka {
		return startKafkaLoader(cfg.Loader, logW)
	}
	return startLoader(cfg.Loader, s.latency, logW)
}

// runDesign runs one design and measures it: the receiving side here, the
// design and its load in a child process (isolated) or here (in process).
// Failures are reported in the result's Error, not returned: one broken
// design does not stop the study.
func runDesign(ctx context.Context, cfg Config, s runSpec, pr *progress, tag string) (res DesignResult) {
	res = DesignResult{
		Name: s.design, Load: s.load, Rate: s.rate, DurationS: cfg.Duration.Seconds(),
		LoaderLatencyMs: ms(s.latency), Receiver: cfg.Loader, Repeat: s.repeat, Isolated: !cfg.InProcess,
	}
	if cfg.Target != "" {
		res.Receiver = cfg.Target
	}
	if s.load == LoadOpen && s.rate == 0 {
		res.Load = "unpaced"
	}
	if s.rate > 0 {
		res.Target = int64(s.rate * cfg.Duration.Seconds())
	}
	fail := func(err error) DesignResult {
		res.Error = err.Error()
		pr.line(fmt.Sprintf("%s %s: error: %v", tag, s.design, err))
		return res
	}
	if s.dir != "" {
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return fail(err)
		}
	}

	ep, err := startEndpoint(ctx, cfg, s)
	if err != nil {
		return fail(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := ep.Close(cctx); err != nil && res.Error == "" {
			res.Error = "closing the receiving side: " + err.Error()
		}
	}()
	t := clientTarget{URL: ep.URL()}
	if kep, ok := ep.(*kafkaEndpoint); ok {
		t = clientTarget{KafkaBrokers: kep.cluster.ListenAddrs(), KafkaTopic: kafkaTopic}
	}

	var counters loadCounters
	var inFlightAtStop int64
	hooks := clientHooks{counters: &counters, loadDone: func(offered int64) {
		delivered, _ := ep.Delivered(ctx)
		inFlightAtStop = offered - delivered
	}}
	stopProgress := pr.start(tag, s.design, cfg.Duration, s.rate, &counters, ep)
	if cfg.InProcess {
		err = runClient(ctx, cfg, s, t, hooks, &res)
	} else {
		err = runChild(ctx, cfg, s, t, hooks, &res)
	}
	stopProgress()
	if err != nil {
		return fail(err)
	}
	res.InFlightAtStop = inFlightAtStop
	var settleErr error
	if kep, ok := ep.(*kafkaEndpoint); ok {
		sctx, cancel := context.WithTimeout(ctx, cfg.StopTimeout)
		settleErr = kep.settle(sctx)
		cancel()
	}

	delivered, err := ep.Delivered(ctx)
	if err != nil {
		return fail(fmt.Errorf("counting deliveries: %w", err))
	}
	res.Delivered = delivered
	res.Lost = res.Offered - delivered
	minutes := cfg.Duration.Minutes()
	if minutes > 0 {
		res.DeliveredPerMin = float64(delivered) / minutes
		res.DeliveredPerSec = res.DeliveredPerMin / 60
	}
	if res.Target > 0 {
		res.DeliveredPctOfTarget = 100 * float64(delivered) / float64(res.Target)
	}
	if h := ep.E2E(); h != nil && h.TotalCount() > 0 {
		res.E2ELatencyMs = E2ELatency{P50: float64(h.ValueAtQuantile(50)) / 1e6, P99: float64(h.ValueAtQuantile(99)) / 1e6}
	}
	if settleErr != nil && res.Error == "" {
		res.Error = "kafka: " + settleErr.Error()
	}
	pr.done(tag, &res)
	return res
}

// clientTarget is where a design sends: the receiving side's base URL
// (-sink http), or a Kafka topic (-sink kafka).
type clientTarget struct {
	URL          string   `json:"url,omitempty"`
	KafkaBrokers []string `json:"kafka_brokers,omitempty"`
	KafkaTopic   string   `json:"kafka_topic,omitempty"`
}

// clientHooks connect runClient to the run watching it.
type clientHooks struct {
	counters *loadCounters       // updated as the load runs
	loadDone func(offered int64) // called once the load ended, before Shutdown
}

// runClient is the design's side of a run: it builds the design against t,
// drives it with the load, shuts it down, and fills res's client-side
// fields (counts, Add latency, sends, GC, heap, CPU, profiles). It runs in
// the process that measures the design: a child (runChild) or this one.
func runClient(ctx context.Context, cfg Config, s runSpec, t clientTarget, h clientHooks, res *DesignResult) error {
	spec := designSpecs[s.design]
	var logFile io.WriteCloser
	if s.dir != "" {
		var err error
		if logFile, err = os.Create(filepath.Join(s.dir, "client.log")); err != nil {
			return err
		}
	}
	clog := newCountLog(logFile)
	defer clog.Close()
	env := designEnv{logger: newTextLogger(clog), seedQueue: cfg.SeedQueue}
	var sends *sendStats
	if len(t.KafkaBrokers) > 0 {
		sends = new(sendStats)
		env.kafka = &kafkaTarget{brokers: t.KafkaBrokers, topic: t.KafkaTopic, stats: sends}
		var prod *kafkaProducer
		var err error
		pprof.Do(ctx, pprof.Labels(labelSide, sideClient), func(context.Context) {
			prod, err = newKafkaProducer(env.kafka)
		})
		if err != nil {
			return err
		}
		defer prod.Close()
		env.send = prod.send
	} else {
		tr := transportFor(spec)
		defer tr.CloseIdleConnections()
		rt := &countingTransport{rt: tr}
		sends = &rt.sendStats
		env.url, env.transport, env.poster = t.URL, rt, newPoster(t.URL, rt)
		env.send = env.poster.post
	}

	// Profiles and counters around the design's whole life: build, load,
	// shutdown.
	var cpuFile *os.File
	var heapBefore *profile.Profile
	if s.profiles {
		var err error
		if heapBefore, err = HeapSnapshot(); err != nil {
			return err
		}
		if s.cpuMethod == CPUCallgrind {
			// No CPU profile under callgrind: its SIGPROF signals trip an
			// assertion in callgrind 3.19 (vgCallgrind_post_signal), and
			// the instruction counts replace it.
		} else if cpuFile, err = os.Create(filepath.Join(s.dir, "cpu.pprof")); err != nil {
			return err
		} else if cfg.ProfileHz > 0 && cfg.ProfileHz != 100 {
			// StartCPUProfile asks for 100 Hz, finds the rate set, and keeps
			// it (printing "cannot set cpu profile rate" to stderr); the
			// profile records the rate used, so its values stay in CPU time.
			runtime.SetCPUProfileRate(cfg.ProfileHz)
		}
		if cpuFile != nil {
			if err := pprof.StartCPUProfile(cpuFile); err != nil {
				cpuFile.Close()
				return err
			}
		}
	}
	stopCPU := func() {
		if cpuFile != nil {
			pprof.StopCPUProfile()
			cpuFile.Close()
			cpuFile = nil
		}
	}
	defer stopCPU()
	gc0, cpu0 := readGC(), processCPU()
	peak := startHeapPeak(10 * time.Millisecond)
	if s.cpuMethod == CPUCallgrind {
		callgrindZero() // the window opens: callgrind counts from here (see callgrindDump below)
	}

	var lr loadResult
	var shutdownErr error
	var shutdownDur time.Duration
	var buildErr error
	pprof.Do(ctx, pprof.Labels(labelSide, sideClient), func(ctx context.Context) {
		c, err := spec.newClient(env)
		if err != nil {
			buildErr = err
			return
		}
		lr = runLoad(ctx, c, loadConfig{
			Kind: s.load, Rate: s.rate, Duration: cfg.Duration, Handlers: cfg.Handlers,
			EventSize: cfg.EventSize, RunID: runID(s), PacerTick: cfg.PacerTick,
		}, h.counters)
		if h.loadDone != nil {
			h.loadDone(lr.Offered)
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.StopTimeout)
		defer cancel()
		t := time.Now()
		shutdownErr = c.Shutdown(sctx)
		shutdownDur = time.Since(t)
	})
	if s.cpuMethod == CPUCallgrind {
		callgrindDump(callgrindWindow) // the window closes: <out-file>.1 holds it
	}
	peakHeap, peakLive := peak.Stop()
	gc1, cpu1 := readGC(), processCPU()
	stopCPU()
	if buildErr != nil {
		return buildErr
	}
	res.Requests = lr.Requests
	res.Offered = lr.Offered
	res.Rejected = lr.Rejected
	res.NotOffered = lr.NotOffered
	res.SlotsSkippedBusy, res.SlotsSkippedLate = lr.SkippedBusy, lr.SkippedLate
	res.DeliveredFromLogs = clog.Sum()
	res.GCCycles = int64(gc1.cycles - gc0.cycles)
	res.GCPauseMs = ms(gc1.pause - gc0.pause)
	res.PeakHeapBytes = peakHeap
	res.PeakLiveHeapBytes = peakLive
	res.ProcessCPUSeconds = (cpu1 - cpu0).Seconds()
	if lr.Offered > 0 {
		res.ProcessCPUSecondsPerMillion = res.ProcessCPUSeconds / float64(lr.Offered) * 1e6
	}
	if lr.AddLatency != nil {
		h := lr.AddLatency
		res.AddLatencyNs = AddLatency{P50: h.ValueAtQuantile(50), P99: h.ValueAtQuantile(99),
			P999: h.ValueAtQuantile(99.9), Max: h.Max()}
	}
	res.HTTPRequests = sends.requests.Load()
	res.HTTPFailures = sends.failures.Load()
	res.HTTP429 = sends.status429.Load()
	if res.HTTPRequests > 0 {
		res.Rate429 = float64(res.HTTP429) / float64(res.HTTPRequests)
	}
	res.MaxSendsInFlight = sends.maxInFlight.Load()
	res.ShutdownMs = ms(shutdownDur)
	if shutdownErr != nil {
		res.ShutdownError = shutdownErr.Error()
	}
	if s.profiles {
		if err := analyzeProfiles(res, s.dir, heapBefore, s.cpuMethod != CPUCallgrind); err != nil {
			res.Error = "profiles: " + err.Error()
		}
	}
	return nil
}

// analyzeProfiles reads the run's CPU profile, takes the heap delta, writes
// it as heap.pprof, and fills the profile-derived fields.
func analyzeProfiles(res *DesignResult, dir string, heapBefore *profile.Profile, withCPU bool) error {
	heapAfter, err := HeapSnapshot()
	if err != nil {
		return err
	}
	delta, err := HeapDelta(heapBefore, heapAfter)
	if err != nil {
		return err
	}
	hf, err := os.Create(filepath.Join(dir, "heap.pprof"))
	if err != nil {
		return err
	}
	if err := delta.Write(hf); err != nil {
		hf.Close()
		return err
	}
	if err := hf.Close(); err != nil {
		return err
	}
	ha, err := AnalyzeHeap(delta)
	if err != nil {
		return err
	}
	if res.Offered > 0 {
		res.AllocBytesPerEvent = float64(ha.AllocBytes) / float64(res.Offered)
	}
	res.CopyAllocShare = ha.CopyShare
	res.CopyAllocBytes = ha.CopyBytes

	if !withCPU {
		return nil
	}
	cf, err := os.Open(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		return err
	}
	defer cf.Close()
	cp, err := profile.Parse(cf)
	if err != nil {
		return err
	}
	ca, err := AnalyzeCPU(cp)
	if err != nil {
		return err
	}
	res.SelectOverheadShare = ca.SelectOverheadShare
	res.SelectCPUSeconds = ca.SelectSeconds
	res.RuntimeSyncShare = ca.RuntimeSyncShare
	res.SelectSamples = ca.SelectSamples
	res.CPUSamples = ca.Samples
	if all := ca.CPUSeconds + ca.ExcludedSeconds; res.Isolated && all > 0 && res.Offered > 0 {
		// The child's exact CPU time, split by its profile: the share of
		// samples on the design's goroutines and in Add (side=client).
		res.ClientCPUShare = ca.LabelledSeconds / all
		res.DirectCPUSecondsPerMillion = res.ProcessCPUSeconds * res.ClientCPUShare / float64(res.Offered) * 1e6
	}
	res.CPUSeconds = ca.CPUSeconds
	res.ReceiverCPUSeconds = ca.ExcludedSeconds
	if res.Offered > 0 {
		res.ProfileCPUSecondsPerMillion = ca.CPUSeconds / float64(res.Offered) * 1e6
		res.CPUSecondsPerMillion = res.ProfileCPUSecondsPerMillion // replaced by the isolated figure when there is one (calibrate)
		res.ClientCPUSecondsPerMillion = ca.LabelledSeconds / float64(res.Offered) * 1e6
	}
	return nil
}

func runID(s runSpec) string {
	return fmt.Sprintf("%s.%s.%d", s.design, s.load, s.latency.Milliseconds())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
