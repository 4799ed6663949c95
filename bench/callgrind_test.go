package bench

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// readTestdataGz returns a gzipped file of testdata, unpacked.
func readTestdataGz(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A real window dump: what the child of a -cpu callgrind calibration run
// wrote (callgrind 3.19, GOMAXPROCS=1; captured with `batchbench -cpu
// callgrind -designs batchproc -duration 10s`, calibration-noop's
// callgrind.out.1). The functions' self costs add up to the file's total,
// the scheduler's search and the harness are found, and the window is the
// design's.
func TestParseCallgrindRealWindow(t *testing.T) {
	p, err := ParseCallgrind(bytes.NewReader(readTestdataGz(t, "callgrind-window.out.gz")))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Events, []string{"Ir"}) {
		t.Fatalf("events %q", p.Events)
	}
	if p.Trigger != "Client Request: "+callgrindWindow {
		t.Errorf("trigger %q", p.Trigger)
	}
	if !strings.HasSuffix(p.Cmd, "batchbench") {
		t.Errorf("cmd %q", p.Cmd)
	}
	if len(p.Totals) != 1 || p.Totals[0] == 0 {
		t.Fatalf("totals %v", p.Totals)
	}
	if got := p.SelfTotal(0); got != p.Totals[0] {
		t.Errorf("self costs add up to %d, the file's total is %d", got, p.Totals[0])
	}
	for name := range p.Self {
		if baseFunction(name) != name {
			t.Errorf("%q kept its recursion suffix", name)
		}
	}
	for _, f := range []string{"runtime.mallocgc", "github.com/batchproc/batchproc/bench.(*eventBuilder).next", "runtime.findRunnable"} {
		if p.Self[f] == nil || p.Self[f][0] == 0 {
			t.Errorf("no self cost for %s", f)
		}
	}
	c, err := countCallgrind(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("total %d, idle %d, harness %d, counted %d", c.Total, c.Idle, c.Harness, c.Counted())
	// findRunnable's inclusive cost is more than its own and less than
	// everything; the harness's code is some of the total.
	if fr := p.Self["runtime.findRunnable"][0]; c.Idle <= fr || c.Idle >= c.Total/2 {
		t.Errorf("idle %d: want more than findRunnable's own %d, less than half of %d", c.Idle, fr, c.Total)
	}
	if c.Harness <= 0 || c.Harness >= c.Total/2 || c.Counted() <= 0 {
		t.Errorf("harness %d of %d", c.Harness, c.Total)
	}
}

// The format's parts the parser must get right, on a file small enough to
// add up by hand: name compression, relative and repeated positions, two
// events with a missing trailing cost, call lines (inclusive, not self),
// recursion (f'2 is f; a call to itself is not counted as a call), jumps.
func TestParseCallgrindFormat(t *testing.T) {
	const in = `# callgrind format
version: 1
creator: test
cmd:  /bin/prog -x
desc: Trigger: Client Request: design
positions: line
events: Ir Dr

fl=(1) a.go
fn=(1) main.a
10 5 1
+1 3
* 2 2
cfl=(2) b.go
cfn=(2) main.b
calls=2 20
11 100 10
-2 1 0

fl=(2)
fn=(2)
20 60 6
cfn=(3) main.c
calls=1 30
21 40 4
jump=3 22
22 7

fn=(3)
30 40 4

fn=(4) main.r'2
40 9
cfn=(5) main.r
calls=1 40
41 1000
fn=(5)
40 1
totals: 121 13
`
	p, err := ParseCallgrind(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if p.Cmd != "/bin/prog -x" || p.Trigger != "Client Request: design" || !slices.Equal(p.Events, []string{"Ir", "Dr"}) {
		t.Fatalf("header: cmd %q trigger %q events %q", p.Cmd, p.Trigger, p.Events)
	}
	wantSelf := map[string][]int64{
		"main.a": {5 + 3 + 2 + 1, 1 + 0 + 2 + 0},
		"main.b": {60, 6}, // the line after jump= is the jump's, not a cost
		"main.c": {40, 4},
		"main.r": {9 + 1, 0},
	}
	wantCalled := map[string][]int64{
		"main.b": {100, 10},
		"main.c": {40, 4},
	}
	for _, m := range []struct {
		name      string
		got, want map[string][]int64
	}{{"self", p.Self, wantSelf}, {"called", p.Called, wantCalled}} {
		if len(m.got) != len(m.want) {
			t.Errorf("%s: %v, want %v", m.name, m.got, m.want)
		}
		for f, w := range m.want {
			if !slices.Equal(m.got[f], w) {
				t.Errorf("%s of %s: %v, want %v", m.name, f, m.got[f], w)
			}
		}
	}
	if !slices.Equal(p.Totals, []int64{121, 13}) || p.SelfTotal(0) != 121 || p.SelfTotal(1) != 13 {
		t.Errorf("totals %v, self total %d", p.Totals, p.SelfTotal(0))
	}
}

func TestParseCallgrindErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":              "",
		"not callgrind":      "hello\nworld\n",
		"cost before events": "fn=f\n1 2\nevents: Ir\n",
		"cost before fn":     "events: Ir\n1 2\n",
		"fn before events":   "fn=f\nevents: Ir\n",
		"cost not a number":  "events: Ir\nfn=f\n1 x\n",
		"negative cost":      "events: Ir\nfn=f\n1 -2\n",
		"too many costs":     "events: Ir\nfn=f\n1 2 3\n",
		"undefined name":     "events: Ir\nfn=(7)\n1 2\n",
		"malformed name":     "events: Ir\nfn=(7 f\n",
		"calls without cfn":  "events: Ir\nfn=f\ncalls=1 2\n3 4\n",
		"two events headers": "events: Ir\nevents: Ir\n",
		"bad totals":         "events: Ir\ntotals: many\n",
	} {
		if _, err := ParseCallgrind(strings.NewReader(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// callgrind output is a file format batchbench decodes: nothing in it
// makes the parser panic, and what it accepts is consistent.
func FuzzParseCallgrind(f *testing.F) {
	real := readTestdataGz(f, "callgrind-window.out.gz")
	f.Add(real[:min(len(real), 4096)])
	f.Add([]byte("events: Ir Dr\nfl=(1) a\nfn=(1) f'2\n1 2 3\n+1 4\ncfn=(2) g\ncalls=1 2\n* 5 6\nfn=(2)\n-1 7\ntotals: 18 9\n"))
	f.Add([]byte("positions: instr line\nevents: Ir\nfn=(1)\n0x10 2 3\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseCallgrind(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(p.Events) == 0 {
			t.Fatal("accepted with no events")
		}
		for name, v := range p.Self {
			if len(v) != len(p.Events) {
				t.Fatalf("self of %q has %d costs for %d events", name, len(v), len(p.Events))
			}
		}
		for name, v := range p.Called {
			if len(v) != len(p.Events) {
				t.Fatalf("called of %q has %d costs for %d events", name, len(v), len(p.Events))
			}
		}
		if p.Event("Ir") >= 0 {
			_, _ = countCallgrind(p)
		}
	})
}

func TestCallgrindEnv(t *testing.T) {
	got := callgrindEnv([]string{"HOME=/root", "GOMAXPROCS=8", "GODEBUG=madvdontneed=1", "GOGC=50", "GOMEMLIMIT=1", "PATH=/bin"})
	want := []string{"HOME=/root", "PATH=/bin", "GODEBUG=madvdontneed=1,asyncpreemptoff=1", "GOMAXPROCS=1", "GOGC=off", "GOMEMLIMIT=1GiB"}
	if !slices.Equal(got, want) {
		t.Errorf("callgrindEnv: %q\nwant %q", got, want)
	}
}

func TestMatchAny(t *testing.T) {
	pats := []string{"regexp.*", "runtime.step"}
	for name, want := range map[string]bool{
		"regexp.(*Regexp).tryBacktrack": true,
		"regexp/syntax.Parse":           false,
		"runtime.step":                  true,
		"runtime.stepper":               false,
		"main.regexp.x":                 false,
	} {
		if got := matchAny(name, pats); got != want {
			t.Errorf("matchAny(%q) = %v", name, got)
		}
	}
}

// Outside valgrind a client request answers 0 and does nothing: the
// child's callgrindZero / callgrindDump are safe to call on a real CPU.
func TestValgrindRequestOnARealCPU(t *testing.T) {
	if runningOnValgrind() {
		t.Skip("running under valgrind")
	}
	callgrindZero()
	callgrindDump(callgrindWindow)
}

// The report's instruction figures: the calibration's per request is the
// median of its runs that kept the load, each design run's figure is its
// count minus that per request, per event, and a row is the median of
// its runs that kept the load, the others listed; when no run kept it,
// all count.
func TestCollectInstructions(t *testing.T) {
	run := func(name string, repeat int, requests, instructions, late int64) DesignResult {
		return DesignResult{Name: name, Load: LoadClosed, Repeat: repeat, Isolated: true, CPUMethod: CPUCallgrind,
			Target: 20000, Requests: requests, Offered: requests, Instructions: instructions, SlotsSkippedLate: late,
			ProcessCPUSeconds: 1}
	}
	r := &Report{Runs: []DesignResult{
		run(Calibration, 1, 20000, 20000*4000, 0),
		run(Calibration, 2, 20000, 20000*4100, 100),
		run(Calibration, 3, 10000, 10000*3000, 9000), // starved: left out
		run("d", 1, 20000, 20000*(4050+500), 0),
		run("d", 2, 20000, 20000*(4050+520), 150),
		run("d", 3, 15000, 15000*(4050+300), 4000), // starved: left out
		run("all-lost", 1, 10000, 10000*(4050+100), 5000),
		run("all-lost", 2, 10000, 10000*(4050+200), 5000),
		run("one-kept", 1, 20000, 20000*(4050+700), 0),
		run("one-kept", 2, 10000, 10000*(4050+600), 5000),
	}}
	r.collect(Config{Mode: ModeFixed, Repeat: 3})
	c := r.Calibration[0]
	if c.InstructionsPerRequest != 4050 || !slices.Equal(c.RunsInstructions, []float64{4000, 4100}) || !slices.Equal(c.RunsLostLoad, []float64{3000}) {
		t.Errorf("calibration %v per request from %v, left out %v", c.InstructionsPerRequest, c.RunsInstructions, c.RunsLostLoad)
	}
	d, all := r.Designs[0], r.Designs[1]
	if d.InstructionsPerEvent != 500 || !slices.Equal(d.InstructionRunsPerEvent, []float64{500, 520}) ||
		!slices.Equal(d.InstructionRunsLostLoad, []float64{300}) || d.Runs != 2 || d.InstructionSpreadPct != 2 {
		t.Errorf("row d: %v per event, runs %v (%d), lost %v, spread %v%%", d.InstructionsPerEvent, d.InstructionRunsPerEvent, d.Runs,
			d.InstructionRunsLostLoad, d.InstructionSpreadPct)
	}
	if all.Runs != 2 || !slices.Equal(all.InstructionRunsPerEvent, []float64{100, 200}) || all.InstructionRunsLostLoad != nil || !all.NoRunKeptLoad || d.NoRunKeptLoad {
		t.Errorf("row all-lost: runs %v (%d), lost %v", all.InstructionRunsPerEvent, all.Runs, all.InstructionRunsLostLoad)
	}
	if one := r.Designs[2]; one.Runs != 1 || !slices.Equal(one.InstructionRunsPerEvent, []float64{700}) || !slices.Equal(one.InstructionRunsLostLoad, []float64{600}) {
		t.Errorf("row one-kept: runs %v (%d), lost %v", one.InstructionRunsPerEvent, one.Runs, one.InstructionRunsLostLoad)
	}
	if d.CPUSecondsPerMillion != 0 || d.CPUSource != "callgrind (instructions_per_event)" {
		t.Errorf("row d: CPU %v s/M from %q: valgrind's CPU time is not the design's", d.CPUSecondsPerMillion, d.CPUSource)
	}
	if s := r.Summary(); !strings.Contains(s, "instr/event") || !strings.Contains(s, "500 instr ±2.0%") ||
		!strings.Contains(s, "warning: no run of all-lost kept the load") || strings.Contains(s, "no calibration run") {
		t.Errorf("summary:\n%s", s)
	}
}

// -cpu is checked before anything runs: an unknown method and callgrind
// in one process say why, and so does a binary without the symbol table
// callgrind names functions by (go build -ldflags=-s, as go run and go
// test link), while a plain go build binary passes.
func TestCPUMethodConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{CPUMethod: "bogus"}, `unknown -cpu "bogus"`},
		{Config{CPUMethod: CPUCallgrind, InProcess: true}, "needs -isolate"},
	} {
		c.cfg.Out, c.cfg.Progress = t.TempDir(), io.Discard
		if err := c.cfg.defaults(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg.CPUMethod, err, c.want)
		}
	}
	f := filepath.Join(t.TempDir(), "stripped")
	if out, err := exec.Command("go", "build", "-ldflags=-s", "-o", f, "../cmd/batchbench").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := checkSymbols(f); err == nil || !strings.Contains(err.Error(), "go build -o batchbench") {
		t.Errorf("a binary linked with -s: %v", err)
	}
	if runtime.GOOS == "linux" {
		withSymbols := filepath.Join(t.TempDir(), "full")
		if out, err := exec.Command("go", "build", "-o", withSymbols, "../cmd/batchbench").CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if err := checkSymbols(withSymbols); err != nil {
			t.Errorf("a go build binary: %v", err)
		}
	}
}
