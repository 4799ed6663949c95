//go:build !unix && !windows

package bench

import "time"

// processCPU is not available on this system (js/wasm, wasip1, plan9): the
// CPU figures that rest on it read 0, and the report says so.
func processCPU() time.Duration { return 0 }
