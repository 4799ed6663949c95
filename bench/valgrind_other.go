//go:build !amd64

package bench

// valgrindRequest: client requests are implemented for amd64 only
// (valgrind_amd64.s); elsewhere the answer is always 0, as on a real CPU.
func valgrindRequest(*[6]uintptr) uintptr { return 0 }

// valgrindSupported says whether this build can make client requests.
const valgrindSupported = false
