package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime/pprof"
	"strings"
	"sync"
	"time"
)

func newTextLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// progress shows each design's run: a bar redrawn in place on a terminal,
// a plain line every few seconds otherwise (CI logs, pipes).
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	every time.Duration
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, tty: isTerminal(w), every: 10 * time.Second}
	if p.tty {
		p.every = 250 * time.Millisecond
	}
	return p
}

func (p *progress) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	fmt.Fprintln(p.w, s)
}

// start begins showing one run; the returned func ends it.
func (p *progress) start(tag, design string, d time.Duration, rate float64, c *loadCounters, ep endpoint) func() {
	stop, done := make(chan struct{}), make(chan struct{})
	began := time.Now()
	if !p.tty {
		p.line(fmt.Sprintf("%s %s: running for %v", tag, design, d))
	}
	go pprof.Do(context.Background(), pprof.Labels(labelSide, sideHarness), func(ctx context.Context) {
		defer close(done)
		t := time.NewTicker(p.every)
		defer t.Stop()
		var delivered int64
		var lastPoll time.Time
		for {
			select {
			case <-stop:
				if p.tty {
					p.mu.Lock()
					fmt.Fprint(p.w, "\r\x1b[K")
					p.mu.Unlock()
				}
				return
			case <-t.C:
			}
			if time.Since(lastPoll) >= time.Second {
				delivered, _ = ep.Delivered(ctx)
				lastPoll = time.Now()
			}
			el := time.Since(began)
			frac := min(1, el.Seconds()/max(d.Seconds(), 1e-9))
			offered := c.Offered.Load()
			status := fmt.Sprintf("%s %-28s %4.0fs/%.0fs offered %9d delivered %9d", tag, design,
				min(el, d).Seconds(), d.Seconds(), offered, delivered)
			if el > d {
				status += "  (shutting down)"
			}
			p.mu.Lock()
			if p.tty {
				const width = 24
				n := int(frac * width)
				fmt.Fprintf(p.w, "\r\x1b[K[%s%s] %s", strings.Repeat("#", n), strings.Repeat(".", width-n), status)
			} else {
				fmt.Fprintln(p.w, status)
			}
			p.mu.Unlock()
		}
	})
	return func() { close(stop); <-done }
}

// done prints a run's one-line summary.
func (p *progress) done(tag string, r *DesignResult) {
	s := fmt.Sprintf("%s %-28s delivered %d of %d offered, %.0f/min, lost %d, Add p99 %s",
		tag, r.Name, r.Delivered, r.Offered, r.DeliveredPerMin, r.Lost, time.Duration(r.AddLatencyNs.P99))
	if r.Target > 0 {
		s += fmt.Sprintf(", %.2f%% of target", r.DeliveredPctOfTarget)
	}
	if r.CPUSeconds > 0 {
		s += fmt.Sprintf(", CPU %.2fs/M events", r.CPUSecondsPerMillion)
	}
	if r.Load != LoadClosed || r.LoaderLatencyMs != 400 {
		s += fmt.Sprintf(" [%s, loader +%gms]", r.Load, r.LoaderLatencyMs)
	}
	p.line(s)
}
