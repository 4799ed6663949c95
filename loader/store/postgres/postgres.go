package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/internal/groupq"
)

// schemaLockID is the advisory lock that serialises schema creation between
// processes opening the same database at once (CREATE TABLE IF NOT EXISTS
// alone can fail on concurrent creation).
const schemaLockID = 0x62617463 // "batc"

const schema = `
CREATE TABLE IF NOT EXISTS batches (
	id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	namespace text,
	key       text,
	digest    bytea,
	count     integer NOT NULL,
	stored_at timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT batches_namespace_key_key UNIQUE (namespace, key)
);
CREATE TABLE IF NOT EXISTS events (
	batch_id bigint NOT NULL,
	seq      integer NOT NULL,
	event_id text NOT NULL,
	type     text NOT NULL,
	ts       timestamptz,
	payload  bytea NOT NULL
);`

// migrateV1 turns the first schema's batches table (key text UNIQUE, no
// namespace or digest) into the current one, once its UNIQUE (key) is
// dropped. Keys stored before namespaces existed keep a NULL namespace:
// every namespace sees them as taken.
const migrateV1 = `
ALTER TABLE batches ADD COLUMN namespace text, ADD COLUMN digest bytea;
ALTER TABLE batches ADD CONSTRAINT batches_namespace_key_key UNIQUE (namespace, key);`

// copyEventsSQL is the COPY the events go through, in the binary format
// that copyReader writes.
const copyEventsSQL = `COPY events (batch_id, seq, event_id, type, ts, payload) FROM STDIN (FORMAT binary)`

// insertBatchSQL inserts a batch's key row and returns its id, or no row
// when the key is taken (waiting for a transaction that holds it to end).
const insertBatchSQL = `INSERT INTO batches(namespace, key, digest, count) VALUES ($1, $2, $3, $4) ON CONFLICT (namespace, key) DO NOTHING RETURNING id`

// selectDigestSQL reads the digest of a taken key; a new statement sees a
// batch committed while insertBatchSQL waited.
const selectDigestSQL = `SELECT digest FROM batches WHERE namespace = $1 AND key = $2`

// Store is a [store.Store] on a PostgreSQL database. It is safe for
// concurrent use.
type Store struct {
	pool *pgxpool.Pool
	// legacy is set when the database holds keys from before namespaces
	// (migrated from the first schema): each keyed batch then also checks
	// them.
	legacy bool

	// mu is held shared by each call and exclusively by Close, so Close
	// waits for calls under way and later calls see closed.
	mu     sync.RWMutex
	closed bool

	tally store.Tally

	cfg config
	// The group commit (group.go): Store calls queue their requests, and
	// a caller holding one of the queue's leader slots ([WithCommitters])
	// writes what is queued in one transaction.
	q *groupq.Queue[*request]

	// Test hooks: onCommit sees the size of each group a leader answered,
	// beforeCommit each group transaction before its callers' contexts are
	// checked for the last time (an error fails the transaction),
	// onGroupError each error that failed a group.
	onCommit     func(n int)
	beforeCommit func(tx pgx.Tx, group []*request) error
	onGroupError func(err error)
}

// Open connects to the database at dsn (a postgres:// URL or key=value
// string, as pgxpool.ParseConfig reads it, pool settings included) and
// creates the schema if missing. ctx bounds connecting and creating the
// schema.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	c := config{groupEvents: defaultGroupEvents}
	for _, o := range opts {
		o.apply(&c)
	}
	if c.groupEvents < 0 {
		return nil, fmt.Errorf("postgres: WithGroupCommit(%d): want 0 or more events", c.groupEvents)
	}
	if c.committers < 0 {
		return nil, fmt.Errorf("postgres: WithCommitters(%d): want 1 or more, or 0 for the default", c.committers)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	leaders := c.committers
	if leaders == 0 {
		leaders = runtime.GOMAXPROCS(0)
	}
	leaders = min(leaders, int(cfg.MaxConns))
	s := &Store{pool: pool, cfg: c, q: groupq.New[*request](leaders)}
	if err := s.init(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	if err := createSchema(ctx, s.pool); err != nil {
		return err
	}
	var events, batches int64
	if err := s.pool.QueryRow(ctx,
		`SELECT count(*), coalesce(sum(count), 0) FROM batches`).Scan(&batches, &events); err != nil {
		return fmt.Errorf("postgres: count stored batches: %w", err)
	}
	s.tally.Start(events, batches)
	if err := s.pool.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM batches WHERE namespace IS NULL AND key IS NOT NULL)`).Scan(&s.legacy); err != nil {
		return fmt.Errorf("postgres: look for keys from before namespaces: %w", err)
	}
	return nil
}

// createSchema creates the tables, or migrates the first schema, under an
// advisory lock so concurrent Opens do it once.
func createSchema(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLockID); err != nil {
			return err
		}
		// The first schema: a batches table in our schema without namespace.
		var old bool
		err := tx.QueryRow(ctx, `SELECT to_regclass('batches') IS NOT NULL AND NOT EXISTS (
			SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('batches') AND attname = 'namespace' AND NOT attisdropped)`).Scan(&old)
		if err != nil {
			return err
		}
		if !old {
			_, err := tx.Exec(ctx, schema)
			return err
		}
		// Drop the UNIQUE (key) constraint, whatever its name.
		rows, _ := tx.Query(ctx, `SELECT conname FROM pg_constraint WHERE conrelid = to_regclass('batches') AND contype = 'u'`)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, n := range names {
			if _, err := tx.Exec(ctx, "ALTER TABLE batches DROP CONSTRAINT "+pgx.Identifier{n}.Sanitize()); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, migrateV1)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: create schema: %w", err)
	}
	return nil
}

// Store implements [store.Store]: in one transaction, the key row, then the
// events by COPY; concurrent calls share a transaction (see the package
// documentation, "Group commit", and [WithGroupCommit]). The COPY data is
// encoded here (see copyReader) rather than
// by pgx.Conn.CopyFrom, whose per-value encoding through interfaces cost
// more client CPU than the server spent storing the rows.
func (s *Store) Store(ctx context.Context, b *store.Batch) (duplicate bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, fmt.Errorf("postgres: %w", store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var dup bool
	if s.cfg.groupEvents == 0 {
		dup, err = s.store(ctx, b)
	} else {
		dup, err = s.submit(newRequest(ctx, b))
	}
	if err != nil {
		return false, fmt.Errorf("postgres: store batch (key %q): %w", b.Key, err)
	}
	s.tally.Record(b, dup)
	return dup, nil
}

func (s *Store) store(ctx context.Context, b *store.Batch) (dup bool, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		if err != nil || dup {
			// With ctx done, pgx closes the connection instead (the server
			// then rolls back), so this never hangs; the pool replaces it.
			_ = tx.Rollback(ctx)
		}
	}()

	ns, key, digest := b.KeyParams()
	if key != nil && s.legacy {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM batches WHERE namespace IS NULL AND key = $1`, key).Scan(&one)
		if err == nil {
			return true, nil // stored before namespaces and digests: a retry
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return false, err
		}
	}
	var batchID int64
	err = tx.QueryRow(ctx, insertBatchSQL, ns, key, digest, len(b.Events)).Scan(&batchID)
	if errors.Is(err, pgx.ErrNoRows) {
		// The key is taken by a committed batch (a concurrent one holding
		// it was waited for): a new statement sees it.
		var old []byte
		if err := tx.QueryRow(ctx, selectDigestSQL, ns, key).Scan(&old); err != nil {
			return false, err
		}
		if d, _ := digest.([]byte); !bytes.Equal(old, d) {
			return false, store.ErrKeyReused
		}
		return true, nil
	}
	if err != nil {
		return false, err
	}
	r := newCopyReader([]copyPart{{batchID, b.Events}})
	defer r.release()
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, r, copyEventsSQL)
	if err != nil {
		return false, err
	}
	if n := tag.RowsAffected(); n != int64(len(b.Events)) {
		return false, fmt.Errorf("copied %d of %d events", n, len(b.Events))
	}
	return false, tx.Commit(ctx)
}

// Ping implements [store.Store]: it acquires a connection and pings the
// server.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("postgres: %w", store.ErrClosed)
	}
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Counts implements [store.Store]: the events and batches in the database
// at Open plus those stored since through this Store (not those other
// processes stored since), and the duplicates since Open.
func (s *Store) Counts() store.Counts {
	return s.tally.Counts()
}

// Close waits for calls under way, then closes the pool. Later calls return
// an error wrapping [store.ErrClosed]; Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.pool.Close()
	}
	return nil
}

// Batches reads every stored batch back, in the order stored, each with its
// events in order. It loads the whole table into memory: it is meant for
// tests (it implements storetest.Reader) and small tools, not for serving.
func (s *Store) Batches(ctx context.Context) ([]store.Batch, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("postgres: %w", store.ErrClosed)
	}
	var out []store.Batch
	// One repeatable-read transaction, so batches and events are one snapshot.
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		out = out[:0]
		index := make(map[int64]int)
		rows, _ := tx.Query(ctx, "SELECT id, namespace, key FROM batches ORDER BY id")
		var id int64
		var ns, key *string
		_, err := pgx.ForEachRow(rows, []any{&id, &ns, &key}, func() error {
			index[id] = len(out)
			b := store.Batch{}
			if ns != nil {
				b.Namespace = *ns
			}
			if key != nil {
				b.Key = *key
			}
			out = append(out, b)
			return nil
		})
		if err != nil {
			return fmt.Errorf("batches: %w", err)
		}
		rows, _ = tx.Query(ctx, "SELECT batch_id, event_id, type, ts, payload FROM events ORDER BY batch_id, seq")
		var batchID int64
		var e store.Event
		var ts *time.Time
		_, err = pgx.ForEachRow(rows, []any{&batchID, &e.ID, &e.Type, &ts, &e.Payload}, func() error {
			i, ok := index[batchID]
			if !ok {
				return fmt.Errorf("event of unknown batch %d", batchID)
			}
			e.TS = time.Time{}
			if ts != nil {
				e.TS = *ts
			}
			out[i].Events = append(out[i].Events, e)
			e.Payload = nil // Scan reuses a non-nil slice
			return nil
		})
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: read: %w", err)
	}
	return out, nil
}
