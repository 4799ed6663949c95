package batchproctest

import (
	"context"
	"sync"

	"github.com/batchproc/batchproc"
)

// Gate holds sends until it is opened: a [Recorder] Hook for testing what
// happens while a sink is stuck (an outage, a full budget, a Shutdown whose
// ctx ends). Each send reports its batch's key on Started as it begins, so
// a test can wait until the batches it needs are being sent; with a
// journal, a batch is in the journal before its first send.
//
//	g := batchproctest.NewGate(16)
//	rec := &batchproctest.Recorder{Hook: g.Hook}
//	// ... Add, then:
//	key := <-g.Started
//	// ... check what holds while the send is stuck, then:
//	g.Open()
type Gate struct {
	// Started gets the key of each send as it begins. A send waits for
	// room in it until the gate is open (then it no longer reports when
	// Started is full) or its ctx ends.
	Started chan string

	open chan struct{}
	once sync.Once
}

// NewGate returns a closed gate whose Started channel holds n keys.
func NewGate(n int) *Gate {
	return &Gate{Started: make(chan string, n), open: make(chan struct{})}
}

// Hook is the Recorder Hook: it reports the send on Started, then waits
// until the gate is open (and returns nil) or ctx ends (and returns
// ctx.Err()).
func (g *Gate) Hook(ctx context.Context, b *batchproc.Batch, _ int) error {
	select {
	case g.Started <- b.Key():
	default:
		select {
		case g.Started <- b.Key():
		case <-g.open:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Open lets the held sends, and every later one, through. Calling it again
// does nothing.
func (g *Gate) Open() { g.once.Do(func() { close(g.open) }) }
