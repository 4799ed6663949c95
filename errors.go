package batchproc

import (
	"bytes"
	"errors"
	"fmt"
	"time"
)

var (
	// ErrClosed is returned by [Processor.Add], [Processor.TryAdd] and
	// [Processor.Flush] once [Processor.Shutdown] has been called. A batch
	// still queued when Shutdown's context ends reaches the failure callback
	// with an error wrapping the context's error.
	ErrClosed = errors.New("batchproc: processor closed")

	// ErrFull is returned by [Processor.TryAdd] when the memory budget set by
	// [WithMemoryLimit] has no room for the event. [Processor.Add] waits
	// instead.
	ErrFull = errors.New("batchproc: memory budget full")

	// ErrEventTooLarge is returned by Add and TryAdd for an event that could
	// never be sent: its payload plus its newline is larger than
	// [WithMaxBatchBytes], or than the memory limit.
	ErrEventTooLarge = errors.New("batchproc: event larger than the batch byte limit")

	// ErrInvalidEvent is returned by Add and TryAdd for an event whose
	// payload is empty or contains a newline: batches are framed as one
	// payload per line, so such an event would corrupt every other event of
	// its batch.
	ErrInvalidEvent = errors.New("batchproc: event payload empty or contains a newline")

	// ErrInCallback is returned by [Processor.Flush] and [Processor.Shutdown]
	// called from a callback ([Sink.Send] or the [WithOnFailure] function),
	// where waiting would wait for that very callback. Shutdown has begun
	// the shutdown all the same. (Add from a callback does not wait either:
	// it returns [ErrFull] when the budget is full.)
	ErrInCallback = errors.New("batchproc: called from a Sink.Send or failure callback, where it cannot wait")
)

// DeliveryError is returned by [Processor.Flush] and [Processor.Shutdown]
// when events they covered were not delivered but handed to the failure
// callback. Err is the first of those failures' reasons, so errors.Is and
// errors.As see through it (to a [ShutdownError], say).
type DeliveryError struct {
	Events  int   // events that failed
	Batches int   // batches they were in
	Err     error // the first failure's reason
}

func (e *DeliveryError) Error() string {
	return fmt.Sprintf("batchproc: %d events in %d batches not delivered; first: %v", e.Events, e.Batches, e.Err)
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// permanentError marks an error the processor must not retry.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that the processor does not retry the send: the
// batch goes straight to the failure callback. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was made by
// [Permanent].
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// RetryAfterError is the error [RetryAfter] makes: a retryable failure with
// the earliest time to try again, as a server's Retry-After header says.
type RetryAfterError struct {
	Err   error
	After time.Duration
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %v)", e.Err, e.After)
}

func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter wraps err as retryable, but not before d has passed. The
// processor waits the longer of d and its own backoff. RetryAfter(nil, d) is
// nil.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &RetryAfterError{Err: err, After: max(d, 0)}
}

// PartialError is the error [Partial] makes: a Send that delivered the
// first Delivered events of its batch before it failed.
type PartialError struct {
	Err       error
	Delivered int
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("%v (the first %d events were delivered)", e.Err, e.Delivered)
}

func (e *PartialError) Unwrap() error { return e.Err }

// Partial wraps err, a Send's failure, to say that the batch's first n
// events were delivered before it failed: a sink that splits a batch (as
// httpsink does after a 413) and sends the parts in order returns it when a
// part fails after others were stored. The send is retried, or not, as err
// says ([Permanent] and [RetryAfter] are seen through the wrapper), and
// every retry carries the whole batch. If the batch finally fails, the
// processor counts those n events as delivered, and hands the failure
// callback only the rest: a batch of the events n to Len()-1, under the
// same key. The n of the last attempt counts; an n outside 1 to Len()-1
// is ignored, and the whole batch fails. Partial(nil, n) is nil.
func Partial(err error, n int) error {
	if err == nil {
		return nil
	}
	return &PartialError{Err: err, Delivered: n}
}

// GiveUpError is the reason handed to the failure callback for a batch
// whose retries the [RetryPolicy] ended: after MaxAttempts sends, or when
// the next wait would pass MaxElapsed. It wraps the last send error.
type GiveUpError struct {
	Attempts int           // sends made
	Elapsed  time.Duration // since the first send
	Deadline time.Duration // MaxElapsed when that was the limit reached, else 0
	Err      error         // the last send error
}

func (e *GiveUpError) Error() string {
	if e.Deadline > 0 {
		return fmt.Sprintf("batchproc: giving up after %d attempts: next retry would pass %v: %v", e.Attempts, e.Deadline, e.Err)
	}
	return fmt.Sprintf("batchproc: giving up after %d attempts: %v", e.Attempts, e.Err)
}

func (e *GiveUpError) Unwrap() error { return e.Err }

// ShutdownError is the reason handed to the failure callback for a batch
// that was not delivered before [Processor.Shutdown]'s context ended. It
// wraps the context's error and the last send error, if any.
type ShutdownError struct {
	Cause   error // the context's error
	LastErr error // the last send error of the batch, nil if it was never sent
}

func (e *ShutdownError) Error() string {
	if e.LastErr != nil {
		return fmt.Sprintf("batchproc: shutdown ended before delivery: %v (last send error: %v)", e.Cause, e.LastErr)
	}
	return fmt.Sprintf("batchproc: shutdown ended before delivery: %v", e.Cause)
}

func (e *ShutdownError) Unwrap() []error {
	if e.LastErr != nil {
		return []error{e.Cause, e.LastErr}
	}
	return []error{e.Cause}
}

// checkPayload enforces the framing rule of [ErrInvalidEvent].
func checkPayload(p []byte) error {
	if len(p) == 0 || bytes.IndexByte(p, '\n') >= 0 {
		return ErrInvalidEvent
	}
	return nil
}
