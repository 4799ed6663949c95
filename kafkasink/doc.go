// Package kafkasink is a [batchproc.Sink] that produces batches to a Kafka
// topic with franz-go (kgo): the event streaming the seed names as the
// step after HTTP, behind the same interface, so services change nothing
// but the sink they construct.
//
//	sink, err := kafkasink.New([]string{"kafka-1:9092", "kafka-2:9092"}, "events")
//	if err != nil { ... }
//	defer sink.Close() // after p.Shutdown
//	p, err := batchproc.New(sink)
//
// # Records
//
// By default ([PerBatch]) each batch is one record: its NDJSON as the
// value, its idempotency key as the record key and in the [HeaderBatchKey]
// header. The value is the batch's own buffer: nothing is copied. A batch
// is then atomic in Kafka, and the Batch Loader's consumer (cmd/batchloader
// -kafka-brokers ... -kafka-topic ...) decodes it exactly as it decodes an
// HTTP request, and stores it under its key, once. A batch too large for one
// record is split in halves, each a record of its own under a derived key
// (see [Sink.Send]).
//
// With [PerEvent], each event is a record keyed by the event's ID, with the
// [HeaderBatchKey] and [HeaderIndex] headers: for consumers that want
// Kafka's per-key ordering and compaction by event ID.
//
// # Delivery
//
// [Sink.Send] returns when Kafka has acknowledged every record of the batch
// (with kgo's defaults: idempotent writes, acknowledged by all in-sync
// replicas), or with an error classified for the processor's retries:
// [batchproc.Permanent] for what a retry cannot fix, such as a record too
// large or a topic the client may not write to. Delivery is at least once:
// a batch whose Send failed, timed out or was cancelled may still have
// reached the topic, and its retry puts it there again, under the same key.
// Consumers de-duplicate by key.
package kafkasink
