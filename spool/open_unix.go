//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package spool

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"syscall"

	"github.com/batchproc/batchproc"
)

// region is one memory-mapped region file.
type region struct {
	a    *openArea
	f    *os.File
	mem  []byte
	off  int  // end of the records kept, from regionHeader
	full bool // an event did not fit: the rest of the batch is not kept
	busy bool // between OpenBatch and Close (a.mu)
}

// put32 and put64 store a header word. Plain stores: what a killed process
// wrote before the kill is all in the page cache (interrupts are precise:
// every store before the signal completes), and the Go compiler emits a
// goroutine's stores in program order; no other process reads a region
// while its writer lives. An atomic store (XCHG on amd64) cost 10 ns an
// event here.
func (r *region) put32(off int, v uint32) { binary.LittleEndian.PutUint32(r.mem[off:], v) }
func (r *region) put64(off int, v uint64) { binary.LittleEndian.PutUint64(r.mem[off:], v) }

// OpenBatch returns a region for a batch being filled, or nil if the spool
// has none free and may not make another (WithOpenBatches), or does not
// keep open batches (another filesystem than the disk's, in tests). It
// implements [batchproc.JournalOpener].
func (s *Spool) OpenBatch(maxBytes int) batchproc.OpenBatch {
	a := &s.open
	size := regionSize(maxBytes)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.max == 0 {
		return nil
	}
	var r *region
	for i := len(a.free) - 1; i >= 0; i-- {
		if len(a.free[i].mem) >= size {
			r = a.free[i]
			a.free = append(a.free[:i], a.free[i+1:]...)
			break
		}
	}
	if r == nil {
		if len(a.all) >= a.max {
			a.unguarded++
			return nil
		}
		var err error
		if r, err = s.newRegion(size); err != nil {
			a.unguarded++
			return nil
		}
		a.all = append(a.all, r)
	}
	r.off, r.full, r.busy = regionHeader, false, true
	r.put32(12, 0)
	r.put64(24, 0)
	r.put64(16, rand.Uint64())
	r.put32(8, regionOpen)
	return r
}

// newRegion creates, sizes and maps a region file. a.mu is held.
func (s *Spool) newRegion(size int) (*region, error) {
	if _, ok := s.fs.(osFS); !ok {
		return nil, errNoRegions
	}
	name := s.path(regionName(s.open.nextID))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	s.open.nextID++
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		os.Remove(name)
		return nil, err
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		f.Close()
		os.Remove(name)
		return nil, err
	}
	copy(mem, regionMagic)
	return &region{a: &s.open, f: f, mem: mem}, nil
}

// Add keeps e: its record, then the committed length that covers it.
func (r *region) Add(e batchproc.Event) {
	n := regionRecHeader + len(e.ID) + len(e.Payload)
	if r.full || r.off+n > len(r.mem) {
		if !r.full {
			r.full = true
			r.a.mu.Lock()
			r.a.overflows++
			r.a.mu.Unlock()
		}
		return
	}
	p := r.mem[r.off : r.off+n]
	binary.LittleEndian.PutUint32(p, uint32(len(e.ID)))
	binary.LittleEndian.PutUint32(p[4:], uint32(len(e.Payload)))
	copy(p[regionRecHeader:], e.ID)
	copy(p[regionRecHeader+len(e.ID):], e.Payload)
	r.off += n
	r.put64(24, uint64(r.off-regionHeader))
}

// Seal keeps the batch's key, then marks the region sealed.
func (r *region) Seal(key string) {
	if len(key) <= regionKeyMax {
		copy(r.mem[32:], key)
		r.put32(12, uint32(len(key)))
	}
	r.put32(8, regionSealed)
}

// Close frees the region for the next batch.
func (r *region) Close() {
	r.put32(8, regionFree)
	a := r.a
	a.mu.Lock()
	r.busy = false
	if !a.closed {
		a.free = append(a.free, r)
	} else {
		r.unmap()
	}
	a.mu.Unlock()
}

func (r *region) unmap() {
	syscall.Munmap(r.mem)
	r.f.Close()
	r.mem = nil
}

// closeRegions unmaps the free regions. One still held by a batch (a
// processor that did not finish before its journal was closed) stays
// mapped until its Close: its memory may be the batch's still. What the
// regions hold stays in the files.
func (a *openArea) closeRegions() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	for _, r := range a.all {
		if !r.busy {
			r.unmap()
		}
	}
	a.all, a.free = nil, nil
}
