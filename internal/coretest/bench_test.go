package coretest_test

// Benchmarks of the enqueue path, with the peers in the same run:
//
//	go test -run '^$' -bench 'Add' -benchmem -count 6 . | tee new.txt
//	benchstat -col /impl new.txt
//
// impl=batchproc is Processor.Add; impl=seed-chan is the seed study's path (a
// buffered channel feeding a select loop that deep-copies at flush);
// impl=otel is OpenTelemetry Go's sdk/log BatchProcessor.OnEmit with a no-op
// exporter; impl=floor is a bare mutex-guarded append into one buffer (no
// batching, no sending): the floor any locking design stands on, there to
// calibrate the machine. Every impl gets the same 200-byte payload and a
// sink that discards.

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdklog "go.opentelemetry.io/otel/sdk/log"

	"github.com/batchproc/batchproc"
)

type enqueuer interface {
	add(e batchproc.Event) error
	close()
}

// floor is a mutex-guarded append into one 1 MiB buffer, emptied when full.
type floor struct {
	mu  sync.Mutex
	buf []byte
}

func (f *floor) add(e batchproc.Event) error {
	f.mu.Lock()
	if len(f.buf)+len(e.Payload) > cap(f.buf) {
		f.buf = f.buf[:0]
	}
	f.buf = append(f.buf, e.Payload...)
	f.mu.Unlock()
	return nil
}

func (f *floor) close() {}

type procImpl struct{ p *batchproc.Processor }

func (i procImpl) add(e batchproc.Event) error { return i.p.Add(context.Background(), e) }
func (i procImpl) close()                      { _ = i.p.Shutdown(context.Background()) }

// seedChan mirrors the seed's design 2 enqueue: Add sends the event on a
// buffered channel (selecting on a stop channel); one worker selects over the
// queue, a ticker and stop, and at flush deep-copies its buffer for an async
// send.
type seedChan struct {
	queue chan batchproc.Event
	stop  chan struct{}
	done  chan struct{}
}

var errSeedStopped = errors.New("stopped")

func newSeedChan() *seedChan {
	s := &seedChan{queue: make(chan batchproc.Event, 1000), stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *seedChan) add(e batchproc.Event) error {
	select {
	case s.queue <- e:
		return nil
	case <-s.stop:
		return errSeedStopped
	}
}

func (s *seedChan) run() {
	defer close(s.done)
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	buf := make([]batchproc.Event, 0, 1000)
	flush := func() {
		cp := make([]batchproc.Event, len(buf)) // the seed's deepCopy
		copy(cp, buf)
		buf = buf[:0]
		go func(events []batchproc.Event) { _ = len(events) }(cp) // async send to a sink that discards
	}
	for {
		select {
		case e := <-s.queue:
			buf = append(buf, e)
			if len(buf) >= 1000 {
				flush()
			}
		case <-ticker.C:
			flush()
		case <-s.stop:
			flush()
			return
		}
	}
}

func (s *seedChan) close() { close(s.stop); <-s.done }

// otelImpl is OpenTelemetry's log batch processor with a no-op exporter.
type otelImpl struct {
	bp  *sdklog.BatchProcessor
	rec *sdklog.Record
}

type nopExporter struct{}

func (nopExporter) Export(context.Context, []sdklog.Record) error { return nil }
func (nopExporter) Shutdown(context.Context) error                { return nil }
func (nopExporter) ForceFlush(context.Context) error              { return nil }

func newOtel(payload []byte) *otelImpl {
	var r sdklog.Record
	r.SetBody(attribute.ByteSliceValue(payload))
	return &otelImpl{bp: sdklog.NewBatchProcessor(nopExporter{}), rec: &r}
}

func (o *otelImpl) add(batchproc.Event) error { return o.bp.OnEmit(context.Background(), o.rec) }
func (o *otelImpl) close()                    { _ = o.bp.Shutdown(context.Background()) }

func payload200() []byte {
	p := []byte(`{"id":"0123456789abcdef","type":"page_view","ts":"2026-11-25T09:00:00Z","pad":"`)
	for len(p) < 198 {
		p = append(p, 'x')
	}
	return append(p, '"', '}')
}

func impls(b *testing.B, payload []byte) []struct {
	name string
	make func() enqueuer
} {
	return []struct {
		name string
		make func() enqueuer
	}{
		{"batchproc", func() enqueuer {
			p, err := batchproc.New(batchproc.SinkFunc(func(context.Context, *batchproc.Batch) error { return nil }))
			if err != nil {
				b.Fatal(err)
			}
			return procImpl{p}
		}},
		{"seed-chan", func() enqueuer { return newSeedChan() }},
		{"otel", func() enqueuer { return newOtel(payload) }},
		{"floor", func() enqueuer { return &floor{buf: make([]byte, 0, 1<<20)} }},
	}
}

// eachImpl runs loop as a sub-benchmark for every impl, with the same
// 200-byte event.
func eachImpl(b *testing.B, loop func(b *testing.B, q enqueuer, e batchproc.Event)) {
	payload := payload200()
	e := batchproc.Event{ID: "0123456789abcdef", Payload: payload}
	for _, impl := range impls(b, payload) {
		b.Run("impl="+impl.name, func(b *testing.B) {
			q := impl.make()
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			loop(b, q, e)
			b.StopTimer()
			q.close()
		})
	}
}

func BenchmarkAdd(b *testing.B) {
	eachImpl(b, func(b *testing.B, q enqueuer, e batchproc.Event) {
		for b.Loop() {
			if err := q.add(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAddParallel runs 8 goroutines per core.
func BenchmarkAddParallel(b *testing.B) {
	eachImpl(b, func(b *testing.B, q enqueuer, e batchproc.Event) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := q.add(e); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkAddBatchEvents is Add into batches of 1,000 (the default), 10,000
// and 50,000 events: a bigger batch must not make Add dearer. (Before
// batches doubled their buffers, a 10,000-event batch cost 600 ns per Add.)
func BenchmarkAddBatchEvents(b *testing.B) {
	e := batchproc.Event{ID: "0123456789abcdef", Payload: payload200()}
	for _, n := range []int{1000, 10000, 50000} {
		b.Run("events="+strconv.Itoa(n), func(b *testing.B) {
			p, err := batchproc.New(batchproc.SinkFunc(func(context.Context, *batchproc.Batch) error { return nil }),
				batchproc.WithMaxBatchEvents(n), batchproc.WithMaxBatchBytes(n*256))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(e.Payload)))
			ctx := context.Background()
			for b.Loop() {
				if err := p.Add(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			_ = p.Shutdown(ctx)
		})
	}
}
