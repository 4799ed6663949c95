package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/batchproc/batchproc"
)

// replayAll returns the batches Replay hands over, copied.
func replayAll(t *testing.T, s *Spool) map[string][]batchproc.Event {
	t.Helper()
	_, got := replayInOrder(t, s)
	return got
}

// replayInOrder returns the keys of the batches Replay hands over, in its
// order, and copies of their events.
func replayInOrder(t *testing.T, s *Spool) (keys []string, events map[string][]batchproc.Event) {
	t.Helper()
	events = map[string][]batchproc.Event{}
	if err := s.Replay(func(b *batchproc.Batch) error {
		var evs []batchproc.Event
		for i := range b.Len() {
			e := b.Event(i)
			evs = append(evs, batchproc.Event{ID: e.ID, Payload: slices.Clone(e.Payload)})
		}
		keys = append(keys, b.Key())
		events[b.Key()] = evs
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys, events
}

func regionFiles(t testing.TB, dir string) []string {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, regionPrefix+"*"))
	return names
}

// What a batch being filled kept in its region outlives the process: a
// spool closed with regions still open (as a killed process leaves them:
// the files hold every store) rebuilds their batches at the next Open,
// sealed ones under their key, open ones under a key of their own, and
// skips a sealed one whose batch was appended before the process died.
// The region files are gone after.
func TestOpenBatchesAreRecovered(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, WithSync(SyncNever))
	open := s.OpenBatch(4 << 10)
	if open == nil {
		t.Fatal("no region on this filesystem")
	}
	sealed, appended := s.OpenBatch(4<<10), s.OpenBatch(4<<10)
	freed := s.OpenBatch(4 << 10)
	evs := testEvents("x", 7)
	for _, e := range evs {
		open.Add(e)
		sealed.Add(e)
		appended.Add(e)
		freed.Add(e)
	}
	sealed.Seal("k-sealed")
	appended.Seal("k-appended")
	if err := s.Append(testBatch(t, "k-appended", 7)); err != nil {
		t.Fatal(err)
	}
	freed.Seal("k-freed")
	freed.Close()
	if st := s.Stats(); st.OpenRegions != 4 {
		t.Fatalf("%d regions mapped, want 4", st.OpenRegions)
	}
	s.Close() // open, sealed and appended never closed: a crash

	s = mustOpen(t, dir, WithSync(SyncNever))
	defer s.Close()
	got := replayAll(t, s)
	st := s.Stats()
	if st.OpenRecovered != 2 || len(got) != 3 {
		t.Fatalf("OpenRecovered %d, replayed %d batches (%v), want 2 and 3", st.OpenRecovered, len(got), slices.Collect(mapsKeys(got)))
	}
	var openKey string
	for k := range got {
		if strings.HasPrefix(k, "open.") {
			openKey = k
		}
	}
	want := map[string][]batchproc.Event{"k-sealed": evs, openKey: evs,
		"k-appended": testEvents("k-appended", 7)} // the appended copy: its region was skipped
	for k, want := range want {
		if len(got[k]) != len(want) {
			t.Fatalf("batch %q: %d events, want %d", k, len(got[k]), len(want))
		}
		for i, e := range got[k] {
			if e.ID != want[i].ID || !bytes.Equal(e.Payload, want[i].Payload) {
				t.Fatalf("batch %q event %d: %+v, want %+v", k, i, e, want[i])
			}
		}
	}
	if names := regionFiles(t, dir); len(names) != 0 {
		t.Fatalf("region files left after recovery: %v", names)
	}
	if st.Recovered+st.Appended != st.Acked+st.Dropped+uint64(st.Batches) {
		t.Fatalf("accounting: %+v", st)
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// A region is reused once closed, and a batch whose events outgrow its
// region stops being kept there (counted), never writes past it.
func TestOpenBatchRegionReuseAndOverflow(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, WithSync(SyncNever), WithOpenBatches(1))
	defer s.Close()
	r := s.OpenBatch(1 << 10)
	if s.OpenBatch(1<<10) != nil {
		t.Fatal("a second region with WithOpenBatches(1)")
	}
	big := batchproc.Event{ID: strings.Repeat("i", 1000), Payload: bytes.Repeat([]byte("p"), 1000)}
	for range 10 {
		r.Add(big)
	}
	r.Close()
	if r2 := s.OpenBatch(1 << 10); r2 == nil {
		t.Fatal("the closed region was not reused")
	} else {
		r2.Close()
	}
	if st := s.Stats(); st.OpenOverflows != 1 || st.OpenUnguarded != 1 || st.OpenRegions != 1 {
		t.Fatalf("Stats %+v: want 1 overflow, 1 unguarded, 1 region", st)
	}
}

// Recovery reads a region like any input: whatever its bytes, Open does
// not fail or panic, and a batch it rebuilds holds valid events.
func FuzzDecodeRegion(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(dir, WithSync(SyncNever))
	if err != nil {
		f.Fatal(err)
	}
	r := s.OpenBatch(4 << 10)
	for _, e := range testEvents("seed", 5) {
		r.Add(e)
	}
	r.Seal("k")
	s.Close()
	names := regionFiles(f, dir)
	seed, err := os.ReadFile(names[0])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:regionHeader+512])
	f.Add(seed[:regionHeader])
	f.Add([]byte(regionMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, events, ok := decodeRegion(data)
		if !ok {
			return
		}
		if key == "" || len(events) == 0 {
			t.Fatalf("ok with key %q and %d events", key, len(events))
		}
		for _, e := range events {
			if len(e.Payload) == 0 || bytes.IndexByte(e.Payload, '\n') >= 0 {
				t.Fatalf("an invalid payload %q", e.Payload)
			}
		}
	})
}

// BenchmarkRegionAdd is what keeping an open batch's event costs: the
// processor's copy of a 200-byte event into the region it fills in place,
// with an id record and the filled length stored after it (in=place),
// against region.Add's copy of it, for a processor that keeps a copy
// (into=region), and against the copy of the same event into a heap
// buffer (into=heap, the batch's own copy without a spool).
func BenchmarkRegionAdd(b *testing.B) {
	e := batchproc.Event{ID: "0123456789abcdef", Payload: bytes.Repeat([]byte("x"), 200)}
	b.Run("in=place", func(b *testing.B) {
		s := mustOpen(b, b.TempDir(), WithSync(SyncNever))
		defer s.Close()
		r := s.OpenBatch(1 << 20).(batchproc.OpenBuffer)
		buf, filled := r.Buffer()
		b.SetBytes(int64(len(e.Payload)))
		n := 0
		for b.Loop() {
			if n == 1000 { // a batch: the region is reused
				r.Close()
				r = s.OpenBatch(1 << 20).(batchproc.OpenBuffer)
				buf, filled = r.Buffer()
				n = 0
			}
			buf = append(buf, e.Payload...)
			buf = append(buf, '\n')
			r.AddID(n, e.ID)
			*filled = uint64(len(buf))
			n++
		}
		r.Close()
	})
	b.Run("into=region", func(b *testing.B) {
		s := mustOpen(b, b.TempDir(), WithSync(SyncNever))
		defer s.Close()
		r := s.OpenBatch(1 << 20)
		b.SetBytes(int64(len(e.Payload)))
		n := 0
		for b.Loop() {
			if n == 1000 { // a batch: the region is reused
				r.Close()
				r = s.OpenBatch(1 << 20)
				n = 0
			}
			r.Add(e)
			n++
		}
		r.Close()
	})
	b.Run("into=heap", func(b *testing.B) {
		buf := make([]byte, 0, 1<<20)
		b.SetBytes(int64(len(e.Payload)))
		n := 0
		for b.Loop() {
			if n == 1000 {
				buf, n = buf[:0], 0
			}
			buf = append(buf, e.Payload...)
			buf = append(buf, '\n')
			n++
		}
	})
}

// A region that held a batch recovery cannot rebuild (damaged, or of
// another format) is set aside as NAME.corrupt and counted, never removed
// in silence; a free region, and one opened with nothing in it, are
// removed.
func TestOpenBatchBadRegionIsSetAside(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, WithSync(SyncNever))
	damaged, oldFormat := s.OpenBatch(4<<10), s.OpenBatch(4<<10)
	empty, freed := s.OpenBatch(4<<10), s.OpenBatch(4<<10)
	for _, e := range testEvents("x", 5) {
		damaged.Add(e)
		oldFormat.Add(e)
		freed.Add(e)
	}
	freed.Close()
	_ = empty
	names := regionFiles(t, dir)
	s.Close() // a crash: damaged, oldFormat and empty never closed
	if len(names) != 4 {
		t.Fatalf("%d region files, want 4", len(names))
	}
	// OpenBatch hands out regions in file order: damaged is the first.
	data, err := os.ReadFile(names[0])
	if err != nil {
		t.Fatal(err)
	}
	data[regionHeader+3] = '\n' // an empty line, or a payload cut short: no longer the batch
	data[regionHeader+4] = '\n'
	if err := os.WriteFile(names[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	if data, err = os.ReadFile(names[1]); err != nil {
		t.Fatal(err)
	}
	copy(data, "BPOPEN01")
	if err := os.WriteFile(names[1], data, 0o644); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dir, WithSync(SyncNever))
	defer s.Close()
	if got := replayAll(t, s); len(got) != 0 {
		t.Fatalf("replayed %d batches, want none", len(got))
	}
	st := s.Stats()
	if st.CorruptFiles != 2 || st.LostBatches != 2 || st.OpenRecovered != 0 {
		t.Fatalf("CorruptFiles %d, LostBatches %d, OpenRecovered %d: want 2, 2, 0", st.CorruptFiles, st.LostBatches, st.OpenRecovered)
	}
	for _, name := range names[:2] {
		if _, err := os.Stat(name + corruptSuffix); err != nil {
			t.Errorf("%s not set aside: %v", name, err)
		}
	}
	if left := regionFiles(t, dir); len(left) != 2 || !strings.HasSuffix(left[0], corruptSuffix) || !strings.HasSuffix(left[1], corruptSuffix) {
		t.Fatalf("region files after Open: %v, want only the two set aside", left)
	}
}
