package spool_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/spool"
)

// nullSink accepts every batch.
type nullSink struct{}

func (nullSink) Send(context.Context, *batchproc.Batch) error { return nil }

var benchPayload = []byte(`{"id":"0000000000","type":"bench","ts":"2026-12-01T10:00:00Z","p":"` + strings.Repeat("x", 199-len(`{"id":"0000000000","type":"bench","ts":"2026-12-01T10:00:00Z","p":""}`)) + `"}`)

// processorModes are the processor's configurations compared in one run:
// without a journal, with a spool in each sync mode, and with a SyncNever
// spool that does not keep the batches being filled (the cost of
// WithOpenBatches).
var processorModes = []struct {
	name string
	mode spool.SyncMode
	on   bool
	opts []spool.Option
}{
	{"memory", 0, false, nil},
	{"spool=batch", spool.SyncBatch, true, nil},
	{"spool=interval", spool.SyncInterval(100 * time.Millisecond), true, nil},
	{"spool=never", spool.SyncNever, true, nil},
	{"spool=never,open=0", spool.SyncNever, true, []spool.Option{spool.WithOpenBatches(0)}},
}

// newBenchProcessor returns a processor on nullSink, with a spool in mode
// if on (the spool is returned for its Stats).
func newBenchProcessor(b *testing.B, on bool, mode spool.SyncMode, sopts ...spool.Option) (*batchproc.Processor, *spool.Spool) {
	var s *spool.Spool
	var opts []batchproc.Option
	if on {
		var err error
		if s, err = spool.Open(b.TempDir(), append([]spool.Option{spool.WithSync(mode)}, sopts...)...); err != nil {
			b.Fatal(err)
		}
		opts = append(opts, batchproc.WithJournal(func() (batchproc.Journal, error) { return s, nil }))
	}
	p, err := batchproc.New(nullSink{}, opts...)
	if err != nil {
		b.Fatal(err)
	}
	return p, s
}

// BenchmarkProcessorAdd is Add of 200-byte events, one goroutine, into a
// processor without a journal and with a spool per sync mode, against a
// sink that accepts at once: the issue's "Add with the spool within 2x of
// Add without it". The spool works per cut batch, off the Add path, so
// what differs is the journal's share of the run (events/s is b.N over the
// wall time, the flush included), and the Add path itself not at all.
func BenchmarkProcessorAdd(b *testing.B) {
	for _, m := range processorModes {
		b.Run(m.name, func(b *testing.B) {
			p, s := newBenchProcessor(b, m.on, m.mode, m.opts...)
			e := batchproc.Event{Payload: benchPayload}
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(len(benchPayload)))
			start := time.Now()
			for b.Loop() {
				if err := p.Add(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			if s != nil {
				st := s.Stats()
				b.ReportMetric(float64(st.FsyncLatency.Quantile(0.5).Microseconds()), "fsync-p50-µs")
				b.ReportMetric(float64(st.FsyncLatency.Quantile(0.99).Microseconds()), "fsync-p99-µs")
				b.ReportMetric(float64(st.OpenRegions), "regions")
				b.ReportMetric(float64(st.OpenUnguarded), "unguarded")
				b.ReportMetric(float64(st.RegionAppends), "in-region")
			}
			if err := p.Shutdown(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkProcessorSaturate is 8 goroutines adding as fast as they can
// (RunParallel): the throughput per sync mode, with the fsyncs it took.
func BenchmarkProcessorSaturate(b *testing.B) {
	for _, m := range processorModes {
		b.Run(m.name, func(b *testing.B) {
			p, s := newBenchProcessor(b, m.on, m.mode, m.opts...)
			ctx := context.Background()
			b.SetParallelism(4)
			b.SetBytes(int64(len(benchPayload)))
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				e := batchproc.Event{Payload: benchPayload}
				for pb.Next() {
					if err := p.Add(ctx, e); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			if s != nil {
				st := s.Stats()
				b.ReportMetric(float64(st.Fsyncs), "fsyncs")
				ps := p.Stats()
				b.ReportMetric(float64(ps.Delivered)/float64(ps.Batches), "events/batch")
				b.ReportMetric(float64(st.FsyncLatency.Quantile(0.5).Microseconds()), "fsync-p50-µs")
				b.ReportMetric(float64(st.FsyncLatency.Quantile(0.99).Microseconds()), "fsync-p99-µs")
			}
			if err := p.Shutdown(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkProcessorAddPaced is Add at a rate the disk sustains, 200,000
// events/s (bursts of 2,000 every 10 ms, one goroutine), against a sink
// that accepts at once: what the spool costs a service that does not
// saturate it. It reports the process's CPU time per event (user + system:
// Add, the senders, the spool's writes and fsyncs, the GC, the ticker) and
// the wall time of the bursts' Adds per event, without a journal and with
// a spool per sync mode. One op is one event.
func BenchmarkProcessorAddPaced(b *testing.B) {
	const burst, tick = 2000, 10 * time.Millisecond
	for _, m := range processorModes {
		b.Run(m.name, func(b *testing.B) {
			p, _ := newBenchProcessor(b, m.on, m.mode, m.opts...)
			e := batchproc.Event{Payload: benchPayload}
			ctx := context.Background()
			b.SetBytes(int64(len(benchPayload)))
			ticker := time.NewTicker(tick)
			defer ticker.Stop()
			var adding time.Duration
			var t0 time.Time
			cpu0 := spool.CPUTime()
			n := 0
			for b.Loop() {
				if n%burst == 0 {
					if n > 0 {
						adding += time.Since(t0)
					}
					<-ticker.C
					t0 = time.Now()
				}
				if err := p.Add(ctx, e); err != nil {
					b.Fatal(err)
				}
				n++
			}
			adding += time.Since(t0)
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(spool.CPUTime()-cpu0)/float64(n), "cpu-ns/event")
			b.ReportMetric(float64(adding)/float64(n), "add-ns/event")
			if err := p.Shutdown(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}
