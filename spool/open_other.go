//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package spool

import "github.com/batchproc/batchproc"

// KeepsOpenBatches reports whether the spool keeps the batches being
// filled on this platform (WithOpenBatches): not here, without mmap(2). A
// crash of the process may lose the open batches, at most one flush
// interval of events each.
const KeepsOpenBatches = false

// OpenBatch returns nil: on this platform the spool does not keep the
// batches being filled (they are lost in a crash, at most one flush
// interval of events each). It implements [batchproc.JournalOpener].
func (s *Spool) OpenBatch(int) batchproc.OpenBatch { return nil }

func (a *openArea) closeRegions() {}

// region is never made on this platform.
type region struct{}

func (s *Spool) keepInRegion(*batchproc.Batch, uint64) *region { return nil }

func (s *Spool) ackRegion(*region) {}

func (s *Spool) readRegion(*region, string) (*batchproc.Batch, error) { return nil, errNoRegions }
