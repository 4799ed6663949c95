//go:build race

package bench

// raceEnabled: this test binary has the race detector, which valgrind
// cannot run (ThreadSanitizer's memory layout).
const raceEnabled = true
