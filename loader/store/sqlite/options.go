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
}

func defaultConfig() config {
	return config{busyTimeout: 5 * time.Second, rowsPerInsert: 256}
}

// maxRowsPerInsert keeps a statement's parameters within SQLite's default
// limit of 32,766 host parameters (5 per row).
const maxRowsPerInsert = 32766 / paramsPerRow

func (c config) validate() error {
	if c.busyTimeout < 0 {
		return fmt.Errorf("sqlite: busy timeout %v is negative", c.busyTimeout)
	}
	if c.rowsPerInsert < 1 || c.rowsPerInsert > maxRowsPerInsert {
		return fmt.Errorf("sqlite: rows per insert %d out of range [1, %d]", c.rowsPerInsert, maxRowsPerInsert)
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
// overrides the default of 256; the range is 1 to 6,553. Larger statements
// amortise per-statement cost; beyond a few hundred rows the gain is small.
func WithRowsPerInsert(n int) Option {
	return optionFunc(func(c *config) { c.rowsPerInsert = n })
}
