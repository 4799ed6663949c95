package postgres

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/internal/groupq"
)

// This file holds the group commit: concurrent Store calls share one
// transaction, so that a commit, a COPY and the round trips around them are
// paid per group rather than per batch. In a CPU profile of the server at
// 16 clients with one transaction per batch, setting up and tearing down
// each COPY's multi-insert slots took 20% of the server's CPU
// (MakeTupleTableSlot and ExecDropSingleTupleTableSlot: every slot holds a
// reference to the same tuple descriptor, which PostgreSQL 15's resource
// owner tracks in a hash that all those references collide in), commits
// 11% and re-faulting the memory a COPY frees another 7%, whatever the
// rows (docs/loader-benchmarks.md).

// request is one Store call waiting for, or taken into, a group commit.
type request struct {
	groupq.Waiter
	b *store.Batch

	ns          string
	key, digest any // NULL for no key: NULLs never conflict

	// Set by the leader that took r before it answers r.
	dup   bool
	err   error
	alone bool // the group failed: store r in a transaction of its own

	batchID int64 // while the group is written: r's batches row, 0 if none
}

func (r *request) GroupWaiter() *groupq.Waiter { return &r.Waiter }

func newRequest(ctx context.Context, b *store.Batch) *request {
	r := &request{b: b}
	r.Init(ctx, len(b.Events))
	r.ns, r.key, r.digest = b.KeyParams()
	return r
}

// submit queues r and returns its outcome, leading group commits while it
// waits (see groupq).
func (s *Store) submit(r *request) (dup bool, err error) {
	if !s.q.Submit(r, s.cfg.groupEvents, s.lead, nil) {
		return false, r.Ctx().Err() // no leader took it: nothing stored
	}
	if r.alone {
		// Its group failed: it is stored by its own caller.
		return s.store(r.Ctx(), r.b)
	}
	return r.dup, r.err
}

// lead writes a group taken from the queue and answers its callers.
func (s *Store) lead(group []*request) {
	switch {
	case len(group) == 1:
		// Alone, it is a transaction of its own under its caller's ctx.
		r := group[0]
		r.dup, r.err = s.store(r.Ctx(), r.b)
	case s.legacy:
		// Keys from before namespaces are checked one batch at a time.
		for _, r := range group {
			r.alone = true
		}
	default:
		s.commitGroup(group)
	}
	if s.onCommit != nil {
		s.onCommit(len(group))
	}
	for _, r := range group {
		r.Answer()
	}
}

// commitGroup writes group in one transaction and sets each request's
// outcome. A request whose ctx ends before the commit is left out: the
// transaction is rolled back and written again without it. If the
// transaction fails before its COMMIT, every request is marked to be
// stored alone, so one batch that cannot be stored fails no other; a
// failed COMMIT fails them all (see commitError).
func (s *Store) commitGroup(group []*request) {
	// Keys are inserted in one order by every group, so two groups that
	// share keys wait for each other in that order, never in a cycle.
	slices.SortStableFunc(group, func(a, b *request) int {
		ka, _ := a.key.(string)
		kb, _ := b.key.(string)
		return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(ka, kb))
	})
	for {
		// A new slice: lead answers every request of the group it gave.
		live := make([]*request, 0, len(group))
		for _, r := range group {
			if err := r.Ctx().Err(); err != nil {
				r.err = err
			} else {
				live = append(live, r)
			}
		}
		if len(live) == 0 {
			return
		}
		again, err := s.writeGroup(live)
		if err != nil {
			s.groupFailed(live, err)
			return
		}
		if !again {
			return
		}
		group = live
	}
}

// groupFailed sets the outcome of the requests of a group transaction
// that failed with err: each is stored alone by its caller, unless the
// COMMIT failed (commitError), whose outcome no one knows.
func (s *Store) groupFailed(group []*request, err error) {
	if s.onGroupError != nil {
		s.onGroupError(err)
	}
	_, unknown := errors.AsType[commitError](err)
	for _, r := range group {
		r.dup, r.err, r.alone = false, nil, true
		if unknown {
			r.err, r.alone = err, false
		}
	}
}

// writeGroup runs group's transaction. again reports that it was rolled
// back because a request's ctx ended before the commit; err, that it
// failed.
func (s *Store) writeGroup(group []*request) (again bool, err error) {
	// The transaction is cut off only when every caller of the group has
	// gone; one caller's deadline must not fail the others.
	gctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var left atomic.Int32
	left.Store(int32(len(group)))
	for _, r := range group {
		stop := context.AfterFunc(r.Ctx(), func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}

	tx, err := s.pool.Begin(gctx)
	if err != nil {
		return false, err
	}
	defer func() {
		if err != nil || again {
			_ = tx.Rollback(gctx)
		}
	}()

	// The key rows, pipelined in one round trip.
	var q pgx.Batch
	for _, r := range group {
		r.dup, r.err, r.batchID = false, nil, 0
		q.Queue(insertBatchSQL, r.ns, r.key, r.digest, r.Events())
	}
	res := tx.SendBatch(gctx, &q)
	var conflicts []*request
	for _, r := range group {
		err := res.QueryRow().Scan(&r.batchID)
		if errors.Is(err, pgx.ErrNoRows) {
			conflicts = append(conflicts, r)
			continue
		}
		if err != nil {
			_ = res.Close()
			return false, err
		}
	}
	if err := res.Close(); err != nil {
		return false, err
	}
	// A key taken by a committed batch (or by an earlier request of this
	// group: a retry that arrived with it) is a duplicate or a reuse.
	for _, r := range conflicts {
		var old []byte
		if err := tx.QueryRow(gctx, selectDigestSQL, r.ns, r.key).Scan(&old); err != nil {
			return false, err
		}
		if digest, _ := r.digest.([]byte); bytes.Equal(old, digest) {
			r.dup = true
		} else {
			r.err = store.ErrKeyReused
		}
	}

	parts := make([]copyPart, 0, len(group))
	total := 0
	for _, r := range group {
		if r.batchID != 0 {
			parts = append(parts, copyPart{r.batchID, r.b.Events})
			total += r.Events()
		}
	}
	if len(parts) > 0 {
		cr := newCopyReader(parts)
		tag, err := tx.Conn().PgConn().CopyFrom(gctx, cr, copyEventsSQL)
		cr.release()
		if err != nil {
			return false, err
		}
		if n := tag.RowsAffected(); n != int64(total) {
			return false, fmt.Errorf("copied %d of %d events", n, total)
		}
	}
	if s.beforeCommit != nil {
		if err := s.beforeCommit(tx, group); err != nil {
			return false, err
		}
	}
	for _, r := range group {
		if r.Ctx().Err() != nil {
			return true, nil
		}
	}
	if err := tx.Commit(gctx); err != nil {
		return false, commitError{err}
	}
	return false, nil
}

// commitError is a failed COMMIT, whose outcome the client cannot know:
// the server may have committed before the connection failed. Storing the
// group again batch by batch could then store a batch without a key twice,
// so each caller gets the error, as a batch stored alone would.
type commitError struct{ err error }

func (e commitError) Error() string { return e.err.Error() }
func (e commitError) Unwrap() error { return e.err }
