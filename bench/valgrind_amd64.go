package bench

// valgrindRequest makes a Valgrind client request (valgrind_amd64.s): it
// returns Valgrind's answer, or 0 when the process does not run under
// Valgrind.
//
//go:noescape
func valgrindRequest(args *[6]uintptr) uintptr

// valgrindSupported says whether this build can make client requests.
const valgrindSupported = true
