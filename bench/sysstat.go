package bench

import (
	"context"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"time"
)

// gcStats is a MemStats reading of the GC counters.
type gcStats struct {
	cycles uint32
	pause  time.Duration
}

func readGC() gcStats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return gcStats{cycles: m.NumGC, pause: time.Duration(m.PauseTotalNs)}
}

// heapPeak samples the heap's object bytes (live and not yet swept) every
// interval and keeps the highest. The process-wide figure includes an
// in-process receiving side; its share is small next to a design that
// queues events.
type heapPeak struct {
	mu       sync.Mutex
	peak     uint64 // heap object bytes, garbage not yet swept included
	peakLive uint64 // live heap bytes as of the last GC
	stop     chan struct{}
	done     chan struct{}
}

const (
	heapObjectsMetric = "/memory/classes/heap/objects:bytes"
	heapLiveMetric    = "/gc/heap/live:bytes"
)

func startHeapPeak(interval time.Duration) *heapPeak {
	h := &heapPeak{stop: make(chan struct{}), done: make(chan struct{})}
	go pprof.Do(context.Background(), pprof.Labels(labelSide, sideHarness), func(context.Context) {
		defer close(h.done)
		s := []metrics.Sample{{Name: heapObjectsMetric}, {Name: heapLiveMetric}}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			metrics.Read(s)
			h.mu.Lock()
			if s[0].Value.Kind() == metrics.KindUint64 {
				h.peak = max(h.peak, s[0].Value.Uint64())
			}
			if s[1].Value.Kind() == metrics.KindUint64 {
				h.peakLive = max(h.peakLive, s[1].Value.Uint64())
			}
			h.mu.Unlock()
			select {
			case <-t.C:
			case <-h.stop:
				return
			}
		}
	})
	return h
}

// Stop ends the sampling and returns the peaks.
func (h *heapPeak) Stop() (objects, live uint64) {
	close(h.stop)
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peak, h.peakLive
}
