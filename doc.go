// Package batchproc is the Batch Processor: a library that a service uses to
// ship its events to a central Batch Loader in batches, instead of one
// request per event.
//
// Service code calls [Processor.Add] (or [Processor.TryAdd]) from any number
// of goroutines. The processor copies each event into a batch and hands the
// batch to a [Sink] when it holds [WithMaxBatchEvents] events, when the next
// event would take it past [WithMaxBatchBytes], or [WithFlushInterval] after
// its first event, whichever comes first. The sink is the only part that
// knows the transport: package httpsink speaks the Batch Loader's HTTP
// protocol, package kafkasink produces to Kafka, and [WriterSink] writes
// NDJSON to a file. Swapping one for another changes no service code.
//
// # Designs
//
// The study this library comes from compared two designs. Design 1, a worker
// pool: N workers each fill their own buffer from a shared queue and send it
// synchronously. Design 2, one worker and async IO: one buffer, deep-copied
// at every flush and sent from a new goroutine. Design 2 won, but its copy
// costs CPU and heap and its unbounded goroutines make a slow loader an
// out-of-memory crash. This package keeps design 2's shape without either
// cost: the filled buffer itself is handed to the send and replaced by a
// pooled one (no copy at flush), sends are bounded by [WithMaxInFlight], and
// everything buffered or in flight is bounded by [WithMemoryLimit]. Design 1
// remains available as [WithWorkerPool], and [WithOrdered] delivers batches
// in Add order.
//
// # Delivery contract
//
// Every event for which Add or TryAdd returned nil ends as exactly one of:
//   - delivered: in a batch whose [Sink.Send] returned nil;
//   - failed: in a batch handed, with the reason, to the [WithOnFailure]
//     callback, because the sink returned a [Permanent] error, the
//     [RetryPolicy] gave up, or [Processor.Shutdown]'s context ended first
//     (when the sink reports that the batch's last attempt delivered a
//     prefix of it, with [Partial], only the rest fails);
//   - pending: buffered, queued or being sent.
//
// [Processor.Stats] counts all three, and Added + Replayed == Delivered +
// Failed + Pending in every snapshot (Replayed: events a previous process
// left in the journal, below). Nothing is dropped silently: a failed batch is
// logged (to [slog.Default] without [WithLogger]), handed to the callback,
// and reported by the [Processor.Flush] or [Processor.Shutdown] that covered
// it as a [*DeliveryError].
//
// The default [RetryPolicy] retries by elapsed time, not by attempts: a
// batch is retried for 5 minutes after its first send, so a receiver outage
// shorter than that loses nothing as long as the memory budget holds what
// arrives meanwhile (see [DefaultRetryPolicy]).
//
// A failed send is retried with exponential backoff and full jitter,
// honouring a [RetryAfter] hint. Every attempt carries the same batch and so
// the same [Batch.Key], which a receiver uses to store a retried batch once:
// delivery is at least once to the sink, exactly once into a store that
// de-duplicates keys (the Batch Loader does).
//
// # What a crash loses
//
// Without a journal, everything pending: a process killed with SIGKILL,
// a panic or an OOM kill loses what it had buffered, queued or in flight.
// With one ([WithJournal]; the spool package's WithSpool keeps it on disk),
// every cut batch is written to the journal before its first send and
// stays there until it is delivered or fails permanently; the next process
// on the same journal sends it again under the same key, so a receiver
// that de-duplicates keys stores it once. The spool also keeps the
// batches still being filled ([JournalOpener], [OpenBuffer]): the batch is
// filled in a memory-mapped file, so a crash of the process loses no event
// whose Add returned nil. (With a journal that does not, a crash
// loses the batches still being filled, in each shard at most one flush
// interval of events or one full batch, and at most three cut batches per
// appender not yet written to it.) Whether a journaled
// batch also survives a power loss is the journal's sync mode
// (spool.SyncBatch, the default: yes, once the fsync that follows its
// write returned, which group commit shares among every batch written
// meanwhile; its send does not wait for it). A journaled batch is never given up
// on a retryable error, and waits on disk rather than in memory, so an
// outage fills the journal's disk budget, not the memory budget; when
// Shutdown's context ends, undelivered batches stay in the journal rather
// than failing.
//
// # Back-pressure
//
// When the memory budget is full, Add waits for space until its context is
// done and TryAdd returns [ErrFull] at once; both are counted in
// Stats.Rejected. Blocked Adds are served in arrival order, and as soon as
// budget can be freed: if only unsent batches hold it, they are sent at
// once rather than at their linger. The budget counts each event's bytes
// and overheads; the heap the processor holds for them stays within 1.25
// times the budget plus one batch buffer per shard, whatever the sink does
// ([WithMemoryLimit] states it exactly).
//
// # Callbacks
//
// [Sink.Send] and the [WithOnFailure] function run on the processor's
// goroutines. They may call Add (which there returns [ErrFull] rather than
// wait), TryAdd and Stats; Flush and Shutdown return [ErrInCallback] at once
// (Shutdown having begun the shutdown), since they would wait for the
// callback itself.
//
// # Lifecycle
//
// [New] starts the processor's goroutines. [Processor.Flush] sends what was
// added so far and waits for it. [Processor.Shutdown] stops accepting
// events, drains, and returns when every goroutine of the processor has
// exited; if its context ends first, the sends under way are cancelled and
// the undelivered batches go to the failure callback. A processor is not
// reusable after Shutdown. Give Shutdown a fresh context with a timeout,
// after the service stopped taking requests: the context of
// signal.NotifyContext is already done when the signal comes, and a drain
// given it fails every buffered event ([Processor.Shutdown]'s example shows
// the order).
//
// # Logging
//
// With [WithLogger], the processor logs one line per delivered batch with
// count=N, the number of events it carried (so deliveries can be summed from
// logs, as the original study did), each retry as a warning (events=N), each
// failed batch once as an error (events=N failed, count=N for a delivered
// prefix), and "stopping, waiting for remaining events to be sent" with the
// number pending when Shutdown begins. Without it, retries and failures go
// to [slog.Default] and deliveries are not logged.
package batchproc
