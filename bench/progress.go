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
	// eta is the time the study still needed when this run began, this run
	// included (0: not known).
	eta time.Duration
}

// eta estimates the time a study has left: its remaining runs, each taking
// as long as the finished ones did on average (before any: the load
// duration plus a few seconds of shutdown and profile analysis).
type eta struct {
	perRun   time.Duration
	runs     int
	finished int
	spent    time.Duration
}

func newETA(d time.Duration, runs int) *eta { return &eta{perRun: d + 3*time.Second, runs: runs} }

// remaining is the estimate before run i (0-based) starts.
func (e *eta) remaining(i int) time.Duration {
	per := e.perRun
	if e.finished > 0 {
		per = e.spent / time.Duration(e.finished)
	}
	return per * time.Duration(e.runs-i)
}

func (e *eta) done(took time.Duration) {
	e.finished++
	e.spent += took
}

// roundETA rounds an estimate for display: whole seconds under a minute,
// else 10 s steps.
func roundETA(d time.Duration) time.Duration {
	if d < time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(10 * time.Second)
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
	studyETA := p.eta
	if !p.tty {
		msg := fmt.Sprintf("%s %s: running for %v", tag, design, d)
		if p.eta > 0 {
			msg += fmt.Sprintf(" (study ETA %v)", roundETA(p.eta))
		}
		p.line(msg)
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
			if studyETA > 0 {
				status += fmt.Sprintf("  study ETA %v", roundETA(max(studyETA-el, 0)))
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

// done prints a run's one-line summary (the CPU figure comes later, once
// the calibration is applied).
func (p *progress) done(tag string, r *DesignResult) {
	if r.Name == Calibration && r.CPUMethod == CPUCallgrind {
		per := 0.0
		if r.Requests > 0 {
			per = float64(r.Instructions) / float64(r.Requests)
		}
		p.line(fmt.Sprintf("%s %-28s %s requests, %.0f instructions per request counted (delivers nothing, by design)", tag, r.Name, commas(r.Requests), per))
		return
	}
	if r.Name == Calibration {
		per := 0.0
		if r.Requests > 0 {
			per = r.ProcessCPUSeconds / float64(r.Requests) * 1e6
		}
		p.line(fmt.Sprintf("%s %-28s %s requests, the child's CPU %.1f µs per request (delivers nothing, by design)", tag, r.Name, commas(r.Requests), per))
		return
	}
	s := fmt.Sprintf("%s %-28s %s/min", tag, r.Name, commas(int64(r.DeliveredPerMin+0.5)))
	if r.Target > 0 {
		s += fmt.Sprintf(" (%.1f%%)", r.DeliveredPctOfTarget)
	}
	if r.Lost != 0 {
		s += fmt.Sprintf(", lost %s", commas(r.Lost))
	}
	if r.CPUMethod == CPUCallgrind && r.Offered > 0 {
		s += fmt.Sprintf(", %.0f instructions per event counted", float64(r.Instructions)/float64(r.Offered))
	}
	s += ", Add p99 " + dur(r.AddLatencyNs.P99)
	if r.E2ELatencyMs.P99 > 0 {
		s += ", e2e p99 " + dur(int64(r.E2ELatencyMs.P99*1e6))
	}
	if r.Load != LoadClosed || r.LoaderLatencyMs != 400 {
		s += fmt.Sprintf(" [%s, loader +%gms]", r.Load, r.LoaderLatencyMs)
	}
	p.line(s)
}
