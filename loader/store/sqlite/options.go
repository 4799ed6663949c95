package sqlite

import (
	"fmt"
	"time"
)

// Option configures [Open].
type Option interface{ apply(*config) }

type config struct {
	busyTimeout   time.Duration
	rowsPerInsert int
	groupEvents   int
	sync          Sync
}

func defaultConfig() config {
	return config{busyTimeout: 5 * time.Second, rowsPerInsert: 256, groupEvents: 16384, sync: SyncFull}
}

// Sync is SQLite's synchronous setting for the WAL, which decides what a
// commit survives.
type Sync string

const (
	// SyncFull (the default) syncs the WAL to disk after every commit,
	// before any caller of it is answered: a batch whose Store returned
	// nil survives a power loss or kernel crash, as protocol.md's "a 200
	// means committed" promises. It is what SQLite's synchronous=FULL
	// does, the sync made by the store off the writer (see the package
	// documentation); group commit makes one sync cover all the batches
	// committed together, and all the groups committed while one sync ran.
	SyncFull Sync = "FULL"
	// SyncNormal syncs the WAL only at checkpoints: a commit survives a
	// crash of the process, but the last commits before a power loss or
	// kernel crash can be lost (the database stays consistent, each lost
	// batch losing its key with it). Faster; the sink will not resend a
	// batch it got a 200 for, so those batches are gone.
	SyncNormal Sync = "NORMAL"
)

// maxRowsPerInsert keeps a statement's parameters within SQLite's default
// limit of 32,766 host parameters (4 per row and the batch id).
const maxRowsPerInsert = (32766 - 1) / paramsPerRow

func (c config) validate() error {
	if c.busyTimeout < 0 {
		return fmt.Errorf("sqlite: busy timeout %v is negative", c.busyTimeout)
	}
	if c.rowsPerInsert < 1 || c.rowsPerInsert > maxRowsPerInsert {
		return fmt.Errorf("sqlite: rows per insert %d out of range [1, %d]", c.rowsPerInsert, maxRowsPerInsert)
	}
	if c.groupEvents < 0 {
		return fmt.Errorf("sqlite: group commit events %d is negative", c.groupEvents)
	}
	if c.sync != SyncFull && c.sync != SyncNormal {
		return fmt.Errorf("sqlite: synchronous %q: want FULL or NORMAL", string(c.sync))
	}
	return nil
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithBusyTimeout sets how long a write waits for another process holding
// the database lock before failing with SQLITE_BUSY. It overrides the
// default of 5s; 0 fails at once. Writes of this store never wait for each
// other on this lock: they share one connection.
func WithBusyTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.busyTimeout = d })
}

// WithRowsPerInsert sets how many events one INSERT statement writes. It
// overrides the default of 256; the range is 1 to 8,191. Larger statements
// amortise per-statement cost; beyond a few hundred rows the gain is small.
func WithRowsPerInsert(n int) Option {
	return optionFunc(func(c *config) { c.rowsPerInsert = n })
}

// WithSynchronous sets the WAL's synchronous setting (see [Sync]); the
// default is [SyncFull].
func WithSynchronous(mode Sync) Option {
	return optionFunc(func(c *config) { c.sync = mode })
}

// WithGroupCommit sets how many events one transaction may hold when
// concurrent Store calls are committed together. It overrides the default
// of 16,384; a batch larger than that is still committed, alone, and 0
// commits every batch in a transaction of its own.
func WithGroupCommit(maxEvents int) Option {
	return optionFunc(func(c *config) { c.groupEvents = maxEvents })
}
