package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batchproc/batchproc/loader/store"
)

// schemaLockID is the advisory lock that serialises schema creation between
// processes opening the same database at once (CREATE TABLE IF NOT EXISTS
// alone can fail on concurrent creation).
const schemaLockID = 0x62617463 // "batc"

const schema = `
CREATE TABLE IF NOT EXISTS batches (
	id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	key       text UNIQUE,
	count     integer NOT NULL,
	stored_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS events (
	batch_id bigint NOT NULL,
	seq      integer NOT NULL,
	event_id text NOT NULL,
	type     text NOT NULL,
	ts       timestamptz,
	payload  bytea NOT NULL
);`

// copyEventsSQL is the COPY the events go through, in the binary format
// that copyReader writes.
const copyEventsSQL = `COPY events (batch_id, seq, event_id, type, ts, payload) FROM STDIN (FORMAT binary)`

// Store is a [store.Store] on a PostgreSQL database. It is safe for
// concurrent use.
type Store struct {
	pool *pgxpool.Pool

	// mu is held shared by each call and exclusively by Close, so Close
	// waits for calls under way and later calls see closed.
	mu     sync.RWMutex
	closed bool

	tally store.Tally
}

// Open connects to the database at dsn (a postgres:// URL or key=value
// string, as pgxpool.ParseConfig reads it, pool settings included) and
// creates the schema if missing. ctx bounds connecting and creating the
// schema.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := createSchema(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
}

func createSchema(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLockID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: create schema: %w", err)
	}
	return nil
}

// Store implements [store.Store]: in one transaction, the key row, then the
// events by COPY. The COPY data is encoded here (see copyReader) rather than
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
	dup, err := s.store(ctx, b)
	if err != nil {
		return false, fmt.Errorf("postgres: store batch: %w", err)
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

	var key any // NULL for no key: NULLs never conflict
	if b.Key != "" {
		key = sanitize(b.Key)
	}
	var batchID int64
	err = tx.QueryRow(ctx,
		`INSERT INTO batches(key, count) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING id`,
		key, len(b.Events)).Scan(&batchID)
	if errors.Is(err, pgx.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	r := newCopyReader(batchID, b.Events)
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

// sanitize makes s storable as PostgreSQL text: each NUL byte and each
// invalid UTF-8 sequence becomes U+FFFD. Valid strings are returned as is,
// without allocating.
func sanitize(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
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

// Counts implements [store.Store]. The totals count this Store's calls since
// Open, not the rows already in the database.
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
		rows, _ := tx.Query(ctx, "SELECT id, key FROM batches ORDER BY id")
		var id int64
		var key *string
		_, err := pgx.ForEachRow(rows, []any{&id, &key}, func() error {
			index[id] = len(out)
			b := store.Batch{}
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
