package reason_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/metrics/internal/reason"
)

// The scenarios of package metricstest reach every reason through a real
// processor but "other"; this pins the mapping of wrapped and foreign errors.
func TestReject(t *testing.T) {
	for err, want := range map[error]string{
		batchproc.ErrFull:                                      reason.Full,
		fmt.Errorf("x: %w", batchproc.ErrClosed):               reason.Closed,
		batchproc.ErrEventTooLarge:                             reason.TooLarge,
		batchproc.ErrInvalidEvent:                              reason.Invalid,
		context.Canceled:                                       reason.Canceled,
		fmt.Errorf("x: %w", context.DeadlineExceeded):          reason.Deadline,
		errors.New("a cause given to context.WithCancelCause"): reason.Other,
	} {
		if got := reason.Reject(err); got != want {
			t.Errorf("Reject(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestFailure(t *testing.T) {
	perm := batchproc.Permanent(errors.New("400"))
	for err, want := range map[error]string{
		perm: reason.Permanent,
		&batchproc.GiveUpError{Attempts: 3, Err: errors.New("503")}:               reason.GaveUp,
		fmt.Errorf("wrapped: %w", &batchproc.GiveUpError{Err: errors.New("503")}): reason.GaveUp,
		// Shutdown wins over the last error's class.
		&batchproc.ShutdownError{Cause: context.Canceled, LastErr: perm}: reason.Shutdown,
		&batchproc.ShutdownError{Cause: context.DeadlineExceeded}:        reason.Shutdown,
	} {
		if got := reason.Failure(err); got != want {
			t.Errorf("Failure(%v) = %q, want %q", err, got, want)
		}
	}
}
