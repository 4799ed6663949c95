// Package sqlite is the Batch Loader's [store.Store] on SQLite, through the
// pure-Go driver modernc.org/sqlite (no cgo).
//
// # Schema
//
//	batches(id INTEGER PRIMARY KEY, namespace TEXT, key TEXT, digest BLOB, count INTEGER, stored_at TEXT, UNIQUE (namespace, key))
//	events (id INTEGER PRIMARY KEY, batch_id INTEGER, event_id TEXT, type TEXT, ts TEXT, payload BLOB)
//
// PRAGMA user_version is 2. A file of the first schema (user_version 0,
// batches.key UNIQUE, no namespace or digest) is migrated in place by
// [Open], in one transaction: the batches table (one row per batch) is
// copied, events are untouched, and the old keys keep a NULL namespace,
// which every namespace sees as taken (a retry of such a batch is a
// duplicate whatever its content, as its digest is unknown).
//
// A batch without an Idempotency-Key has a NULL key (SQLite's UNIQUE lets
// NULLs repeat). digest is [store.Batch.Digest] of a keyed batch. Event
// ids, types, keys and namespaces are stored as [store.CleanText] makes
// them (NUL and invalid UTF-8 replaced by U+FFFD, as PostgreSQL must), ts
// as [store.CleanTS] makes it (UTC, to the microsecond; the zero time as
// NULL, like an absent ts); ts and stored_at are in the fixed-width form
// 2006-01-02T15:04:05.000000000Z, so they sort as text and SQLite's date
// functions read them.
// events.batch_id has no index, to keep ingest fast; add one for lookups by
// batch (CREATE INDEX IF NOT EXISTS is safe on a live database).
//
// # Durability
//
// The database runs in WAL mode. With [SyncFull], the default
// ([WithSynchronous]), a batch whose [Store.Store] returned nil is in a
// WAL synced to disk, so it survives a crash of the process, of the kernel
// or of the power, which is what the loader's 200 promises. SQLite's own
// synchronous=FULL is synchronous=NORMAL plus one fdatasync of the WAL at
// the end of every commit; the store runs the writer connection at NORMAL
// and makes that sync itself, from the committing caller's goroutine once
// it has handed the writer on, so the next group is written while this
// one is synced (one sync then covers every group committed before it
// began). Every caller of a group, a duplicate or a reused key too (its
// answer may rest on a commit not synced yet), is answered only after a
// sync begun after its group's transaction ended has completed. What is
// on disk after a power loss is what FULL leaves: every answered batch,
// maybe a few committed but unanswered ones, never half a batch. The
// difference from FULL is what other connections see: a committed group is
// visible for the length of one sync before it is durable (the loader
// answers nothing from those reads; a second loader on the same file syncs
// before it answers too). A failed sync is sticky: that group's callers and
// every later call get an error, as the kernel may have dropped the pages
// it could not write.
//
// With [SyncNormal] nothing syncs the WAL but checkpoints: a commit
// survives a crash of the process, but the last commits before a power
// loss or kernel crash can be lost, the database itself staying consistent
// (a lost batch loses its key with it, never half of it); the sink got a
// 200 for such a batch and will not resend it.
//
// Checkpoints (copying the WAL into the database: SQLite syncs the WAL
// before and the database after, in both modes) run on a connection and
// goroutine of their own, never on the writer, about every 4 MiB of
// events; about every 64 MiB the writer waits for one pass to finish
// before its next transaction, so that SQLite starts the WAL over instead
// of growing it. [Store.Ping] reports a checkpoint that failed.
//
// # Concurrency
//
// SQLite admits one writer at a time, so the store writes through a single
// connection. Concurrent Store calls queue; the first to find the writer
// free takes every batch queued by then (up to [WithGroupCommit] events)
// and writes them in one transaction, each batch under a savepoint of its
// own: its key row, then its events in multi-row INSERTs of
// [WithRowsPerInsert] rows. A batch that fails (its ctx ended, a reused
// key) is rolled back to its savepoint alone; the others commit, and every
// caller returns once the commit holding its batch is done (and, with
// SyncFull, synced). Callers build their events' INSERT arguments before
// they queue, and the writer runs its transaction on the driver
// connection itself, so little but SQLite's own work is serial. A call whose
// ctx ends while it is still queued withdraws and stores nothing. Reads
// ([Store.Batches], [Store.Ping]) use separate connections and never wait
// for writers. A second process writing the same file waits up to
// [WithBusyTimeout] for the lock.
package sqlite
