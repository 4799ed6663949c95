package spool

import (
	"errors"
	"os"
	"syscall"
)

// allocate gives f's first size bytes their blocks on disk, so that a
// store into a mapping of them never faults for want of room (SIGBUS, the
// end of the host process): fallocate(2), or zeros written where the
// filesystem does not support it. ENOSPC comes back as an error.
func allocate(f *os.File, size int) error {
	for {
		err := syscall.Fallocate(int(f.Fd()), 0, 0, int64(size))
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EOPNOTSUPP):
			return writeZeros(f, size)
		}
		return err
	}
}
