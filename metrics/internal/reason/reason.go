// Package reason classifies the errors batchproc hands its hooks into the
// few values the metrics adapters use as a label or attribute: a bounded
// set, so that a sink's error messages never become time series.
package reason

import (
	"context"
	"errors"

	"github.com/batchproc/batchproc"
)

// Reasons an Add or TryAdd was refused ([batchproc.RejectHook]).
const (
	Full      = "full"              // batchproc.ErrFull: the memory budget had no room
	Closed    = "closed"            // batchproc.ErrClosed: after Shutdown
	TooLarge  = "too_large"         // batchproc.ErrEventTooLarge
	Invalid   = "invalid"           // batchproc.ErrInvalidEvent
	Canceled  = "canceled"          // Add's context was canceled while it waited
	Deadline  = "deadline_exceeded" // Add's context passed its deadline while it waited
	Other     = "other"             // anything else
	Shutdown  = "shutdown"          // a batch Shutdown's context cut short (batchproc.ShutdownError)
	Permanent = "permanent"         // the sink returned a batchproc.Permanent error
	GaveUp    = "retries_exhausted" // the RetryPolicy gave up
	Dropped   = "dropped"           // the journal dropped it to make room (batchproc.ErrDropped)
)

// Rejects lists every value [Reject] returns, for adapters that
// initialise their series at zero.
var Rejects = []string{Full, Closed, TooLarge, Invalid, Canceled, Deadline, Other}

// Failures lists every value [Failure] returns.
var Failures = []string{Shutdown, Permanent, GaveUp, Dropped}

// Reject classifies the error an Add or TryAdd returned.
func Reject(err error) string {
	switch {
	case errors.Is(err, batchproc.ErrFull):
		return Full
	case errors.Is(err, batchproc.ErrClosed):
		return Closed
	case errors.Is(err, batchproc.ErrEventTooLarge):
		return TooLarge
	case errors.Is(err, batchproc.ErrInvalidEvent):
		return Invalid
	case errors.Is(err, context.DeadlineExceeded):
		return Deadline
	case errors.Is(err, context.Canceled):
		return Canceled
	}
	return Other
}

// Failure classifies why a batch failed ([batchproc.FailureHook]). The
// processor fails a batch for one of four reasons: the journal dropped
// it to make room ([batchproc.ErrDropped]), Shutdown's context
// ended first ([batchproc.ShutdownError]), the retry policy gave up
// ([batchproc.GiveUpError]), or the error was permanent (the rest: a sink's
// Permanent error carries no type of its own).
func Failure(err error) string {
	if _, ok := errors.AsType[*batchproc.ShutdownError](err); ok {
		return Shutdown
	}
	if _, ok := errors.AsType[*batchproc.GiveUpError](err); ok {
		return GaveUp
	}
	if errors.Is(err, batchproc.ErrDropped) {
		return Dropped
	}
	return Permanent
}
