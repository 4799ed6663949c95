//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
)

// crashCopy copies the spool files in dir to a new directory, as a
// process killed now would leave them (every store to a region, and every
// write, is in the files), and opens a spool on the copy: what recovery
// makes of them. The spool in dir keeps running.
func crashCopy(t *testing.T, dir string) *Spool {
	t.Helper()
	to := t.TempDir()
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !n.Type().IsRegular() || n.Name() == lockName {
			continue
		}
		src, err := os.Open(filepath.Join(dir, n.Name()))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, n.Name()))
		if err == nil {
			_, err = io.Copy(dst, src)
		}
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	s := mustOpen(t, to, WithSync(SyncNever))
	t.Cleanup(func() { s.Close() })
	return s
}

// Under SyncNever the region a batch was filled in is its record: the
// spool writes nothing for it (no segment record, no checksum at the cut),
// and a process killed with the batch unsent leaves it in the region,
// sealed, under its key: recovery hands it over exactly once, with every
// event and ID. Its ack frees the region: a kill after that leaves
// nothing. Under SyncBatch and SyncInterval a batch needs its fsynced
// record, and the regions are never records.
func TestRegionIsTheRecord(t *testing.T) {
	for _, tc := range []struct {
		mode   SyncMode
		record bool
	}{{SyncNever, true}, {SyncBatch, false}, {SyncInterval(time.Hour), false}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, WithSync(tc.mode))
			defer s.Close()
			g := batchproctest.NewGate(100)
			p := spooled(t, s, &batchproctest.Recorder{Hook: g.Hook}, batchproc.WithFlushInterval(time.Hour), batchproc.WithMaxBatchEvents(10), batchproc.WithMaxInFlight(4))
			want := map[string]string{} // payload to ID
			for i := range 30 {
				e := batchproc.Event{Payload: fmt.Appendf(nil, `{"i":%d}`, i)}
				if i%3 != 0 {
					e.ID = fmt.Sprintf("id-%d", i)
				}
				want[string(e.Payload)] = e.ID
				if err := p.Add(t.Context(), e); err != nil {
					t.Fatal(err)
				}
			}
			var keys []string
			for range 3 {
				keys = append(keys, <-g.Started) // all three cut, appended (a batch is in the spool before its first send), and being sent
			}
			slices.Sort(keys)
			st := s.Stats()
			if st.Appended != 3 || st.Batches != 3 {
				t.Fatalf("stats with three batches in flight: %+v", st)
			}
			if got := st.RegionAppends == 3 && st.InRegions == 3; got != tc.record {
				t.Fatalf("RegionAppends %d, InRegions %d: want the regions as records %v", st.RegionAppends, st.InRegions, tc.record)
			}

			crashed := crashCopy(t, dir)
			cst := crashed.Stats()
			gotKeys, events := replayInOrder(t, crashed)
			slices.Sort(gotKeys)
			if !slices.Equal(gotKeys, keys) {
				t.Fatalf("after a crash, replayed %q, want %q", gotKeys, keys)
			}
			if tc.record && cst.OpenRecovered != 3 {
				t.Errorf("OpenRecovered %d: the three batches were in their regions only", cst.OpenRecovered)
			}
			n := 0
			for _, evs := range events {
				for _, e := range evs {
					if id, ok := want[string(e.Payload)]; !ok || id != e.ID {
						t.Errorf("replayed %s with id %q; want id %q", e.Payload, e.ID, id)
					}
					n++
				}
			}
			if n != len(want) {
				t.Errorf("replayed %d events, want %d", n, len(want))
			}

			g.Open()
			if err := p.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); st.Acked != 3 || st.Batches != 0 || st.InRegions != 0 {
				t.Fatalf("delivered: %+v", st)
			}
			if keys, _ := replayInOrder(t, crashCopy(t, dir)); len(keys) != 0 {
				t.Fatalf("after delivery, a crash replays %q", keys)
			}
			if err := p.Shutdown(t.Context()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A region that is its batch's record keeps the batch's place in Append
// order: recovery puts it among the batches in the segments by the seq it
// holds, so an ordered processor replays its batches in order. Here the
// first batch's region is its record and the next ones, with too few
// regions left, are written to the segments.
func TestRegionRecordKeepsAppendOrder(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, WithSync(SyncNever), WithOpenBatches(4))
	g := batchproctest.NewGate(100)
	p := spooled(t, s, &batchproctest.Recorder{Hook: g.Hook}, batchproc.WithOrdered(), batchproc.WithFlushInterval(time.Hour), batchproc.WithMaxBatchEvents(5))
	for i := range 25 {
		if err := p.Add(t.Context(), batchproc.Event{Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-g.Started
	// A Shutdown whose ctx ended leaves the five batches in the spool, as
	// a crash would: the regions that are records stay sealed.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var left *batchproc.LeftInJournalError
	if err := p.Shutdown(ctx); !errors.As(err, &left) || left.Batches != 5 {
		t.Fatalf("Shutdown with its ctx ended: %v; want 5 batches left in the journal", err)
	}
	st := s.Stats()
	if st.RegionAppends == 0 || st.RegionAppends == st.Appended {
		t.Fatalf("want some batches in their regions and some in the segments: %+v", st)
	}
	s = mustOpen(t, dir, WithSync(SyncNever))
	defer s.Close()
	keys, events := replayInOrder(t, s)
	var order []string
	for _, k := range keys {
		for _, e := range events[k] {
			order = append(order, string(e.Payload))
		}
	}
	for i, pl := range order {
		if want := fmt.Sprintf(`{"i":%d}`, i); pl != want {
			t.Fatalf("replayed event %d is %s, want %s (keys %q)", i, pl, want, keys)
		}
	}
	if len(order) != 25 {
		t.Fatalf("replayed %d events, want 25", len(order))
	}
}

// A batch whose region is its record, left unsent by a Shutdown whose ctx
// ended, stays in the region for the next Open, which delivers it under
// the same key.
func TestRegionRecordLeftAtShutdown(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, WithSync(SyncNever))
	g := batchproctest.NewGate(100)
	p := spooled(t, s, &batchproctest.Recorder{Hook: g.Hook}, batchproc.WithFlushInterval(time.Hour), batchproc.WithMaxBatchEvents(10), batchproc.WithMaxInFlight(4))
	for i := range 40 {
		if err := p.Add(t.Context(), batchproc.Event{ID: fmt.Sprint(i), Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	first := <-g.Started
	for range 3 {
		<-g.Started // each in the spool before its send
	}
	if st := s.Stats(); st.InRegions != 4 {
		t.Fatalf("four batches being sent: %+v", st)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := p.Shutdown(ctx)
	var left *batchproc.LeftInJournalError
	if !errors.As(err, &left) || left.Batches != 4 || left.Events != 40 {
		t.Fatalf("Shutdown with its ctx ended: %v; want 4 batches of 40 events left in the journal", err)
	}
	// Shutdown closed the spool.
	if n := len(openBatches(t, dir)); n != 4 {
		t.Fatalf("%d sealed regions left, want 4", n)
	}

	// The next start: every event is delivered once, the first batch under
	// the key it was sent with.
	s = mustOpen(t, dir, WithSync(SyncNever))
	defer s.Close()
	var rec2 batchproctest.Recorder
	p = spooled(t, s, &rec2, batchproc.WithFlushInterval(time.Hour), batchproc.WithMaxBatchEvents(10))
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	keys := map[string]bool{}
	for _, b := range rec2.Delivered() {
		keys[b.Key] = true
		for _, e := range b.Events {
			seen[e.ID]++
		}
	}
	if !keys[first] || len(seen) != 40 {
		t.Fatalf("next start delivered %d distinct events in %d batches (first key %s there: %v)", len(seen), len(keys), first, keys[first])
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("event %s delivered %d times", id, n)
		}
	}
	if n := len(openBatches(t, dir)); n != 0 {
		t.Fatalf("%d regions hold batches after delivery", n)
	}
}

// A batch whose region is its record leaves memory like any journaled
// batch when an Add needs its budget (the processor closes the region,
// which stays the record), and is loaded back from the region for its
// send; the ack then frees the region. With the sink stuck, the Adds
// never wait for it: an Add that began to wait while the batches were
// still on their way into the journal is served as the appender spills
// them (without that, this test hung within 20 runs).
func TestRegionRecordSpilledIsLoaded(t *testing.T) {
	s := mustOpen(t, t.TempDir(), WithSync(SyncNever))
	defer s.Close()
	g := batchproctest.NewGate(100)
	rec := &batchproctest.Recorder{Hook: g.Hook}
	const memLimit = 64 << 10
	p := spooled(t, s, rec, batchproc.WithFlushInterval(time.Hour), batchproc.WithMaxBatchEvents(10),
		batchproc.WithMaxBatchBytes(16<<10), batchproc.WithMemoryLimit(memLimit), batchproc.WithMaxInFlight(1))
	pad := make([]byte, 1000)
	for i := range pad {
		pad[i] = 'x'
	}
	const n = 200 // 20 batches of 10 KiB: three times the budget
	for i := range n {
		if err := p.Add(t.Context(), batchproc.Event{ID: fmt.Sprint(i), Payload: fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i, pad)}); err != nil {
			t.Fatal(err)
		}
	}
	<-g.Started
	if b := p.Stats().BufferedBytes; b > memLimit {
		t.Fatalf("buffered %d bytes with a %d budget: the queued batches must have left memory", b, memLimit)
	}
	g.Open()
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, b := range rec.Delivered() {
		for _, e := range b.Events {
			seen[e.ID]++
		}
	}
	if len(seen) != n {
		t.Fatalf("delivered %d distinct events, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("event %s delivered %d times", id, c)
		}
	}
	// Every batch was a region's record: those that left memory were
	// loaded back from their regions.
	if st := s.Stats(); st.RegionAppends != n/10 || st.InRegions != 0 || st.Batches != 0 || st.OpenRegions > DefaultOpenBatches {
		t.Fatalf("after delivery: %+v; want all %d batches appended in their regions, none left", st, n/10)
	}
}

// Region names are used again from one process to the next, so a region
// set aside by one Open must not be overwritten by the next one's: each
// is kept, under a name of its own.
func TestSetAsideRegionsAreAllKept(t *testing.T) {
	dir := t.TempDir()
	var kept [][]byte
	for round := range 3 {
		s := mustOpen(t, dir, WithSync(SyncNever))
		ob := s.OpenBatch(4 << 10)
		for _, e := range testEvents(fmt.Sprint(round), 3) {
			ob.Add(e)
		}
		names := regionFiles(t, dir)
		s.Close() // a crash: the region was never closed
		var name string
		for _, n := range names {
			if !strings.HasSuffix(n, corruptSuffix) {
				name = n
			}
		}
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		data[regionHeader] = '\n' // an empty line: the batch no longer decodes
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		kept = append(kept, data)
	}
	s := mustOpen(t, dir, WithSync(SyncNever))
	defer s.Close()
	var found [][]byte
	for _, n := range regionFiles(t, dir) {
		if strings.HasSuffix(n, corruptSuffix) {
			data, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			found = append(found, data)
		}
	}
	if len(found) != len(kept) {
		t.Fatalf("%d regions set aside are left, want %d", len(found), len(kept))
	}
	for i, want := range kept {
		if !slices.ContainsFunc(found, func(d []byte) bool { return bytes.Equal(d, want) }) {
			t.Errorf("the region set aside in round %d was overwritten", i)
		}
	}
}
