package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/internal/groupq"
)

// paramsPerRow is the number of bound parameters per event row; the
// batch id, the same in every row, is one more per statement (?1).
const paramsPerRow = 4

// pageSize is the page size of a database Open creates.
const pageSize = 32768

// tsLayout is the stored form of timestamps: fixed width, so text order is
// time order, and readable by SQLite's date functions.
const tsLayout = "2006-01-02T15:04:05.000000000Z"

// schemaVersion is the PRAGMA user_version of the current schema. Version
// 0 with the tables present is the first schema (batches.key UNIQUE, no
// namespace or digest), which Open migrates.
const schemaVersion = 2

const schema = `
CREATE TABLE batches (
	id        INTEGER PRIMARY KEY,
	namespace TEXT,
	key       TEXT,
	digest    BLOB,
	count     INTEGER NOT NULL,
	stored_at TEXT NOT NULL,
	UNIQUE (namespace, key)
);
CREATE TABLE IF NOT EXISTS events (
	id       INTEGER PRIMARY KEY,
	batch_id INTEGER NOT NULL,
	event_id TEXT NOT NULL,
	type     TEXT NOT NULL,
	ts       TEXT,
	payload  BLOB NOT NULL
);
PRAGMA user_version = 2;`

// migrateV1 turns the first schema's batches table into the current one in
// place (SQLite cannot drop a UNIQUE constraint, so the small batches
// table is copied; events are untouched). Keys stored before namespaces
// existed get a NULL namespace: every namespace sees them as taken.
const migrateV1 = `
CREATE TABLE batches_v2 (
	id        INTEGER PRIMARY KEY,
	namespace TEXT,
	key       TEXT,
	digest    BLOB,
	count     INTEGER NOT NULL,
	stored_at TEXT NOT NULL,
	UNIQUE (namespace, key)
);
INSERT INTO batches_v2 (id, namespace, key, digest, count, stored_at)
	SELECT id, NULL, key, NULL, count, stored_at FROM batches;
DROP TABLE batches;
ALTER TABLE batches_v2 RENAME TO batches;
PRAGMA user_version = 2;`

// Store is a [store.Store] on one SQLite database file. It is safe for
// concurrent use; see the package documentation for how writes are
// serialised and what a commit guarantees.
type Store struct {
	w   *sql.DB // exactly one connection: every write goes through it
	r   *sql.DB // readers
	cfg config

	// wc is w's one connection, held from Open to Close; writes run on
	// its driver connection (wc.Raw) with statements prepared there, so
	// the writer skips database/sql's per-argument conversion, and the
	// callers build the driver's arguments (see newRequest).
	wc        *sql.Conn
	insBatch  driver.Stmt
	getDigest driver.Stmt // the digest of a stored (namespace, key)
	getLegacy driver.Stmt // whether a key stored before namespaces exists
	// legacy is set when the database holds keys from before namespaces
	// (migrated from the first schema): each keyed batch then also checks
	// them.
	legacy bool
	// insEvents[i] inserts sizes[i] rows; sizes are rowsPerInsert, then the
	// powers of two below it, largest first, so any count is a sum of them.
	insEvents []driver.Stmt
	sizes     []int

	// Group commit: Store calls queue requests; the one holding the
	// queue's one leader slot (the writer) writes a group of them.
	q *groupq.Queue[*request]
	// Test hooks: onCommit gets the size of each group committed; onSync
	// runs before each sync of the WAL (SyncFull), with the number of
	// groups it is for.
	onCommit func(n int)
	onSync   func(groups int)

	// The WAL sync (SyncFull): a group's callers are answered once a sync
	// of the WAL begun after its transaction ended has completed. The
	// writer meanwhile goes on with the next group; whoever holds syncTok
	// (capacity 1) syncs for every group committed by then.
	wal     *os.File // the WAL file, opened once its writer connection has it
	walInfo os.FileInfo
	walPath string
	syncTok chan struct{}
	smu     sync.Mutex
	pending [][]*request // groups whose callers wait for a sync
	commits uint64       // transactions committed
	synced  uint64       // commits covered by the last completed sync
	syncErr error        // a failed sync: sticky, nothing later is answered 200

	// Checkpoints run on a connection of their own (ck), in a goroutine,
	// so the writer never copies the WAL into the database itself. The
	// writer asks for one (ckReq) every ckptBytes written and, every
	// restartBytes, waits for one begun after its last commit: it then
	// begins with the whole WAL in the database, so SQLite starts the WAL
	// over instead of growing it. ckReq carries nil (no one waits) or the
	// channel that gets the pass's error.
	ck           *sql.DB
	ckReq        chan chan error
	ckDone       chan struct{}
	sinceCkpt    int // bytes written since the last request, by the writer
	sinceRestart int // bytes written since the WAL last started over
	ckptEvery    int // ckptBytes, restartBytes (tests lower them)
	restartEvery int
	onCheckpoint func() // test hooks: runs before each pass;
	onRestart    func() // when the writer is to wait for one
	ckmu         sync.Mutex
	ckErr        error // the last pass's, for Ping

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
	// With SyncFull the store syncs the WAL itself after each commit (see
	// flush); SQLite's NORMAL does everything else FULL does.
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(OFF)")
	// Statement and savepoint journals (the pages a multi-row INSERT or a
	// batch's savepoint may have to restore) in memory: with the default
	// they spill to a temporary file past 64 KiB, a few system calls per
	// page of each batch, a third of the writer's writes.
	q.Add("_pragma", "temp_store(MEMORY)")
	// Checkpoints run off the writer (see Store.ck).
	q.Add("_pragma", "wal_autocheckpoint(0)")
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

	s := &Store{w: w, cfg: cfg, q: groupq.New[*request](1), syncTok: make(chan struct{}, 1), walPath: path + "-wal"}
	if err := s.init(path); err != nil {
		s.closeDBs()
		return nil, err
	}
	return s, nil
}

func (s *Store) init(path string) error {
	ctx := context.Background()
	// The first connection switches the file to WAL (a persistent setting)
	// before any reader opens it. A new file first gets pages of
	// pageSize bytes (an existing one keeps its own): SQLite writes, and
	// checkpoints read and write, one page per system call (two for a WAL
	// frame), which were a quarter of the loader's CPU with 4 KiB pages;
	// 32 KiB rather than 16 KiB cut the checkpointer's CPU by a third and
	// raised the ingest rate of 1,000-event batches 9% (FULL, 16
	// clients), at a cost for small commits: each rewrites the last,
	// partly filled, page of each table it appends to, so a commit of one
	// to ten events writes about 97 KiB of WAL instead of 49 KiB, and
	// serial commits of 100 events took about 25% longer.
	if _, err := s.w.ExecContext(ctx, "PRAGMA page_size = "+strconv.Itoa(pageSize)); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlite: journal_mode is %q, want wal (a file system without shared memory?)", mode)
	}
	if err := s.createOrMigrate(ctx); err != nil {
		return err
	}
	if err := s.startCheckpointer(path); err != nil {
		return err
	}
	if s.cfg.sync == SyncFull {
		// The WAL exists from the first write until the last connection
		// closes; the writer connection stays open from here to Close.
		if err := s.openWAL(); err != nil {
			return err
		}
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

	var events, batches int64
	if err := s.w.QueryRowContext(ctx,
		`SELECT count(*), coalesce(sum(count), 0) FROM batches`).Scan(&batches, &events); err != nil {
		return fmt.Errorf("sqlite: count stored batches: %w", err)
	}
	s.tally.Start(events, batches)
	if err := s.w.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM batches WHERE namespace IS NULL AND key IS NOT NULL)`).Scan(&s.legacy); err != nil {
		return fmt.Errorf("sqlite: look for keys from before namespaces: %w", err)
	}

	if s.wc, err = s.w.Conn(ctx); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	return s.wc.Raw(func(dc any) error {
		c, ok := dc.(driverConn)
		if !ok {
			return fmt.Errorf("sqlite: driver connection %T cannot prepare, exec and query with a context", dc)
		}
		prep := func(q string) (driver.Stmt, error) {
			st, err := c.PrepareContext(ctx, q)
			if err != nil {
				return nil, fmt.Errorf("sqlite: prepare: %w", err)
			}
			return st, nil
		}
		var err error
		if s.insBatch, err = prep(`INSERT INTO batches(namespace, key, digest, count, stored_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(namespace, key) DO NOTHING RETURNING id`); err != nil {
			return err
		}
		if s.getDigest, err = prep(`SELECT digest FROM batches WHERE namespace = ? AND key = ?`); err != nil {
			return err
		}
		if s.getLegacy, err = prep(`SELECT 1 FROM batches WHERE namespace IS NULL AND key = ?`); err != nil {
			return err
		}
		for n := s.cfg.rowsPerInsert; n > 0; {
			st, err := prep(insertEventsSQL(n))
			if err != nil {
				return err
			}
			s.insEvents = append(s.insEvents, st)
			s.sizes = append(s.sizes, n)
			n = prevPow2(n)
		}
		return nil
	})
}

// driverConn is what the store uses of the driver's connection.
type driverConn interface {
	driver.ConnPrepareContext
	driver.ExecerContext
}

// queryRow runs st, a query of at most one row, with args; found reports
// whether it returned the row, read into dest.
func queryRow(ctx context.Context, st driver.Stmt, dest []driver.Value, args ...any) (found bool, err error) {
	q, ok := st.(driver.StmtQueryContext)
	if !ok {
		return false, fmt.Errorf("sqlite: driver statement %T cannot query with a context", st)
	}
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	rows, err := q.QueryContext(ctx, nv)
	if err != nil {
		return false, err
	}
	err = rows.Next(dest)
	found = err == nil
	if err == io.EOF {
		err = nil
	}
	return found, errors.Join(err, rows.Close())
}

func execStmt(ctx context.Context, st driver.Stmt, args []driver.NamedValue) error {
	e, ok := st.(driver.StmtExecContext)
	if !ok {
		return fmt.Errorf("sqlite: driver statement %T cannot exec with a context", st)
	}
	_, err := e.ExecContext(ctx, args)
	return err
}

// createOrMigrate creates the schema in a new database, or migrates the
// first schema, in one write transaction, so two processes opening the
// same file at once cannot both do it.
func (s *Store) createOrMigrate(ctx context.Context) (err error) {
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock
	if err != nil {
		return fmt.Errorf("sqlite: create schema: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that matters is err
		}
	}()
	var version int
	var tables int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("sqlite: read schema version: %w", err)
	}
	if err := tx.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'batches'`).Scan(&tables); err != nil {
		return fmt.Errorf("sqlite: read schema: %w", err)
	}
	switch {
	case version == schemaVersion:
		return tx.Rollback() // nothing to do
	case version == 0 && tables == 0:
		if _, err := tx.ExecContext(ctx, schema); err != nil {
			return fmt.Errorf("sqlite: create schema: %w", err)
		}
	case version == 0:
		if _, err := tx.ExecContext(ctx, migrateV1); err != nil {
			return fmt.Errorf("sqlite: migrate schema 1 to %d: %w", schemaVersion, err)
		}
	default:
		return fmt.Errorf("sqlite: schema version %d is not one this loader knows (%d); a newer loader made it?", version, schemaVersion)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: create schema: %w", err)
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
		b.WriteString("(?1,?,?,?,?)") // a ? after ?1 is ?2, the next ?6, ...
	}
	return b.String()
}

// Store implements [store.Store]. Concurrent calls are committed together:
// the first caller to reach the writer connection takes every batch queued
// by then (up to [WithGroupCommit] events) and writes them in one
// transaction, each batch under a savepoint of its own, so a batch that
// fails (its ctx done, a reused key) is rolled back alone; every caller
// returns once the transaction holding its batch committed. With
// synchronous=FULL one fsync then covers the whole group.
func (s *Store) Store(ctx context.Context, b *store.Batch) (duplicate bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, fmt.Errorf("sqlite: %w", store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.smu.Lock()
	err = s.syncErr
	s.smu.Unlock()
	if err != nil {
		return false, fmt.Errorf("sqlite: store batch (key %q): %w", b.Key, err)
	}
	r := s.newRequest(ctx, b)
	dup, err := s.submit(r)
	r.release()
	if err != nil {
		return false, fmt.Errorf("sqlite: store batch (key %q): %w", b.Key, err)
	}
	s.tally.Record(b, dup)
	return dup, nil
}

// request is one Store call waiting for, or taken into, a group commit.
type request struct {
	groupq.Waiter
	b           *store.Batch
	ns          string
	key, digest any // NULL for no key: NULLs never conflict

	// The events' INSERTs, made by the caller before it queues, so the
	// writer only binds and runs them: chunks[i] runs insEvents[stmts[i]]
	// with chunks[i][0], the batch id, set by the writer.
	chunks [][]driver.NamedValue
	stmts  []int
	args   []driver.NamedValue // what chunks are cut from (see release)

	dup bool // set by the leader before it answers r
	err error
}

func (r *request) GroupWaiter() *groupq.Waiter { return &r.Waiter }

// size estimates the bytes r's events take in the WAL.
func (r *request) size() int {
	n := 0
	for i := range r.b.Events {
		e := &r.b.Events[i]
		n += len(e.Payload) + len(e.ID) + len(e.Type) + 48
	}
	return n
}

func (s *Store) newRequest(ctx context.Context, b *store.Batch) *request {
	r := &request{b: b}
	r.Init(ctx, len(b.Events))
	r.ns, r.key, r.digest = b.KeyParams()
	ev := b.Events
	// The chunks are cut from one slice of arguments, pooled (see
	// release), and the ts values from one string; a type is boxed once
	// for a run of events of that type. What a request still allocates
	// per event is the driver's interface values of its id, ts and
	// payload.
	nargs, rest := 0, len(ev)
	for _, n := range s.sizes {
		k := rest / n
		rest -= k * n
		nargs += k * (1 + paramsPerRow*n)
	}
	all := getArgs(nargs)
	r.args = all
	var f tsFormatter
	var text strings.Builder // its String does not copy
	text.Grow(len(ev) * len(tsLayout))
	regular := true // every ts took len(tsLayout) bytes (years 0 to 9999)
	var buf [64]byte
	for j := range ev {
		if t, null := store.CleanTS(ev[j].TS); !null {
			b := f.append(buf[:0], t)
			text.Write(b)
			regular = regular && len(b) == len(tsLayout)
		}
	}
	tsText := text.String()
	var typ any
	lastType := ""
	for i, n := range s.sizes {
		for len(ev) >= n {
			size := 1 + paramsPerRow*n
			args := all[:1:size]
			all = all[size:]
			args[0] = driver.NamedValue{Ordinal: 1} // the batch id, set by the writer
			for j := range ev[:n] {
				e := &ev[j]
				var ts any
				if t, null := store.CleanTS(e.TS); !null && regular {
					ts, tsText = tsText[:len(tsLayout)], tsText[len(tsLayout):]
				} else if !null {
					ts = formatTS(t)
				}
				p := e.Payload
				if p == nil {
					p = []byte{} // an empty payload, not NULL
				}
				if t := store.CleanText(e.Type); typ == nil || t != lastType {
					typ, lastType = t, t
				}
				k := len(args) + 1
				args = append(args,
					driver.NamedValue{Ordinal: k, Value: store.CleanText(e.ID)},
					driver.NamedValue{Ordinal: k + 1, Value: typ},
					driver.NamedValue{Ordinal: k + 2, Value: ts},
					driver.NamedValue{Ordinal: k + 3, Value: p})
			}
			r.chunks = append(r.chunks, args)
			r.stmts = append(r.stmts, i)
			ev = ev[n:]
		}
	}
	return r
}

// argsPool keeps the argument slices of requests that returned
// (*[]driver.NamedValue): at 40 bytes an argument, four an event, they
// were a quarter of the bytes a request allocated.
var argsPool sync.Pool

// getArgs returns a slice of n arguments, from argsPool if it has one big
// enough.
func getArgs(n int) []driver.NamedValue {
	if p, ok := argsPool.Get().(*[]driver.NamedValue); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]driver.NamedValue, n)
}

// release gives r's arguments to argsPool. r's caller calls it once no
// leader can read them: r was answered, or withdrawn before any leader
// took it (a leader reads only the state and event count of a request it
// did not take).
func (r *request) release() {
	a := r.args
	r.args, r.chunks = nil, nil
	if a == nil {
		return
	}
	clear(a) // the pool keeps no batch alive
	argsPool.Put(&a)
}

// submit queues r and waits for its outcome, leading a group commit
// whenever the writer is free (the queue's one leader slot), and syncing
// the WAL for the groups committed after it lets the writer go.
func (s *Store) submit(r *request) (bool, error) {
	if !s.q.Submit(r, s.cfg.groupEvents, s.lead, s.flush) {
		return false, r.Ctx().Err() // no leader took it: nothing stored
	}
	return r.dup, r.err
}

// lead writes group, taken from the queue, in one transaction and
// answers its callers (with SyncFull, flush does, after the sync).
func (s *Store) lead(group []*request) {
	committed := s.commitGroup(group)
	written := 0 // bytes, counted before any caller of the group returns
	if committed {
		for _, r := range group {
			if r.err == nil && !r.dup {
				written += r.size()
			}
		}
	}
	if s.cfg.sync != SyncFull {
		for _, r := range group {
			r.Answer()
		}
	} else {
		// Every outcome waits for the sync, a duplicate or a reused key
		// too: it may rest on a commit of an earlier group not synced yet.
		s.smu.Lock()
		if committed {
			s.commits++
		}
		s.pending = append(s.pending, group)
		s.smu.Unlock()
	}
	// Any caller syncing now covers this group while the writer may wait
	// for a checkpoint.
	s.wrote(written)
}

// flush syncs the WAL for the groups committed so far and answers their
// callers, unless another caller is syncing: it then waits for that sync,
// which may not cover the latest groups, and syncs after it. The leader of
// each group calls it after releasing the writer, so the next group is
// written while this one is synced, and no group waits for a leader that
// has left.
func (s *Store) flush() {
	if s.cfg.sync != SyncFull {
		return
	}
	s.syncTok <- struct{}{}
	defer func() { <-s.syncTok }()
	s.smu.Lock()
	groups, target, err := s.pending, s.commits, s.syncErr
	s.pending = nil
	need := target > s.synced
	s.smu.Unlock()
	if len(groups) == 0 {
		return
	}
	if err == nil && need {
		if s.onSync != nil {
			s.onSync(len(groups))
		}
		err = s.syncWAL()
		s.smu.Lock()
		if err != nil {
			// After a failed fsync the kernel may have dropped the
			// unwritten pages: no later commit can be trusted either.
			err = fmt.Errorf("sync WAL: %w", err)
			s.syncErr = err
		} else {
			s.synced = target
		}
		s.smu.Unlock()
	}
	for _, group := range groups {
		for _, r := range group {
			if err != nil && r.err == nil {
				r.dup, r.err = false, err
			}
			r.Answer()
		}
	}
}

// openWAL opens the WAL file for syncWAL.
func (s *Store) openWAL() error {
	f, err := os.Open(s.walPath)
	if err != nil {
		return fmt.Errorf("sqlite: open WAL: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close() // read-only: nothing to lose
		return fmt.Errorf("sqlite: open WAL: %w", err)
	}
	if s.wal != nil {
		_ = s.wal.Close() // read-only: nothing to lose
	}
	s.wal, s.walInfo = f, fi
	return nil
}

// syncWAL makes every transaction committed so far durable, as SQLite's
// synchronous=FULL does at the end of each commit: it syncs the WAL, the
// commits' only copy until a checkpoint (which syncs the WAL before it
// copies anything into the database, and the database after).
func (s *Store) syncWAL() error {
	if err := datasync(s.wal); err != nil {
		return err
	}
	if fi, err := os.Stat(s.walPath); err == nil && os.SameFile(fi, s.walInfo) {
		return nil
	}
	// Not the file opened: SQLite deleted the WAL (only when the last
	// connection closes, after a checkpoint of all of it) and maybe made a
	// new one. The commits are in the database or the new WAL: sync both.
	db, err := os.Open(strings.TrimSuffix(s.walPath, "-wal"))
	if err != nil {
		return err
	}
	err = datasync(db)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := s.openWAL(); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // all in the database
		}
		return err
	}
	return datasync(s.wal)
}

// commitGroup writes the group in one transaction and sets each request's
// outcome; it reports whether it committed a transaction. The transaction
// runs on a context of its own, as it serves several callers; each
// request's ctx is checked between its statements.
func (s *Store) commitGroup(group []*request) (committed bool) {
	err := s.wc.Raw(func(dc any) error {
		c, ok := dc.(driverConn)
		if !ok {
			return fmt.Errorf("sqlite: driver connection %T cannot exec with a context", dc)
		}
		committed = s.commitOn(c, group)
		return nil
	})
	if err != nil {
		for _, r := range group {
			if r.err == nil {
				r.dup, r.err = false, err
			}
		}
		return false
	}
	return committed
}

// commitOn is commitGroup on the writer's driver connection.
func (s *Store) commitOn(c driverConn, group []*request) (committed bool) {
	ctx := context.Background()
	exec := func(q string) error {
		_, err := c.ExecContext(ctx, q, nil)
		return err
	}
	// rollback ends the transaction, whatever state a failed statement
	// left it in; an error means there was none left to end.
	rollback := func() { _ = exec("ROLLBACK") }
	fail := func(err error) {
		for _, r := range group {
			if r.err == nil {
				r.dup, r.err = false, err
			}
		}
	}
	if err := exec("BEGIN IMMEDIATE"); err != nil {
		fail(err)
		return false
	}
	single := len(group) == 1
	writes := 0
	for _, r := range group {
		if err := r.Ctx().Err(); err != nil {
			r.err = err
			continue
		}
		if !single {
			if err := exec("SAVEPOINT batch"); err != nil {
				rollback()
				fail(err)
				return false
			}
		}
		dup, err := s.write(ctx, r)
		if err != nil {
			r.err = err
			if single {
				break
			}
			if err := exec("ROLLBACK TO batch; RELEASE batch"); err != nil {
				rollback()
				fail(err)
				return false
			}
			continue
		}
		r.dup = dup
		if !dup {
			writes++
		}
		if !single {
			if err := exec("RELEASE batch"); err != nil {
				rollback()
				fail(err)
				return false
			}
		}
	}
	if writes == 0 {
		// Nothing to commit: duplicates and failures only. (A duplicate of
		// a batch earlier in this group is not possible here: that batch
		// wrote, so writes > 0.)
		rollback() // the outcomes are set; a rollback error changes none
		return false
	}
	if s.onCommit != nil {
		s.onCommit(len(group))
	}
	if err := exec("COMMIT"); err != nil {
		// Duplicates may have been judged against a batch of this group:
		// nothing of the group is stored, so every caller retries.
		rollback()
		fail(err)
		return false
	}
	return true
}

// write stores r's key row and events in the writer's transaction. A
// duplicate or a reused key writes nothing.
func (s *Store) write(ctx context.Context, r *request) (dup bool, err error) {
	b := r.b
	if r.key != nil && s.legacy {
		found, err := queryRow(ctx, s.getLegacy, make([]driver.Value, 1), r.key)
		if err != nil {
			return false, err
		}
		if found {
			return true, nil // stored before namespaces and digests: a retry
		}
	}
	id := make([]driver.Value, 1)
	found, err := queryRow(ctx, s.insBatch, id, r.ns, r.key, r.digest, int64(len(b.Events)), formatTS(time.Now()))
	if err != nil {
		return false, err
	}
	if !found { // the key is taken
		old := make([]driver.Value, 1)
		found, err := queryRow(ctx, s.getDigest, old, r.ns, r.key)
		if err != nil {
			return false, err
		}
		if !found {
			return false, fmt.Errorf("key %q conflicts, but no batch holds it", r.key)
		}
		if d, ok := old[0].([]byte); !ok || !bytes.Equal(d, r.digest.([]byte)) {
			return false, store.ErrKeyReused // another batch's, or one stored without a digest
		}
		return true, nil
	}
	batchID, ok := id[0].(int64)
	if !ok {
		return false, fmt.Errorf("batch id %v (%T), want an integer", id[0], id[0])
	}

	var bid any = batchID // boxed once, not once per statement
	for i, args := range r.chunks {
		// Abandon a cancelled batch between statements.
		if err := r.Ctx().Err(); err != nil {
			return false, err
		}
		args[0].Value = bid
		if err := execStmt(ctx, s.insEvents[r.stmts[i]], args); err != nil {
			return false, err
		}
	}
	// Checked once more after the last statement: a batch whose ctx ended
	// while it was written is not committed.
	if err := r.Ctx().Err(); err != nil {
		return false, err
	}
	return false, nil
}

// formatTS returns t in UTC as tsLayout formats it (see tsFormatter).
func formatTS(t time.Time) string {
	var f tsFormatter
	var b [len(tsLayout)]byte
	return string(f.append(b[:0], t))
}

// tsFormatter formats times in UTC as tsLayout does, for years 0 to 9999
// (all RFC 3339 allows; others through time.AppendFormat), several times
// faster than time.Format, which was a tenth of the writer's CPU: the
// time of day comes from the Unix time, and the date is kept from the
// previous time formatted on the same day (a batch's events mostly share
// one).
type tsFormatter struct {
	day  int64 // days since 1970-01-01 of date; valid if set
	date [11]byte
	set  bool
}

func (f *tsFormatter) append(dst []byte, t time.Time) []byte {
	sec := t.Unix()
	day, tod := sec/86400, sec%86400
	if tod < 0 {
		day, tod = day-1, tod+86400
	}
	if !f.set || day != f.day {
		y, mo, d := t.UTC().Date()
		if y < 0 || y > 9999 {
			f.set = false
			return t.UTC().AppendFormat(dst, tsLayout)
		}
		put(f.date[0:4], y)
		f.date[4] = '-'
		put(f.date[5:7], int(mo))
		f.date[7] = '-'
		put(f.date[8:10], d)
		f.date[10] = 'T'
		f.day, f.set = day, true
	}
	var b [len(tsLayout) - len(f.date)]byte
	put(b[0:2], int(tod/3600))
	b[2] = ':'
	put(b[3:5], int(tod/60%60))
	b[5] = ':'
	put(b[6:8], int(tod%60))
	b[8] = '.'
	put(b[9:18], t.Nanosecond())
	b[18] = 'Z'
	return append(append(dst, f.date[:]...), b[:]...)
}

// put writes v in decimal into b, zero-padded to len(b) digits.
func put(b []byte, v int) {
	for j := len(b) - 1; j >= 0; j-- {
		b[j] = byte('0' + v%10)
		v /= 10
	}
}

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
	s.ckmu.Lock()
	defer s.ckmu.Unlock()
	return s.ckErr // a WAL that cannot be checkpointed grows without end
}

// Counts implements [store.Store]: the events and batches in the file (at
// Open, plus those stored since through this Store) and the duplicates
// since Open.
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
	if s.ck != nil {
		close(s.ckReq)
		<-s.ckDone
		errs = append(errs, s.ck.Close())
	}
	if s.wal != nil {
		errs = append(errs, s.wal.Close())
	}
	if s.wc != nil {
		errs = append(errs, s.wc.Raw(func(any) error {
			var errs []error
			for _, st := range append(s.insEvents, s.insBatch, s.getDigest, s.getLegacy) {
				if st != nil {
					errs = append(errs, st.Close())
				}
			}
			return errors.Join(errs...)
		}))
		errs = append(errs, s.wc.Close())
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
	rows, err := tx.QueryContext(ctx, "SELECT id, namespace, key FROM batches ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("sqlite: read batches: %w", err)
	}
	for rows.Next() {
		var id int64
		var ns, key sql.NullString
		if err := rows.Scan(&id, &ns, &key); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlite: read batches: %w", err)
		}
		index[id] = len(out)
		out = append(out, store.Batch{Namespace: ns.String, Key: key.String})
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

// Checkpoint pacing, in bytes of events written (an estimate of the WAL
// they fill). SQLite's automatic checkpoint runs every 1,000 pages.
const (
	ckptBytes    = 4 << 20
	restartBytes = 64 << 20
)

// startCheckpointer opens the checkpoint connection and starts its
// goroutine; the writer's own automatic checkpoint is off (in the DSN).
func (s *Store) startCheckpointer(path string) error {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(s.cfg.busyTimeout.Milliseconds(), 10)+")")
	// A checkpoint syncs the WAL before it copies and the database after,
	// at any setting but OFF.
	q.Add("_pragma", "synchronous(NORMAL)")
	ck, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	ck.SetMaxOpenConns(1)
	ck.SetMaxIdleConns(1)
	ck.SetConnMaxLifetime(0)
	ck.SetConnMaxIdleTime(0)
	s.ck = ck
	s.ckptEvery, s.restartEvery = ckptBytes, restartBytes
	s.ckReq = make(chan chan error, 1)
	s.ckDone = make(chan struct{})
	go s.checkpointer()
	return nil
}

func (s *Store) checkpointer() {
	defer close(s.ckDone)
	for reply := range s.ckReq {
		if s.onCheckpoint != nil {
			s.onCheckpoint()
		}
		err := s.checkpoint()
		s.ckmu.Lock()
		s.ckErr = err
		s.ckmu.Unlock()
		if reply != nil {
			reply <- err
		}
	}
}

// checkpoint copies every frame of the WAL it can (PASSIVE: it waits for
// no one) into the database.
func (s *Store) checkpoint() error {
	var busy, log, done int
	if err := s.ck.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &done); err != nil {
		return fmt.Errorf("sqlite: checkpoint: %w", err)
	}
	return nil
}

// wrote is called by the writer after each commit of n bytes (estimated);
// before the next transaction it may wait for a checkpoint (see Store.ck).
func (s *Store) wrote(n int) {
	s.sinceCkpt += n
	s.sinceRestart += n
	switch {
	case s.sinceRestart >= s.restartEvery:
		s.sinceCkpt, s.sinceRestart = 0, 0
		if s.onRestart != nil {
			s.onRestart()
		}
		reply := make(chan error, 1)
		s.ckReq <- reply
		<-reply // an error is kept for Ping; the WAL then grows, nothing is lost
	case s.sinceCkpt >= s.ckptEvery:
		s.sinceCkpt = 0
		select {
		case s.ckReq <- nil:
		default: // one is asked for already
		}
	}
}
