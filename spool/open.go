package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/batchproc/batchproc"
)

// Open batches: the spool keeps the events of the batches being filled in
// region files, memory-mapped, so that a crash of the process loses none
// whose Add returned nil (see the package documentation, "Open batches").
// A region is one file:
//
//	offset  size  field
//	0       8     magic "BPOPEN01"
//	8       4     state, uint32 little-endian: 0 free, 1 open, 2 sealed
//	12      4     key length k (0: none; the batch has no key yet)
//	16      8     nonce, uint64: random, new each time the region is opened
//	24      8     committed c, uint64: bytes of event records kept
//	32      96    key (k bytes)
//	128     c     event records: id length (uint32), payload length
//	              (uint32), id, payload
//
// Every field is written before the word that makes it count: a record
// before committed covers it, the key before the sealed state, each with
// an atomic store (release ordering). A killed process leaves the page
// cache as its stores left it; a power loss may leave anything, which
// recovery checks like any input (the records must parse, the payloads be
// events), and the open batches are not promised to survive it.

const (
	regionMagic     = "BPOPEN01"
	regionHeader    = 128
	regionKeyMax    = 96
	regionPrefix    = "open-"
	regionSuffix    = ".reg"
	regionFree      = 0
	regionOpen      = 1
	regionSealed    = 2
	regionRecHeader = 8
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

// regionSize is the size of a region for batches of maxBytes: the
// payloads, and as much again for ids and record headers. A batch whose
// ids take more stops being kept when it fills its region (counted in
// Stats.OpenOverflows).
func regionSize(maxBytes int) int {
	n := regionHeader + 2*maxBytes
	return (n + 4095) &^ 4095
}

// decodeRegion returns the batch a region holds, if it holds one that was
// opened: its key (the sealed key, or one made from the nonce) and events.
// It checks the region like any input: a bad magic, state, length or
// event is no batch, never a panic.
func decodeRegion(data []byte) (key string, events []batchproc.Event, ok bool) {
	if len(data) < regionHeader || string(data[:8]) != regionMagic {
		return "", nil, false
	}
	state := binary.LittleEndian.Uint32(data[8:])
	if state != regionOpen && state != regionSealed {
		return "", nil, false
	}
	kl := binary.LittleEndian.Uint32(data[12:])
	nonce := binary.LittleEndian.Uint64(data[16:])
	committed := binary.LittleEndian.Uint64(data[24:])
	if kl > regionKeyMax || committed > uint64(len(data)-regionHeader) {
		return "", nil, false
	}
	if state == regionSealed && kl > 0 {
		key = string(data[32 : 32+kl])
	} else {
		// Never cut, so never sent: a key of its own, the same at every
		// recovery of this region (the nonce is set when it opens).
		key = "open." + strconv.FormatUint(nonce, 16)
	}
	p := data[regionHeader : regionHeader+int(committed)]
	for len(p) > 0 {
		if len(p) < regionRecHeader {
			return "", nil, false
		}
		il, pl := binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])
		p = p[regionRecHeader:]
		if uint64(il)+uint64(pl) > uint64(len(p)) || pl == 0 {
			return "", nil, false
		}
		events = append(events, batchproc.Event{ID: string(p[:il]), Payload: p[il : il+pl]})
		p = p[il+pl:]
	}
	return key, events, len(events) > 0
}

// openArea is the spool's set of regions.
type openArea struct {
	mu     sync.Mutex
	free   []*region
	all    []*region
	nextID int
	max    int // regions at most (WithOpenBatches)
	closed bool

	overflows, unguarded uint64
}

var errNoRegions = errors.New("spool: open batches are not kept on this platform or filesystem")

// recoverOpen rebuilds the batches left open in region files and appends
// them to the segments, as batches a previous processor left (Replay
// hands them over), then removes the region files. A region whose batch
// is already in the spool (it was appended, and the process died before
// the region was freed) is only removed. One whose batch finds the spool
// full stays for the next Open. It returns the batches WithDropOldest
// dropped to make room, for the caller to report without mu. mu is held.
func (s *Spool) recoverOpen(names []string, known map[string]bool) (dropped []*batchproc.Batch, err error) {
	var gens []uint64
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
		if ok && !known[key] {
			b, err := batchproc.NewBatch(key, events...)
			if err != nil {
				s.logOpen("spool: an open batch's region holds an invalid event: it is set aside", name, err)
				if err := s.fs.Rename(s.path(name), s.path(name)+corruptSuffix); err != nil {
					return dropped, err
				}
				continue
			}
			d, e, gen, err := s.appendLocked(b)
			dropped = append(dropped, d...)
			if errors.Is(err, ErrFull) {
				s.logOpen("spool: no room for an open batch a crash left: it stays in its region for the next Open", name, err)
				continue
			}
			if err != nil {
				return dropped, fmt.Errorf("recovering the open batch in %s: %w", name, err)
			}
			known[key] = true
			s.replayed = append(s.replayed, e)
			s.st.Recovered++
			s.st.OpenRecovered++
			gens = append(gens, gen)
		}
		done = append(done, name)
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

func (s *Spool) logOpen(msg, name string, err error) {
	if l := s.cfg.logger; l != nil {
		l.Error(msg, slog.String("file", s.path(name)), slog.Any("error", err))
	}
}
