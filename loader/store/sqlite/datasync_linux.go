package sqlite

import (
	"os"
	"syscall"
)

// datasync writes f's data and the metadata needed to read it back (its
// size included) to stable storage: fdatasync(2), which SQLite's own
// Linux builds use for the same syncs.
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
