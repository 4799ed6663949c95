package spool

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/batchproc/batchproc"
)

// Open batches: the spool keeps the events of the batches being filled in
// region files, memory-mapped, so that a crash of the process loses none
// whose Add returned nil (see the package documentation, "Open batches").
// The region's data area is the batch's own buffer (batchproc.OpenBuffer):
// Add's one copy of an event is the kept one. A region is one file:
//
//	offset  size  field
//	0       8     magic "BPOPEN02"
//	8       4     state, uint32 little-endian: 0 free, 1 open, 2 sealed
//	12      4     key length k (0: none; the batch has no key yet)
//	16      8     nonce, uint64: random, new each time the region is opened
//	24      8     filled n, uint64: bytes of the data area kept
//	32      8     ids m, uint64: bytes of the id area kept
//	40      8     data capacity d, uint64
//	48      8     record seq+1, uint64: set when the region is its sealed
//	              batch's record (SyncNever), for Append order; 0 otherwise
//	56      72    zero
//	128     96    key (k bytes)
//	256     d     data: the events' payloads, each followed by '\n' (n bytes)
//	256+d   ...   ids: records of event index (uint32), id length (uint32),
//	              id (m bytes)
//
// Every field is written before the word that makes it count: an event's
// bytes and its id record before filled covers it (an id record past the
// events filled covers is ignored), the key before the sealed state. The
// stores are plain: what a killed process stored before the kill is all in
// the page cache (interrupts are precise), and the Go compiler emits a
// goroutine's stores in program order. A power loss may leave anything,
// which recovery checks like any input (the events must be events, the id
// records in order and in range), and the open batches are not promised to
// survive it.

const (
	regionMagic    = "BPOPEN02"
	regionHeader   = 256
	regionKeyOff   = 128
	regionKeyMax   = 96
	regionPrefix   = "open-"
	regionSuffix   = ".reg"
	regionFree     = 0
	regionOpen     = 1
	regionSealed   = 2
	regionIDHeader = 8
	regionSeqOff   = 48
)

func regionName(id int) string { return fmt.Sprintf("%s%06d%s", regionPrefix, id, regionSuffix) }

func parseRegionName(name string) (int, bool) {
	base, ok := strings.CutPrefix(name, regionPrefix)
	if !ok {
		return 0, false
	}
	if base, ok = strings.CutSuffix(base, regionSuffix); !ok || len(base) != 6 {
		return 0, false
	}
	id, err := strconv.Atoi(base)
	return id, err == nil
}

// regionSize is the size of a region for batches of maxBytes: a data area
// of maxBytes, and as much again (to the page) for ids. A batch whose ids
// take more stops being kept when they fill it (counted in
// Stats.OpenOverflows).
func regionSize(maxBytes int) int {
	n := regionHeader + 2*maxBytes
	return (n + 4095) &^ 4095
}

// decodeRegion returns the batch a region holds, if it holds one that was
// opened: its key (the sealed key, or one made from the nonce) and events.
// It checks the region like any input: a bad magic, state, length, event
// or id record is no batch, never a panic.
func decodeRegion(data []byte) (key string, events []batchproc.Event, ok bool) {
	if len(data) < regionHeader || string(data[:8]) != regionMagic {
		return "", nil, false
	}
	le := binary.LittleEndian
	state := le.Uint32(data[8:])
	if state != regionOpen && state != regionSealed {
		return "", nil, false
	}
	kl := le.Uint32(data[12:])
	nonce := le.Uint64(data[16:])
	filled, idBytes, dataCap := le.Uint64(data[24:]), le.Uint64(data[32:]), le.Uint64(data[40:])
	room := uint64(len(data) - regionHeader)
	if kl > regionKeyMax || dataCap > room || filled > dataCap || idBytes > room-dataCap {
		return "", nil, false
	}
	if state == regionSealed && kl > 0 {
		key = string(data[regionKeyOff : regionKeyOff+kl])
	} else {
		// Never cut, so never sent: a key of its own, the same at every
		// recovery of this region (the nonce is set when it opens).
		key = "open." + strconv.FormatUint(nonce, 16)
	}
	p := data[regionHeader : regionHeader+filled]
	if len(p) > 0 && p[len(p)-1] != '\n' {
		return "", nil, false
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i == 0 {
			return "", nil, false
		}
		events = append(events, batchproc.Event{Payload: p[:i]})
		p = p[i+1:]
	}
	ids := data[regionHeader+dataCap : regionHeader+dataCap+idBytes]
	next := uint64(0) // the lowest index the next id record may have
	for len(ids) > 0 {
		if len(ids) < regionIDHeader {
			return "", nil, false
		}
		i, il := uint64(le.Uint32(ids)), uint64(le.Uint32(ids[4:]))
		ids = ids[regionIDHeader:]
		if il == 0 || il > uint64(len(ids)) || i < next {
			return "", nil, false
		}
		if i < uint64(len(events)) { // past the events filled covers: not kept
			events[i].ID = string(ids[:il])
		}
		ids, next = ids[il:], i+1
	}
	return key, events, len(events) > 0
}

// openArea is the spool's set of regions.
type openArea struct {
	mu      sync.Mutex
	free    []*region
	all     []*region
	sealed  map[string]*region // regions SealRecord made records, by key, until appended or closed
	records bool               // regions may be their batches' records (SyncNever)
	nextID  int
	max     int // regions at most (WithOpenBatches)
	closed  bool

	overflows, unguarded uint64
}

var errNoRegions = errors.New("spool: open batches are not kept on this platform or filesystem")

// recoverOpen rebuilds the batches left open in region files and appends
// them to the segments, as batches a previous processor left (Replay
// hands them over), then removes the region files. A region whose batch
// is already in the spool (it was appended, and the process died before
// the region was freed) is only removed. A region that was its sealed
// batch's record (SyncNever, see keepInRegion) takes its place among the
// segments' batches in Replay's Append order, by the seq it holds; the
// batches never appended come after all. One whose batch finds the spool
// full stays for the next Open. It returns the batches WithDropOldest
// dropped to make room, for the caller to report without mu. mu is held.
func (s *Spool) recoverOpen(names []string, known map[string]bool) (dropped []*batchproc.Batch, err error) {
	type found struct {
		name   string
		key    string
		events []batchproc.Event
		seq    uint64 // the Append order of a region that was its batch's record; MaxUint64 if it was not
	}
	var regions []found
	var done []string
	for _, name := range names {
		if _, ok := parseRegionName(name); !ok {
			continue
		}
		f, err := s.fs.OpenFile(s.path(name), os.O_RDWR)
		if err != nil {
			return dropped, err
		}
		size, err := f.Size()
		if err != nil {
			f.Close()
			return dropped, err
		}
		data := make([]byte, size)
		_, err = f.ReadAt(data, 0)
		f.Close()
		if err != nil && size > 0 {
			return dropped, err
		}
		key, events, ok := decodeRegion(data)
		if !ok && regionClaims(data) {
			if err := s.setAsideRegion(name, "spool: a region holds a batch that does not decode (a power loss, or another format): it is set aside", nil); err != nil {
				return dropped, err
			}
			continue
		}
		if !ok || known[key] {
			done = append(done, name)
			continue
		}
		seq := uint64(math.MaxUint64)
		if v := binary.LittleEndian.Uint64(data[regionSeqOff:]); v > 0 && binary.LittleEndian.Uint32(data[8:]) == regionSealed {
			seq = v - 1
		}
		regions = append(regions, found{name, key, events, seq})
	}
	// In Append order: a region that was its batch's record among the
	// segments' batches, by seq; the batches never appended last.
	slices.SortStableFunc(regions, func(x, y found) int { return cmp.Compare(x.seq, y.seq) })
	order := make(map[*entry]uint64, len(regions))
	var gens []uint64
	for _, r := range regions {
		b, err := batchproc.NewBatch(r.key, r.events...)
		if err != nil {
			if err := s.setAsideRegion(r.name, "spool: an open batch's region holds an invalid event: it is set aside", err); err != nil {
				return dropped, err
			}
			continue
		}
		if r.seq != math.MaxUint64 && r.seq >= s.nextSeq {
			s.nextSeq = r.seq + 1
		}
		d, e, gen, err := s.appendLocked(b)
		dropped = append(dropped, d...)
		if errors.Is(err, ErrFull) {
			s.logOpen("spool: no room for an open batch a crash left: it stays in its region for the next Open", r.name, err)
			continue
		}
		if err != nil {
			return dropped, fmt.Errorf("recovering the open batch in %s: %w", r.name, err)
		}
		known[r.key] = true
		order[e] = r.seq
		s.replayed = append(s.replayed, e)
		s.st.Recovered++
		s.st.OpenRecovered++
		gens = append(gens, gen)
		done = append(done, r.name)
	}
	if len(order) > 0 {
		slices.SortStableFunc(s.replayed, func(x, y *entry) int {
			kx, ok := order[x]
			if !ok {
				kx = x.seq
			}
			ky, ok := order[y]
			if !ok {
				ky = y.seq
			}
			return cmp.Compare(kx, ky)
		})
	}
	if len(gens) > 0 && s.cfg.sync != SyncNever {
		if err := s.waitSynced(gens[len(gens)-1]); err != nil {
			return dropped, err
		}
	}
	// Only now, with their batches in the segments, the regions go. (If a
	// removal is lost, the next Open finds the batch known and removes it.)
	for _, name := range done {
		if err := s.fs.Remove(s.path(name)); err != nil {
			return dropped, err
		}
	}
	return dropped, nil
}

// setAsideRegion renames a region whose batch cannot be rebuilt to
// NAME.corrupt (NAME.N.corrupt if an earlier Open set one aside under that
// name: region names are used again), for inspection, and counts it as a
// corrupt file and a lost batch. mu is held.
func (s *Spool) setAsideRegion(name, msg string, err error) error {
	names, rerr := s.fs.ReadDir(s.dir)
	if rerr != nil {
		return rerr
	}
	to := name + corruptSuffix
	for i := 1; slices.Contains(names, to); i++ {
		to = fmt.Sprintf("%s.%d%s", name, i, corruptSuffix)
	}
	s.logOpen(msg, name, err)
	s.st.CorruptFiles++
	s.st.LostBatches++
	return s.fs.Rename(s.path(name), s.path(to))
}

// regionClaims reports whether a region in which decodeRegion found no
// batch looks as if it held one all the same: a magic that is neither
// this format's nor zeros (a region of another format, or damaged), or an
// open or sealed region with bytes filled. Such a region is set aside,
// not removed. A free region, one opened with nothing filled yet, and one
// whose header was never written hold nothing.
func regionClaims(data []byte) bool {
	if len(data) < regionHeader || string(data[:8]) != regionMagic {
		return slices.ContainsFunc(data[:min(len(data), regionHeader)], func(c byte) bool { return c != 0 })
	}
	state := binary.LittleEndian.Uint32(data[8:])
	return (state == regionOpen || state == regionSealed) && binary.LittleEndian.Uint64(data[24:]) > 0
}

func (s *Spool) logOpen(msg, name string, err error) {
	if l := s.cfg.logger; l != nil {
		attrs := []slog.Attr{slog.String("file", s.path(name))}
		if err != nil {
			attrs = append(attrs, slog.Any("error", err))
		}
		l.LogAttrs(context.Background(), slog.LevelError, msg, attrs...)
	}
}
