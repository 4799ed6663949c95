package spool

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// fileSystem is the seam between the spool and the disk: every operation
// the spool makes on files goes through it, so that tests can replace the
// disk with a strict in-memory layer that loses what was not synced and
// injects ENOSPC and fsync failures. osFS is the real one.
type fileSystem interface {
	MkdirAll(dir string) error
	// OpenFile opens name with os.OpenFile's flags (always read-write here).
	OpenFile(name string, flag int) (file, error)
	ReadDir(dir string) ([]string, error) // names of the entries, sorted
	Rename(oldname, newname string) error
	Remove(name string) error
	// SyncDir fsyncs the directory, making creates, renames and removes in
	// it durable.
	SyncDir(dir string) error
	// Lock takes an exclusive lock on the file name (created if missing) for
	// as long as the returned Closer is open, or fails with ErrLocked.
	Lock(name string) (io.Closer, error)
}

type file interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
	Close() error
}

type osFS struct{}

func (osFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

func (osFS) OpenFile(name string, flag int) (file, error) {
	f, err := os.OpenFile(name, flag, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }
func (osFS) Remove(name string) error             { return os.Remove(name) }
func (osFS) SyncDir(dir string) error             { return syncDir(dir) }
func (osFS) Lock(name string) (io.Closer, error)  { return lockFile(name) }

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// isNoSpace reports whether err says the filesystem is out of space (or
// quota): the spool then reports "full", not a failure.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, errQuota)
}
