package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Isolation: each design run is a child process.
//
// A design at the seed's 2,000 events/s uses about 1% of a core, so a
// 100 Hz CPU profile gives it a few dozen samples in a 10 s run: too few
// to tell designs 10% apart. The kernel counts a process's CPU time
// exactly, but the harness's process also holds the receiving side (the
// loader, SQLite, Kafka), which costs more than the design. So Run keeps the
// receiving side here and re-executes its own program as a child for each
// run: the child builds the design, drives it with the load generator,
// shuts it down and reports what it measured, including its own CPU time
// (getrusage / GetProcessTimes) over exactly that window. The load
// generator's CPU is in that figure too; the calibration design (a no-op
// Add, run under the same load) measures it, and [Report] subtracts it per
// request (see calibrate in report.go).
//
// Parent and child speak JSON lines: the parent writes one childRequest to
// the child's stdin; the child writes childMessages to its stdout (progress,
// "load done", then the result) and waits for one line on stdin after "load
// done", so that the parent counts what is in flight before the Shutdown
// starts, as in process. The child's stderr goes to child.log.

// childEnv marks a child process; its value is "1".
const childEnv = "BATCHBENCH_CHILD"

// IsChild reports whether this process was started by [Run] as the child
// that runs one design. A program calling Run must, first thing in main
// (and in TestMain for its tests), do:
//
//	if bench.IsChild() {
//		os.Exit(bench.ChildMain())
//	}
func IsChild() bool { return os.Getenv(childEnv) == "1" }

// childRequest is what the child runs.
type childRequest struct {
	Spec   childSpec    `json:"spec"`
	Target clientTarget `json:"target"`
	Config childConfig  `json:"config"`
	Result DesignResult `json:"result"` // the row so far, filled in by the child
}

type childSpec struct {
	Design   string        `json:"design"`
	Load     string        `json:"load"`
	Rate     float64       `json:"rate"`
	Latency  time.Duration `json:"latency"`
	Dir      string        `json:"dir"`
	Profiles bool          `json:"profiles"`
	Repeat   int           `json:"repeat"`
	CPU      string        `json:"cpu,omitempty"` // runSpec.cpuMethod
}

type childConfig struct {
	Duration       time.Duration `json:"duration"`
	Handlers       int           `json:"handlers"`
	SeedQueue      int           `json:"seed_queue"`
	EventSize      int           `json:"event_size"`
	StopTimeout    time.Duration `json:"stop_timeout"`
	MemProfileRate int           `json:"mem_profile_rate"`
	ProfileHz      int           `json:"profile_hz"`
	PacerTick      time.Duration `json:"pacer_tick,omitempty"`
}

// childMessage is one line from the child.
type childMessage struct {
	Offered  *int64        `json:"offered,omitempty"`   // progress
	LoadDone *int64        `json:"load_done,omitempty"` // the load ended, with this many offered; waiting for a line
	Result   *DesignResult `json:"result,omitempty"`    // the last message
	Error    string        `json:"error,omitempty"`
}

// ChildMain runs one design as the parent asked on stdin and returns the
// process's exit code. See [IsChild].
func ChildMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	in := bufio.NewReader(os.Stdin)
	out := &childWriter{enc: json.NewEncoder(os.Stdout)}
	if err := childRun(ctx, in, out); err != nil {
		out.send(childMessage{Error: err.Error()})
		fmt.Fprintln(os.Stderr, "batchbench child:", err)
		return 1
	}
	return 0
}

type childWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (w *childWriter) send(m childMessage) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.enc.Encode(m)
}

func childRun(ctx context.Context, in *bufio.Reader, out *childWriter) error {
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("reading the request: %w", err)
	}
	var req childRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return fmt.Errorf("decoding the request: %w", err)
	}
	if _, ok := designSpecs[req.Spec.Design]; !ok {
		return fmt.Errorf("unknown design %q", req.Spec.Design)
	}
	c := req.Config
	cfg := Config{Duration: c.Duration, Handlers: c.Handlers, SeedQueue: c.SeedQueue, EventSize: c.EventSize,
		StopTimeout: c.StopTimeout, MemProfileRate: c.MemProfileRate, ProfileHz: c.ProfileHz, PacerTick: c.PacerTick}
	runtime.MemProfileRate = c.MemProfileRate
	s := runSpec{design: req.Spec.Design, load: req.Spec.Load, rate: req.Spec.Rate, latency: req.Spec.Latency,
		dir: req.Spec.Dir, profiles: req.Spec.Profiles, repeat: req.Spec.Repeat, cpuMethod: req.Spec.CPU}

	var counters loadCounters
	stopTick := make(chan struct{})
	tickDone := make(chan struct{})
	go func() { // progress, once a second
		defer close(tickDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				n := counters.Offered.Load()
				out.send(childMessage{Offered: &n})
			case <-stopTick:
				return
			}
		}
	}()
	hooks := clientHooks{counters: &counters, loadDone: func(offered int64) {
		out.send(childMessage{LoadDone: &offered})
		_, _ = in.ReadBytes('\n') // the parent counted; EOF (parent gone) goes on too
	}}
	res := req.Result
	err = runClient(ctx, cfg, s, req.Target, hooks, &res)
	close(stopTick)
	<-tickDone
	if err != nil {
		return err
	}
	out.send(childMessage{Result: &res})
	return nil
}

// runChild runs runClient in a child process and fills res from its result.
func runChild(ctx context.Context, cfg Config, s runSpec, t clientTarget, h clientHooks, res *DesignResult) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this program to run the design in a child: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	if s.cpuMethod == CPUCallgrind {
		if s.dir == "" {
			return errors.New("bench: -cpu callgrind needs the run's directory for callgrind's output")
		}
		cmd = callgrindCommand(ctx, cfg.Valgrind, exe, filepath.Join(s.dir, callgrindOut))
		cmd.Env = append(callgrindEnv(os.Environ()), childEnv+"=1")
	}
	// Interrupted: the child shuts its design down and reports; killed
	// only if it does not finish in time.
	cmd.Cancel = func() error {
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
	cmd.WaitDelay = cfg.StopTimeout + 30*time.Second
	var stderr tailBuffer
	cmd.Stderr = &stderr
	if s.dir != "" {
		f, err := os.Create(filepath.Join(s.dir, "child.log"))
		if err != nil {
			return err
		}
		defer f.Close()
		cmd.Stderr = io.MultiWriter(f, &stderr)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the child: %w", err)
	}
	req := childRequest{
		Spec: childSpec{Design: s.design, Load: s.load, Rate: s.rate, Latency: s.latency, Dir: s.dir,
			Profiles: s.profiles, Repeat: s.repeat, CPU: s.cpuMethod},
		Target: t,
		Config: childConfig{Duration: cfg.Duration, Handlers: cfg.Handlers, SeedQueue: cfg.SeedQueue,
			EventSize: cfg.EventSize, StopTimeout: cfg.StopTimeout, MemProfileRate: cfg.MemProfileRate, ProfileHz: cfg.ProfileHz,
			PacerTick: cfg.PacerTick},
		Result: *res,
	}
	werr := json.NewEncoder(stdin).Encode(req)
	var result *DesignResult
	var childErr string
	dec := json.NewDecoder(stdout)
	for werr == nil {
		var m childMessage
		if err := dec.Decode(&m); err != nil {
			// EOF: the child ended, Wait says how. Anything else (a line
			// that is not ours): read the rest, so that the child never
			// blocks on a full pipe (nor waits for a "go" that will not
			// come: stdin closed).
			stdin.Close()
			_, _ = io.Copy(io.Discard, dec.Buffered())
			_, _ = io.Copy(io.Discard, stdout)
			break
		}
		switch {
		case m.Offered != nil:
			h.counters.Offered.Store(*m.Offered)
		case m.LoadDone != nil:
			h.counters.Offered.Store(*m.LoadDone)
			if h.loadDone != nil {
				h.loadDone(*m.LoadDone)
			}
			_, _ = io.WriteString(stdin, "go\n")
		case m.Result != nil:
			result = m.Result
		case m.Error != "":
			childErr = m.Error
		}
	}
	stdin.Close()
	waitErr := cmd.Wait()
	switch {
	case result != nil:
		*res = *result
		if s.cpuMethod == CPUCallgrind {
			c, err := readCallgrindWindow(s.dir)
			if err != nil {
				return err
			}
			res.CPUMethod = CPUCallgrind
			res.InstructionsTotal, res.InstructionsIdle, res.InstructionsHarness = c.Total, c.Idle, c.Harness
			res.Instructions = c.Counted()
		}
		return nil
	case childErr != "":
		return errors.New(childErr)
	case werr != nil:
		return fmt.Errorf("sending the child its run: %w", werr)
	default:
		return fmt.Errorf("the child running %s ended without a result (%v): %s", s.design, waitErr, stderr.String())
	}
}

// tailBuffer keeps the last 2 KiB written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if n := len(t.b) - 2048; n > 0 {
		t.b = append(t.b[:0], t.b[n:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
