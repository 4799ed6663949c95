//go:build !linux

package sqlite

import "os"

// datasync writes f to stable storage (fsync(2), or what os.File.Sync
// does on this system).
func datasync(f *os.File) error { return f.Sync() }
