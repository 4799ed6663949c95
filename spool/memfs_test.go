package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// memFS is a strict in-memory filesystem for one spool directory. It keeps
// two states: what the running system sees (the page cache), and what is
// durable (file contents as of their last successful Sync, the directory as
// of its last SyncDir). crash() models the death of the process: handles
// die, locks are released, the page cache stays. powerLoss() models the
// machine losing power: everything not durable is gone, except, if asked,
// a prefix of each file's unsynced appends that the kernel wrote back on its
// own. It injects ENOSPC (a byte limit) and fsync failures.
type memFS struct {
	mu      sync.Mutex
	files   map[string]*memInode // the namespace now
	durable map[string]*memInode // the namespace as of the last SyncDir
	locks   map[string]bool
	epoch   int // handles of an earlier epoch are dead (their process crashed)

	limit      int64  // total file bytes allowed; 0: no limit
	failSyncs  bool   // every Sync (and SyncDir) fails from now on
	syncs      int    // successful file Syncs
	beforeSync func() // called, without mu, at the start of every file Sync
}

type memInode struct {
	data    []byte // what a read sees
	durable []byte // what survives a power loss
}

var errDeadHandle = errors.New("memfs: handle of a crashed process")

func newMemFS() *memFS {
	return &memFS{files: map[string]*memInode{}, durable: map[string]*memInode{}, locks: map[string]bool{}}
}

func (m *memFS) used() int64 {
	var n int64
	for _, ino := range m.files {
		n += int64(len(ino.data))
	}
	return n
}

func (m *memFS) MkdirAll(string) error { return nil }

func (m *memFS) OpenFile(name string, flag int) (file, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino := m.files[name]
	switch {
	case ino != nil && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case ino == nil && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case ino == nil:
		ino = &memInode{}
		m.files[name] = ino
	}
	if flag&os.O_TRUNC != 0 {
		ino.data = nil
	}
	return &memFile{m: m, ino: ino, name: name, epoch: m.epoch}, nil
}

func (m *memFS) ReadDir(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for name := range m.files {
		if filepath.Dir(name) == filepath.Clean(dir) {
			names = append(names, filepath.Base(name))
		}
	}
	slices.Sort(names)
	return names, nil
}

func (m *memFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino := m.files[oldname]
	if ino == nil {
		return &fs.PathError{Op: "rename", Path: oldname, Err: fs.ErrNotExist}
	}
	m.files[newname] = ino
	delete(m.files, oldname)
	return nil
}

func (m *memFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.files[name] == nil {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	delete(m.files, name)
	return nil
}

func (m *memFS) SyncDir(string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failSyncs {
		return syscall.EIO
	}
	m.durable = make(map[string]*memInode, len(m.files))
	for name, ino := range m.files {
		m.durable[name] = ino
	}
	return nil
}

type memLock struct {
	m     *memFS
	name  string
	epoch int
}

func (l *memLock) Close() error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if l.epoch == l.m.epoch {
		delete(l.m.locks, l.name)
	}
	return nil
}

func (m *memFS) Lock(name string) (io.Closer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks[name] {
		return nil, fmt.Errorf("%w: %s is locked", ErrLocked, name)
	}
	m.locks[name] = true
	if m.files[name] == nil {
		m.files[name] = &memInode{}
	}
	return &memLock{m: m, name: name, epoch: m.epoch}, nil
}

// crash kills the process using the files: its handles and locks die; the
// page cache (every write) stays.
func (m *memFS) crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epoch++
	clear(m.locks)
}

// powerLoss loses everything not durable. keep(name, n) says how many of a
// file's n unsynced appended bytes the kernel had written back anyway (0
// for none); it may tear a record anywhere. For a file overwritten since
// its last Sync, n counts from the first changed byte, and the bytes past
// what was written back are the durable ones.
func (m *memFS) powerLoss(keep func(name string, n int) int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epoch++
	clear(m.locks)
	m.files = make(map[string]*memInode, len(m.durable))
	for name, ino := range m.durable {
		m.files[name] = ino
		d := ino.durable
		switch {
		case keep == nil:
		case len(ino.data) > len(d) && bytes.HasPrefix(ino.data, d): // appended
			d = ino.data[:len(d)+keep(name, len(ino.data)-len(d))]
		case !bytes.Equal(ino.data, d): // overwritten (a reused segment file): a prefix of the change reached the disk
			i := 0
			for i < len(d) && i < len(ino.data) && d[i] == ino.data[i] {
				i++
			}
			k := i + keep(name, len(ino.data)-i)
			d = append(slices.Clone(ino.data[:k]), d[min(k, len(d)):]...)
		}
		ino.data = slices.Clone(d)
		ino.durable = slices.Clone(d)
	}
}

// segmentFiles returns the names and contents of the segment files now.
func (m *memFS) segmentFiles() map[string][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]byte{}
	for name, ino := range m.files {
		if strings.HasSuffix(name, segSuffix) {
			out[name] = slices.Clone(ino.data)
		}
	}
	return out
}

func (m *memFS) setData(name string, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino := m.files[name]
	if ino == nil {
		ino = &memInode{}
		m.files[name] = ino
		m.durable[name] = ino
	}
	ino.data = slices.Clone(data)
	ino.durable = slices.Clone(data)
}

type memFile struct {
	m     *memFS
	ino   *memInode
	name  string
	epoch int
}

func (f *memFile) check() error {
	if f.epoch != f.m.epoch {
		return errDeadHandle
	}
	return nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check(); err != nil {
		return 0, err
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check(); err != nil {
		return 0, err
	}
	n := len(p)
	var err error
	if f.m.limit > 0 {
		grow := off + int64(len(p)) - int64(len(f.ino.data))
		if room := f.m.limit - f.m.used(); grow > room {
			// A short write: what fits is written, as a real disk does.
			n = max(0, len(p)-int(grow-room))
			err = &fs.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
		}
	}
	if end := off + int64(n); end > int64(len(f.ino.data)) {
		f.ino.data = append(f.ino.data, make([]byte, end-int64(len(f.ino.data)))...)
	}
	copy(f.ino.data[off:], p[:n])
	return n, err
}

func (f *memFile) Sync() error {
	if h := f.m.beforeSync; h != nil {
		h()
	}
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	if f.m.failSyncs {
		return &fs.PathError{Op: "sync", Path: f.name, Err: syscall.EIO}
	}
	f.ino.durable = slices.Clone(f.ino.data)
	f.m.syncs++
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	if size < int64(len(f.ino.data)) {
		f.ino.data = f.ino.data[:size:size]
	} else {
		f.ino.data = append(f.ino.data, make([]byte, size-int64(len(f.ino.data)))...)
	}
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check(); err != nil {
		return 0, err
	}
	return int64(len(f.ino.data)), nil
}

func (f *memFile) Close() error { return nil }
