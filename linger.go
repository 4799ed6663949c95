package batchproc

import (
	"math"
	"time"
)

// now is the processor's clock: monotonic nanoseconds since New. Linger
// deadlines are kept in it, never in wall-clock time, so a step of the
// system clock (NTP, a VM resumed) neither delays nor hastens a batch.
func (p *Processor) now() int64 { return int64(time.Since(p.epoch)) }

// deadline returns when a batch started now must be sent: now plus the
// flush interval, saturating, so that an interval of math.MaxInt64 (no
// linger to speak of) means "never", not a deadline in the past.
func (p *Processor) deadline() int64 {
	now, d := p.now(), int64(p.cfg.interval)
	if now > math.MaxInt64-d {
		return math.MaxInt64
	}
	return now + d
}

// lingerLoop sends each batch once it is the flush interval old. One timer,
// re-armed for the earliest deadline whenever a batch gets its first event
// (wake).
func (p *Processor) lingerLoop() {
	defer close(p.lingerDone)
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-p.wake:
		case <-t.C:
		case <-p.stopLinger:
			return
		}
		// Only due shards are locked, so the scan does not get in the way
		// of Adds (nor count as contention).
		now := p.now()
		var next int64
		lingered := false
		for i := range p.shards {
			s := &p.shards[i]
			due := s.due.Load()
			if due == 0 {
				continue
			}
			if due <= now {
				s.mu.Lock()
				if s.b != nil && len(s.b.ends) > 0 && s.due.Load() <= now {
					p.cut(s)
					lingered = true
				}
				due = s.due.Load() // a new batch may have started meanwhile
				s.mu.Unlock()
				if due == 0 {
					continue
				}
			}
			if next == 0 || due < next {
				next = due
			}
		}
		if next != 0 && next != math.MaxInt64 {
			t.Reset(time.Duration(next - now))
		}
		// A batch that had to linger means the stream is too thin to fill
		// its batches in time: it is not busy, and per-P shards would split
		// it into more batches than it needs. Go back to one shard; the
		// stream counts as busy again only when a batch fills quickly.
		if lingered && p.adaptive {
			p.busy.Store(false)
			p.perP.Store(false)
		}
	}
}
