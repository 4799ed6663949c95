// Package loader is the Batch Loader: an HTTP server that receives batches
// of events as specified by docs/protocol.md, validates them, and stores each
// batch whole in a [store.Store] (SQLite, PostgreSQL, or [store.Discard]).
//
// # Protocol
//
// POST /v1/batches takes one batch. The body is NDJSON (Content-Type
// application/x-ndjson, the default when the header is absent) or one JSON
// array of objects (application/json); either may carry a charset=utf-8
// parameter and nothing else. It may be compressed (Content-Encoding gzip
// or zstd; identity or none). Each event is a JSON object, stored verbatim
// as its payload; its top-level "id" and "type" members (strings) and "ts"
// (an RFC 3339 time string) are read when present. An Idempotency-Key
// header (1..128 of [A-Za-z0-9._:-]) makes retries safe: a key already
// stored with the same events is answered 200 with "duplicate": true and
// stored once; with other events, 422. Keys are kept per bearer token (its
// tenant), and the Kafka consumer's keys apart from all HTTP keys
// (protocol.md, Idempotency keys).
//
// A batch is all-or-nothing, and a 200 {"accepted":N,"duplicate":false}
// is sent only after the store committed it. The other answers, each with a
// JSON body {"error": "..."}:
//
//   - 400: malformed body (with "line": K, the first bad line, 1-based),
//     bad Idempotency-Key, empty batch;
//   - 401: tokens configured and the bearer token missing or wrong;
//   - 405: another method on /v1/batches (404 for an unknown path);
//   - 408: the body was not received within [Config.ReadTimeout]
//     (retryable: a slow link, not a bad batch);
//   - 413: over a size or count limit;
//   - 415: unsupported Content-Type or Content-Encoding;
//   - 422: the Idempotency-Key was stored before with other events;
//   - 429 + Retry-After: all ingest slots ([Config.MaxConcurrent]) stayed
//     busy for [Config.SlotWait], or the memory for bodies being received
//     ([Config.BodyMemory]) is in use;
//   - 503 + Retry-After: shutting down, or the store failed.
//
// GET /healthz, /readyz (503 while shutting down or when the store's Ping
// fails), /v1/stats ({"events","batches","duplicates","rejected"}) and
// /metrics (Prometheus, a registry per Server) complete it. /debug/pprof/
// is never served there: with [Config.Pprof] it is on the debug listener
// ([Server.DebugHandler], [Config.DebugAddr], loopback by default).
//
// # Decisions where the protocol is silent
//
//   - NDJSON lines end with '\n'; the last line's newline is optional and a
//     "\r" before it is allowed (CRLF). Any other empty or blank line is a
//     400 naming it: blank lines are not events and are not skipped. An
//     empty body is an empty batch.
//   - With application/json, "line" in a 400 is the 1-based index of the
//     array element at fault; errors outside any element (no '[', data
//     after the ']', an unterminated array) carry no line.
//   - "id" and "type", when present, must be strings and "ts" an RFC 3339
//     string, else 400 naming the line; null is a wrong type too. With a
//     member given twice the last one counts, as in encoding/json.
//   - JSON is validated as encoding/json does (json.Valid, nesting up to
//     10,000), plus valid UTF-8: invalid UTF-8 is a 400 now rather than a
//     store failure later.
//   - MaxLine counts the bytes of a line without its '\n' (an array element
//     without the separators around it). The body's size limits come first
//     (it is read whole before decoding); then lines are checked in order,
//     so the first bad line, too long line or event over MaxEvents found is
//     the one answered.
//   - "rejected" in /v1/stats counts POST /v1/batches requests answered
//     with any error status (4xx or 5xx, 429 and 503 included).
//   - A duplicate is still decoded and validated in full; "accepted" is the
//     number of events of the request.
//   - Without tokens the Authorization header is ignored; /healthz,
//     /readyz, /v1/stats and /metrics never need a token.
//
// # Limits
//
// Every limit is a [Config] field with a safe default: the body as sent
// (http.MaxBytesReader, 8 MiB), the decompressed body (64 MiB; a
// decompression bomb is cut off there, so memory stays bounded), the
// events of a batch (100,000), one event (1 MiB), the zstd window (8 MiB,
// checked before a frame is decoded), headers, and the read, write, idle
// and header timeouts of the http.Server.
//
// # Decoding
//
// The body is read into a pooled buffer sized to the batch; lines are split
// with bytes.IndexByte and validated by a hand-written scanner that also
// extracts "id", "type" and "ts" (with escapes decoded exactly as
// encoding/json does), eight string bytes at a time. Event payloads alias
// the pooled buffer, which the store must not keep (store.Store's
// contract); IDs and types are substrings of one string allocated per
// batch, which a store may keep. FuzzNDJSON and FuzzJSONArray hold the
// decoders to encoding/json.
//
// # Embedding
//
// Run listens on [Config.Addr] and drains when its context ends:
//
//	err := loader.Run(ctx, loader.Config{Addr: ":8080", Store: st})
//
// To choose the listener (port 0 in a test or a benchmark harness, which
// then knows the address from ln.Addr()), use [New], [Server.Serve] and
// [Server.Shutdown]:
//
//	srv, err := loader.New(loader.Config{Store: store.NewDiscard()})
//	ln, err := net.Listen("tcp", "127.0.0.1:0")
//	go srv.Serve(ln)
//	// ... post to "http://" + ln.Addr().String() + "/v1/batches"
//	err = srv.Shutdown(ctx)
//
// or mount [Server.Handler] in a mux of your own. The Server owns its store
// and closes it at the end of Shutdown.
package loader
