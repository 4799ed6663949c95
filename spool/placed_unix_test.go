//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package spool

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
)

// openBatches decodes the region files in dir as recovery would, as a
// process killed now would leave them: key to events.
func openBatches(t *testing.T, dir string) map[string][]batchproc.Event {
	t.Helper()
	got := map[string][]batchproc.Event{}
	for _, name := range regionFiles(t, dir) {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if key, evs, ok := decodeRegion(data); ok {
			got[key] = evs
		}
	}
	return got
}

func spooled(t *testing.T, s *Spool, sink batchproc.Sink, opts ...batchproc.Option) *batchproc.Processor {
	t.Helper()
	p, err := batchproc.New(sink, append(opts, batchproc.WithJournal(func() (batchproc.Journal, error) { return s, nil }))...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The processor fills its batch in the region itself (an OpenBuffer): what
// a killed process leaves there is every event whose Add returned, with
// its ID, and an event whose ID found no room is not kept, nor any after
// it, rather than kept without its ID.
func TestPlacedBatchKeepsEveryAddedEvent(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, WithSync(SyncNever))
	defer s.Close()
	var rec batchproctest.Recorder
	// 4 KiB batches: a region of 12 KiB has 7,936 bytes for ids.
	p := spooled(t, s, &rec, batchproc.WithFlushInterval(time.Hour), batchproc.WithMaxBatchBytes(4<<10))
	var want []batchproc.Event
	for i := range 12 {
		e := batchproc.Event{Payload: fmt.Appendf(nil, `{"i":%d}`, i)}
		if i%2 == 1 {
			e.ID = fmt.Sprintf("id-%d", i)
		}
		if err := p.Add(context.Background(), e); err != nil {
			t.Fatal(err)
		}
		want = append(want, e)
		got := openBatches(t, dir)
		if len(got) != 1 {
			t.Fatalf("after %d Adds: %d open batches in the regions, want 1", i+1, len(got))
		}
		for _, evs := range got {
			if !sameEvents(evs, want) {
				t.Fatalf("after %d Adds the region holds %v, want %v", i+1, evs, want)
			}
		}
	}
	// Ids of 1,000 bytes: 7 fit in the id area, the 8th does not.
	long := strings.Repeat("l", 1000)
	var kept []batchproc.Event
	for i := range 9 {
		e := batchproc.Event{ID: fmt.Sprintf("%s%d", long, i), Payload: fmt.Appendf(nil, `{"long":%d}`, i)}
		if err := p.Add(context.Background(), e); err != nil {
			t.Fatal(err)
		}
		if i < 7 {
			kept = append(kept, e)
		}
	}
	for _, evs := range openBatches(t, dir) {
		if w := append(want[:len(want):len(want)], kept...); !sameEvents(evs, w) {
			t.Fatalf("with ids past the region's room it holds %d events, want the %d before", len(evs), len(w))
		}
	}
	if st := s.Stats(); st.OpenOverflows != 1 {
		t.Fatalf("OpenOverflows %d, want 1", st.OpenOverflows)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Delivered()); n != 1 {
		t.Fatalf("%d batches delivered, want 1", n)
	}
	if evs := rec.Delivered()[0].Events; !sameEvents(evs[:len(want)], want) || len(evs) != len(want)+9 {
		t.Fatalf("delivered %d events, want %d", len(evs), len(want)+9)
	}
}

func sameEvents(a, b []batchproc.Event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || !bytes.Equal(a[i].Payload, b[i].Payload) {
			return false
		}
	}
	return true
}

// A batch filled in its region keeps the region as its buffer past the
// journal, until it is delivered, while more than half the regions are
// left for batches being filled; past that it is copied out at once. Both
// ways the sink gets every event once, and the regions are reused.
func TestPlacedBatchLeavesItsRegion(t *testing.T) {
	for _, regions := range []int{1, 2, 3} {
		t.Run(fmt.Sprint("regions=", regions), func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, WithSync(SyncNever), WithOpenBatches(regions))
			defer s.Close()
			var rec batchproctest.Recorder
			p := spooled(t, s, &rec, batchproc.WithMaxBatchEvents(100))
			const n = 5000
			for i := range n {
				if err := p.Add(context.Background(), batchproc.Event{Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); st.OpenRegions > regions {
				t.Fatalf("%d regions for at most %d", st.OpenRegions, regions)
			}
			if err := p.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			seen := make([]bool, n)
			for _, b := range rec.Delivered() {
				for _, e := range b.Events {
					var i int
					if _, err := fmt.Sscanf(string(e.Payload), `{"i":%d}`, &i); err != nil || i < 0 || i >= n || seen[i] {
						t.Fatalf("batch %s: event %q is not one added, or twice", b.Key, e.Payload)
					}
					seen[i] = true
				}
			}
			for i, ok := range seen {
				if !ok {
					t.Fatalf("event %d not delivered", i)
				}
			}
		})
	}
}
