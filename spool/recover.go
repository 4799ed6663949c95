package spool

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const (
	lockName      = "LOCK"
	segSuffix     = ".seg"
	corruptSuffix = ".corrupt"
	spareSuffix   = ".spare"
	tmpSuffix     = ".tmp"

	createFlags = os.O_RDWR | os.O_CREATE | os.O_EXCL
)

func segName(id uint64) string { return fmt.Sprintf("%020d%s", id, segSuffix) }

// parseSegName returns the id of a segment file name, or of a corrupt
// segment's set-aside copy (NAME.seg.corrupt).
func parseSegName(name string) (id uint64, corrupt, ok bool) {
	if base, found := strings.CutSuffix(name, corruptSuffix); found {
		name, corrupt = base, true
	}
	base, found := strings.CutSuffix(name, segSuffix)
	if !found || len(base) != 20 {
		return 0, false, false
	}
	id, err := strconv.ParseUint(base, 10, 64)
	return id, corrupt, err == nil
}

func (s *Spool) path(name string) string { return filepath.Join(s.dir, name) }

// recover rebuilds the spool's state from the segment files alone: every
// record is read and checked; the batches not followed by their ack are
// the spool's content. See the package documentation, "Recovery".
func (s *Spool) recover() error {
	names, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var ids []uint64
	var maxID uint64
	for _, name := range names {
		if strings.HasSuffix(name, tmpSuffix) { // a set-aside copy cut short by a crash
			if err := s.fs.Remove(s.path(name)); err != nil {
				return err
			}
			continue
		}
		if base, ok := strings.CutSuffix(name, spareSuffix); ok {
			// Its id counts: ids are never reused, so that no record of a
			// file's earlier lives checks as one of a later segment.
			if id, _, ok := parseSegName(base); ok {
				maxID = max(maxID, id)
			}
			if err := s.openSpare(name, base); err != nil {
				return err
			}
			continue
		}
		id, corrupt, ok := parseSegName(name)
		if !ok {
			continue
		}
		maxID = max(maxID, id)
		if !corrupt {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	s.nextSeg = maxID + 1

	var (
		entries []*entry
		bySeq   = map[uint64]*entry{}
		maxSeq  uint64
		data    []byte
	)
	for _, id := range ids {
		seg := &segment{id: id, name: s.path(segName(id))}
		if seg.f, err = s.fs.OpenFile(seg.name, os.O_RDWR); err != nil {
			return err
		}
		s.segs = append(s.segs, seg)
		if seg.size, err = seg.f.Size(); err != nil {
			return err
		}
		data = slices.Grow(data[:0], int(seg.size))[:seg.size]
		if n, err := seg.f.ReadAt(data, 0); err != nil && !(err == io.EOF && n == len(data)) {
			return err
		}
		off := 0
		for off < len(data) {
			bind := seg.nonce // the segment record first, bound to the id, and only there
			if off == 0 {
				bind = seg.id
			}
			typ, body, n, ok := parseRecord(data[off:], bind)
			if !ok || (typ == recSegment) != (off == 0) {
				break
			}
			switch typ {
			case recSegment:
				seg.nonce, seg.prev, _ = decodeSegment(body)
				seg.start = int64(n)
			case recBatch:
				seq, key, _ := decodeBatchHead(body)
				e := &entry{seq: seq, key: key, seg: seg, off: int64(off), n: n}
				entries = append(entries, e)
				bySeq[seq] = e
				maxSeq = max(maxSeq, seq)
			case recAck:
				seq, _ := decodeUvarint(body)
				if e := bySeq[seq]; e != nil {
					e.acked = true
				}
				maxSeq = max(maxSeq, seq)
			}
			off += n
		}
		if off < len(data) {
			if err := s.repair(seg, data, off); err != nil {
				return err
			}
		}
		seg.phys = seg.size
		if seg.size == 0 {
			// Not even its first record: created, or reused, by a process
			// that died before writing it. Nothing to keep.
			seg.f.Close()
			if err := s.fs.Remove(seg.name); err != nil {
				return err
			}
			s.segs = s.segs[:len(s.segs)-1]
			continue
		}
		if s.cfg.sync != SyncNever {
			// Make what was recovered durable: a crash may have left it in
			// the page cache only.
			if err := s.syncFile(seg.f); err != nil {
				return err
			}
		} else {
			seg.unsynced = true
		}
	}
	s.nextSeq = maxSeq + 1

	// The live batches, in file order, which is Append order. A key seen
	// twice (a batch appended again after a crash) keeps its last copy.
	for _, e := range entries {
		if e.acked {
			continue
		}
		if old := s.live[e.key]; old != nil {
			old.acked = true
			old.seg.live--
		}
		s.live[e.key] = e
		e.seg.live++
	}
	for _, e := range entries {
		if !e.acked {
			s.order = append(s.order, e)
		}
	}
	s.replayed = slices.Clone(s.order)
	s.st.Recovered = uint64(len(s.order))
	for _, seg := range s.segs {
		s.usage += seg.phys
	}
	if len(s.segs) == 0 {
		seg, err := s.createSegment()
		if err != nil {
			return err
		}
		s.segs = append(s.segs, seg)
	}
	if err := s.reclaim(); err != nil {
		return err
	}
	if s.cfg.sync != SyncNever {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return err
		}
	}
	// The batches that were being filled: after every segment's, in the
	// order of Replay (they are the newest).
	known := make(map[string]bool, len(entries))
	for _, e := range entries {
		known[e.key] = true
	}
	s.mu.Lock()
	dropped, err := s.recoverOpen(names, known)
	s.mu.Unlock()
	s.reportDropped(dropped) // to WithDropOldest's function: the processor's comes later
	if err != nil {
		return err
	}
	return s.err // a failure on the way (fsync) fails Open: it is an I/O error
}

// openSpare takes the spare segment file a previous Spool left as the
// spare, or removes it if there is one already (a crash between two
// renames). Its records are never read: their acks may be gone.
func (s *Spool) openSpare(name, base string) error {
	id, corrupt, ok := parseSegName(base)
	if !ok || corrupt || s.spare != nil {
		return s.fs.Remove(s.path(name))
	}
	seg := &segment{id: id, name: s.path(name)}
	var err error
	if seg.f, err = s.fs.OpenFile(seg.name, os.O_RDWR); err != nil {
		return err
	}
	if seg.phys, err = seg.f.Size(); err != nil {
		seg.f.Close()
		return err
	}
	// Its nonce, so that the segment reusing it tells its old records
	// from a torn write (0, and they count as torn, if it is unreadable).
	hdr := make([]byte, segmentRecordSize)
	if _, err := seg.f.ReadAt(hdr, 0); err == nil {
		if typ, body, _, ok := parseRecord(hdr, id); ok && typ == recSegment {
			seg.nonce, _, _ = decodeSegment(body)
		}
	}
	s.spare = seg
	s.usage += seg.phys
	return nil
}

// repair handles a segment whose record at off is bad: torn, the end of
// a reused file's new records, or corrupt. If no valid record follows it,
// it is a torn tail (a write cut short by a crash) and is trimmed; so is
// the rest of a reused file, where the records that follow check as the
// previous segment's nonce (seg.prev), not as this one's. Otherwise the middle
// of the file is corrupt: the
// rest of the file cannot be trusted (a record's length may be what was
// damaged), so the whole file is copied aside as NAME.corrupt for
// inspection, then trimmed to its valid prefix, and the loss is counted.
// Copy-then-trim (not rename) keeps a crash during repair harmless: the
// next Open finds either the untouched file or the trimmed one.
func (s *Spool) repair(seg *segment, data []byte, off int) error {
	rest := data[off:]
	var found, batches, old int
	// If the segment record itself does not check (off 0), nonce is 0 and
	// nothing after it can: a reused file whose new segment record a power
	// loss tore holds the previous segment's records, which no one can
	// tell from this one's, so none is trusted. The file reads as torn.
	nonce := seg.nonce
	// The scan tries a record at every offset; each try CRCs the length
	// the bytes there claim. Crafted bytes could make that quadratic, so
	// the bytes CRCed are bounded; past the bound the file counts as
	// corrupt (kept aside), with the batches found so far.
	budget := 16*int64(len(rest)) + 16<<20
	for i := 1; i+headerSize <= len(rest); i++ {
		if t := rest[i+8]; t != recBatch && t != recAck {
			continue
		}
		claimed := int64(binary.LittleEndian.Uint32(rest[i:]))
		if claimed > int64(len(rest)-i-headerSize) {
			continue
		}
		if budget -= claimed + headerSize; budget < 0 {
			found++ // unknown: assume the worse
			break
		}
		if nonce == 0 {
			break
		}
		if typ, _, n, which, ok := parseRecordIn(rest[i:], nonce, seg.prev); ok {
			if which == 1 && seg.prev != 0 {
				old++ // the file's previous life
			} else {
				found++
				if typ == recBatch {
					batches++
				}
			}
			i += n - 1
		}
	}
	log := s.cfg.logger
	switch {
	case found == 0 && old > 0:
		// Not a loss: the records of the segment whose file this one
		// reuses, acked before it was reused.
	case found == 0:
		s.st.TornBytes += int64(len(rest))
		if log != nil {
			log.Warn("spool: trimmed a torn tail (a write cut short by a crash)",
				slog.String("file", seg.name), slog.Int("offset", off), slog.Int("bytes", len(rest)))
		}
	default:
		if err := s.copyAside(seg.name, data); err != nil {
			if !isNoSpace(err) {
				return err
			}
			// No room for the copy: keep going without it rather than
			// fail every Open of a full disk.
			s.fs.Remove(seg.name + corruptSuffix + tmpSuffix)
			if log != nil {
				log.Error("spool: no space to keep a copy of a corrupt segment", slog.String("file", seg.name))
			}
		}
		s.st.CorruptFiles++
		s.st.LostBytes += int64(len(rest))
		s.st.LostBatches += uint64(batches)
		if log != nil {
			log.Error("spool: corrupt record in the middle of a segment: the rest of it is lost, the file is kept aside",
				slog.String("file", seg.name), slog.Int("offset", off), slog.Int("bytes_lost", len(rest)),
				slog.Int("batches_lost", batches), slog.String("copy", seg.name+corruptSuffix))
		}
	}
	if err := seg.f.Truncate(int64(off)); err != nil {
		return err
	}
	seg.size = int64(off)
	return nil
}

// copyAside writes data to name.corrupt atomically (temporary file, fsync,
// rename, directory fsync).
func (s *Spool) copyAside(name string, data []byte) error {
	tmp := name + corruptSuffix + tmpSuffix
	f, err := s.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.fs.Rename(tmp, name+corruptSuffix)
	}
	if err == nil {
		err = s.fs.SyncDir(s.dir)
	}
	return err
}
