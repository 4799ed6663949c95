// Package spool keeps sealed batches on disk from before their first send
// until they are acked, so that a batch the processor accepted survives a
// crash of the process (and, with [SyncBatch], of the machine), and the
// batches still being filled in memory-mapped regions, so that no event
// whose Add returned nil is lost in a crash of the process. It is the
// [Journal] the processor writes through:
//
//	s, err := spool.Open(dir, spool.WithSync(spool.SyncBatch))
//	// at start: resend what the last process left
//	s.Replay(func(b *batchproc.Batch) error { ...; return nil })
//	// for each sealed batch, before its first send:
//	if err := s.Append(b); err != nil { ... } // ErrFull: back-pressure
//	// once it is delivered, or failed permanently:
//	s.Ack(b.Key())
//
// Batches keep their keys across restarts, so a receiver that
// de-duplicates by key (the loader does) stores a replayed batch once.
//
// # Sync modes
//
// The sync mode, named in the API, says what an Append that returned nil
// survives:
//
//	mode             process crash      power loss / kernel crash         cost
//	                 (kill -9, panic,
//	                 OOM kill)
//	SyncBatch        yes                yes                               one fsync per Append; concurrent
//	(default)                                                             Appends share it (group commit)
//	SyncInterval(d)  yes                once the next fsync ran: loses    one background fsync per d
//	                                    at most the last d of Appends
//	SyncNever        yes                no: whatever the kernel had not   none (an fsync at Close); a batch
//	                                    written back is lost              filled in its region is not written
//	                                                                      again (see "Open batches")
//
// A process crash loses nothing in any mode because Append's write has
// reached the kernel's page cache before it returns, and the page cache
// belongs to the kernel, not to the process.
//
// SyncBatch is the default because it is the only mode whose promise holds
// whatever fails, and because a spool's Appends are per batch, not per
// event: at the seed's load that is about 2 fsyncs a second, which any disk
// sustains, and group commit keeps a burst of seals to one fsync for all of
// them. Choose SyncInterval or SyncNever when the disk's fsync latency (see
// [Stats].FsyncLatency) is more than the sealing path can wait for.
//
// Acks are never fsynced on their own: they ride on the next fsync. After
// a power loss, a batch acked since the last fsync may therefore be
// replayed once more (never after a process crash); the receiver's
// de-duplication absorbs it.
//
// A failed fsync is never retried: Linux reports a write-back error once
// and may drop the dirty pages, so a retry that succeeds would claim
// durability for data that is gone (PostgreSQL's "fsyncgate"). The spool
// instead fails: it logs the error (see [WithLogger]), reports it in
// [Stats].Err, and every later Append returns the sticky [*FailedError].
// The host process keeps running; the batches already on disk stay there
// for the next [Open].
//
// # Open batches
//
// The spool also keeps the batches the processor is still filling
// ([batchproc.JournalOpener], [WithOpenBatches]): each in a region file,
// memory-mapped, whose data area is the batch's own buffer
// ([batchproc.OpenBuffer]): the copy of an event Add makes is the one
// kept, and Add stores the filled length after it, before it returns. A
// process crash cannot lose what is in the page cache, so no event whose
// Add returned nil is lost, not even in a batch not yet cut. A region is
// sealed with the batch's key at its cut and forgotten once the batch's
// Append returned; its memory stays the batch's buffer until the batch is
// delivered (or leaves memory), unless that would leave fewer than half
// the regions free, when the batch is copied out.
//
// Under [SyncNever] the sealed region is the batch's record itself
// ([batchproc.OpenRecord]): [Spool.Write], the processor's append, writes
// nothing for it (a record written to a segment would be in the same page
// cache, and survive the same crashes; [Spool.Append] still writes one),
// and the processor computes no checksum at the cut. The region's header
// gets the seq of the Write, for Append order; the ack
// frees the region; a batch that leaves memory (spilled for the budget, or
// left by a Shutdown whose ctx ended) keeps its region, and is loaded back
// from it. A region becomes a record only while more than half the
// regions are free; otherwise the batch is written to a segment. These
// batches count in Stats.Batches and InRegions, not in the disk budget: at
// most half of [WithOpenBatches] regions. Under SyncBatch and SyncInterval
// every batch has its segment record, fsynced as the mode says.
//
// [Open] rebuilds the batches of the regions a killed process left open or
// sealed, appends them (a sealed one already in the spool is skipped), in
// Append order among the segments' batches for one that was its batch's
// record, and removes the region files. A batch never cut gets a key of
// its own, "open." and the region's nonce in hex, the same at every
// recovery. A region that held a batch recovery cannot rebuild (one a
// power loss left half written back, or of another format) is set aside
// as NAME.corrupt (NAME.N.corrupt if an earlier Open took that name) and
// counted (Stats.CorruptFiles and LostBatches), never removed in silence.
// Open batches are not fsynced: a power loss may lose them in every sync
// mode. They cost Add one store of the filled
// length per event (and an id record for an event with an ID): a SyncNever
// spool's Add costs about what Add without a spool does (README,
// "Reliability").
//
// FORMAT. A region file is:
//
//	open-NNNNNN.reg           NNNNNN a number; the file is 256 bytes and twice the batch byte limit, rounded up to 4 KiB
//
//	offset  size  field (integers little-endian)
//	0       8     magic "BPOPEN02"
//	8       4     state, uint32: 0 free, 1 open, 2 sealed
//	12      4     key length k, uint32 (0: none)
//	16      8     nonce, uint64, new each time the region opens
//	24      8     filled n, uint64: bytes of the data area kept
//	32      8     ids m, uint64: bytes of the id area kept
//	40      8     data capacity d, uint64 (the batch byte limit)
//	48      8     record seq+1, uint64: set when the region is its sealed batch's record (SyncNever); 0 otherwise
//	56      72    zero
//	128     96    key (k bytes)
//	256     d     data: the events' payloads, each followed by '\n' (n bytes)
//	256+d   -     ids: records of event index (uint32), id length (uint32), id (m bytes)
//
// # Disk budget
//
// The segment files never grow past the budget ([WithMaxBytes], default
// 1 GiB): an Append that does not fit returns [ErrFull], which wraps
// [batchproc.ErrFull] (the processor turns it into back-pressure). So does
// ENOSPC or EDQUOT from the filesystem: "full", not a failure, and the part
// of the record that was written is cut off again. With [WithDropOldest] a
// full spool drops its oldest batches instead, handing each to a callback.
// Space is reclaimed a whole segment at a time, from the oldest segment:
// an old batch that is never acked holds its segment, and those after it.
//
// # On-disk format
//
// FORMAT. A spool is a directory holding:
//
//	LOCK                      flock(2)-ed while a Spool has the directory open
//	NNNNNNNNNNNNNNNNNNNN.seg  segment files, NNN the segment id in 20 decimal digits
//	NNNNNNNNNNNNNNNNNNNN.seg.spare    the spare: a fully acked segment's file, kept for reuse (never read)
//	NNNNNNNNNNNNNNNNNNNN.seg.corrupt  a segment found corrupt, kept for inspection (never read)
//
// Segments are written in id order; a new one starts when the next record
// would take the current one past the segment size (default 64 MiB; a
// record larger than that gets a segment of its own). Ids are never
// reused. A segment is a sequence of self-framing records:
//
//	offset  size  field
//	0       4     body length n, uint32 little-endian (at most 1 GiB)
//	4       4     CRC32C (Castagnoli) of bytes 0-3, byte 8, the body, and
//	              8 bytes little-endian: the segment's nonce (in a segment
//	              record, the segment's id)
//	8       1     record type: 1 batch, 2 ack, 3 segment
//	9       n     body
//
// The first record of a segment, and only the first, is a segment record.
// Its body is 16 bytes: the segment's nonce, random, to which the CRC of
// every other record in the segment is bound, then the nonce of the
// segment whose file this one reuses (0 for a new file), both uint64
// little-endian.
//
// A segment's file is reused: when the oldest segment is fully acked it
// becomes the spare (renamed NNN.seg.spare at once, out of recovery's
// sight), and the next segment is the spare renamed and overwritten from
// its start. Overwriting pages the page cache already holds writes at 2.6
// times the rate of filling a new file, whose every page the kernel must
// allocate (BenchmarkFileWrite), and no full file is unlinked (the two
// were 40% of a saturated spool's CPU). Past the new records' end lie the records of the file's
// previous lives; bound by their CRC to another nonce, none of them checks
// as part of this one. (A nonce, not the id: with SyncNever, a power loss
// may put a file back under an older name, and an id used again.) A spool
// holds at most one spare, counted in the disk usage and removed first
// when the budget is full.
//
// A batch record's body is:
//
//	uvarint  seq: the batch's sequence number, increasing in Append order
//	uvarint  len(key), then the key's bytes (not empty)
//	uvarint  event count c
//	c times  uvarint len(id), then the id's bytes (may be empty)
//	rest     the batch's NDJSON: exactly c non-empty lines, each ending in '\n'
//
// An ack record's body is one uvarint: the seq of the batch it acks (acks
// always follow their batch). Unknown record types are invalid, so a
// future format uses new type numbers and an old reader stops at them.
//
// There is no index, manifest or ledger besides the records: the state is
// what the records say, so it cannot disagree with the data after a crash.
// Directory changes are fsynced: a new segment's entry before anything
// written to it is reported durable, a removal or a corrupt file's copy at
// once (with SyncNever, the creations and removals at Close).
//
// # Recovery
//
// [Open] reads every segment in order and checks every record. The batches
// without an ack are the spool's content, in Append order (for [Spool.Replay]),
// and the disk usage is the files' sizes. At the first record that does not
// check (short, bad length, bad CRC, malformed body, a segment record
// anywhere but first), Open looks for any valid record after it in the
// same file:
//
//   - none: a torn tail, the write a crash cut short, or the end of a
//     reused file's new records, where the rest are the previous
//     segment's records (those check with the nonce the segment record
//     names). The file is truncated to its last valid record; a torn
//     tail's bytes are counted ([Stats].TornBytes). A file whose segment
//     record does not check reads as torn from its start (what follows
//     cannot be checked without its nonce) and is removed.
//   - some: the file is corrupt in the middle, and nothing after the bad
//     record can be trusted (a damaged length hides where the next record
//     starts). The whole file is copied aside as NAME.corrupt, then
//     truncated to its valid prefix; the bytes and the batch records after
//     the damage are counted lost ([Stats].LostBytes, LostBatches,
//     CorruptFiles) and logged.
//
// Either way Open succeeds: what the files hold never makes it fail, so a
// damaged spool cannot put its service in a crash loop. Open fails only
// for invalid options, real I/O errors (permissions, a failing disk), and
// [ErrLocked]. Then, except with SyncNever, Open fsyncs what it recovered,
// which a crash may have left in the page cache only.
//
// # Concurrency and cost
//
// All methods are safe for concurrent use. An Append encodes its record
// head (header, key and ids) into a reused buffer and writes it, then the
// batch's NDJSON straight from the batch (two write calls, no copy of the
// events), under the spool's lock; the fsync runs with the lock
// released, so other Appends write meanwhile and share the next fsync.
// Segment files are reused (see the format), so a steady stream writes
// over pages the page cache holds.
package spool
