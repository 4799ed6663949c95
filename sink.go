package batchproc

import (
	"context"
	"io"
	"sync"
)

// A Sink delivers batches to their destination: the Batch Loader over HTTP
// (package httpsink), Kafka (package kafkasink), a file ([WriterSink]).
//
// # Concurrency
//
// The processor calls Send from several goroutines at once: at most
// [WithMaxInFlight] calls (default 4) with async dispatch, at most n with
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
type Sink interface {
	Send(ctx context.Context, b *Batch) error
}

// SinkFunc adapts a function to a [Sink].
type SinkFunc func(ctx context.Context, b *Batch) error

// Send calls f(ctx, b).
func (f SinkFunc) Send(ctx context.Context, b *Batch) error { return f(ctx, b) }

// WriterSink writes each batch as NDJSON (one payload per line) to an
// io.Writer, one Write call per batch, serialised by a mutex. It suits
// development and examples: os.Stdout, a file, a bytes.Buffer.
type WriterSink struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriterSink returns a sink writing to w.
func NewWriterSink(w io.Writer) *WriterSink { return &WriterSink{w: w} }

// Send implements [Sink]. A write error is returned as retryable.
func (s *WriterSink) Send(ctx context.Context, b *Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.w.Write(b.NDJSON())
	return err
}
