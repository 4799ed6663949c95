// Package spooltest builds the spool states that the spool's metrics
// adapters (spoolprom, spoolotel) are tested against, so that both read
// the same scenario rather than two copies of it.
package spooltest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/spool"
)

// OpenBatches returns a spool whose open-batch counters are all non-zero:
// 4 batches recovered at Open, 3 of them open batches a crash left in
// their regions; with WithOpenBatches(2), 2 regions held by batches being
// filled, 5 batches that found none free, and 1 whose ids overflowed its
// region. It checks those Stats; cleanup closes the spool.
func OpenBatches(t *testing.T) *spool.Spool {
	t.Helper()
	dir := t.TempDir()
	s, err := spool.Open(dir, spool.WithOpenBatches(3))
	if err != nil {
		t.Fatal(err)
	}
	b, err := batchproc.NewBatch("k1", batchproc.Event{Payload: []byte(`{"a":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(b); err != nil {
		t.Fatal(err)
	}
	var crashed []batchproc.OpenBatch
	for range 3 {
		r := s.OpenBatch(1 << 10)
		if r == nil {
			s.Close()
			t.Fatal("OpenBatch made no region on a platform that keeps open batches")
		}
		r.Add(batchproc.Event{ID: "a", Payload: []byte(`{"a":1}`)})
		crashed = append(crashed, r)
	}
	if err := s.Close(); err != nil { // the regions never closed: a crash
		t.Fatal(err)
	}
	s, err = spool.Open(dir, spool.WithOpenBatches(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, r := range crashed {
		r.Close() // unmaps it: recovered, its file is gone
	}
	open, other := s.OpenBatch(1<<10), s.OpenBatch(1<<10)
	if open == nil || other == nil {
		t.Fatal("no region for the two batches being filled")
	}
	t.Cleanup(open.Close) // before the spool's Close: cleanups run last first
	t.Cleanup(other.Close)
	for range 5 {
		if s.OpenBatch(1<<10) != nil {
			t.Fatal("a third region with WithOpenBatches(2)")
		}
	}
	for range 3 { // 3 ids of 1000 bytes: more than the region's id area
		open.Add(batchproc.Event{ID: strings.Repeat("i", 1000), Payload: []byte(`{"a":1}`)})
	}
	st := s.Stats()
	if st.Recovered != 4 || st.OpenRecovered != 3 || st.OpenRegions != 2 || st.OpenUnguarded != 5 || st.OpenOverflows != 1 {
		t.Fatalf("spool Stats %+v: want 4 batches recovered, 3 of them open ones, 2 regions, 5 unguarded, 1 overflow", st)
	}
	return s
}

// RegionRecords returns a processor on a SyncNever spool, with hooks
// among its options, holding three batches in its sink, each appended
// with its region as its record: InRegions and RegionAppends are 3, as
// are Appended and Batches (checked). deliver lets the sends through and
// shuts the processor down; cleanup calls it if the test did not.
func RegionRecords(t *testing.T, hooks batchproc.Option) (p *batchproc.Processor, deliver func()) {
	t.Helper()
	g := batchproctest.NewGate(100)
	p, err := batchproc.New(&batchproctest.Recorder{Hook: g.Hook}, hooks,
		spool.WithSpool(t.TempDir(), spool.WithSync(spool.SyncNever)),
		batchproc.WithMaxBatchEvents(10), batchproc.WithMaxInFlight(4), batchproc.WithFlushInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	deliver = func() {
		once.Do(func() {
			g.Open()
			if err := p.Shutdown(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(deliver)
	for i := range 30 {
		if err := p.Add(t.Context(), batchproc.Event{Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		<-g.Started // cut, appended (a batch is in the spool before its first send), and being sent
	}
	if st := spool.Of(p).Stats(); st.Appended != 3 || st.Batches != 3 || st.InRegions != 3 || st.RegionAppends != 3 {
		t.Fatalf("spool Stats with three batches in flight: %+v; want 3 appended, all in their regions", st)
	}
	return p, deliver
}
