// Package batchotel records a [batchproc.Processor]'s metrics with the
// OpenTelemetry metric API. It depends on the API only
// (go.opentelemetry.io/otel/metric): the service's SDK and exporter decide
// where the measurements go.
//
// A processor takes its hooks when it is made, and the instruments need the
// processor to read its Stats, so a [Metrics] is made first, handed to the
// processor as a hook, and bound to it afterwards:
//
//	m, err := batchotel.New(batchotel.WithMeterProvider(provider))
//	...
//	p, err := batchproc.New(sink, batchproc.WithHooks(m))
//	...
//	m.Observe(p)
//	defer m.Close()
//
// # Instruments
//
// The names follow OpenTelemetry's naming guidelines (a batchproc
// namespace, dot-separated, singular entity then what happened to it,
// units in the unit field, no _total, UCUM units: {event}, By, s). Where a
// semantic convention measures the same thing they follow its shape: the
// SDK's own batching processor and exporter metrics
// (otel.sdk.processor.span.processed, otel.sdk.exporter.span.inflight,
// otel.sdk.exporter.operation.duration) and the messaging client's
// messaging.client.operation.duration, with the error.type attribute for
// the reason class and that convention's bucket boundaries for durations.
// They are not messaging.* metrics themselves: a batch processor sits in
// front of any transport, and its sink (HTTP, Kafka) has its own
// instrumentation. One difference from otel.sdk.exporter.operation.duration:
// batchproc.send.duration records each Send attempt (the hook reports
// attempts), not a batch's whole delivery with its retries and backoff.
//
// Asynchronous instruments observe one [batchproc.Stats] snapshot at each
// collection, so their values agree with Stats exactly:
//
//	batchproc.event.added        Counter        {event}  Stats.Added
//	batchproc.event.delivered    Counter        {event}  Stats.Delivered
//	batchproc.event.failed       Counter        {event}  Stats.Failed
//	batchproc.batch.delivered    Counter        {batch}  Stats.Batches
//	batchproc.send.retried       Counter        {send}   Stats.Retries
//	batchproc.event.pending      UpDownCounter  {event}  Stats.Pending
//	batchproc.send.inflight      UpDownCounter  {send}   Stats.InFlight
//	batchproc.send.limit         UpDownCounter  {send}   Stats.InFlightLimit (0 unless async dispatch)
//	batchproc.buffer.usage       UpDownCounter  By       Stats.BufferedBytes
//	batchproc.event.replayed     Counter        {event}  Stats.Replayed (with a journal, as the next three)
//	batchproc.batch.journaled    Counter        {batch}  Stats.Journaled
//	batchproc.batch.unjournaled  Counter        {batch}  Stats.Unjournaled
//	batchproc.batch.unguarded    Counter        {batch}  Stats.Unguarded (a JournalOpener out of room)
//
// The levels are UpDownCounters rather than Gauges, as the conventions'
// queue sizes, in-flight counts, usages and limits are: they add up across
// processors.
//
// The hooks record the rest with synchronous instruments:
//
//	batchproc.send.duration       Histogram  s         each Send attempt; batchproc.send.outcome
//	batchproc.batch.events        Histogram  {event}   events per batch, at its first send
//	batchproc.batch.size          Histogram  By        bytes per batch, at its first send
//	batchproc.event.rejected      Counter    {event}   Add/TryAdd refused; error.type; sums to Stats.Rejected
//	batchproc.batch.failed        Counter    {batch}   failed batches; error.type
//	batchproc.send.limit_changes  Counter    {change}  send limit changes; batchproc.send.limit_change.reason
//
// batchproc.send.outcome is delivered, retrying, failed or aborted
// ([batchproc.SendOutcome]). error.type is, for rejections, full, closed,
// too_large, invalid, canceled, deadline_exceeded or _OTHER; for failed
// batches, permanent, retries_exhausted, shutdown or dropped.
//
// Hooks run on the processor's goroutines; their cost there is one
// measurement per send, failure or rejection, with attribute sets made in
// [New]. Stats is read only when the SDK collects.
package batchotel
