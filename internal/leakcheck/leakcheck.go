// Package leakcheck fails a test binary that leaves goroutines running:
// goleak's VerifyTestMain for the packages of the root module.
//
// Why not goleak itself: the root module (batchproc, httpsink, spool,
// batchproctest) is what every service imports, and a module's test
// dependencies are in its go.mod, so in every importer's module graph.
// goleak there would be the one module a service importing batchproc and
// httpsink sees besides klauspost/compress. The other modules of this
// repository use goleak.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// VerifyTestMain runs the tests and then, if they passed, checks that no
// goroutine but the test binary's own is left, exiting 1 with their stacks
// if some are. Goroutines that are ending get up to 5 s to do so (as goleak
// allows), checked with backoff.
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := wait(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines left running after the tests:\n\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// wait returns the stacks of the goroutines still running after d, or ""
// as soon as there are none.
func wait(d time.Duration) string {
	deadline := time.Now().Add(d)
	for delay := time.Microsecond; ; delay = min(2*delay, 100*time.Millisecond) {
		leaked := Find()
		if leaked == "" || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(delay) // polling for goroutines to exit, as goleak does: nothing else says when
	}
}

// Find returns the stacks of the goroutines running now that are neither
// the caller's nor the runtime's or the testing package's own.
func Find() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	stacks := strings.Split(string(buf), "\n\n")
	var leaked []string
	for i, s := range stacks {
		if i == 0 || ignored(s) { // the first is the calling goroutine
			continue
		}
		leaked = append(leaked, s)
	}
	return strings.Join(leaked, "\n\n")
}

// ignored reports whether a goroutine's stack is one the test binary or the
// runtime keeps for itself (the same ones goleak ignores).
func ignored(stack string) bool {
	for _, f := range []string{
		"testing.(*M).",               // the test binary's main
		"testing.runFuzzing(",         // the fuzzing coordinator
		"testing.runFuzzTests(",       //
		"os/signal.signal_recv",       // signal.Notify's loop, kept for the process
		"os/signal.loop",              //
		"runtime.ensureSigM",          //
		"runtime/pprof.profileWriter", // a CPU profile being written (-cpuprofile)
	} {
		if strings.Contains(stack, f) {
			return true
		}
	}
	return false
}
