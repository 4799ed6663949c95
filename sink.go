package batchproc

import (
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"time"
)

// A Sink delivers batches to their destination: the Batch Loader over HTTP
// (package httpsink), Kafka (package kafkasink), a file ([WriterSink]).
//
// # Concurrency
//
// The processor calls Send from several goroutines at once. With async
// dispatch (the default) as many as its concurrency limit allows: it starts
// at 4 and adapts to the receiver (see [WithAdaptiveInFlight]), bounded by
// the memory budget; [WithMaxInFlight](n) fixes it at n. At most n with
// [WithWorkerPool](n) (one per worker), and one at a time with
// [WithOrdered]. Implementations must be safe for that.
//
// # Retention
//
// Send must not keep b, nor any slice obtained from it, after it returns:
// the processor reuses the batch's memory for later events.
//
// # Context
//
// ctx is cancelled when [Processor.Shutdown]'s context ends before the drain
// is over; Send must then return promptly. Per-request timeouts are the
// sink's own business.
//
// # Errors and retries
//
// The processor retries a failed Send by its [RetryPolicy], with the same
// batch and so the same [Batch.Key]. A sink retries nothing itself; it
// classifies: return [Permanent](err) for a failure that will fail again the
// same way (a rejected batch), [RetryAfter](err, d) when the receiver said
// when to come back, and a plain error otherwise; wrap it in [Partial] when
// the batch's first events were delivered before the failure.
//
// # Calling the processor from Send
//
// Send runs on one of the processor's goroutines, as the failure callback
// does, and the same rules hold (franz-go states its callback rules the same
// way): Send may call Add, TryAdd and Stats, but Add there never waits (it
// returns [ErrFull] when the budget is full); Flush returns [ErrInCallback]
// at once, and Shutdown begins the shutdown and returns [ErrInCallback] at
// once, since both would wait for this very Send.
type Sink interface {
	Send(ctx context.Context, b *Batch) error
}

// ReportCapacity tells the processor that called Send with ctx that its
// endpoint serves at most n sends at once, as the endpoint says (httpsink
// reads the loader's Ingest-Slots header); n <= 0 withdraws an earlier
// count. A sink calls it from Send, with Send's ctx (or one derived from
// it), on every response that carries the count; a repeat costs an atomic
// load. With the adaptive send limit (the default async dispatch), slow
// start stops multiplying the limit at n instead of stepping past the
// endpoint's slots at once; growth past n is then by probes, as past a
// limit that drew 429s, since an endpoint counts only the sends it is
// working on, not those whose answer is still on the wire. The limit may
// still be cut below n by latency and failures, and processors sharing an
// endpoint each take the whole count: it is a ceiling for slow start, not
// a share. A fixed limit ([WithMaxInFlight]), worker-pool and ordered
// dispatch ignore it, as it is ignored for a ctx the processor did not
// give.
func ReportCapacity(ctx context.Context, n int) {
	if l, ok := ctx.Value(capacityKey{}).(*adaptiveLimit); ok {
		l.reportCapacity(n)
	}
}

// capacityKey is the context key under which async dispatch's Send context
// carries the limiter, for ReportCapacity.
type capacityKey struct{}

// ReportServerTime tells the processor that called Send with ctx how long
// the endpoint held this send's request: from having received it to
// answering it, the queueing and the work that are the endpoint's
// (httpsink reads the loader's Server-Timing header, metric "ingest",
// protocol.md). A Send that makes several requests reports each, and their
// times add up. A sink calls it from Send, with Send's ctx (or one derived
// from it), before Send returns; a negative d is ignored.
//
// With the adaptive send limit (the default async dispatch), a round trip
// that grows while the endpoint's own time does not is no queue at the
// endpoint but elsewhere: a busy client host, the network. The limit then
// judges each delivered send by the endpoint's time plus the lowest rest
// of a round trip it has seen, so it is cut when the endpoint queues, and
// not when the client's own CPU or the path to the endpoint is what takes
// longer (sends in flight stay bounded by the budget). Sends whose
// endpoint tells nothing are judged by their whole round trip. A fixed
// limit ([WithMaxInFlight]), worker-pool and ordered dispatch ignore it.
func ReportServerTime(ctx context.Context, d time.Duration) {
	if n, ok := ctx.Value(serverTimeKey{}).(*sendNote); ok && d >= 0 {
		n.served.Add(int64(d))
		n.told.Store(true)
	}
}

// serverTimeKey is the context key under which an adaptive send
// goroutine's Send context carries its sendNote, for ReportServerTime.
type serverTimeKey struct{}

// sendNote is what a sink reported about the send under way on one send
// goroutine (ReportServerTime); the goroutine clears it before each Send.
type sendNote struct {
	ctx    context.Context // the send goroutine's Send context, which carries the note
	served atomic.Int64    // nanoseconds, summed over the Send's requests
	told   atomic.Bool
}

// newSendNote returns a note and the Send context carrying it, derived
// from parent.
func newSendNote(parent context.Context) *sendNote {
	n := &sendNote{}
	n.ctx = context.WithValue(parent, serverTimeKey{}, n)
	return n
}

// take returns what was reported since the last take: the endpoint's time,
// or -1 if nothing was told; and clears it.
func (n *sendNote) take() time.Duration {
	if n == nil || !n.told.Swap(false) {
		return -1
	}
	return time.Duration(n.served.Swap(0))
}

// SinkFunc adapts a function to a [Sink].
type SinkFunc func(ctx context.Context, b *Batch) error

// Send calls f(ctx, b).
func (f SinkFunc) Send(ctx context.Context, b *Batch) error { return f(ctx, b) }

// WriterSink writes each batch as NDJSON (one payload per line) to an
// io.Writer, one Write call per batch, one batch at a time. It suits
// development and examples: os.Stdout, a file, a bytes.Buffer.
//
// An io.Writer cannot be cancelled, so Send writes from a copy of the batch
// on a goroutine of its own and returns ctx's error when ctx ends first:
// Shutdown's deadline then holds even for a stalled writer. Such a write
// may still complete later, after its batch was reported failed; and it
// holds back every later Send (which wait for it, or for their own ctx).
type WriterSink struct {
	turn chan struct{} // one token: the write under way
	w    io.Writer
}

// NewWriterSink returns a sink writing to w.
func NewWriterSink(w io.Writer) *WriterSink {
	return &WriterSink{w: w, turn: make(chan struct{}, 1)}
}

// Send implements [Sink]. A write error is returned as retryable.
func (s *WriterSink) Send(ctx context.Context, b *Batch) error {
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	data := bytes.Clone(b.NDJSON()) // the write may outlive Send, and b
	done := make(chan error, 1)
	go func() {
		_, err := s.w.Write(data)
		<-s.turn
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
