package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batchproc/batchproc"
)

// Spool is a directory of segment files holding batches until they are
// acked. Its methods are safe for concurrent use. See the package
// documentation for the format and the promises of each sync mode.
type Spool struct {
	dir  string
	cfg  config
	fs   fileSystem
	lock io.Closer

	mu     sync.Mutex
	cond   *sync.Cond // broadcast when an fsync completes or the spool fails
	closed bool
	err    error // sticky *FailedError

	segs []*segment // by id; the last one is the active segment
	// spare is a fully acked segment whose file the next segment reuses
	// (nil if none): overwriting pages the page cache holds costs a third
	// of filling new ones, and spares unlinking (see reclaim).
	spare *segment
	live  map[string]*entry
	// droppedKeys are keys WithDropOldest dropped: a Load of one says so,
	// once. Their owner loads or acks each of them, which removes it.
	droppedKeys map[string]struct{}
	order       []*entry // batches in Append order; acked ones are skipped lazily
	head        int      // order[:head] are all acked
	nextSeq     uint64
	nextSeg     uint64
	usage       int64    // the files' sizes: each segment's phys, and the spare's
	replayed    []*entry // the batches found at Open, in order
	inRegions   int      // live batches whose record is their region

	writeGen    uint64 // counts records written
	syncedGen   uint64 // every record up to this one is fsynced
	syncing     bool   // an fsync of syncingFile runs (mu released)
	syncingFile file

	st     Stats  // counters; Bytes, Batches, Segments and Err are filled in by Stats
	buf    []byte // batch record being written
	ackBuf []byte // ack record being written

	onDrop atomic.Pointer[func(*batchproc.Batch)] // OnDrop's function

	open openArea // the regions of open batches (its own lock)

	stop chan struct{} // closes the SyncInterval goroutine
	done chan struct{}
}

type segment struct {
	id   uint64
	name string
	f    file
	size int64 // where its records end: the next one is written here
	// phys is the file's size, at least size: more in a reused file, whose
	// records of its previous life lie past size until overwritten.
	phys  int64
	start int64  // the end of its first record, the segment record
	nonce uint64 // random: its records' CRCs are bound to it (see bindCRC)
	prev  uint64 // the nonce of the segment whose file this one reuses; 0 for a new file
	live  int    // batches in this segment not acked

	unsynced bool // written or recovered without an fsync: the next tick or Close fsyncs it
	busy     bool // syncTick fsyncs it, mu released
}

type entry struct {
	seq   uint64
	key   string
	seg   *segment // nil when reg is the record
	reg   *region  // the batch's open-batch region, when that is its record (SyncNever)
	off   int64
	n     int // record length
	acked bool
	// handed: found at Open and handed to a Replay callback that returned
	// nil (see Unreplayed).
	handed bool
}

// Open opens the spool in dir, creating the directory if needed, and
// recovers what a previous process left there: records are read back and
// checked, a torn tail is trimmed, a file corrupt in the middle is set
// aside, and the batches not acked are kept for [Spool.Replay]. Recovery
// never fails Open for what it finds in the files (it is counted in
// [Stats]); Open fails only for invalid options, for real I/O errors
// (permissions, a failing disk), and with [ErrLocked] when another Spool
// holds the directory.
func Open(dir string, opts ...Option) (*Spool, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Spool{dir: dir, cfg: cfg, fs: cfg.fs, live: map[string]*entry{}, droppedKeys: map[string]struct{}{}}
	s.cond = sync.NewCond(&s.mu)
	s.open.max = cfg.openBatches
	s.open.sealed = map[string]*region{}
	s.open.records = cfg.sync == SyncNever
	if err := s.fs.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", dir, err)
	}
	lock, err := s.fs.Lock(s.path(lockName))
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.recover(); err != nil {
		s.closeFiles()
		lock.Close()
		return nil, fmt.Errorf("spool: open %s: %w", dir, err)
	}
	if cfg.sync > 0 {
		s.stop = make(chan struct{})
		s.done = make(chan struct{})
		go s.syncLoop(time.Duration(cfg.sync))
	}
	return s, nil
}

// Write is Append without waiting for the fsync: it returns once b's
// record is written (in the page cache: a crash of the process no longer
// loses it), with a function that waits until the record is fsynced and
// returns that fsync's error; it returns nil at once except with
// [SyncBatch]. Concurrent Writes and Appends share fsyncs. The errors are
// Append's; an fsync that fails leaves the batch in the spool's state (its
// record is in the file, so Load still reads it), the spool failed. It
// implements [batchproc.JournalWriter]: the processor writes with it, so
// that one appender has many batches waiting for the same fsync.
func (s *Spool) Write(b *batchproc.Batch) (durable func() error, err error) {
	s.mu.Lock()
	if s.cfg.sync == SyncNever && s.inRegionLocked(b) {
		s.countAppend(nil)
		s.mu.Unlock()
		return noWait, nil
	}
	dropped, _, gen, err := s.appendLocked(b)
	s.countAppend(err)
	s.mu.Unlock()
	s.reportDropped(dropped)
	if err != nil {
		return nil, err
	}
	if s.cfg.sync != SyncBatch {
		return noWait, nil
	}
	return func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.waitSynced(gen)
	}, nil
}

func noWait() error { return nil }

// inRegionLocked appends b with no write when the region b was filled in
// can be its record (keepInRegion). mu is held.
func (s *Spool) inRegionLocked(b *batchproc.Batch) bool {
	if s.closed || s.err != nil || s.live[b.Key()] != nil {
		return false // appendLocked says why
	}
	r := s.keepInRegion(b, s.nextSeq)
	if r == nil {
		return false
	}
	e := &entry{seq: s.nextSeq, key: b.Key(), reg: r, n: len(b.NDJSON())}
	s.nextSeq++
	s.live[e.key] = e
	s.order = append(s.order, e)
	s.inRegions++
	s.st.RegionAppends++
	return true
}

// countAppend counts what an Append or a Write came to. mu is held.
func (s *Spool) countAppend(err error) {
	if err == nil {
		s.st.Appended++
	} else if errors.Is(err, ErrFull) {
		s.st.Full++
	}
}

// reportDropped hands the batches a full spool dropped to the callbacks.
func (s *Spool) reportDropped(dropped []*batchproc.Batch) {
	for _, d := range dropped {
		if s.cfg.dropOldest != nil {
			s.cfg.dropOldest(d)
		}
		if f := s.onDrop.Load(); f != nil {
			(*f)(d)
		}
	}
}

// Append writes b to the spool as one record (its head, then its NDJSON
// straight from b: two write calls). With
// [SyncBatch] it returns once the record is fsynced; Appends that arrive
// while an fsync runs share the next one. It returns [ErrFull] when the
// disk budget (or the filesystem) has no room, [ErrTooLarge] for a batch
// that could never fit, [ErrDuplicateKey] for a key already spooled, the
// sticky [*FailedError] once the spool has failed, and [ErrClosed] after
// Close. Append does not keep b.
func (s *Spool) Append(b *batchproc.Batch) error {
	s.mu.Lock()
	dropped, e, gen, err := s.appendLocked(b)
	if err == nil && s.cfg.sync == SyncBatch {
		if err = s.waitSynced(gen); err != nil {
			// The fsync failed: the batch is the caller's again. Its record
			// is in the file, so a later Open may still replay it.
			s.forget(e)
		}
	}
	s.countAppend(err)
	s.mu.Unlock()
	s.reportDropped(dropped)
	return err
}

// OnDrop adds f to the functions told of each batch that WithDropOldest
// drops (after the option's own): the processor counts it as failed and
// hands it to its failure callback. It implements
// [batchproc.JournalDropper].
func (s *Spool) OnDrop(f func(b *batchproc.Batch)) { s.onDrop.Store(&f) }

// Load returns a copy of the batch with this key, appended and not acked,
// read back from its segment. For a key the spool does not hold it returns
// an error wrapping [batchproc.ErrDropped] if WithDropOldest dropped it,
// and [ErrUnknownKey] otherwise.
func (s *Spool) Load(key string) (*batchproc.Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	e := s.live[key]
	if e == nil {
		if _, ok := s.droppedKeys[key]; ok {
			delete(s.droppedKeys, key)
			return nil, fmt.Errorf("spool: load %s: %w", key, batchproc.ErrDropped)
		}
		return nil, fmt.Errorf("spool: load %s: %w", key, ErrUnknownKey)
	}
	b, err := s.readBatch(e)
	if err != nil {
		return nil, fmt.Errorf("spool: load %s: %w", key, err)
	}
	return b, nil
}

func (s *Spool) appendLocked(b *batchproc.Batch) (dropped []*batchproc.Batch, e *entry, gen uint64, err error) {
	if s.closed {
		return nil, nil, 0, ErrClosed
	}
	if s.err != nil {
		return nil, nil, 0, s.err
	}
	key := b.Key()
	if key == "" {
		return nil, nil, 0, errors.New("spool: a batch needs a key")
	}
	if s.live[key] != nil {
		return nil, nil, 0, fmt.Errorf("%w: %q", ErrDuplicateKey, key)
	}
	seq := s.nextSeq
	head, ndjson := appendBatchHead(s.buf[:0], seq, b), b.NDJSON()
	s.buf = head
	defer s.trimBuf()
	need := int64(len(head) + len(ndjson))
	if need > s.cfg.maxBytes-s.cfg.segmentSize {
		return nil, nil, 0, fmt.Errorf("%w: record of %d bytes, budget %d bytes", ErrTooLarge, need, s.cfg.maxBytes)
	}
	for s.usage+s.growth(need) > s.cfg.maxBytes {
		if s.spare != nil { // its room first
			if err := s.removeSpare(); err != nil {
				return dropped, nil, 0, err
			}
			continue
		}
		if !s.cfg.drop {
			return nil, nil, 0, ErrFull
		}
		d, err := s.dropOldestLocked()
		if d != nil {
			dropped = append(dropped, d)
		}
		if err != nil {
			return dropped, nil, 0, err
		}
		if d == nil {
			return dropped, nil, 0, ErrFull
		}
	}
	seg, off, gen, err := s.writeRecord(head, ndjson)
	if err != nil {
		return dropped, nil, 0, err
	}
	s.nextSeq++
	e = &entry{seq: seq, key: key, seg: seg, off: off, n: int(need)}
	seg.live++
	s.live[key] = e
	s.order = append(s.order, e)
	return dropped, e, gen, nil
}

// forget drops e from the spool's state without writing an ack. mu is held.
func (s *Spool) forget(e *entry) {
	if e.acked { // dropped by another Append while this one waited
		return
	}
	delete(s.live, e.key)
	e.acked = true
	if e.seg != nil {
		e.seg.live--
	}
}

// trimBuf drops the record buffer if one huge batch grew it.
func (s *Spool) trimBuf() {
	if cap(s.buf) > 16<<20 {
		s.buf = nil
	}
}

// dropOldestLocked acks the oldest batch outside the active segment (acking
// one in the active segment frees nothing) and returns a copy of it, or
// nil if there is none.
func (s *Spool) dropOldestLocked() (*batchproc.Batch, error) {
	active := s.segs[len(s.segs)-1]
	for i := s.head; i < len(s.order); i++ {
		e := s.order[i]
		if e.acked || e.reg != nil { // a region's record frees no disk budget
			continue
		}
		if e.seg == active {
			return nil, nil
		}
		b, err := s.readBatch(e)
		if err != nil {
			return nil, s.fail("read", err)
		}
		err = s.ackLocked(e) // even if the ack record failed, b left the spool's state
		s.st.Dropped++
		s.droppedKeys[e.key] = struct{}{}
		s.st.Acked-- // counted as dropped, not acked
		return b, err
	}
	return nil, nil
}

// Ack records that the batch with this key left the spool. It is not
// fsynced on its own: it rides on the next fsync (the next SyncBatch Append,
// interval or rotation, or Close), so after a power loss an acked batch may
// be replayed once more, which the loader's de-duplication by key absorbs;
// after a process crash it is never replayed. Acking a key that is not in
// the spool (never appended, or already acked) does nothing; acking one
// that WithDropOldest dropped returns an error wrapping
// [batchproc.ErrDropped], once. An
// error (the sticky one, or ErrFull if even the ack found no room) means
// the ack may not survive a restart; the batch is dropped from this
// spool's state all the same.
func (s *Spool) Ack(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	e := s.live[key]
	if e == nil {
		if _, ok := s.droppedKeys[key]; ok {
			delete(s.droppedKeys, key)
			return fmt.Errorf("spool: ack %s: %w", key, batchproc.ErrDropped)
		}
		return nil
	}
	return s.ackLocked(e)
}

func (s *Spool) ackLocked(e *entry) error {
	delete(s.live, e.key)
	e.acked = true
	s.st.Acked++
	if e.reg != nil { // the region is the record: freeing it is the ack
		s.ackRegion(e.reg)
		e.reg = nil
		s.inRegions--
		s.advanceHead()
		return nil
	}
	e.seg.live--
	s.advanceHead()
	if s.err != nil {
		return s.err
	}
	var werr error
	rec := appendAckRecord(s.ackBuf[:0], e.seq) // not s.buf: a drop-oldest ack comes amid an Append
	s.ackBuf = rec
	if _, _, _, err := s.writeRecord(rec, nil); err != nil {
		werr = err
	}
	if err := s.reclaim(); err != nil && werr == nil {
		werr = err
	}
	return werr
}

// advanceHead moves past the acked batches at the front of order. mu is
// held.
func (s *Spool) advanceHead() {
	for s.head < len(s.order) && s.order[s.head].acked {
		s.order[s.head] = nil
		s.head++
	}
	if s.head > 1024 && s.head > len(s.order)/2 {
		s.order = append(s.order[:0], s.order[s.head:]...)
		s.head = 0
	}
}

// reclaim removes fully acked segments from the front. Only the front:
// the acks of a segment's batches are in later segments, so a later
// segment must outlive every segment before it. The first one removed
// becomes the spare, if there is none and its file is of a segment's size:
// the next segment reuses the file rather than a new one. Filling a new
// file makes the kernel allocate every page and unlinking a full one frees
// them; the two took 40% of a saturated spool's CPU, and overwriting
// cached pages writes at 2.6 times the rate (BenchmarkFileWrite).
func (s *Spool) reclaim() error {
	removed := false
	for len(s.segs) > 1 && s.segs[0].live == 0 {
		seg := s.segs[0]
		if seg.busy || (s.syncing && seg.f == s.syncingFile) {
			break // the next reclaim removes it
		}
		s.segs = s.segs[1:]
		if s.spare == nil && seg.phys >= s.cfg.segmentSize/2 {
			// Renamed out of recovery's sight at once: its batches' acks
			// are in later segments, which may go before it is reused.
			if err := s.fs.Rename(seg.name, seg.name+spareSuffix); err != nil {
				return s.fail("rename", err)
			}
			seg.name += spareSuffix
			s.spare = seg
			removed = true // a directory change, fsynced below
			continue
		}
		seg.f.Close()
		if err := s.fs.Remove(seg.name); err != nil {
			return s.fail("remove", err)
		}
		s.usage -= seg.phys
		removed = true
	}
	if removed && s.cfg.sync != SyncNever {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return s.fail("fsync", err)
		}
	}
	return nil
}

// writeRecord writes the record head+tail (a batch record's NDJSON comes
// as its tail, written from the batch itself rather than copied after the
// head) at the end of the active segment, starting a new one first if the
// record would take it past the segment size. mu is held.
func (s *Spool) writeRecord(head, tail []byte) (*segment, int64, uint64, error) {
	if s.err != nil {
		return nil, 0, 0, s.err
	}
	n := int64(len(head) + len(tail))
	for {
		seg := s.segs[len(s.segs)-1]
		if seg.size == seg.start || seg.size+n <= s.cfg.segmentSize {
			break // a record larger than a segment gets one of its own
		}
		if err := s.rotate(); err != nil {
			return nil, 0, 0, err
		}
	}
	seg := s.segs[len(s.segs)-1]
	off := seg.size
	crc := binary.LittleEndian.Uint32(head[4:8])
	binary.LittleEndian.PutUint32(head[4:8], bindCRC(crc, seg.nonce))
	defer binary.LittleEndian.PutUint32(head[4:8], crc) // head may be written again, elsewhere
	if err := s.writeAt(seg, off, head, tail); err != nil {
		return nil, 0, 0, err
	}
	s.writeGen++
	return seg, off, s.writeGen, nil
}

// writeAt writes head and tail at off in seg, past its records, and
// accounts for them. A failed write is cut off again. mu is held.
func (s *Spool) writeAt(seg *segment, off int64, head, tail []byte) error {
	_, err := seg.f.WriteAt(head, off)
	if err == nil && len(tail) > 0 {
		_, err = seg.f.WriteAt(tail, off+int64(len(head)))
	}
	if err != nil {
		// Whatever part of the record reached the file must go, or the
		// next record would follow garbage. (In a reused file it would be
		// followed by the old records, which do not check; the cut is
		// what keeps the usage right.)
		if terr := seg.f.Truncate(off); terr != nil {
			return s.fail("truncate", terr)
		}
		s.usage -= seg.phys - off
		seg.size, seg.phys = off, off
		if isNoSpace(err) {
			return ErrFull
		}
		return s.fail("write", err)
	}
	seg.size = off + int64(len(head)+len(tail))
	if seg.size > seg.phys {
		s.usage += seg.size - seg.phys
		seg.phys = seg.size
	}
	return nil
}

// growth is how much a record of n bytes adds to the files' sizes: where
// it lands in the active segment, or in the next one (a reused file's
// size counts already). mu is held.
func (s *Spool) growth(n int64) int64 {
	seg := s.segs[len(s.segs)-1]
	if seg.size == seg.start || seg.size+n <= s.cfg.segmentSize {
		return max(0, seg.size+n-seg.phys)
	}
	end := segmentRecordSize + n
	if s.spare != nil {
		return max(0, end-s.spare.phys)
	}
	return end
}

// removeSpare removes the spare segment's file. mu is held.
func (s *Spool) removeSpare() error {
	seg := s.spare
	s.spare = nil
	seg.f.Close()
	if err := s.fs.Remove(seg.name); err != nil {
		return s.fail("remove", err)
	}
	s.usage -= seg.phys
	if s.cfg.sync != SyncNever {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return s.fail("fsync", err)
		}
	}
	return nil
}

// rotate ends the active segment and starts a new one. mu is held. A
// group-commit fsync of the old segment may be in flight; it ends on its
// own (the file stays open until reclaim, which spares it).
func (s *Spool) rotate() error {
	old := s.segs[len(s.segs)-1]
	if s.cfg.sync == SyncBatch {
		// Its batches are synced already, but not the acks since the last
		// Append: an fsync of little data.
		if err := s.syncFile(old.f); err != nil {
			return err
		}
		s.syncedGen = s.writeGen
	} else {
		// The next interval's fsync (or Close) takes it: an fsync of a
		// whole segment must not stall the Append that rotates.
		old.unsynced = true
	}
	seg, err := s.createSegment()
	if err != nil {
		return err
	}
	s.segs = append(s.segs, seg)
	return nil
}

// createSegment creates the next segment file and makes its directory
// entry durable before anything is written to it.
//
// It reuses the spare's file if there is one: renamed, then overwritten
// from its start. Either way the segment's first record names the segment
// whose file it reuses (0 for none), so that recovery tells that one's
// records past the new ones' end from a torn write.
func (s *Spool) createSegment() (*segment, error) {
	id := s.nextSeg
	seg := &segment{id: id, name: s.path(segName(id))}
	if sp := s.spare; sp != nil {
		if err := s.fs.Rename(sp.name, seg.name); err != nil {
			return nil, s.fail("rename", err)
		}
		s.spare = nil
		seg.f, seg.phys, seg.prev = sp.f, sp.phys, sp.nonce
	} else {
		f, err := s.fs.OpenFile(seg.name, createFlags)
		if err != nil {
			if isNoSpace(err) {
				return nil, ErrFull
			}
			return nil, s.fail("create", err)
		}
		seg.f = f
	}
	s.nextSeg++
	if s.cfg.sync != SyncNever {
		if err := s.fs.SyncDir(s.dir); err != nil {
			seg.f.Close()
			return nil, s.fail("fsync", err)
		}
	}
	for seg.nonce == 0 || seg.nonce == seg.prev {
		seg.nonce = rand.Uint64()
	}
	rec := appendSegmentRecord(nil, seg.nonce, seg.prev)
	binary.LittleEndian.PutUint32(rec[4:8], bindCRC(binary.LittleEndian.Uint32(rec[4:8]), id))
	if err := s.writeAt(seg, 0, rec, nil); err != nil {
		// A segment without its first record is no segment: remove it
		// (writeAt cut the file to nothing).
		seg.f.Close()
		if rerr := s.fs.Remove(seg.name); rerr != nil {
			return nil, s.fail("remove", rerr)
		}
		return nil, err
	}
	seg.start = seg.size
	return seg, nil
}

// syncFile fsyncs f, timing it; a failure makes the spool fail. mu is held.
func (s *Spool) syncFile(f file) error {
	start := time.Now()
	err := f.Sync()
	s.st.FsyncLatency.observe(time.Since(start))
	s.st.Fsyncs++
	if err != nil {
		return s.fail("fsync", err)
	}
	return nil
}

// waitSynced returns once every record up to gen is fsynced: group commit.
// The first waiter fsyncs for everyone written so far, with mu released;
// those who write meanwhile wait for it to end, and the first of them
// fsyncs next, for all of them.
func (s *Spool) waitSynced(gen uint64) error {
	for s.syncedGen < gen {
		if s.err != nil {
			return s.err
		}
		if s.syncing {
			if s.cfg.onSyncWait != nil {
				s.cfg.onSyncWait()
			}
			s.cond.Wait()
			continue
		}
		s.syncActive()
	}
	return nil
}

// syncActive fsyncs the active segment with mu released, so that other
// Appends write meanwhile. mu is held on entry and on return.
func (s *Spool) syncActive() {
	target := s.writeGen
	f := s.segs[len(s.segs)-1].f
	s.syncing, s.syncingFile = true, f
	s.mu.Unlock()
	start := time.Now()
	err := f.Sync()
	d := time.Since(start)
	s.mu.Lock()
	s.syncing, s.syncingFile = false, nil
	s.st.FsyncLatency.observe(d)
	s.st.Fsyncs++
	if err != nil {
		s.fail("fsync", err)
	} else {
		s.syncedGen = max(s.syncedGen, target)
	}
	s.cond.Broadcast()
}

// syncLoop is SyncInterval's background fsync.
func (s *Spool) syncLoop(d time.Duration) {
	defer close(s.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.syncTick()
		}
	}
}

// syncTick is one interval's fsync: of everything written so far.
func (s *Spool) syncTick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Segments rotated since the last tick first, with mu released.
	for !s.closed && s.err == nil {
		var seg *segment
		for _, sg := range s.segs[:len(s.segs)-1] {
			if sg.unsynced && !sg.busy {
				seg = sg
				break
			}
		}
		if seg == nil {
			break
		}
		seg.busy = true
		s.mu.Unlock()
		start := time.Now()
		err := seg.f.Sync()
		d := time.Since(start)
		s.mu.Lock()
		seg.busy = false
		s.st.FsyncLatency.observe(d)
		s.st.Fsyncs++
		if err != nil {
			s.fail("fsync", err)
			break
		}
		seg.unsynced = false
	}
	for !s.closed && s.err == nil && s.syncedGen < s.writeGen {
		if s.syncing {
			s.cond.Wait()
			continue
		}
		s.syncActive()
	}
}

// fail makes the spool fail with err (once; the first failure sticks),
// logs it, and returns the sticky error. mu is held.
func (s *Spool) fail(op string, err error) error {
	if s.err == nil {
		s.err = &FailedError{Op: op, Err: err}
		if l := s.cfg.logger; l != nil {
			l.Error("spool failed: it takes no more writes; the batches already spooled stay on disk for the next Open",
				slog.String("dir", s.dir), slog.String("op", op), slog.Any("error", err))
		}
		s.cond.Broadcast()
	}
	return s.err
}

// Replay calls f, in Append order, for each batch found at Open and not
// acked since. The batch is valid during the call only. Replay stops at
// f's first error and returns it; the batches stay in the spool until
// acked, so Replay may be called again. It may run concurrently with
// Append and Ack (it holds the spool's lock only while it reads a record),
// and it ignores the batches appended since Open: those are the caller's.
func (s *Spool) Replay(f func(b *batchproc.Batch) error) error {
	s.mu.Lock()
	list := s.replayed
	s.mu.Unlock()
	events := []batchproc.Event{} // not nil: decodeBatch fills it
	var buf []byte
	for _, e := range list {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		if e.acked {
			s.mu.Unlock()
			continue
		}
		var body []byte
		var err error
		buf, body, err = s.readBody(e, buf)
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("spool: replay %s: %w", e.key, err)
		}
		var key string
		_, _, key, events, err = decodeBatch(body, events[:0])
		if err != nil || key != e.key {
			return fmt.Errorf("spool: replay %s: record changed on disk since Open", e.key)
		}
		b, err := batchproc.NewBatch(key, events...)
		if err != nil {
			return fmt.Errorf("spool: replay %s: %w", e.key, err)
		}
		if err := f(b); err != nil {
			return err
		}
		s.mu.Lock()
		s.st.Replayed++
		e.handed = true
		s.mu.Unlock()
	}
	return nil
}

// Unreplayed returns how many of the batches found at Open are neither
// acked nor handed to a Replay callback that returned nil: what a replay
// stopped early left unread. It implements [batchproc.JournalBacklog].
func (s *Spool) Unreplayed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.replayed {
		if !e.acked && !e.handed {
			n++
		}
	}
	return n
}

// readBody reads and checks e's record into buf (grown as needed) and
// returns buf and the record's body within it. mu is held.
func (s *Spool) readBody(e *entry, buf []byte) ([]byte, []byte, error) {
	if cap(buf) < e.n {
		buf = make([]byte, e.n)
	}
	rec := buf[:e.n]
	if _, err := e.seg.f.ReadAt(rec, e.off); err != nil {
		return buf, nil, err
	}
	typ, body, n, ok := parseRecord(rec, e.seg.nonce)
	if !ok || typ != recBatch || n != e.n {
		return buf, nil, errors.New("record changed on disk since Open")
	}
	return buf, body, nil
}

// readBatch returns a copy of e's batch. mu is held.
func (s *Spool) readBatch(e *entry) (*batchproc.Batch, error) {
	if e.reg != nil {
		return s.readRegion(e.reg, e.key)
	}
	_, body, err := s.readBody(e, nil)
	if err != nil {
		return nil, err
	}
	_, _, key, events, err := decodeBatch(body, []batchproc.Event{})
	if err != nil {
		return nil, err
	}
	return batchproc.NewBatch(key, events...)
}

// Stats returns a snapshot of the spool's state and counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Bytes = s.usage
	st.Batches = len(s.live)
	st.InRegions = s.inRegions
	st.Segments = len(s.segs)
	st.Err = s.err
	s.open.mu.Lock()
	st.OpenRegions = len(s.open.all)
	st.OpenUnguarded, st.OpenOverflows = s.open.unguarded, s.open.overflows
	s.open.mu.Unlock()
	return st
}

// Close fsyncs what was written (in every mode, unless the spool failed),
// closes the files and releases the directory's lock. The batches not
// acked stay on disk for the next Open. Close returns the sticky error if
// the spool had failed; a second Close returns ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	if s.stop != nil {
		close(s.stop)
		<-s.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.syncing {
		s.cond.Wait()
	}
	for _, seg := range s.segs[:len(s.segs)-1] {
		if seg.unsynced && s.err == nil && s.syncFile(seg.f) == nil {
			seg.unsynced = false
		}
	}
	if active := s.segs[len(s.segs)-1]; s.err == nil && (s.syncedGen < s.writeGen || active.unsynced) {
		if s.syncFile(active.f) == nil {
			s.syncedGen = s.writeGen
		}
	}
	if s.err == nil {
		// Segments created or removed without a directory fsync (SyncNever).
		if err := s.fs.SyncDir(s.dir); err != nil {
			s.fail("fsync", err)
		}
	}
	s.cond.Broadcast() // Appends waiting for an fsync: Close's was it
	s.open.closeRegions()
	s.closeFiles()
	s.lock.Close()
	return s.err
}

func (s *Spool) closeFiles() {
	for _, seg := range s.segs {
		seg.f.Close()
	}
}
