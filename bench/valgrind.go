package bench

import (
	"runtime"
	"unsafe"
)

// Valgrind client requests (valgrind.h, callgrind.h). The child of a
// -cpu callgrind run uses them to count exactly the design's window (build
// to shutdown, as getrusage does otherwise): it zeroes callgrind's counts
// when the window opens and dumps them when it closes, so the dump holds
// neither the child's start (runtime init, reading its request) nor its
// end (parsing the heap profile, writing the result).
const (
	vgRunningOnValgrind = 0x1001
	// VG_USERREQ_TOOL_BASE('C','T') and callgrind's requests after it.
	vgCallgrindBase      = uintptr('C')<<24 | uintptr('T')<<16
	vgCallgrindDumpAt    = vgCallgrindBase + 3 // VG_USERREQ__DUMP_STATS_AT(pos_str)
	vgCallgrindZeroStats = vgCallgrindBase + 1 // VG_USERREQ__ZERO_STATS
)

// runningOnValgrind reports whether this process runs under Valgrind
// (RUNNING_ON_VALGRIND: the nesting depth, 0 on a real CPU).
func runningOnValgrind() bool {
	args := [6]uintptr{vgRunningOnValgrind}
	return valgrindRequest(&args) != 0
}

// callgrindZero sets callgrind's counts of every thread to zero
// (CALLGRIND_ZERO_STATS). Nothing happens outside callgrind.
func callgrindZero() {
	args := [6]uintptr{vgCallgrindZeroStats}
	valgrindRequest(&args)
}

// callgrindDump writes callgrind's counts since the last zero or dump to
// the next dump file (<out-file>.1 for the first), marked with reason,
// and zeroes them (CALLGRIND_DUMP_STATS_AT). Nothing happens outside
// callgrind.
func callgrindDump(reason string) {
	b := append([]byte(reason), 0) // a C string
	args := [6]uintptr{vgCallgrindDumpAt, uintptr(unsafe.Pointer(&b[0]))}
	valgrindRequest(&args)
	runtime.KeepAlive(b)
}
