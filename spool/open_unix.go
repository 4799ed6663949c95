//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package spool

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"syscall"
	"unsafe"

	"github.com/batchproc/batchproc"
)

// KeepsOpenBatches reports whether the spool keeps the batches being
// filled on this platform (WithOpenBatches): it does where mmap(2) is
// available. Elsewhere a crash of the process may lose the open batches,
// at most one flush interval of events each.
const KeepsOpenBatches = true

// region is one memory-mapped region file.
type region struct {
	a       *openArea
	f       *os.File
	mem     []byte
	dataCap int  // bytes of the data area, from regionHeader
	off     int  // bytes of the data area kept, when filled by Add
	events  int  // events kept by Add
	ids     int  // end of the id records kept, from the id area's start
	full    bool // an event or id did not fit: the rest of the batch is not kept
	busy    bool // between OpenBatch and Close, or the ack of its record (a.mu)
	inPlace bool // the batch is filled in the data area (Buffer was called)
	key     string
	// record: the region is its batch's record in the spool (SyncNever;
	// see Spool.keepInRegion), until the batch is acked. detached: the
	// processor closed it meanwhile (its events left memory, or it was
	// left for the next start): the ack frees it. Both a.mu.
	record, detached bool
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
// implements [batchproc.JournalOpener]; the region is a
// [batchproc.OpenBuffer].
func (s *Spool) OpenBatch(maxBytes int) batchproc.OpenBatch {
	a := &s.open
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.max == 0 {
		return nil
	}
	var r *region
	for i := len(a.free) - 1; i >= 0; i-- {
		if a.free[i].dataCap >= maxBytes {
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
		if r, err = s.newRegion(maxBytes); err != nil {
			a.unguarded++
			return nil
		}
		a.all = append(a.all, r)
	}
	r.off, r.events, r.ids, r.full, r.busy, r.inPlace, r.key = 0, 0, 0, false, true, false, ""
	r.put32(12, 0)
	r.put64(24, 0)
	r.put64(32, 0)
	r.put64(regionSeqOff, 0)
	r.put64(16, rand.Uint64())
	r.put32(8, regionOpen)
	return r
}

// newRegion creates, sizes and maps a region file for batches of
// maxBytes. a.mu is held.
func (s *Spool) newRegion(maxBytes int) (*region, error) {
	if _, ok := s.fs.(osFS); !ok {
		return nil, errNoRegions
	}
	size := regionSize(maxBytes)
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
	// Its blocks now: a store to a page of a sparse file that the
	// filesystem has no room for raises SIGBUS (TestRegionOnFullDiskIsRefused).
	if err := allocate(f, size); err != nil {
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
	r := &region{a: &s.open, f: f, mem: mem, dataCap: maxBytes}
	r.put64(40, uint64(maxBytes))
	return r, nil
}

// Buffer returns the data area, the batch's buffer: the processor's copy
// of each event is the one kept, and it stores the length kept at 24.
func (r *region) Buffer() ([]byte, *uint64) {
	r.inPlace = true
	return r.mem[regionHeader : regionHeader : regionHeader+r.dataCap], (*uint64)(unsafe.Pointer(&r.mem[24]))
}

// AddID keeps event i's id: its record, then the length that covers it.
func (r *region) AddID(i int, id string) bool {
	start := regionHeader + r.dataCap
	n := regionIDHeader + len(id)
	if r.full || start+r.ids+n > len(r.mem) {
		r.overflow()
		return false
	}
	p := r.mem[start+r.ids : start+r.ids+n]
	binary.LittleEndian.PutUint32(p, uint32(i))
	binary.LittleEndian.PutUint32(p[4:], uint32(len(id)))
	copy(p[regionIDHeader:], id)
	r.ids += n
	r.put64(32, uint64(r.ids))
	return true
}

// overflow stops keeping the batch, counted once.
func (r *region) overflow() {
	if !r.full {
		r.full = true
		r.a.mu.Lock()
		r.a.overflows++
		r.a.mu.Unlock()
	}
}

// Add keeps a copy of e, the batch's next event, for a processor that does
// not fill the batch in place: its bytes and id, then the length that
// covers them.
func (r *region) Add(e batchproc.Event) {
	n := len(e.Payload) + 1
	if r.full || r.off+n > r.dataCap {
		r.overflow()
		return
	}
	if e.ID != "" && !r.AddID(r.events, e.ID) {
		return
	}
	p := r.mem[regionHeader+r.off : regionHeader+r.off+n]
	copy(p, e.Payload)
	p[n-1] = '\n'
	r.off += n
	r.events++
	r.put64(24, uint64(r.off))
}

// Seal keeps the batch's key, then marks the region sealed: from here a
// crash leaves the batch under its key.
func (r *region) Seal(key string) {
	if len(key) <= regionKeyMax {
		copy(r.mem[regionKeyOff:], key)
		r.put32(12, uint32(len(key)))
	}
	r.put32(8, regionSealed)
}

// SealRecord is Seal, and reports whether the region will be its batch's
// record (see Spool.keepInRegion): under SyncNever, when the batch was
// filled in the region, every event of it is there, its key fits, and
// more than half the regions are left for the batches being filled. The
// spool finds the region by the key when the batch is appended. It
// implements [batchproc.OpenRecord].
func (r *region) SealRecord(key string) bool {
	r.Seal(key)
	a := r.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.records || a.closed || !r.inPlace || r.full || key == "" || len(key) > regionKeyMax || !a.roomy() {
		return false
	}
	r.key = key
	a.sealed[key] = r
	return true
}

// Journaled forgets what the region kept: the batch is in the segments.
// Its memory stays the batch's, unless fewer than half the regions would
// then be left for batches being filled. A region that is its batch's
// record stays sealed, and its memory the batch's.
func (r *region) Journaled() bool {
	a := r.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.record {
		return true
	}
	r.put32(8, regionFree)
	a.unseal(r)
	return !a.closed && a.roomy()
}

// roomy reports whether more than half the regions are free or may still
// be made. a.mu is held.
func (a *openArea) roomy() bool { return len(a.free)+a.max-len(a.all) > a.max/2 }

// unseal drops r from the sealed regions the spool may find by key. a.mu
// is held.
func (a *openArea) unseal(r *region) {
	if r.key != "" && a.sealed[r.key] == r {
		delete(a.sealed, r.key)
	}
}

// Close frees the region for the next batch. A region that is its
// batch's record stays sealed, for the ack (or the next Open) to free.
func (r *region) Close() {
	a := r.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.record {
		r.detached = true
		if a.closed {
			r.unmap()
		}
		return
	}
	r.put32(8, regionFree)
	a.unseal(r)
	a.release(r)
}

// release makes r free for the next batch, or unmaps it once the spool is
// closed. a.mu is held.
func (a *openArea) release(r *region) {
	r.busy = false
	if !a.closed {
		a.free = append(a.free, r)
	} else {
		r.unmap()
	}
}

// keepInRegion makes the region b was filled in b's record, if the
// region's SealRecord said it would be and it holds every event of b:
// then Write writes nothing. What a killed
// process stored in the region is in the page cache, as a record written
// to a segment is, and an Open after the crash rebuilds the sealed batch
// from it under its key, in Append order (its seq is at regionSeqOff).
// The ack frees the region; until then it stays sealed, and the batch's
// memory, until the processor closes it. It returns nil if b is not kept
// so. s.mu is held.
func (s *Spool) keepInRegion(b *batchproc.Batch, seq uint64) *region {
	a := &s.open
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.sealed[b.Key()]
	if r == nil || a.closed {
		return nil
	}
	a.unseal(r)
	ndjson := b.NDJSON()
	// SealRecord checked the rest; this checks that b is the batch filled
	// in r, every byte of it kept.
	if len(ndjson) == 0 || unsafe.SliceData(ndjson) != &r.mem[regionHeader] ||
		binary.LittleEndian.Uint64(r.mem[24:]) != uint64(len(ndjson)) {
		return nil
	}
	r.put64(regionSeqOff, seq+1)
	r.record = true
	return r
}

// ackRegion frees r, its batch acked: the region is free for the next
// batch once the processor closed it too. s.mu is held.
func (s *Spool) ackRegion(r *region) {
	a := &s.open
	a.mu.Lock()
	defer a.mu.Unlock()
	r.put32(8, regionFree)
	r.record = false
	if r.detached {
		r.detached = false
		if r.mem != nil {
			a.release(r)
		}
	}
}

// readRegion returns a copy of the batch whose record r is. s.mu is held.
func (s *Spool) readRegion(r *region, key string) (*batchproc.Batch, error) {
	s.open.mu.Lock()
	defer s.open.mu.Unlock()
	if r.mem == nil {
		return nil, ErrClosed
	}
	k, events, ok := decodeRegion(r.mem)
	if !ok || k != key {
		return nil, errors.New("region changed since its batch was appended")
	}
	return batchproc.NewBatch(key, events...)
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
		if !r.busy || r.detached {
			r.unmap()
		}
	}
	a.all, a.free = nil, nil
	clear(a.sealed)
}

// writeZeros writes size zero bytes at the start of f.
func writeZeros(f *os.File, size int) error {
	zeros := make([]byte, min(size, 64<<10))
	for off := 0; off < size; off += len(zeros) {
		if _, err := f.WriteAt(zeros[:min(len(zeros), size-off)], int64(off)); err != nil {
			return err
		}
	}
	return nil
}
