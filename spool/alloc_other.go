//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package spool

import "os"

// allocate gives f's first size bytes their blocks on disk by writing
// zeros, so that a store into a mapping of them never faults for want of
// room (SIGBUS, the end of the host process). ENOSPC comes back as an
// error. (A filesystem that compresses zeros away, ZFS with compression,
// may still leave holes.)
func allocate(f *os.File, size int) error { return writeZeros(f, size) }
