// Package httpsink is a [batchproc.Sink] that posts batches to the Batch
// Loader's POST /v1/batches, as protocol.md describes.
//
//	sink, err := httpsink.New("http://loader:8080",
//		httpsink.WithToken(token),
//		httpsink.WithCompression(httpsink.Zstd))
//	if err != nil { ... }
//	defer sink.Close()
//	p, err := batchproc.New(sink)
//
// # Requests
//
// Each [Sink.Send] makes one request per batch (more after a 413, see
// below), with the batch's [batchproc.Batch.Key] as Idempotency-Key on every
// attempt, so a retried batch is stored once. With the default [NDJSON]
// framing and no compression the body is the batch's own buffer: the sink
// copies nothing and allocates a small constant amount per batch, whatever
// its size. [JSONArray] framing and [Gzip] or [Zstd] compression build the
// body in pooled buffers, with pooled compressors.
//
// The body can be replayed (GetBody), so net/http resends it on a fresh
// connection when a kept-alive one turns out to be dead, and follows 307 and
// 308 redirects. Once Send has returned, the transport cannot read the
// batch's memory any more, even from its own goroutines.
//
// # Errors and retries
//
// The sink retries nothing itself: it classifies each outcome for the
// processor's [batchproc.RetryPolicy], following the protocol's client rule
// (see [Sink.Send]). Responses other than a well-formed 200 are
// [*StatusError] values, with the loader's message, the rejected line and
// the Retry-After wait; a batch stored in part after a 413 split fails with
// a [*PartialError].
//
// # The loader's slots
//
// Every answer of the loader carries Ingest-Slots, the number of batches it
// decodes and stores at once; the sink hands it to
// [batchproc.ReportCapacity], so the processor's adaptive send limit stops
// slow start there instead of stepping past the slots into 429s. Every
// 200 carries Server-Timing's "ingest" metric, how long the loader held
// the batch once received; the sink hands it to
// [batchproc.ReportServerTime], so the limit is cut by a queue at the
// loader and not by round trips that grow on a busy client host.
//
// # Connections
//
// Every response body is read, up to [WithMaxResponseBody], and closed, so
// its connection is reused; a body longer than that is cut off and its
// connection dropped. Each request is bounded by [WithTimeout].
package httpsink
