//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package spool

import "github.com/batchproc/batchproc"

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
