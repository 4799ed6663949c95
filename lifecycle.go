package batchproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// Shutdown stops accepting events (Add, TryAdd and Flush return [ErrClosed],
// and Adds waiting for budget return it too), sends every event already
// added, and waits for the sends to finish. It returns nil once all were
// delivered, and a [*DeliveryError] (how many events failed, and the first
// reason) if some were handed to the failure callback instead.
//
// If ctx ends first, the sends under way are cancelled, retries stop, every
// batch not delivered goes to the failure callback with a [ShutdownError],
// and Shutdown returns an error wrapping both ctx's error and the
// [*DeliveryError], after the processor's goroutines have exited (which
// takes as long as the sink needs to notice its cancelled context). Shutdown
// is idempotent and safe to call concurrently; every call waits as
// described. A processor cannot be restarted.
//
// With a journal, what a previous processor left there is part of the
// drain: Shutdown waits for its replay and its sends too. If ctx ends
// first, the batches not delivered stay in the journal for the next start,
// and a [*LeftInJournalError] counts them: those the processor held, and
// those the replay had not read yet if the journal can count them
// ([JournalBacklog]; the spool does).
//
// Called from a callback ([Sink.Send] or the [WithOnFailure] function),
// Shutdown cannot wait: the drain waits for that very callback. It then
// begins the shutdown (nothing more is accepted, the drain goes on) and
// returns [ErrInCallback] at once; another goroutine may call Shutdown to
// wait for the drain.
func (p *Processor) Shutdown(ctx context.Context) error {
	inCallback := p.callbacks.current()
	p.shutdownOnce.Do(func() {
		p.closed.Store(true)
		close(p.stopLinger)
		<-p.lingerDone
	})
	if p.jr != nil {
		// What a previous processor left in the journal is part of the
		// drain: the replay goes on until it ends, or a caller's ctx does
		// (the first to end stops it for every caller), when what was not
		// replayed stays in the journal. From a callback it is stopped at
		// once: the replay may be waiting for budget that callback's batch
		// holds.
		if !inCallback {
			select {
			case <-p.jr.replayDone:
			case <-ctx.Done():
			}
		}
		p.jr.stopOnce.Do(func() { close(p.jr.stopReplay) })
		<-p.jr.replayDone
	}
	p.drainOnce.Do(func() {
		st := p.Stats()
		p.info.LogAttrs(ctx, slog.LevelInfo, "stopping, waiting for remaining events to be sent",
			slog.Uint64("pending", st.Pending), slog.Int("in_flight", st.InFlight))
		// From here on, the drain's watcher collects what fails: batches
		// already in flight, and those cut now.
		p.drain = p.completion.watchRest()
		p.cutAll()
		close(p.closing)
	})
	if inCallback {
		return fmt.Errorf("batchproc: Shutdown: %w", ErrInCallback)
	}
	select {
	case <-p.done:
		return errors.Join(p.drainErr(), p.closeJournal())
	case <-ctx.Done():
		p.abort(ctx.Err())
		<-p.done // senders exit promptly once their sends see the cancellation
		var left error
		if p.jr != nil {
			l := &LeftInJournalError{Batches: int(p.jr.leftBatch.Load()), Events: int(p.jr.leftEvents.Load())}
			if b, ok := p.jr.j.(JournalBacklog); ok {
				l.Unread = b.Unreplayed()
			}
			if l.Batches > 0 || l.Unread > 0 {
				left = l
			}
		}
		jerr := p.closeJournal()
		if err := errors.Join(p.drainErr(), left, jerr); err != nil {
			return fmt.Errorf("batchproc: Shutdown: %w: %w", ctx.Err(), err)
		}
		return ctx.Err()
	}
}

// closeJournal closes the journal once, after the processor's goroutines
// exited.
func (p *Processor) closeJournal() error {
	if p.jr == nil {
		return nil
	}
	p.jr.closeOnce.Do(func() {
		if err := p.jr.j.Close(); err != nil {
			p.jr.closeErr = fmt.Errorf("batchproc: closing the journal: %w", err)
		}
	})
	return p.jr.closeErr
}

// drainErr returns the failures of the batches the drain covered; call it
// after p.done closed.
func (p *Processor) drainErr() error {
	out := p.completion.result(p.drain)
	return out.err()
}

// callbackGoroutines knows which goroutines run user callbacks: the
// senders, on which Sink.Send and the failure callback run. Go has no
// goroutine-local storage, so they are told apart by goroutine id, read
// from runtime.Stack's header. That formats the whole stack, file and line
// of every frame, under the runtime's print lock: 11 to 38 µs at 4 to 30
// frames (BenchmarkCallbackCheck), and concurrent calls queue on the lock.
// It is paid only where a call from a callback would deadlock (Shutdown,
// Flush, an Add about to wait for budget, a cut at a full append gate),
// never on Add's fast path; but a saturated processor has many Adds about
// to wait, and there it took 18% of batchbench's CPU at 0 ms. So a cheaper
// test comes first: the function the calling goroutine started in (the
// outermost frame of runtime.Callers, no formatting, no lock). Callback
// goroutines start only in the processor's own goroutine functions, which
// enter records; a goroutine that started anywhere else (an HTTP handler's,
// main) is no callback goroutine, and only one that started in one of them
// reads its id.
type callbackGoroutines struct {
	mu  sync.Mutex
	ids map[uint64]struct{}
	n   atomic.Int32 // len(ids)
}

// callbackStarts holds the entry PCs of the functions callback goroutines
// started in, for every processor (they are the same few functions):
// copy on write, read without a lock.
var callbackStarts struct {
	mu  sync.Mutex
	pcs atomic.Pointer[[]uintptr]
}

// enter registers the calling goroutine and returns its id.
func (c *callbackGoroutines) enter() uint64 {
	id := goid()
	if start := goroutineStart(); !startsCallbacks(start) {
		callbackStarts.mu.Lock()
		if !startsCallbacks(start) {
			var pcs []uintptr
			if old := callbackStarts.pcs.Load(); old != nil {
				pcs = *old
			}
			pcs = append(slices.Clip(pcs), start) // a new array: readers keep the old one
			callbackStarts.pcs.Store(&pcs)
		}
		callbackStarts.mu.Unlock()
	}
	c.mu.Lock()
	if c.ids == nil {
		c.ids = make(map[uint64]struct{})
	}
	c.ids[id] = struct{}{}
	c.n.Store(int32(len(c.ids)))
	c.mu.Unlock()
	return id
}

func (c *callbackGoroutines) exit(id uint64) {
	c.mu.Lock()
	delete(c.ids, id)
	c.n.Store(int32(len(c.ids)))
	c.mu.Unlock()
}

// current reports whether the calling goroutine runs callbacks.
func (c *callbackGoroutines) current() bool {
	if c.n.Load() == 0 || !startsCallbacks(goroutineStart()) {
		return false
	}
	id := goid()
	c.mu.Lock()
	_, ok := c.ids[id]
	c.mu.Unlock()
	return ok
}

// startsCallbacks reports whether a callback goroutine started in the
// function at pc.
func startsCallbacks(pc uintptr) bool {
	if pcs := callbackStarts.pcs.Load(); pcs != nil {
		return slices.Contains(*pcs, pc)
	}
	return false
}

// goroutineStart returns the entry PC of the function the calling
// goroutine started in: the outermost frame below runtime.goexit. (With
// inlining, FuncForPC's Entry is that of the outermost function, the one
// the frame's code belongs to.)
func goroutineStart() uintptr {
	var buf [64]uintptr
	pcs := buf[:]
	for {
		n := runtime.Callers(0, pcs)
		if n < len(pcs) {
			pcs = pcs[:n]
			break
		}
		pcs = make([]uintptr, 2*len(pcs)) // a deep stack: rare, so it may allocate
	}
	if len(pcs) < 2 {
		return 0
	}
	f := runtime.FuncForPC(pcs[len(pcs)-2] - 1) // a return address: the call is just before it
	if f == nil {
		return 0
	}
	return f.Entry()
}

// goid returns the calling goroutine's id, from the first line of its stack
// trace: "goroutine 123 [running]:".
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	const prefix = "goroutine "
	if len(b) < len(prefix) {
		return 0
	}
	var id uint64
	for _, c := range b[len(prefix):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}
