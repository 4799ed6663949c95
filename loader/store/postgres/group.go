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
)

// This file holds the group commit: concurrent Store calls share one
// transaction, so that a commit, a COPY and the round trips around them are
// paid per group rather than per batch. In a CPU profile of the server at
// 16 clients with one transaction per batch, setting up and tearing down
// each COPY's multi-insert slots took 14% of the server's CPU
// (MakeTupleTableSlot and ExecDropSingleTupleTableSlot: every slot holds a
// reference to the same tuple descriptor, which PostgreSQL 15's resource
// owner tracks in a hash that all those references collide in) and
// re-faulting the memory a COPY frees another 5%, whatever the rows.

// request is one Store call waiting for, or taken into, a group commit.
type request struct {
	ctx context.Context
	b   *store.Batch

	ns          string
	key, digest any // NULL for no key: NULLs never conflict

	// events is len(b.Events), fixed before r is queued: a leader reads it
	// for requests it does not take.
	events int

	state atomic.Int32 // queued, taken (by a leader) or withdrawn (by its caller)

	// Set by the leader that took r before it closes done.
	dup   bool
	err   error
	alone bool // the group failed: store r in a transaction of its own
	done  chan struct{}

	batchID int64 // while the group is written: r's batches row, 0 if none
}

const (
	queued int32 = iota
	taken
	withdrawn
)

func newRequest(ctx context.Context, b *store.Batch) *request {
	r := &request{ctx: ctx, b: b, events: len(b.Events), ns: store.CleanText(b.Namespace), done: make(chan struct{})}
	if b.Key != "" {
		r.key = store.CleanText(b.Key)
		sum := b.Digest()
		r.digest = sum[:]
	}
	return r
}

// submit queues r and waits for its outcome, leading a group commit
// whenever one of the group committers' slots is free.
func (s *Store) submit(r *request) (dup bool, err error) {
	s.qmu.Lock()
	s.queue = append(s.queue, r)
	if s.onQueued != nil {
		s.onQueued(len(s.queue))
	}
	s.qmu.Unlock()
	for {
		select {
		case <-r.done:
			return s.outcome(r)
		default:
		}
		select {
		case <-r.done:
			return s.outcome(r)
		case s.leaders <- struct{}{}:
			s.lead()
			<-s.leaders
		case <-r.ctx.Done():
			if r.state.CompareAndSwap(queued, withdrawn) {
				return false, r.ctx.Err() // no leader took it: nothing stored
			}
			<-r.done // a leader has it: its outcome is the truth
			return s.outcome(r)
		}
	}
}

// outcome is r's result once a leader answered it: a request of a group
// that failed is stored alone, by its own caller.
func (s *Store) outcome(r *request) (bool, error) {
	if r.alone {
		return s.store(r.ctx, r.b)
	}
	return r.dup, r.err
}

// lead takes the queued requests, up to the group's event budget, writes
// them in one transaction and answers their callers.
func (s *Store) lead() {
	s.qmu.Lock()
	var group []*request
	events, i := 0, 0
	for ; i < len(s.queue); i++ {
		r := s.queue[i]
		if len(group) > 0 && events+r.events > s.cfg.groupEvents {
			break
		}
		if r.state.CompareAndSwap(queued, taken) {
			group = append(group, r)
			events += r.events
		}
	}
	n := copy(s.queue, s.queue[i:])
	clear(s.queue[n:])
	s.queue = s.queue[:n]
	s.qmu.Unlock()
	switch {
	case len(group) == 0:
		return
	case len(group) == 1:
		// Alone, it is a transaction of its own under its caller's ctx.
		r := group[0]
		r.dup, r.err = s.store(r.ctx, r.b)
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
		close(r.done)
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
	for len(group) > 0 {
		live := group[:0:0]
		for _, r := range group {
			if err := r.ctx.Err(); err != nil {
				r.err = err
			} else {
				live = append(live, r)
			}
		}
		group = live
		if len(group) == 0 {
			return
		}
		again, err := s.writeGroup(group)
		if err == nil && !again {
			return
		}
		if err != nil {
			if s.onGroupError != nil {
				s.onGroupError(err)
			}
			_, unknown := errors.AsType[commitError](err)
			for _, r := range group {
				r.dup, r.err, r.alone = false, nil, !unknown
				if unknown {
					r.err = err
				}
			}
			return
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
		stop := context.AfterFunc(r.ctx, func() {
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
		q.Queue(insertBatchSQL, r.ns, r.key, r.digest, r.events)
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
			total += r.events
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
		if r.ctx.Err() != nil {
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
