package batchproc

import (
	"context"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// A linger does not only send the stream back to one shard: it clears the
// "busy" flag too, or the next contended Add would spread a thin stream
// over per-P shards again (18-33 batches where 10 were due).
func TestLingerClearsBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := New(SinkFunc(func(context.Context, *Batch) error { return nil }), WithMaxBatchEvents(10))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Shutdown(context.Background())
		for range 10 { // a full batch at once: the stream is busy
			_ = p.Add(t.Context(), Event{Payload: []byte("x")})
		}
		p.perP.Store(true) // as the next contended Add would do
		if !p.busy.Load() {
			t.Fatal("a batch filled at once did not mark the stream busy")
		}
		_ = p.Add(t.Context(), Event{Payload: []byte("x")})
		time.Sleep(DefaultFlushInterval) // it lingers out
		synctest.Wait()
		if p.busy.Load() || p.perP.Load() {
			t.Fatalf("after a linger: busy %v, per-P %v; want both false", p.busy.Load(), p.perP.Load())
		}
	})
}

// Linger deadlines are monotonic: no code of the package reads wall-clock
// nanoseconds (UnixNano, Unix, UnixMilli), which step with the system clock.
// The processor's own clock is Processor.now, time.Since of its start.
func TestNoWallClockDeadlines(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	fset := gotoken.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, f, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				switch sel.Sel.Name {
				case "UnixNano", "UnixMilli", "UnixMicro", "Unix":
					t.Errorf("%s: wall-clock %s: deadlines must use the monotonic Processor.now", fset.Position(sel.Pos()), sel.Sel.Name)
				}
			}
			return true
		})
	}
}

func TestBudget(t *testing.T) {
	m := newBudget(1000, 100)
	if got := m.reserve(10); got != 100 {
		t.Fatalf("reserve took %d, want a chunk of 100", got)
	}
	if got := m.reserve(950); got != 0 {
		t.Fatalf("reserve took %d past the limit", got)
	}
	if got := m.reserve(900); got != 900 {
		t.Fatalf("reserve took %d, want exactly the cost when no chunk fits", got)
	}
	// Two waiters: the first gets its cost exactly, the last up to a chunk.
	a, b := m.enqueue(30), m.enqueue(20)
	if !m.grant() {
		t.Fatal("grant with no free budget left nobody waiting")
	}
	if m.release(60) {
		t.Fatal("waiters left after 60 bytes freed for 50 needed")
	}
	<-a.ready
	<-b.ready
	if a.granted != 30 || b.granted != 30 {
		t.Fatalf("granted %d and %d; want 30 exactly, then the rest (30) to the last", a.granted, b.granted)
	}
	if got := m.reserve(1); got != 0 || m.used.Load() != 1000 {
		t.Fatalf("reserve %d, used %d", got, m.used.Load())
	}
	// A waiter that gives up returns what it was granted.
	c := m.enqueue(10)
	m.release(10)
	<-c.ready
	if m.leave(c) || m.used.Load() != 990 {
		t.Fatalf("after a granted waiter left: used %d, want 990", m.used.Load())
	}
	// reserve defers to waiters.
	d := m.enqueue(500)
	if got := m.reserve(5); got != 0 {
		t.Fatalf("reserve took %d while an Add waits", got)
	}
	if m.leave(d) {
		t.Fatal("still waiting after the only waiter left")
	}
}

// Flush returns only after the budget of what it covered is released, also
// when a batch completed but its sender has not yet released it (the window
// testHookBeforeRelease holds open). Before, Flush saw every batch done and
// returned at once with that batch's budget still counted (the flake of
// TestFlushReturnsAfterRelease in CI); or another sender's release, of a
// later batch, woke it.
func TestFlushWaitsForAReleaseUnderWay(t *testing.T) {
	for _, tc := range []struct {
		name string
		open int // events Flush finds in an open batch: a later batch it cuts
	}{{"all done before Flush", 0}, {"a later batch released first", 5}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				inWindow, leave := make(chan struct{}), make(chan struct{})
				var once bool
				testHookBeforeRelease = func() {
					if !once { // the first batch's sender only
						once = true
						close(inWindow)
						<-leave
					}
				}
				defer func() { testHookBeforeRelease = nil }()
				p, err := New(SinkFunc(func(context.Context, *Batch) error { return nil }), WithMaxBatchEvents(10))
				if err != nil {
					t.Fatal(err)
				}
				defer p.Shutdown(context.Background())
				for range 10 + tc.open { // the tenth cuts the first batch
					if err := p.Add(t.Context(), Event{Payload: []byte("x")}); err != nil {
						t.Fatal(err)
					}
				}
				<-inWindow // delivered and done; its budget not yet released
				flushed := make(chan int64)
				go func() {
					if err := p.Flush(context.Background()); err != nil {
						t.Error(err)
					}
					flushed <- p.Stats().BufferedBytes
				}()
				synctest.Wait()
				select {
				case b := <-flushed:
					close(leave)
					t.Fatalf("Flush returned while the first batch's release was under way (BufferedBytes %d)", b)
				default:
				}
				close(leave)
				if b := <-flushed; b != 0 {
					t.Fatalf("BufferedBytes %d right after Flush, want 0", b)
				}
			})
		})
	}
}

// A batch that fills, in whatever buffer the pool handed it, is not copied
// again at its cut: growFor sizes a regrown buffer toward the projected full
// batch, not to double a recycled buffer of odd size. A partial batch (a
// linger, a cut for budget) leaves buffers of any size in the pool; doubling
// a 140 KB one to 280 KB made compact copy the full 200 KB batch out of it,
// half the cuts of a saturated spooled processor (a tenth of its CPU).
func TestFullBatchIsNotCopiedAtItsCut(t *testing.T) {
	p := &Processor{cfg: config{maxEvents: 1000, maxBytes: DefaultMaxBatchBytes}}
	e := Event{ID: "0123456789abcdef", Payload: make([]byte, 199)}
	for _, start := range []int{0, 4 << 10, 60 << 10, 100 << 10, 140 << 10, 180 << 10, 200 << 10, 225 << 10} {
		b := &Batch{buf: make([]byte, 0, start)}
		grew := 0
		for range p.cfg.maxEvents {
			before := cap(b.buf)
			p.growFor(b, len(e.Payload)+1)
			if cap(b.buf) != before {
				grew++
			}
			b.append(e)
		}
		buf, size := &b.buf[0], cap(b.buf)
		if compact(b); &b.buf[0] != buf {
			t.Errorf("from a %d-byte buffer: the full %d-byte batch was copied at its cut (its buffer grew to %d)", start, len(b.buf), size)
		}
		if grew > 3 {
			t.Errorf("from a %d-byte buffer: the buffer grew %d times, want at most 3", start, grew)
		}
	}
}
