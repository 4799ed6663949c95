// Package postgres is the Batch Loader's [store.Store] on PostgreSQL,
// through pgx v5 and its connection pool.
//
// # Schema
//
// [Open] creates the tables when missing, in the first schema of the
// connection's search_path (set search_path in the DSN to choose another):
//
//	batches(id bigint identity PRIMARY KEY, key text UNIQUE, count integer, stored_at timestamptz)
//	events (batch_id bigint, seq integer, event_id text, type text, ts timestamptz, payload bytea)
//
// A batch without an Idempotency-Key has a NULL key (NULLs never conflict).
// Payloads are stored verbatim as bytea. PostgreSQL text cannot hold NUL
// bytes or invalid UTF-8, so in event_id and type each of those is replaced
// by U+FFFD (the payload keeps the original). ts has microsecond precision,
// as timestamptz does; an absent ts is NULL. An event is identified by
// (batch_id, seq), seq being its 0-based position in the batch; the events
// table has no primary key, index or foreign key, because maintaining them
// costs about a third of ingest throughput. Add an index on (batch_id, seq)
// if you look events up by batch.
//
// # Durability
//
// Each batch is one transaction, committed before [Store.Store] returns nil;
// with the server's default synchronous_commit=on the commit is flushed to
// the server's WAL, so it survives a crash of the server or of its machine.
//
// # Concurrency
//
// Store calls run in parallel on the pool's connections. Each transaction
// first inserts the key row with INSERT ... ON CONFLICT (key) DO NOTHING:
// when two transactions carry the same key, the second waits on the unique
// index until the first ends, then inserts nothing (the first committed: a
// duplicate) or inserts the key (the first rolled back). The events follow
// with COPY, in the same transaction. This holds across processes sharing
// the database, too.
package postgres
