// Package batchprom exposes a [batchproc.Processor]'s metrics to
// Prometheus, through client_golang.
//
// A processor takes its hooks when it is made, and a collector needs the
// processor to read its Stats, so a [Collector] is made first, handed to
// the processor as a hook, and bound to it afterwards:
//
//	c := batchprom.New(batchprom.WithNamespace("myservice"))
//	p, err := batchproc.New(sink, batchproc.WithHooks(c))
//	...
//	c.Observe(p)
//	prometheus.MustRegister(c)
//
// # Metrics
//
// Every name starts with batchproc_ (after the namespace, if any). The
// counters and gauges of [batchproc.Stats] are read from one Stats snapshot
// at every scrape, so a scrape agrees with Stats exactly and the core keeps
// no second set of counters:
//
//	batchproc_events_added_total        counter   Stats.Added
//	batchproc_events_delivered_total    counter   Stats.Delivered
//	batchproc_events_failed_total       counter   Stats.Failed
//	batchproc_batches_delivered_total   counter   Stats.Batches
//	batchproc_send_retries_total        counter   Stats.Retries
//	batchproc_events_pending            gauge     Stats.Pending
//	batchproc_sends_in_flight           gauge     Stats.InFlight
//	batchproc_sends_in_flight_limit     gauge     Stats.InFlightLimit (0 unless async dispatch)
//	batchproc_buffered_bytes            gauge     Stats.BufferedBytes
//	batchproc_events_replayed_total     counter   Stats.Replayed (with a journal, as the next three)
//	batchproc_batches_journaled_total   counter   Stats.Journaled
//	batchproc_batches_unjournaled_total counter   Stats.Unjournaled
//	batchproc_batches_unguarded_total   counter   Stats.Unguarded (a JournalOpener out of room)
//
// The hooks feed the metrics Stats cannot give:
//
//	batchproc_events_rejected_total{reason}    counter    Add/TryAdd refused; the reasons sum to Stats.Rejected
//	batchproc_batches_failed_total{reason}     counter    failed batches: permanent, retries_exhausted, shutdown, dropped
//	batchproc_send_duration_seconds{outcome}   histogram  each Send attempt: delivered, retrying, failed, aborted
//	batchproc_batch_events                     histogram  events per batch, at its first send
//	batchproc_batch_bytes                      histogram  bytes per batch, at its first send
//	batchproc_send_limit_changes_total{reason} counter    async dispatch's send limit changes
//
// The reason values of events_rejected_total are full, closed, too_large,
// invalid, canceled, deadline_exceeded and other. Known label values have
// their series from the start, at zero.
//
// Hooks run on the processor's goroutines; the Collector's cost there is
// one histogram observation or counter increment per send, failure or
// rejection. Stats is read only when Prometheus scrapes.
//
// To tell several processors of one service apart, give each its own
// Collector with [WithConstLabels].
package batchprom
