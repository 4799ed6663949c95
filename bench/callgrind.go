package bench

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// CPU measurement methods (Config.CPUMethod, -cpu).
const (
	// CPURusage: the child's CPU time from the kernel (getrusage) over the
	// design's window, minus the calibration design's per request.
	CPURusage = "rusage"
	// CPUCallgrind: the child runs under valgrind's callgrind, which counts
	// the instructions it executes (user space: the kernel's work on its
	// behalf is not counted); the window's count minus the calibration's per
	// request is the design's. Deterministic where CPU time is not (the
	// machine's load, caches, frequency do not change it); slow (the child
	// runs about 10-50 times slower, on one thread at a time).
	CPUCallgrind = "callgrind"
)

// callgrindWindow names the dump the child writes at the end of the
// design's window (callgrindDump).
const callgrindWindow = "design"

// CallgrindProfile is one callgrind output file (a dump), as much of the
// format (https://valgrind.org/docs/manual/cl-format.html) as batchbench
// reads: the events counted, their totals, and the self cost of each
// function (what it executed itself, not in what it called).
type CallgrindProfile struct {
	Cmd     string   // "cmd:" header: the program
	Trigger string   // "desc: Trigger:" header: why the dump was written ("Client Request: design", "Program termination")
	Events  []string // "events:" header, e.g. ["Ir"]
	Totals  []int64  // "totals:" (or "summary:") header, one per event; nil if absent
	// Self is each function's self cost, one value per event; a function
	// callgrind splits by recursion depth ("f'2") is summed into "f".
	Self map[string][]int64
	// Called is each function's inclusive cost as its callers' call lines
	// record it (calls= and the cost line after it), summed over the
	// callers other than itself. Callgrind follows calls per thread by
	// the stack pointer, so this is exact only for a function that runs
	// on one stack from entry to return: a Go function whose goroutine
	// parks inside it (a channel receive) is charged, wrongly, with
	// whatever the thread ran until it came back.
	Called map[string][]int64
}

// Event returns the index of event name in p.Events, or -1.
func (p *CallgrindProfile) Event(name string) int {
	for i, e := range p.Events {
		if e == name {
			return i
		}
	}
	return -1
}

// SelfTotal is the sum over functions of the self cost of event i: the
// total the profile holds (equal to Totals[i] when the file is whole).
func (p *CallgrindProfile) SelfTotal(i int) int64 {
	var n int64
	for _, v := range p.Self {
		n += v[i]
	}
	return n
}

// ParseCallgrind reads one callgrind output file. It understands name
// compression ("fn=(12) name", then "fn=(12)"), relative and repeated
// positions ("+3", "-1", "*"), missing trailing costs (zero), and skips the
// cost line after "calls=" (or "jump="/"jcnd="), which is the call's
// inclusive cost, not the caller's own. Lines it does not know are
// ignored, as the format asks; a cost that is not a number is an error.
func ParseCallgrind(r io.Reader) (*CallgrindProfile, error) {
	p := &CallgrindProfile{Self: map[string][]int64{}, Called: map[string][]int64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	positions := 1 // "positions: line" is the default
	fnNames := map[string]string{}
	var fn string      // the current function, "" before the first fn=
	var cur []int64    // its self costs (aliases p.Self[fn])
	var cfn string     // the function called by the last cfn=
	var callTo []int64 // where the next cost line goes: p.Called[cfn], or nil (a jump, a recursive call)
	skipNext := false  // the next cost line is a call's (or jump's)
	sawEvents := false // cost lines need the events header first
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		c := line[0]
		if c >= '0' && c <= '9' || c == '+' || c == '-' || c == '*' {
			if !sawEvents {
				return nil, fmt.Errorf("callgrind: line %d: a cost line before the events: header", lineNo)
			}
			if fn == "" {
				return nil, fmt.Errorf("callgrind: line %d: a cost line before any fn=", lineNo)
			}
			dst := cur
			if skipNext {
				skipNext = false
				if dst = callTo; dst == nil {
					continue
				}
			}
			fields := bytes.Fields(line)
			if len(fields) < positions {
				return nil, fmt.Errorf("callgrind: line %d: %d positions, want %d", lineNo, len(fields), positions)
			}
			costs := fields[positions:]
			if len(costs) > len(p.Events) {
				return nil, fmt.Errorf("callgrind: line %d: %d costs for %d events", lineNo, len(costs), len(p.Events))
			}
			for i, f := range costs {
				v, err := strconv.ParseInt(string(f), 10, 64)
				if err != nil || v < 0 {
					return nil, fmt.Errorf("callgrind: line %d: cost %q is not a count", lineNo, f)
				}
				dst[i] += v
			}
			continue
		}
		key, val, ok := bytes.Cut(line, []byte{'='})
		if ok && !bytes.ContainsAny(key, " :") {
			if !sawEvents { // body lines: their costs are sized by the events
				return nil, fmt.Errorf("callgrind: line %d: %s= before the events: header", lineNo, key)
			}
			switch string(key) {
			case "fn":
				name, err := compressedName(fnNames, string(val))
				if err != nil {
					return nil, fmt.Errorf("callgrind: line %d: %w", lineNo, err)
				}
				fn = baseFunction(name)
				if p.Self[fn] == nil {
					p.Self[fn] = make([]int64, len(p.Events))
				}
				cur = p.Self[fn]
			case "cfn":
				name, err := compressedName(fnNames, string(val))
				if err != nil {
					return nil, fmt.Errorf("callgrind: line %d: %w", lineNo, err)
				}
				cfn = baseFunction(name)
			case "calls":
				if cfn == "" {
					return nil, fmt.Errorf("callgrind: line %d: calls= with no cfn= before it", lineNo)
				}
				skipNext, callTo = true, nil
				if cfn != fn { // a recursive call is in the function's own cost already
					if p.Called[cfn] == nil {
						p.Called[cfn] = make([]int64, len(p.Events))
					}
					callTo = p.Called[cfn]
				}
			case "jump", "jcnd":
				skipNext, callTo = true, nil
			}
			continue
		}
		key, val, ok = bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		v := strings.TrimSpace(string(val))
		switch string(key) {
		case "cmd":
			p.Cmd = v
		case "desc":
			if t, ok := strings.CutPrefix(v, "Trigger:"); ok {
				p.Trigger = strings.TrimSpace(t)
			}
		case "positions":
			positions = len(strings.Fields(v))
			if positions == 0 {
				return nil, fmt.Errorf("callgrind: line %d: no positions", lineNo)
			}
		case "events":
			if sawEvents {
				return nil, fmt.Errorf("callgrind: line %d: a second events: header", lineNo)
			}
			p.Events = strings.Fields(v)
			if len(p.Events) == 0 {
				return nil, fmt.Errorf("callgrind: line %d: no events", lineNo)
			}
			sawEvents = true
		case "totals", "summary":
			if p.Totals != nil && string(key) == "summary" {
				continue // totals: wins
			}
			var t []int64
			for _, f := range strings.Fields(v) {
				n, err := strconv.ParseInt(f, 10, 64)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("callgrind: line %d: %s %q is not a count", lineNo, key, f)
				}
				t = append(t, n)
			}
			p.Totals = t
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("callgrind: %w", err)
	}
	if !sawEvents {
		return nil, errors.New("callgrind: no events: header (not a callgrind output file?)")
	}
	return p, nil
}

// compressedName resolves callgrind's name compression: "(id) name"
// defines id, "(id)" refers to it, a plain "name" is itself.
func compressedName(names map[string]string, v string) (string, error) {
	if !strings.HasPrefix(v, "(") {
		return v, nil
	}
	id, rest, ok := strings.Cut(v[1:], ")")
	if !ok || id == "" {
		return "", fmt.Errorf("malformed compressed name %q", v)
	}
	if rest = strings.TrimPrefix(rest, " "); rest != "" {
		names[id] = rest
		return rest, nil
	}
	name, ok := names[id]
	if !ok {
		return "", fmt.Errorf("name (%s) used before it was defined", id)
	}
	return name, nil
}

// baseFunction strips callgrind's recursion-depth suffix ("f'2" is f
// called from itself, --separate-recs).
func baseFunction(name string) string {
	i := strings.LastIndexByte(name, '\'')
	if i <= 0 || i == len(name)-1 {
		return name
	}
	for _, c := range name[i+1:] {
		if c < '0' || c > '9' {
			return name
		}
	}
	return name[:i]
}

// callgrindOut is the child's callgrind output file in its run's
// directory; the window's dump is callgrindOut + ".1".
const callgrindOut = "callgrind.out"

// callgrindCommand runs exe (the child) under callgrind, writing to out.
func callgrindCommand(ctx context.Context, valgrind, exe, out string) *exec.Cmd {
	return exec.CommandContext(ctx, valgrind,
		"--tool=callgrind",
		"--callgrind-out-file="+out,
		"--dump-instr=no", "--dump-line=no", // per function is enough
		"--fair-sched=yes", // threads take turns: none starved by valgrind's lock
		"--quiet",
		exe)
}

// callgrindEnv is the child's environment under callgrind:
//
//   - GODEBUG=asyncpreemptoff=1: Go's asynchronous preemption signals
//     (SIGURG) trip an assertion in callgrind 3.19
//     (vgCallgrind_post_signal), as the CPU profile's SIGPROF does;
//     goroutines are still preempted at function calls;
//   - GOMAXPROCS=1: valgrind runs one thread at a time anyway, and with
//     no idle P there are no spinning Ms, whose instructions follow the
//     timing, not the work;
//   - GOGC=off (GOMEMLIMIT=1GiB as a bound): a 10 s run has two to five
//     collections, so one more or less moves the count by 10-50% of a
//     design's own; without them the count leaves the collector out,
//     whose cost follows the allocations (alloc B / event, reported
//     beside it).
func callgrindEnv(env []string) []string {
	out := make([]string, 0, len(env)+4)
	godebug := "asyncpreemptoff=1"
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		switch k {
		case "GOMAXPROCS", "GOGC", "GOMEMLIMIT":
			continue
		case "GODEBUG":
			if v != "" {
				godebug = v + "," + godebug
			}
			continue
		}
		out = append(out, e)
	}
	return append(out, "GODEBUG="+godebug, "GOMAXPROCS=1", "GOGC=off", "GOMEMLIMIT=1GiB")
}

// What of a design run's instructions is not the design's, besides the
// calibration's per request (see countCallgrind).
var (
	// callgrindIdle are counted with what they call (Called): the
	// scheduler's search for the next goroutine (checking timers and the
	// network poller, stealing, going to sleep), which runs on the
	// thread's own stack (g0), never parks, and runs as often as the
	// child's wake-ups happen not to coincide: its count follows the
	// timing, not the work.
	callgrindIdle = []string{"runtime.findRunnable"}
	// callgrindHarness are counted by their own instructions (Self; a
	// trailing * matches any suffix): the child's harness code, whose
	// goroutines park inside it (so Called would be wrong), the heap
	// profile's sampling of allocation stacks (a random draw), and the
	// peak-heap sampler's ReadMemStats. What they call in the runtime
	// otherwise (allocating the event, reading the clock) is the
	// calibration's.
	callgrindHarness = []string{
		// load generator: pacing, events, Add's latency
		"github.com/batchproc/batchproc/bench.runLoad*",
		"github.com/batchproc/batchproc/bench.pacedClosedLoop*",
		"github.com/batchproc/batchproc/bench.closedHandler*",
		"github.com/batchproc/batchproc/bench.openLoop*",
		"github.com/batchproc/batchproc/bench.(*eventBuilder).*",
		"github.com/batchproc/batchproc/bench.(*latencyShards).*",
		"github.com/HdrHistogram/hdrhistogram-go.*",
		// the design's log, parsed for count=N
		"github.com/batchproc/batchproc/bench.(*countLog).*",
		"regexp.*",
		"regexp/syntax.*",
		// the peak-heap sampler
		"github.com/batchproc/batchproc/bench.startHeapPeak*",
		"runtime.ReadMemStats*",
		"runtime.readmemstats_m",
		"runtime.(*consistentHeapStats).*",
		"runtime.(*heapStatsAggregate).*",
		"runtime.(*sysStatsAggregate).*",
		"runtime.(*cpuStatsAggregate).*",
		"runtime.stopTheWorld*",
		"runtime.startTheWorld*",
		// heap profile sampling (MemProfileRate): stack unwinding
		"runtime.mProf_Malloc",
		"runtime.profilealloc",
		"runtime.stkbucket",
		"runtime.(*bucket).*",
		"runtime.callers*",
		"runtime.tracebackPCs",
		"runtime.(*unwinder).*",
		"runtime.pcvalue",
		"runtime.step",
		"runtime.findfunc",
		"runtime.funcInfo.*",
		"runtime.(*moduledata).textAddr",
		"runtime.funcspdelta",
		"runtime.pcdatavalue*",
		"runtime.readvarint",
	}
)

// callgrindCount is what countCallgrind found in one window's dump, in
// instructions (Ir).
type callgrindCount struct {
	Total   int64 // everything callgrind counted in the window
	Idle    int64 // callgrindIdle, with what it called
	Harness int64 // callgrindHarness, their own instructions
}

// Counted is what is left for the design, its load and the runtime work
// they cause: Total - Idle - Harness.
func (c callgrindCount) Counted() int64 { return c.Total - c.Idle - c.Harness }

// countCallgrind splits a window's instructions (event Ir).
func countCallgrind(p *CallgrindProfile) (callgrindCount, error) {
	ir := p.Event("Ir")
	if ir < 0 {
		return callgrindCount{}, fmt.Errorf("callgrind: no Ir event (events: %s)", strings.Join(p.Events, " "))
	}
	var c callgrindCount
	c.Total = p.SelfTotal(ir)
	for _, f := range callgrindIdle {
		if v := p.Called[f]; v != nil {
			c.Idle += v[ir]
		}
	}
	for name, v := range p.Self {
		if matchAny(name, callgrindHarness) {
			c.Harness += v[ir]
		}
	}
	if c.Counted() < 0 {
		return c, fmt.Errorf("callgrind: the idle and harness instructions (%d + %d) exceed the total (%d)", c.Idle, c.Harness, c.Total)
	}
	return c, nil
}

// matchAny reports whether name is one of patterns, where a pattern
// ending in * matches every name with the rest as prefix.
func matchAny(name string, patterns []string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if name == p {
			return true
		}
	}
	return false
}

// readCallgrindWindow reads the window's dump of a run (dir/callgrindOut.1)
// and counts it.
func readCallgrindWindow(dir string) (callgrindCount, error) {
	path := filepath.Join(dir, callgrindOut+".1")
	f, err := os.Open(path)
	if err != nil {
		return callgrindCount{}, fmt.Errorf("callgrind: the design window's dump: %w", err)
	}
	defer f.Close()
	p, err := ParseCallgrind(f)
	if err != nil {
		return callgrindCount{}, fmt.Errorf("%s: %w", path, err)
	}
	if !strings.Contains(p.Trigger, callgrindWindow) {
		return callgrindCount{}, fmt.Errorf("%s: a dump for %q, not the design's window", path, p.Trigger)
	}
	return countCallgrind(p)
}

// checkSymbols says why exe cannot be counted per function: callgrind
// names functions from the ELF symbol table, which `go run` and `go test`
// leave out (they link with -s -w).
func checkSymbols(exe string) error {
	f, err := elf.Open(exe)
	if err != nil {
		return fmt.Errorf("bench: -cpu callgrind: reading %s: %w", exe, err)
	}
	defer f.Close()
	if f.Section(".symtab") == nil {
		return fmt.Errorf("bench: -cpu callgrind needs a binary with its symbol table, which `go run` and `go test` leave out: go build -o batchbench ./cmd/batchbench && ./batchbench -cpu callgrind (%s has none)", exe)
	}
	return nil
}
