package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/batchproc/batchproc"
)

// A SyncMode says when the spool fsyncs what it wrote, and so which failures
// an Append that returned nil survives. See the package documentation,
// "Sync modes".
type SyncMode int64

const (
	// SyncBatch fsyncs before every Append returns (group commit: Appends
	// that arrive while an fsync runs share the next one). An Append that
	// returned nil survives a process crash and a power loss. The default.
	SyncBatch SyncMode = -1
	// SyncNever leaves write-back to the kernel. An Append that returned nil
	// survives a crash of the process (kill -9, panic, OOM kill: the data is
	// in the page cache), not a power loss or kernel crash. A batch the
	// processor filled in a memory-mapped region (WithOpenBatches) is not
	// written again: the region is its record.
	SyncNever SyncMode = -2
)

// SyncInterval fsyncs in the background every d (d > 0). An Append that
// returned nil survives a process crash at once, and a power loss once the
// next interval's fsync has completed: a power loss loses at most the last
// d (plus one fsync's duration) of Appends.
func SyncInterval(d time.Duration) SyncMode { return SyncMode(d) }

func (m SyncMode) String() string {
	switch {
	case m == SyncBatch:
		return "batch"
	case m == SyncNever:
		return "never"
	case m > 0:
		return "interval(" + time.Duration(m).String() + ")"
	}
	return fmt.Sprintf("SyncMode(%d)", int64(m))
}

// An Option configures [Open].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	sync        SyncMode
	maxBytes    int64
	segmentSize int64
	dropOldest  func(*batchproc.Batch)
	drop        bool // WithDropOldest was given
	logger      *slog.Logger
	openBatches int // regions at most for open batches; 0: none kept

	fs fileSystem // the real filesystem unless a test sets another

	// testing hooks
	onSyncWait func() // called (mu held) when an Append starts waiting for an fsync
}

const (
	// DefaultMaxBytes is the default disk budget: 1 GiB.
	DefaultMaxBytes = 1 << 30
	// DefaultSegmentSize is the default segment file size: 64 MiB.
	DefaultSegmentSize = 64 << 20
	// DefaultOpenBatches is how many batches being filled the spool keeps
	// at once by default ([WithOpenBatches]).
	DefaultOpenBatches = 64
)

func defaultConfig() config {
	return config{
		sync:        SyncBatch,
		maxBytes:    DefaultMaxBytes,
		segmentSize: DefaultSegmentSize,
		openBatches: DefaultOpenBatches,
		fs:          osFS{},
	}
}

func (c *config) validate() error {
	var errs []error
	if c.sync != SyncBatch && c.sync != SyncNever && c.sync <= 0 {
		errs = append(errs, fmt.Errorf("spool: sync mode %v: SyncInterval needs an interval > 0", c.sync))
	}
	if c.segmentSize < 1<<10 {
		errs = append(errs, fmt.Errorf("spool: segment size %d bytes: must be at least 1 KiB", c.segmentSize))
	}
	if c.openBatches < 0 {
		errs = append(errs, fmt.Errorf("spool: WithOpenBatches(%d): must be 0 or more", c.openBatches))
	}
	if c.maxBytes < 2*c.segmentSize {
		errs = append(errs, fmt.Errorf("spool: disk budget %d bytes: must be at least two segments (2 x %d bytes)", c.maxBytes, c.segmentSize))
	}
	return errors.Join(errs...)
}

// WithSync sets the sync mode: [SyncBatch] (the default), [SyncInterval]
// or [SyncNever].
func WithSync(m SyncMode) Option { return optionFunc(func(c *config) { c.sync = m }) }

// WithMaxBytes sets the disk budget in bytes: the total size of the segment
// files, which Append never takes beyond it (acks may exceed it by a few
// bytes, since they are what frees space). It overrides the default of
// 1 GiB ([DefaultMaxBytes]) and must be at least two segments.
func WithMaxBytes(n int64) Option { return optionFunc(func(c *config) { c.maxBytes = n }) }

// WithSegmentSize sets the size in bytes at which the spool starts a new
// segment file. Space is reclaimed a whole segment at a time. It overrides
// the default of 64 MiB ([DefaultSegmentSize]); the minimum is 1 KiB. A
// batch larger than a segment gets a segment of its own.
func WithSegmentSize(n int64) Option { return optionFunc(func(c *config) { c.segmentSize = n }) }

// WithDropOldest makes a full spool drop its oldest batches to make room for
// an Append, instead of returning [ErrFull]. Each dropped batch is acked
// (it leaves the spool) and handed to f, after the spool's lock is
// released and before that Append returns; the batch is valid during the
// call only. A dropped batch may be in flight at that moment: the caller
// decides how to count it (the processor counts it as failed). Without
// this option (the default), Append returns ErrFull when the budget is
// full. f may be nil: with WithSpool the processor is told of every drop.
// The oldest batches in the segments go first; a batch whose region is its
// record (SyncNever) takes no room in the budget and is not dropped.
func WithDropOldest(f func(b *batchproc.Batch)) Option {
	return optionFunc(func(c *config) { c.dropOldest = f; c.drop = true })
}

// WithLogger sets a logger for the spool's rare events: a recovery that
// trimmed a torn tail or set a corrupt file aside, and the failure that
// makes the spool stop writing. The default logs nothing.
func WithLogger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = l }) }

// WithOpenBatches sets how many batches being filled the spool keeps at
// once (64 by default, [DefaultOpenBatches]; 0 keeps none). Each is a
// region file of twice the processor's batch byte limit (2 MiB by
// default), memory-mapped and used as the batch's buffer: the copy of each
// event Add makes is in the kernel's page cache, so a crash of the process
// loses no event whose Add returned nil, not even in the batch still open.
// A region is held from a batch's first event until the batch is
// delivered or its events leave memory (a batch in the segments while
// fewer than half the regions are free is copied out to let its region
// go); a batch that finds none free is filled unguarded, as without this
// (batchproc.Stats.Unguarded). Under SyncNever a sealed batch's region is
// its record until it is acked, while more than half the regions are free
// (see the package documentation, "Open batches"). The region files do not
// count in the disk budget. On platforms without mmap(2) none are kept.
func WithOpenBatches(n int) Option { return optionFunc(func(c *config) { c.openBatches = n }) }

// withFS replaces the filesystem (tests inject faults through it).
func withFS(fs fileSystem) Option { return optionFunc(func(c *config) { c.fs = fs }) }
