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
// A batch is stored in one transaction, committed before [Store.Store]
// returns nil; with the server's default synchronous_commit=on the commit
// is flushed to the server's WAL, so it survives a crash of the server or
// of its machine.
//
// # Group commit
//
// Concurrent Store calls share transactions: a caller holding one of the
// store's committers ([WithCommitters]: GOMAXPROCS by default) takes
// every batch queued by then, up to [WithGroupCommit] events (16,384 by
// default), and writes them in one transaction: their key rows by one
// pipelined round trip, their events by one COPY, one commit. Each caller
// still returns only once the transaction holding its batch committed, so
// "nil means committed" holds as without grouping, and each gets its own
// outcome (stored, duplicate, [store.ErrKeyReused]). A caller whose ctx
// ends while its batch is queued withdraws it; one whose ctx ends before
// its group commits is left out (the group is rolled back and written
// again without it); after the commit it is stored. A group transaction
// that fails for any other reason is rolled back and each of its batches
// is stored again in a transaction of its own, so one batch cannot fail
// the others. A batch that arrives while a leader slot is free is
// written alone, as without grouping. WithGroupCommit(0) gives every
// batch a transaction of its own.
//
// Grouping saves what PostgreSQL pays per transaction and per COPY rather
// than per row: the commit's WAL flush, four round trips, and the COPY's
// multi-insert slots, whose setup took 20% of the server's CPU with one
// COPY per batch of 1,000 events.
//
// # Concurrency
//
// Transactions run in parallel on the pool's connections. Each first
// inserts its key rows with INSERT ... ON CONFLICT (namespace, key) DO
// NOTHING: when two transactions carry the same key, the second waits on
// the unique index until the first ends, then inserts nothing (the first
// committed: its digest is read and compared, a duplicate or
// [store.ErrKeyReused]) or inserts the key (the first rolled back). A
// group inserts its keys in (namespace, key) order, so two groups sharing
// keys wait for each other in that order and never deadlock. The events
// follow with COPY, in the same transaction. This holds across processes
// sharing the database, too.
package postgres
