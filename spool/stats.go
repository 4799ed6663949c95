package spool

import (
	"time"
)

// Stats is a snapshot of a spool's state and counters. The counters start
// at zero at Open. They satisfy
//
//	Recovered + Appended == Acked + Dropped + Batches
//
// where an Ack of a key not in the spool counts nothing.
type Stats struct {
	Bytes    int64 // total size of the spool's files, the spare's included: the disk budget in use
	Batches  int   // batches in the spool: appended or recovered, not acked
	Segments int   // segment files holding records (not the spare, a fully acked one kept for reuse)
	// InRegions counts the batches in the spool (in Batches) whose record
	// is the region they were filled in, under SyncNever: no segment
	// record was written for them (see WithOpenBatches). They do not count
	// in Bytes.
	InRegions int

	Recovered uint64 // batches found at Open, not acked
	Appended  uint64 // Appends that returned nil
	Acked     uint64 // batches acked
	Dropped   uint64 // batches dropped to make room (WithDropOldest)
	Replayed  uint64 // batches handed to a Replay callback that returned nil
	Full      uint64 // Appends refused with ErrFull
	// RegionAppends counts the Appends (in Appended) that kept the batch
	// in its region rather than writing a segment record (InRegions).
	RegionAppends uint64

	// Recovery at Open.
	TornBytes    int64  // bytes of torn tails trimmed (writes a crash cut short)
	CorruptFiles int    // segment files whose middle was corrupt, and region files whose batch did not decode; each was set aside as NAME.corrupt
	LostBatches  uint64 // batches in those files' unreadable parts (found by a resynchronising scan; a region's one batch)
	LostBytes    int64  // bytes of those unreadable parts
	// OpenRecovered counts the batches rebuilt at Open from the regions
	// of batches that were being filled when the last process died
	// (included in Recovered).
	OpenRecovered uint64

	// Open batches (WithOpenBatches).
	OpenRegions   int    // region files mapped
	OpenUnguarded uint64 // batches that found no region free: not kept until cut and appended
	OpenOverflows uint64 // batches whose ids filled their region: their later events were not kept

	Fsyncs       uint64    // fsyncs of segment files
	FsyncLatency Histogram // their durations

	// Err is the sticky error (a *FailedError) once a write or fsync
	// failed, nil before.
	Err error
}

// FsyncBuckets are the upper bounds of [Histogram]'s buckets: from 50µs to
// 5s, in the 1-2.5-5 steps Prometheus uses for latencies.
var FsyncBuckets = []time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
}

// Histogram is a fixed-bucket latency histogram, shaped for a Prometheus
// histogram or an OpenTelemetry explicit-bucket histogram: Counts[i] counts
// the durations d with FsyncBuckets[i-1] < d <= FsyncBuckets[i]; the last
// count (index len(FsyncBuckets)) is the +Inf bucket. Counts are not
// cumulative.
type Histogram struct {
	Counts [17]uint64
	Count  uint64
	Sum    time.Duration
	Max    time.Duration
}

func (h *Histogram) observe(d time.Duration) {
	i := 0
	for i < len(FsyncBuckets) && d > FsyncBuckets[i] {
		i++
	}
	h.Counts[i]++
	h.Count++
	h.Sum += d
	h.Max = max(h.Max, d)
}

// Quantile estimates the q-quantile (0 <= q <= 1) by linear interpolation
// within its bucket, as Prometheus' histogram_quantile does; the +Inf
// bucket reports Max. It returns 0 for an empty histogram.
func (h Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	rank := q * float64(h.Count)
	var cum float64
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= rank {
			if i == len(FsyncBuckets) {
				return h.Max
			}
			lo := time.Duration(0)
			if i > 0 {
				lo = FsyncBuckets[i-1]
			}
			hi := min(FsyncBuckets[i], h.Max)
			if hi < lo {
				hi = lo
			}
			frac := (rank - cum) / float64(c)
			return lo + time.Duration(frac*float64(hi-lo))
		}
		cum += float64(c)
	}
	return h.Max
}
