package bench

import (
	"context"
	"crypto/sha256"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Designs whose Add hashes 4 KiB once or twice: under callgrind the
// second's instructions per event are the first's plus one hash.
const (
	testHash1 = "test-callgrind-hash-1"
	testHash2 = "test-callgrind-hash-2"
)

var hashBuf = make([]byte, 4<<10)

type hasher int

func (h hasher) Add(context.Context, string, []byte) error {
	for range int(h) {
		sha256.Sum256(hashBuf)
	}
	return nil
}
func (hasher) Shutdown(context.Context) error { return nil }

func init() {
	designSpecs[testHash1] = designSpec{name: testHash1, newClient: func(designEnv) (Client, error) { return hasher(1), nil }}
	designSpecs[testHash2] = designSpec{name: testHash2, newClient: func(designEnv) (Client, error) { return hasher(2), nil }}
}

// needValgrind skips when valgrind cannot run here: not installed
// (outside CI; in CI that fails) or not linux/amd64.
func needValgrind(t *testing.T) {
	t.Helper()
	if !valgrindSupported || runtime.GOOS != "linux" {
		t.Skip("valgrind client requests are implemented for linux/amd64 only")
	}
	if _, err := exec.LookPath("valgrind"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI needs valgrind for the -cpu callgrind tests: apt-get install valgrind")
		}
		t.Skip("valgrind is not installed")
	}
}

// inCountableBinary runs test name in a copy of this test binary that
// callgrind can count, and reports whether the caller is that copy:
// `go test` links without the symbol table callgrind names functions by,
// and valgrind cannot run a -race binary. When this binary can be counted
// it returns true at once; otherwise it builds the package's test binary
// with its symbols and without -race, runs the test there, and returns
// false (the copy's result is this test's).
func inCountableBinary(t *testing.T, name string) bool {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if !raceEnabled && checkSymbols(exe) == nil {
		return true
	}
	bin := filepath.Join(t.TempDir(), "bench.test")
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building a countable test binary: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-test.run", "^"+name+"$", "-test.v", "-test.count", "1")
	out, err := cmd.CombinedOutput()
	t.Logf("in %s (symbols, no -race):\n%s", bin, out)
	if err != nil || !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("%s failed in the countable binary: %v", name, err)
	}
	return false
}

// -cpu callgrind measures the design, not the load: the calibration's
// instructions per request subtracted, a design that hashes twice per
// event counts twice the instructions per event of one that hashes once
// (within 2%; without the subtraction it reads 1.94), and a hash's instructions are far more than the load's
// per request that the subtraction removed.
func TestCallgrindCountsTheDesign(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three child processes under valgrind")
	}
	needValgrind(t)
	if !inCountableBinary(t, "TestCallgrindCountsTheDesign") {
		return
	}
	cfg := testConfig(t, testHash1, testHash2)
	cfg.InProcess = false
	cfg.CPUMethod = CPUCallgrind
	cfg.Duration = 2 * time.Second
	cfg.Rate = 200
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	pr := newProgress(io.Discard)
	rep := newReport(cfg)
	for _, d := range []string{Calibration, testHash1, testHash2} {
		s := runSpec{design: d, load: LoadClosed, rate: cfg.Rate, dir: filepath.Join(cfg.Out, d), profiles: true, cpuMethod: CPUCallgrind}
		res := runDesign(context.Background(), cfg, s, pr, "[test]")
		if res.Error != "" {
			t.Fatalf("%s: %s", d, res.Error)
		}
		if res.CPUMethod != CPUCallgrind || res.Instructions <= 0 || res.Offered == 0 {
			t.Fatalf("%s: cpu method %q, %d instructions, offered %d", d, res.CPUMethod, res.Instructions, res.Offered)
		}
		if res.InstructionsIdle <= 0 || res.InstructionsHarness <= 0 || res.InstructionsTotal != res.Instructions+res.InstructionsIdle+res.InstructionsHarness {
			t.Errorf("%s: total %d, idle %d, harness %d, counted %d", d, res.InstructionsTotal, res.InstructionsIdle, res.InstructionsHarness, res.Instructions)
		}
		rep.Runs = append(rep.Runs, res)
	}
	rep.collect(cfg)
	if len(rep.Designs) != 2 || len(rep.Calibration) != 1 {
		t.Fatalf("%d rows, %d calibrations", len(rep.Designs), len(rep.Calibration))
	}
	cal := rep.Calibration[0].InstructionsPerRequest
	one, two := rep.Designs[0].InstructionsPerEvent, rep.Designs[1].InstructionsPerEvent
	t.Logf("calibration %.0f instructions per request; hash once %.0f, twice %.0f per event (ratio %.4f)", cal, one, two, two/one)
	if cal <= 0 || one <= cal {
		t.Errorf("calibration %.0f, one hash %.0f per event: a 4 KiB hash should outweigh the load's per request", cal, one)
	}
	if r := two / one; math.Abs(r-2) > 0.04 {
		t.Errorf("twice the hashing counted %.3f times the instructions per event, want 2 (±2%%)", r)
	}
}
