package spool

import "github.com/batchproc/batchproc"

// Journal makes sealed batches durable before they are sent. It is the
// interface the processor uses; *[Spool] implements it. It is declared here
// as documentation of the contract, to be copied where the processor needs it.
type Journal interface {
	// Append records b (its Key(), every event's Payload and ID, in order) before its
	// first send. With SyncBatch it returns after the record is fsynced (group commit:
	// concurrent Appends share one fsync). It returns ErrFull (a spool error that
	// wraps batchproc.ErrFull) when the disk budget has no room, and a sticky error
	// once a write or fsync failed (the spool then takes no more writes).
	Append(b *batchproc.Batch) error
	// Ack records that the batch with this key left the spool: delivered, or failed
	// permanently. Acked batches are never replayed; their space is reclaimed when a
	// whole segment is acked.
	Ack(key string) error
	// Replay calls f, in Append order, for every batch appended and not acked,
	// as found at Open (recovery). The batch passed is valid during the call only.
	Replay(f func(b *batchproc.Batch) error) error
	Stats() Stats
	Close() error
}

var _ Journal = (*Spool)(nil)
