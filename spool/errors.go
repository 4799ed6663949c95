package spool

import (
	"errors"
	"fmt"

	"github.com/batchproc/batchproc"
)

var (
	// ErrFull is returned by [Spool.Append] when the disk budget set by
	// [WithMaxBytes] has no room for the batch, or when the filesystem
	// itself reports ENOSPC (the partial record is then cut off again). It
	// wraps [batchproc.ErrFull], so errors.Is(err, batchproc.ErrFull) holds.
	// It is not sticky: an Append after some Acks may succeed.
	ErrFull = fmt.Errorf("spool: disk budget full: %w", batchproc.ErrFull)

	// ErrClosed is returned by every method called after [Spool.Close].
	ErrClosed = errors.New("spool: closed")

	// ErrLocked is returned (wrapped, with the directory) by [Open] when
	// another open Spool, in this process or another, holds the directory.
	ErrLocked = errors.New("spool: directory is in use by another spool")

	// ErrTooLarge is returned by [Spool.Append] for a batch whose record
	// could never fit: larger than the disk budget less one segment. It
	// wraps [batchproc.ErrEventTooLarge].
	ErrTooLarge = fmt.Errorf("spool: batch too large for the disk budget: %w", batchproc.ErrEventTooLarge)

	// ErrUnknownKey is returned by [Spool.Load] for a key that is not in the
	// spool: never appended, or acked.
	ErrUnknownKey = errors.New("spool: no batch with this key is spooled")

	// ErrDuplicateKey is returned by [Spool.Append] for a batch whose key is
	// already in the spool (appended and not acked): keys identify batches
	// in Ack, so they must be unique.
	ErrDuplicateKey = errors.New("spool: a batch with this key is already spooled")
)

// FailedError is the sticky error of a spool whose write, fsync or
// truncation failed. After it the spool takes no more writes: a failed
// fsync is never retried, because Linux reports a write-back error once and
// may drop the dirty pages, so a retry that succeeds would claim durability
// for data that is gone (PostgreSQL's "fsyncgate"). Every later Append and
// Ack returns it; Replay, Stats and Close still work. Reopening the
// directory (a new [Open]) rebuilds the state from what is on disk.
type FailedError struct {
	Op  string // "write", "fsync", "truncate", "create", "remove"
	Err error
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("spool: failed, taking no more writes: %s: %v", e.Op, e.Err)
}

func (e *FailedError) Unwrap() error { return e.Err }
