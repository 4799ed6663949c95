// Package postgres is the Batch Loader's [store.Store] on PostgreSQL,
// through pgx v5 and its connection pool.
//
// # Schema
//
// [Open] creates the tables when missing, in the first schema of the
// connection's search_path (set search_path in the DSN to choose another):
//
//	batches(id bigint identity PRIMARY KEY, namespace text, key text, digest bytea, count integer, stored_at timestamptz, UNIQUE (namespace, key))
//	events (batch_id bigint, seq integer, event_id text, type text, ts timestamptz, payload bytea)
//
// A batches table of the first schema (key text UNIQUE, no namespace or
// digest) is migrated in place by [Open], under the schema advisory lock:
// the two columns are added and UNIQUE (key) becomes UNIQUE (namespace,
// key). The old keys keep a NULL namespace, which every namespace sees as
// taken (a retry of such a batch is a duplicate whatever its content).
// Loaders of the first release cannot store into a migrated database.
//
// A batch without an Idempotency-Key has a NULL key (NULLs never conflict).
// digest is [store.Batch.Digest] of a keyed batch. Payloads are stored
// verbatim as bytea. PostgreSQL text cannot hold NUL bytes or invalid
// UTF-8, so ids, types, keys and namespaces are stored as
// [store.CleanText] makes them (U+FFFD for each; the payload keeps the
// original), and ts as [store.CleanTS] makes it (to the microsecond, as
// timestamptz holds it; the zero time as NULL, like an absent ts): the
// SQLite store applies the same rules. An event is identified by
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
// first inserts the key row with INSERT ... ON CONFLICT (namespace, key) DO
// NOTHING: when two transactions carry the same key, the second waits on
// the unique index until the first ends, then inserts nothing (the first
// committed: its digest is read and compared, a duplicate or
// [store.ErrKeyReused]) or inserts the key (the first rolled back). The
// events follow with COPY, in the same transaction. This holds across
// processes sharing the database, too.
package postgres
