package spool

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
)

// A record written by the spool: where it ends in the file (known from
// Stats.Bytes after each operation, not from the parser under test).
type wrote struct {
	end   int64
	key   string // batch key, or "" for an ack
	acks  string // the key an ack acks
	batch bool
}

// writeOneSegment appends nBatches batches (acking every third one right
// after it) into one segment and returns the file's bytes and its records,
// the segment record first.
func writeOneSegment(t tb, nBatches int) ([]byte, []wrote) {
	t.Helper()
	m := newMemFS()
	s := mustOpen(t, "/d", withFS(m), WithSync(SyncNever))
	recs := []wrote{{end: s.Stats().Bytes}} // the segment's first record
	for i := range nBatches {
		k := fmt.Sprintf("k%02d", i)
		if err := s.Append(testBatch(t, k, 1+i%6)); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, wrote{end: s.Stats().Bytes, key: k, batch: true})
		if i%3 == 1 {
			s.Ack(k)
			recs = append(recs, wrote{end: s.Stats().Bytes, acks: k})
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := m.segmentFiles()
	if len(files) != 1 {
		t.Fatalf("%d segment files, want 1", len(files))
	}
	for _, data := range files {
		return data, recs
	}
	return nil, nil
}

func eventsOf(key string) int {
	var i int
	fmt.Sscanf(key, "k%d", &i)
	return 1 + i%6
}

// expectLive returns the batches the records before cut leave live.
func expectLive(recs []wrote, cut int64) []string {
	var live []string
	for _, r := range recs {
		if r.end > cut {
			break
		}
		if r.batch {
			live = append(live, r.key)
		} else {
			live = slices.DeleteFunc(live, func(k string) bool { return k == r.acks })
		}
	}
	return live
}

const segFile = "/d/00000000000000000001.seg"

// Every cut of the last records' bytes: Open trims to the last whole
// record, replays exactly the batches before it, counts the torn bytes, and
// the spool appends and reopens cleanly after.
func TestTornTailSweep(t *testing.T) {
	data, recs := writeOneSegment(t, 12)
	from := recs[len(recs)-4].end
	for cut := from; cut <= int64(len(data)); cut++ {
		m := newMemFS()
		m.setData(segFile, data[:cut])
		s, err := Open("/d", withFS(m))
		if err != nil {
			t.Fatalf("cut %d: Open: %v", cut, err)
		}
		want := expectLive(recs, cut)
		if got := replayKeys(t, s, eventsOf); !slices.Equal(got, want) {
			t.Fatalf("cut %d: replayed %v, want %v", cut, got, want)
		}
		var boundary int64
		for _, r := range recs {
			if r.end <= cut {
				boundary = r.end
			}
		}
		st := s.Stats()
		if st.TornBytes != cut-boundary || st.Bytes != boundary || st.CorruptFiles != 0 || st.LostBatches != 0 {
			t.Fatalf("cut %d (boundary %d): Stats %+v", cut, boundary, st)
		}
		if err := s.Append(testBatch(t, "k99", eventsOf("k99"))); err != nil {
			t.Fatalf("cut %d: Append after recovery: %v", cut, err)
		}
		s.Close()
		s = mustOpen(t, "/d", withFS(m))
		if got, want := replayKeys(t, s, eventsOf), append(want, "k99"); !slices.Equal(got, want) {
			t.Fatalf("cut %d: after Append and reopen: replayed %v, want %v", cut, got, want)
		}
		s.Close()
	}
}

// A flipped bit anywhere is detected: Open never fails, never replays a
// batch that differs from the one appended, and counts the damage. A flip
// in the last record is a torn tail; elsewhere the file is corrupt: it is
// set aside as .corrupt, and the batches after the flip are counted lost.
func TestBitFlipsAreAllDetected(t *testing.T) {
	data, recs := writeOneSegment(t, 12)
	rng := rand.New(rand.NewPCG(1, 2))
	trials := 3000
	if testing.Short() {
		trials = 300
	}
	for range trials {
		pos := rng.IntN(len(data))
		bit := byte(1) << rng.IntN(8)
		bad := slices.Clone(data)
		bad[pos] ^= bit
		m := newMemFS()
		m.setData(segFile, bad)
		s, err := Open("/d", withFS(m))
		if err != nil {
			t.Fatalf("flip at %d: Open: %v", pos, err)
		}
		// The record holding pos, and the batches after it.
		ri := 0
		for recs[ri].end <= int64(pos) {
			ri++
		}
		start := int64(0)
		if ri > 0 {
			start = recs[ri-1].end
		}
		want := expectLive(recs, start)
		got := replayKeys(t, s, eventsOf) // checks every batch's content
		if !slices.Equal(got, want) {
			t.Fatalf("flip at %d (record %d): replayed %v, want %v", pos, ri, got, want)
		}
		st := s.Stats()
		last := ri == len(recs)-1
		var lostBatches uint64
		for _, r := range recs[ri+1:] {
			if r.batch {
				lostBatches++
			}
		}
		// A flip in the segment record loses the key to every record
		// after it: the whole file reads as torn.
		head := pos < segmentRecordSize
		switch {
		case head && (st.TornBytes != int64(len(data)) || st.CorruptFiles != 0):
			t.Fatalf("flip at %d in the segment record: Stats %+v, want TornBytes %d", pos, st, len(data))
		case head:
		case last && (st.TornBytes != int64(len(data))-start || st.CorruptFiles != 0):
			t.Fatalf("flip at %d in the last record: Stats %+v, want TornBytes %d", pos, st, int64(len(data))-start)
		case !last && (st.CorruptFiles != 1 || st.LostBytes != int64(len(data))-start || st.LostBatches != lostBatches):
			t.Fatalf("flip at %d in record %d: Stats %+v, want CorruptFiles 1, LostBytes %d, LostBatches %d",
				pos, ri, st, int64(len(data))-start, lostBatches)
		}
		if !last && !head {
			m.mu.Lock()
			aside := m.files[segFile+corruptSuffix]
			m.mu.Unlock()
			if aside == nil || !slices.Equal(aside.data, bad) {
				t.Fatalf("flip at %d: the corrupt file was not kept aside intact", pos)
			}
		}
		s.Close()
	}
}

// A corrupt segment in the middle of several: the other segments are
// untouched, and the spool works on.
func TestCorruptMiddleSegment(t *testing.T) {
	m := newMemFS()
	opts := []Option{withFS(m), WithSegmentSize(1024), WithMaxBytes(1 << 20)}
	s := mustOpen(t, "/d", opts...)
	var keys []string
	for i := range 40 {
		k := fmt.Sprintf("k%02d", i)
		keys = append(keys, k)
		if err := s.Append(testBatch(t, k, eventsOf(k))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range m.segmentFiles() {
			if !yield(n) {
				return
			}
		}
	})
	if len(names) < 4 {
		t.Fatalf("%d segments", len(names))
	}
	victim := names[1]
	data := m.segmentFiles()[victim]
	data[segmentRecordSize+10] ^= 0x40 // inside the first batch record's body
	m.setData(victim, data)

	s = mustOpen(t, "/d", opts...)
	defer s.Close()
	got := replayKeys(t, s, eventsOf)
	st := s.Stats()
	if st.CorruptFiles != 1 || st.LostBatches == 0 {
		t.Fatalf("Stats %+v: want one corrupt file and lost batches", st)
	}
	if uint64(len(got))+st.LostBatches+1 != uint64(len(keys)) { // +1: the corrupt record itself
		t.Errorf("replayed %d + lost %d + 1 corrupt != %d appended", len(got), st.LostBatches, len(keys))
	}
	if !slices.IsSorted(got) {
		t.Errorf("replay out of order: %v", got)
	}
	if err := s.Append(testBatch(t, "k99", eventsOf("k99"))); err != nil {
		t.Errorf("Append after recovering a corrupt segment: %v", err)
	}
}

// FuzzRecover: any bytes in a segment file (and a second one): Open never
// panics nor fails, Replay hands over only well-formed batches, and the
// spool works afterwards.
func FuzzRecover(f *testing.F) {
	data, recs := writeOneSegment(f, 5)
	f.Add(data, int64(0))
	f.Add(data[:recs[2].end+3], int64(0))
	f.Add(data, recs[1].end)
	f.Add([]byte{}, int64(0))
	f.Add(make([]byte, 100), int64(0))
	f.Fuzz(func(t *testing.T, data []byte, split int64) {
		m := newMemFS()
		if split > 0 && split < int64(len(data)) {
			m.setData(segFile, data[:split])
			m.setData("/d/00000000000000000002.seg", data[split:])
		} else {
			m.setData(segFile, data)
		}
		s, err := Open("/d", withFS(m), WithSegmentSize(1<<20), WithMaxBytes(64<<20))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		n := 0
		err = s.Replay(func(b *batchproc.Batch) error {
			n++
			if b.Key() == "" {
				t.Fatal("replayed a batch without a key")
			}
			for i := range b.Len() {
				if p := b.Event(i).Payload; len(p) == 0 || strings.Contains(string(p), "\n") {
					t.Fatalf("replayed an invalid payload %q", p)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Replay: %v", err)
		}
		if st := s.Stats(); st.Batches < n {
			t.Fatalf("Stats.Batches %d < replayed %d", st.Batches, n)
		}
		if err := s.Append(testBatch(t, "fuzz-new", 3)); err != nil && !strings.Contains(err.Error(), "already spooled") {
			t.Fatalf("Append after recovery: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		s, err = Open("/d", withFS(m), WithSegmentSize(1<<20), WithMaxBytes(64<<20))
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer s.Close()
		if st := s.Stats(); st.TornBytes != 0 || st.LostBytes != 0 {
			t.Fatalf("second Open found damage again: %+v", st)
		}
		found := false
		s.Replay(func(b *batchproc.Batch) error {
			found = found || (b.Key() == "fuzz-new" && diffBatch(b, "fuzz-new", 3) == "")
			return nil
		})
		if !found {
			t.Fatal("the batch appended after recovery was not replayed")
		}
	})
}

// Crafted bytes where every fourth offset claims a 1 MiB record of a valid
// type: the resynchronising scan after a bad record would CRC terabytes
// without its bound. Open ends quickly and sets the file aside.
func TestRecoveryOfCraftedBytesIsBounded(t *testing.T) {
	data, recs := writeOneSegment(t, 3)
	junk := []byte(strings.Repeat("\x01\x00\x10\x00", 2<<20)) // 8 MiB
	bad := append(slices.Clone(data[:recs[len(recs)-1].end]), junk...)
	m := newMemFS()
	m.setData(segFile, bad)
	start := time.Now()
	s := mustOpen(t, "/d", withFS(m))
	defer s.Close()
	t.Logf("Open of 8 MiB of crafted bytes: %v", time.Since(start))
	if got, want := replayKeys(t, s, eventsOf), expectLive(recs, int64(len(data))); !slices.Equal(got, want) {
		t.Errorf("replayed %v, want %v", got, want)
	}
	if st := s.Stats(); st.CorruptFiles != 1 || st.LostBytes != int64(len(junk)) {
		t.Errorf("Stats %+v: want the junk counted as one corrupt file", st)
	}
}
