// Command batchbench runs the seed's profiling study on this machine: every
// Batch Processor design side by side against a fresh in-process Batch
// Loader, with the seed-style table printed at the end and report.md,
// report.json, charts and pprof files written under -out.
//
//	go run ./cmd/batchbench                               # the seed's study: 2,000 events/s, 60 s per design
//	go run ./cmd/batchbench -duration 10s -designs seed-pool-10,batchproc
//	go run ./cmd/batchbench -mode saturate -loader null -duration 10s
//	go run ./cmd/batchbench -mode sweep -duration 10s
//	go run ./cmd/batchbench -mode limits -duration 10s         # adaptive against fixed send limits, loader latency 0 to 1 s
//	go run ./cmd/batchbench -sink kafka -duration 10s          # through an in-process Kafka topic
//	batchbench -cpu callgrind -duration 10s -repeat 5    # instructions per event under valgrind (a go build binary)
//	batchbench -version                                   # module version, VCS revision, Go version
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/batchproc/batchproc/bench"
	"github.com/batchproc/batchproc/internal/buildinfo"
)

func main() {
	if bench.IsChild() { // a design run that bench.Run started in a child process
		os.Exit(bench.ChildMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args and runs the harness; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg bench.Config
	var designs string
	fs := flag.NewFlagSet("batchbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Mode, "mode", bench.ModeFixed, "fixed (the seed's study), saturate (as fast as each design goes), sweep (against loader latency), or limits (the adaptive send limit against fixed ones, saturating a null endpoint with a knee, at loader latencies 0 to 1 s)")
	fs.DurationVar(&cfg.Duration, "duration", 60*time.Second, "load duration per design (and per sweep point)")
	fs.Float64Var(&cfg.Rate, "rate", 2000, "events (requests) per second")
	fs.StringVar(&designs, "designs", "all", "comma-separated designs: "+strings.Join(bench.AllDesigns, ", ")+" (also "+bench.SeedAsyncDefaultT+", and batchproc-fixed-N for N in 1, 4, 16, 64, 256: WithMaxInFlight(N)); -mode limits: batchproc and the batchproc-fixed-N")
	fs.StringVar(&cfg.Load, "load", bench.LoadClosed, "closed (handlers wait for Add) or open (requests at the rate regardless)")
	fs.IntVar(&cfg.Handlers, "handlers", 100, "closed-loop request handlers (saturate: producers)")
	fs.IntVar(&cfg.SeedQueue, "seed-queue", 0, "capacity of the seed designs' channel queue (0: unbuffered, as the seed)")
	fs.StringVar(&cfg.Loader, "loader", bench.LoaderSQLite, "receiving side: sqlite, discard (loader storing nothing) or null (counting endpoint); -mode limits: null")
	fs.IntVar(&cfg.LoaderKnee, "loader-knee", 0, fmt.Sprintf("with -loader null: a capacity knee, past which each request's latency grows with the requests at once (latency x at-once / knee); 0: none (-mode limits: %d unless given)", bench.DefaultLimitsKnee))
	fs.IntVar(&cfg.LoaderLimit, "loader-limit", 0, "with -loader null: serve at most this many requests at once, as the loader's ingest slots: one more waits up to -loader-slot-wait for a slot, then is answered 429 with Retry-After: 1 (the report shows each design's 429 rate); every answer tells this count in the Ingest-Slots header, as the loader does; 0: no limit")
	fs.DurationVar(&cfg.LoaderSlotWait, "loader-slot-wait", 250*time.Millisecond, "with -loader-limit: how long a request waits for a slot before its 429 (the loader's -slot-wait); 0: none")
	fs.DurationVar(&cfg.LoaderLatency, "loader-latency", 400*time.Millisecond, "latency the in-process receiver adds per request (saturate: 0 unless given; ignored with -sink kafka)")
	fs.StringVar(&cfg.Target, "target", "", "base URL of an external Batch Loader (instead of an in-process one)")
	fs.StringVar(&cfg.Sink, "sink", bench.SinkHTTP, "http (POST to the loader) or kafka (produce to an in-process Kafka topic the loader consumes; -loader sqlite or discard)")
	fs.StringVar(&cfg.Out, "out", "", "output directory (default results/<timestamp>)")
	version := fs.Bool("version", false, "print the version (module, VCS revision, Go) and exit")
	fs.IntVar(&cfg.Repeat, "repeat", 1, "runs per design (interleaved); the report shows the median run and the CPU figure's spread")
	render := fs.String("render", "", "rewrite report.md and the charts of a finished run's directory from its report.json, and run nothing")
	isolate := fs.Bool("isolate", true, "run each design in a child process and measure its CPU from the kernel's count, minus a no-op calibration design's (false: one process, CPU from the profile)")
	fs.StringVar(&cfg.CPUMethod, "cpu", bench.CPURusage, "how an isolated design's CPU is measured: rusage (the child's CPU time from the kernel, minus the no-op calibration design's per request; noisy on a busy machine) or callgrind (instructions executed, counted by valgrind's callgrind over the design's window, minus the calibration's per request: repeatable, needs valgrind on linux/amd64 and a go build binary, runs the child 10-50x slower; see bench/README.md)")
	fs.StringVar(&cfg.Valgrind, "valgrind", "valgrind", "the valgrind program for -cpu callgrind")
	fs.DurationVar(&cfg.PacerTick, "pacer-tick", 0, "closed loop: one pacer goroutine releasing the handlers' slots every this long instead of a timer per handler (0: a timer per handler, or 10ms with -cpu callgrind; negative: a timer per handler always)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.String("batchbench"))
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "batchbench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg.LoaderLatencySet = set["loader-latency"]
	if cfg.LoaderSlotWait == 0 {
		cfg.LoaderSlotWait = -1 // none, not bench's default
	}
	modeDefaults(&cfg, &designs, set)
	if !cfg.LoaderLatencySet {
		cfg.LoaderLatency = 0 // bench's default: 400ms, or 0 in saturate
	}
	if *render != "" {
		r, err := bench.Render(*render)
		if err != nil {
			fmt.Fprintln(stderr, "batchbench:", err)
			return 1
		}
		fmt.Fprint(stdout, r.Summary())
		return 0
	}
	cfg.InProcess = !*isolate
	cfg.Progress = stdout
	var err error
	if cfg.Designs, err = bench.ParseDesigns(designs); err != nil {
		fmt.Fprintln(stderr, "batchbench:", err)
		return 2
	}
	if _, err := bench.Run(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "batchbench:", err)
		return 1
	}
	return 0
}

// modeDefaults applies the defaults of -mode limits to the flags not given
// (set holds the names of those given): the null endpoint with a knee at
// bench.DefaultLimitsKnee, and the designs bench.LimitsDesigns.
func modeDefaults(cfg *bench.Config, designs *string, set map[string]bool) {
	if cfg.Mode != bench.ModeLimits {
		return
	}
	if !set["loader"] {
		cfg.Loader = bench.LoaderNull
	}
	if !set["loader-knee"] {
		cfg.LoaderKnee = bench.DefaultLimitsKnee
	}
	if !set["designs"] {
		*designs = strings.Join(bench.LimitsDesigns, ",")
	}
}
