// Package spool keeps batches on disk from before their first send until
// they are acked, so that a batch accepted by the processor survives a
// crash of the process (and, in the stricter sync modes, of the machine).
package spool
