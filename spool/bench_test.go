package spool

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
)

// benchBatch is a batch of 1,000 events of 200 bytes (payload + newline).
func benchBatch(b testing.TB, key string) *batchproc.Batch {
	pad := strings.Repeat("x", 199-len(`{"i":0000,"p":""}`))
	evs := make([]batchproc.Event, 1000)
	for i := range evs {
		evs[i] = batchproc.Event{ID: fmt.Sprintf("id-%04d", i), Payload: fmt.Appendf(nil, `{"i":%04d,"p":%q}`, i, pad)}
	}
	bt, err := batchproc.NewBatch(key, evs...)
	if err != nil {
		b.Fatal(err)
	}
	if bt.Size() != 200_000 {
		b.Fatalf("batch of %d bytes, want 200,000", bt.Size())
	}
	return bt
}

var benchModes = []struct {
	name string
	mode SyncMode
}{
	{"batch", SyncBatch},
	{"interval=100ms", SyncInterval(100 * time.Millisecond)},
	{"never", SyncNever},
}

func reportFsync(b *testing.B, st Stats, ops int) {
	b.ReportMetric(float64(st.Fsyncs)/float64(ops), "fsyncs/op")
	b.ReportMetric(float64(st.FsyncLatency.Quantile(0.5).Microseconds()), "fsync-p50-µs")
	b.ReportMetric(float64(st.FsyncLatency.Quantile(0.99).Microseconds()), "fsync-p99-µs")
}

// Append of a 1,000 x 200-byte batch per sync mode, on the real disk
// (os.TempDir), each batch acked 16 Appends later so the spool reaches a
// steady state: segments fill, are acked and removed.
func BenchmarkAppend(b *testing.B) {
	for _, m := range benchModes {
		b.Run("sync="+m.name, func(b *testing.B) {
			s := mustOpen(b, b.TempDir(), WithSync(m.mode))
			defer s.Close()
			const window = 16
			ring := make([]*batchproc.Batch, window)
			for i := range ring {
				ring[i] = benchBatch(b, fmt.Sprintf("b%02d", i))
			}
			b.SetBytes(200_000)
			b.ReportAllocs()
			before := s.Stats()
			n := 0
			for b.Loop() {
				bt := ring[n%window]
				if n >= window {
					if err := s.Ack(bt.Key()); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Append(bt); err != nil {
					b.Fatal(err)
				}
				n++
			}
			st := s.Stats()
			st.Fsyncs -= before.Fsyncs
			reportFsync(b, st, n)
		})
	}
}

// Concurrent Appends with SyncBatch share fsyncs (group commit):
// fsyncs/op below 1.
func BenchmarkAppendParallel(b *testing.B) {
	s := mustOpen(b, b.TempDir(), WithSync(SyncBatch))
	defer s.Close()
	var gid atomic.Int64
	var ops atomic.Int64
	const parallelism, window = 4, 4
	rings := make([][]*batchproc.Batch, parallelism*runtime.GOMAXPROCS(0))
	for g := range rings {
		for i := range window {
			rings[g] = append(rings[g], benchBatch(b, fmt.Sprintf("g%d-%d", g, i)))
		}
	}
	b.SetBytes(200_000)
	b.SetParallelism(parallelism)
	before := s.Stats()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ring := rings[gid.Add(1)-1]
		n := 0
		for pb.Next() {
			bt := ring[n%window]
			if n >= window {
				s.Ack(bt.Key())
			}
			if err := s.Append(bt); err != nil {
				b.Error(err)
				return
			}
			n++
		}
		ops.Add(int64(n))
	})
	st := s.Stats()
	st.Fsyncs -= before.Fsyncs
	reportFsync(b, st, int(ops.Load()))
}

var (
	bigSpoolOnce sync.Once
	bigSpoolDir  string
	bigSpoolN    int
	bigSpoolErr  error
)

// writeBigSpool fills a spool with 1 GiB of batches (once per process; the
// directory is removed by TestMain).
func writeBigSpool(b *testing.B) (string, int) {
	bigSpoolOnce.Do(func() {
		bigSpoolDir, bigSpoolErr = os.MkdirTemp("", "spool-bench-1gib-")
		if bigSpoolErr != nil {
			return
		}
		cleanups = append(cleanups, func() { os.RemoveAll(bigSpoolDir) })
		s, err := Open(bigSpoolDir, WithSync(SyncNever), WithMaxBytes(DefaultMaxBytes+2*DefaultSegmentSize))
		if err != nil {
			bigSpoolErr = err
			return
		}
		tmpl := benchBatch(b, "tmpl")
		evs := make([]batchproc.Event, tmpl.Len())
		for i := range evs {
			evs[i] = tmpl.Event(i)
		}
		for s.Stats().Bytes < 1<<30 {
			bt, err := batchproc.NewBatch(fmt.Sprintf("big-%06d", bigSpoolN), evs...)
			if err != nil {
				bigSpoolErr = err
				return
			}
			if bigSpoolErr = s.Append(bt); bigSpoolErr != nil {
				return
			}
			bigSpoolN++
		}
		bigSpoolErr = s.Close()
	})
	if bigSpoolErr != nil {
		b.Fatal(bigSpoolErr)
	}
	return bigSpoolDir, bigSpoolN
}

var cleanups []func()

// Recovery of a 1 GiB spool (about 5,160 batches of 200 kB, 17 segments): Open
// (read and check every record, fsync each segment) plus Replay of every
// batch. The files are in the page cache (written in setup): this is the
// CPU cost of recovery; a cold read adds the disk's sequential read time.
func BenchmarkRecover1GiB(b *testing.B) {
	dir, n := writeBigSpool(b)
	b.SetBytes(1 << 30)
	var openTime, runs time.Duration
	cpu0 := cpuTime()
	for b.Loop() {
		start := time.Now()
		s, err := Open(dir, WithMaxBytes(DefaultMaxBytes+2*DefaultSegmentSize))
		if err != nil {
			b.Fatal(err)
		}
		openTime += time.Since(start)
		runs++
		got := 0
		if err := s.Replay(func(*batchproc.Batch) error { got++; return nil }); err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		if got != n {
			b.Fatalf("replayed %d batches, want %d", got, n)
		}
	}
	b.ReportMetric((openTime / runs).Seconds(), "open-s")
	// CPU time (user+sys) per recovery: on a loaded machine the wall time
	// above includes waiting for a core; this does not.
	b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(runs), "cpu-s")
}
