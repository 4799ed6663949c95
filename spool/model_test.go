package spool

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"pgregory.net/rapid"
)

// mBatch is the model's view of one batch.
type mBatch struct {
	key string
	n   int
	idx int // creation order

	ok         bool // on disk for the running system: Append returned nil, or recovered
	maybe      bool // Append failed after (perhaps) writing: may or may not come back
	durable    bool // survives a power loss
	acked      bool // acked or dropped
	ackWritten bool // the ack reached the page cache (Ack returned nil)
	ackDurable bool // the ack survives a power loss
}

type spoolModel struct {
	mode  SyncMode
	drop  bool
	m     *memFS
	s     *Spool
	byKey map[string]*mBatch
	all   []*mBatch
	open  []*mBatch // the batches the last Open found, in order: what Replay owes
	next  int

	dropped []*mBatch // by the current Append
}

func (sm *spoolModel) opts(rt *rapid.T) []Option {
	o := []Option{withFS(sm.m), WithSync(sm.mode), WithSegmentSize(1024), WithMaxBytes(8 << 10)}
	if sm.drop {
		o = append(o, WithDropOldest(func(b *batchproc.Batch) {
			mb := sm.byKey[b.Key()]
			if mb == nil || !mb.ok || mb.acked {
				rt.Fatalf("dropped %q, which is not a live batch", b.Key())
			}
			if d := diffBatch(b, mb.key, mb.n); d != "" {
				rt.Fatalf("dropped batch differs: %s", d)
			}
			mb.acked, mb.ackWritten = true, true
			sm.dropped = append(sm.dropped, mb)
		}))
	}
	return o
}

// syncPoint: everything written so far is durable.
func (sm *spoolModel) syncPoint() {
	for _, b := range sm.all {
		if b.ok {
			b.durable = true
		}
		if b.ackWritten {
			b.ackDurable = true
		}
	}
}

func (sm *spoolModel) live() []*mBatch {
	var out []*mBatch
	for _, b := range sm.all {
		if b.ok && !b.acked {
			out = append(out, b)
		}
	}
	return out
}

func (sm *spoolModel) append(rt *rapid.T) {
	n := rapid.IntRange(1, 8).Draw(rt, "events")
	b := &mBatch{key: fmt.Sprintf("k%04d", sm.next), n: n, idx: sm.next}
	sm.next++
	sm.byKey[b.key] = b
	sm.all = append(sm.all, b)
	sm.dropped = sm.dropped[:0]
	err := sm.s.Append(testBatch(rt, b.key, n))
	if err != nil && len(sm.dropped) > 0 {
		sm.dropped[len(sm.dropped)-1].ackWritten = false // its ack may be what failed
	}
	switch {
	case err == nil:
		b.ok = true
		if sm.mode == SyncBatch {
			sm.syncPoint()
		}
	case errors.Is(err, ErrFull):
		// nothing of it is on disk
	default:
		var fe *FailedError
		if !errors.As(err, &fe) {
			rt.Fatalf("Append: unexpected error %v", err)
		}
		b.maybe = true
	}
}

func (sm *spoolModel) ack(rt *rapid.T) {
	live := sm.live()
	if len(live) == 0 {
		rt.Skip("nothing to ack")
	}
	b := rapid.SampledFrom(live).Draw(rt, "ack")
	b.acked = true
	if err := sm.s.Ack(b.key); err == nil {
		b.ackWritten = true
	}
}

// reopen opens the spool after a crash, power loss or Close, and checks
// what it recovered against the model.
func (sm *spoolModel) reopen(rt *rapid.T, how string) {
	sm.m.failSyncs, sm.m.limit = false, 0 // the disk is healthy again
	s, err := Open("/d", sm.opts(rt)...)
	if err != nil {
		rt.Fatalf("Open after %s: %v", how, err)
	}
	sm.s = s
	var got []*mBatch
	seen := map[string]bool{}
	err = s.Replay(func(rb *batchproc.Batch) error {
		b := sm.byKey[rb.Key()]
		if b == nil {
			rt.Fatalf("after %s: replayed unknown key %q", how, rb.Key())
		}
		if d := diffBatch(rb, b.key, b.n); d != "" {
			rt.Fatalf("after %s: replayed a wrong batch: %s", how, d)
		}
		if seen[b.key] {
			rt.Fatalf("after %s: %s replayed twice", how, b.key)
		}
		seen[b.key] = true
		if len(got) > 0 && got[len(got)-1].idx > b.idx {
			rt.Fatalf("after %s: %s replayed after %s: order lost", how, b.key, got[len(got)-1].key)
		}
		got = append(got, b)
		return nil
	})
	if err != nil {
		rt.Fatalf("Replay after %s: %v", how, err)
	}
	power := how == "power loss"
	for _, b := range sm.all {
		in := seen[b.key]
		switch {
		case b.ok && !b.acked && !in && (!power || b.durable):
			rt.Fatalf("after %s (%v): lost %s (appended, not acked, durable=%v)", how, sm.mode, b.key, b.durable)
		case b.acked && b.ackWritten && in && (!power || b.ackDurable):
			rt.Fatalf("after %s (%v): replayed %s, which was acked", how, sm.mode, b.key)
		case !b.ok && !b.maybe && !b.acked && in:
			rt.Fatalf("after %s: replayed %s, whose Append failed with ErrFull", how, b.key)
		}
	}
	// The model follows what the spool now holds.
	for _, b := range sm.all {
		if seen[b.key] {
			b.ok, b.acked, b.maybe, b.ackWritten, b.ackDurable = true, false, false, false, false
			if power || sm.mode != SyncNever {
				b.durable = true // Open fsyncs what it recovered (except SyncNever)
			}
		} else {
			b.ok, b.maybe = false, false
		}
	}
	sm.open = got
	st := s.Stats()
	if st.Batches != len(got) || st.Recovered != uint64(len(got)) {
		rt.Fatalf("after %s: Stats Batches %d Recovered %d, replayed %d", how, st.Batches, st.Recovered, len(got))
	}
	// SyncNever does not fsync the directory before Close: a power loss
	// may leave a reused file under its old name, its overwrite half
	// written back, which recovery cannot tell from corruption. Its
	// batches were all acked (only a fully acked segment's file is
	// reused), and the checks above hold: nothing durable was lost.
	if (st.LostBatches != 0 || st.CorruptFiles != 0) && !(power && sm.mode == SyncNever) {
		rt.Fatalf("after %s: recovery reports corruption %+v", how, st)
	}
}

func (sm *spoolModel) check(rt *rapid.T) {
	st := sm.s.Stats()
	if st.Recovered+st.Appended != st.Acked+st.Dropped+uint64(st.Batches) {
		rt.Fatalf("accounting: Recovered %d + Appended %d != Acked %d + Dropped %d + Batches %d",
			st.Recovered, st.Appended, st.Acked, st.Dropped, st.Batches)
	}
	if st.Err == nil {
		if want := len(sm.live()); st.Batches != want {
			rt.Fatalf("Stats.Batches %d, model %d", st.Batches, want)
		}
	}
	if st.Bytes > 8<<10+1024 { // acks may pass the budget a little
		rt.Fatalf("Bytes %d far over the budget", st.Bytes)
	}
}

func testModel(t *testing.T, mode SyncMode) {
	rapid.Check(t, func(rt *rapid.T) {
		sm := &spoolModel{mode: mode, m: newMemFS(), byKey: map[string]*mBatch{}, drop: rapid.Bool().Draw(rt, "dropOldest")}
		sm.reopen(rt, "start")
		defer func() { sm.s.Close() }()
		actions := map[string]func(*rapid.T){
			"append":  sm.append,
			"append2": sm.append,
			"append3": sm.append,
			"ack":     sm.ack,
			"append4": sm.append,
			"ack2":    sm.ack,
			"crash": func(rt *rapid.T) {
				sm.m.crash()
				sm.s.Close() // its handles are dead: nothing more reaches the files
				sm.reopen(rt, "process crash")
			},
			"powerloss": func(rt *rapid.T) {
				sm.m.crash()
				sm.s.Close()
				sm.m.powerLoss(func(name string, n int) int {
					return rapid.IntRange(0, n).Draw(rt, "written back")
				})
				sm.reopen(rt, "power loss")
			},
			"close": func(rt *rapid.T) {
				if err := sm.s.Close(); err == nil {
					sm.syncPoint()
				}
				sm.reopen(rt, "close")
			},
			"replay": func(rt *rapid.T) {
				var want []string
				for _, b := range sm.open {
					if !b.acked && b.ok {
						want = append(want, b.key)
					}
				}
				if got := replayKeys(rt, sm.s, func(k string) int { return sm.byKey[k].n }); !slices.Equal(got, want) {
					rt.Fatalf("Replay gave %v, want %v", got, want)
				}
			},
			"failsync": func(rt *rapid.T) {
				if rapid.IntRange(0, 3).Draw(rt, "rare") == 0 {
					sm.m.failSyncs = true
				}
			},
			"enospc": func(rt *rapid.T) {
				room := int64(rapid.IntRange(0, 2000).Draw(rt, "room"))
				sm.m.mu.Lock()
				sm.m.limit = sm.m.used() + room
				sm.m.mu.Unlock()
			},
			"space": func(*rapid.T) { sm.m.limit = 0 },
			"":      sm.check,
		}
		if mode > 0 {
			actions["tick"] = func(rt *rapid.T) {
				sm.s.syncTick()
				if sm.s.Stats().Err == nil {
					sm.syncPoint()
				}
			}
		}
		rt.Repeat(actions)
	})
}

// The model test: Append, Ack, Replay, process crash, power loss (with any
// prefix of the unsynced writes written back, so records tear anywhere),
// Close, fsync failures and ENOSPC, on the strict in-memory filesystem,
// checking each sync mode's promise after every reopen.
func TestModelSyncBatch(t *testing.T)    { testModel(t, SyncBatch) }
func TestModelSyncInterval(t *testing.T) { testModel(t, SyncInterval(time.Hour)) }
func TestModelSyncNever(t *testing.T)    { testModel(t, SyncNever) }
