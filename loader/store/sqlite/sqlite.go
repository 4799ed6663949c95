package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/batchproc/batchproc/loader/store"
)

// paramsPerRow is the number of bound parameters per event row.
const paramsPerRow = 5

// tsLayout is the stored form of timestamps: fixed width, so text order is
// time order, and readable by SQLite's date functions.
const tsLayout = "2006-01-02T15:04:05.000000000Z"

const schema = `
CREATE TABLE IF NOT EXISTS batches (
	id        INTEGER PRIMARY KEY,
	key       TEXT UNIQUE,
	count     INTEGER NOT NULL,
	stored_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
	id       INTEGER PRIMARY KEY,
	batch_id INTEGER NOT NULL,
	event_id TEXT NOT NULL,
	type     TEXT NOT NULL,
	ts       TEXT,
	payload  BLOB NOT NULL
);`

// Store is a [store.Store] on one SQLite database file. It is safe for
// concurrent use; see the package documentation for how writes are
// serialised and what a commit guarantees.
type Store struct {
	w   *sql.DB // exactly one connection: every write goes through it
	r   *sql.DB // readers
	cfg config

	insBatch *sql.Stmt
	// insEvents[i] inserts sizes[i] rows; sizes are rowsPerInsert, then the
	// powers of two below it, largest first, so any count is a sum of them.
	insEvents []*sql.Stmt
	sizes     []int

	// mu is held shared by each Store call and exclusively by Close, so
	// Close waits for calls under way and later calls see closed.
	mu     sync.RWMutex
	closed bool

	tally store.Tally
}

// Open opens (creating if needed) the SQLite database at path, a file
// system path (not ":memory:", and without '?'), and creates the schema if
// missing.
func Open(path string, opts ...Option) (*Store, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("sqlite: path %q is not a plain file path", path)
	}

	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(cfg.busyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(OFF)")
	// Begin write transactions with the write lock taken, so a transaction
	// never fails to upgrade from reader to writer (SQLITE_BUSY_SNAPSHOT).
	q.Set("_txlock", "immediate")
	w, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	s := &Store{w: w, cfg: cfg}
	if err := s.init(path); err != nil {
		s.closeDBs()
		return nil, err
	}
	return s, nil
}

func (s *Store) init(path string) error {
	ctx := context.Background()
	// The first connection switches the file to WAL (a persistent setting)
	// before any reader opens it.
	if _, err := s.w.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("sqlite: create schema: %w", err)
	}
	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlite: journal_mode is %q, want wal (a file system without shared memory?)", mode)
	}

	rq := url.Values{}
	rq.Add("_pragma", "busy_timeout("+strconv.FormatInt(s.cfg.busyTimeout.Milliseconds(), 10)+")")
	rq.Add("_pragma", "query_only(1)")
	r, err := sql.Open("sqlite", path+"?"+rq.Encode())
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	r.SetMaxOpenConns(4)
	s.r = r

	s.insBatch, err = s.w.PrepareContext(ctx,
		`INSERT INTO batches(key, count, stored_at) VALUES (?, ?, ?) ON CONFLICT(key) DO NOTHING RETURNING id`)
	if err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	for n := s.cfg.rowsPerInsert; n > 0; {
		st, err := s.w.PrepareContext(ctx, insertEventsSQL(n))
		if err != nil {
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
		s.insEvents = append(s.insEvents, st)
		s.sizes = append(s.sizes, n)
		n = prevPow2(n)
	}
	return nil
}

// prevPow2 returns the largest power of two below n, or 0 for n <= 1.
func prevPow2(n int) int {
	p := 1
	for p*2 < n {
		p *= 2
	}
	if p >= n {
		return 0
	}
	return p
}

func insertEventsSQL(rows int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO events(batch_id, event_id, type, ts, payload) VALUES ")
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?)")
	}
	return b.String()
}

// Store implements [store.Store]: the key row and all events are written in
// one transaction on the single writer connection.
func (s *Store) Store(ctx context.Context, b *store.Batch) (duplicate bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, fmt.Errorf("sqlite: %w", store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	dup, err := s.store(ctx, b)
	if err != nil {
		return false, fmt.Errorf("sqlite: store batch: %w", err)
	}
	s.tally.Record(b, dup)
	return dup, nil
}

func (s *Store) store(ctx context.Context, b *store.Batch) (dup bool, err error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer func() {
		if err != nil || dup {
			_ = tx.Rollback() // the error that matters is err
		}
	}()

	var key any // NULL for no key: NULLs never conflict
	if b.Key != "" {
		key = b.Key
	}
	var batchID int64
	err = tx.StmtContext(ctx, s.insBatch).QueryRowContext(ctx, key, len(b.Events), formatTS(time.Now())).Scan(&batchID)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, err
	}

	var bid any = batchID // boxed once, not once per row
	args := make([]any, 0, paramsPerRow*s.cfg.rowsPerInsert)
	ev := b.Events
	for i, n := range s.sizes {
		if len(ev) < n {
			continue
		}
		st := tx.StmtContext(ctx, s.insEvents[i])
		for len(ev) >= n {
			// Abandon a cancelled batch between statements, not only at commit.
			if err := ctx.Err(); err != nil {
				return false, err
			}
			args = args[:0]
			for j := range ev[:n] {
				e := &ev[j]
				var ts any
				if !e.TS.IsZero() {
					ts = formatTS(e.TS)
				}
				p := e.Payload
				if p == nil {
					p = []byte{} // an empty payload, not NULL
				}
				args = append(args, bid, e.ID, e.Type, ts, p)
			}
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return false, err
			}
			ev = ev[n:]
		}
	}
	return false, tx.Commit()
}

func formatTS(t time.Time) string { return t.UTC().Format(tsLayout) }

// Ping implements [store.Store]: it runs a query on a reader connection.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("sqlite: %w", store.ErrClosed)
	}
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Counts implements [store.Store]. The totals count this Store's calls since
// Open, not the rows already in the file.
func (s *Store) Counts() store.Counts {
	return s.tally.Counts()
}

// Close waits for Store calls under way, then closes the database. Later
// calls return an error wrapping [store.ErrClosed]; Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.closeDBs()
}

func (s *Store) closeDBs() error {
	var errs []error
	// Closing the writer last lets SQLite checkpoint the WAL into the
	// database and remove it when the last connection goes.
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	for _, st := range append(s.insEvents, s.insBatch) {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	errs = append(errs, s.w.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// Batches reads every stored batch back, in the order stored, each with its
// events in order. It loads the whole database into memory: it is meant for
// tests (it implements storetest.Reader) and small tools, not for serving.
func (s *Store) Batches(ctx context.Context) ([]store.Batch, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("sqlite: %w", store.ErrClosed)
	}
	// One read transaction, so batches and events are one snapshot.
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("sqlite: read: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // read-only: nothing to keep

	var out []store.Batch
	index := make(map[int64]int)
	rows, err := tx.QueryContext(ctx, "SELECT id, key FROM batches ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("sqlite: read batches: %w", err)
	}
	for rows.Next() {
		var id int64
		var key sql.NullString
		if err := rows.Scan(&id, &key); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlite: read batches: %w", err)
		}
		index[id] = len(out)
		out = append(out, store.Batch{Key: key.String})
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("sqlite: read batches: %w", err)
	}

	rows, err = tx.QueryContext(ctx, "SELECT batch_id, event_id, type, ts, payload FROM events ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("sqlite: read events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var batchID int64
		var e store.Event
		var ts sql.NullString
		if err := rows.Scan(&batchID, &e.ID, &e.Type, &ts, &e.Payload); err != nil {
			return nil, fmt.Errorf("sqlite: read events: %w", err)
		}
		if ts.Valid {
			if e.TS, err = time.Parse(tsLayout, ts.String); err != nil {
				return nil, fmt.Errorf("sqlite: read events: ts: %w", err)
			}
		}
		i, ok := index[batchID]
		if !ok {
			return nil, fmt.Errorf("sqlite: read events: event of unknown batch %d", batchID)
		}
		out[i].Events = append(out[i].Events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read events: %w", err)
	}
	return out, nil
}
