//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// errQuota has no portable equivalent outside unix.
var errQuota = errors.New("spool: no quota error on this platform")

// On platforms without flock(2) the lock is held in this process only: two
// Opens of one directory in one process are refused, but two processes are
// not kept apart. Do not share a spool directory between processes there.
var (
	locksMu sync.Mutex
	locks   = map[string]bool{}
)

type procLock struct {
	name string
	f    *os.File
}

func (l *procLock) Close() error {
	locksMu.Lock()
	delete(locks, l.name)
	locksMu.Unlock()
	return l.f.Close()
}

func lockFile(name string) (io.Closer, error) {
	abs, err := filepath.Abs(name)
	if err != nil {
		return nil, err
	}
	locksMu.Lock()
	defer locksMu.Unlock()
	if locks[abs] {
		return nil, fmt.Errorf("%w: %s is locked", ErrLocked, name)
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	locks[abs] = true
	return &procLock{name: abs, f: f}, nil
}

// syncDir is a no-op: Windows cannot open a directory for fsync, and NTFS
// journals its metadata.
func syncDir(string) error { return nil }
