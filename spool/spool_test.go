package spool

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchproc/batchproc"
)

// testBatch returns a batch whose content follows from key and n, so a
// replayed batch can be checked against what was appended.
func testBatch(t tb, key string, n int) *batchproc.Batch {
	t.Helper()
	b, err := batchproc.NewBatch(key, testEvents(key, n)...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testEvents(key string, n int) []batchproc.Event {
	evs := make([]batchproc.Event, n)
	for i := range evs {
		id := ""
		if i%3 != 0 {
			id = fmt.Sprintf("%s-id%d", key, i)
		}
		evs[i] = batchproc.Event{ID: id, Payload: fmt.Appendf(nil, `{"k":%q,"i":%d,"pad":%q}`, key, i, strings.Repeat("x", i%17))}
	}
	return evs
}

// sameBatch reports how b differs from the batch testBatch(key, n) makes,
// or "" if it does not.
func diffBatch(b *batchproc.Batch, key string, n int) string {
	if b.Key() != key {
		return fmt.Sprintf("key %q, want %q", b.Key(), key)
	}
	want := testEvents(key, n)
	if b.Len() != len(want) {
		return fmt.Sprintf("%s: %d events, want %d", key, b.Len(), len(want))
	}
	for i, w := range want {
		e := b.Event(i)
		if e.ID != w.ID || !bytes.Equal(e.Payload, w.Payload) {
			return fmt.Sprintf("%s: event %d is {%q %q}, want {%q %q}", key, i, e.ID, e.Payload, w.ID, w.Payload)
		}
	}
	return ""
}

// replayKeys replays s and returns the keys in order, checking each batch's
// content against testBatch(key, n(key)).
func replayKeys(t tb, s *Spool, n func(key string) int) []string {
	t.Helper()
	var keys []string
	err := s.Replay(func(b *batchproc.Batch) error {
		if n != nil {
			if d := diffBatch(b, b.Key(), n(b.Key())); d != "" {
				t.Errorf("replayed a wrong batch: %s", d)
			}
		}
		keys = append(keys, b.Key())
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return keys
}

// tb is what the helpers need of a *testing.T or a *rapid.T.
type tb interface {
	Helper()
	Fatal(...any)
	Fatalf(string, ...any)
	Errorf(string, ...any)
}

func mustOpen(t tb, dir string, opts ...Option) *Spool {
	t.Helper()
	s, err := Open(dir, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func five(string) int { return 5 }

func TestAppendAckReplayAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	for _, k := range []string{"a", "b", "c", "d"} {
		if err := s.Append(testBatch(t, k, 5)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack("b"); err != nil {
		t.Fatal(err)
	}
	if got := replayKeys(t, s, five); len(got) != 0 {
		t.Errorf("Replay of a fresh spool replayed %v, want nothing (appended batches are the caller's)", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dir)
	if got, want := replayKeys(t, s, five), []string{"a", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	st := s.Stats()
	if st.Recovered != 3 || st.Replayed != 3 || st.Batches != 3 {
		t.Errorf("stats %+v: want Recovered 3, Replayed 3, Batches 3", st)
	}
	s.Ack("c")
	if got, want := replayKeys(t, s, five), []string{"a", "d"}; !slices.Equal(got, want) {
		t.Errorf("second Replay gave %v, want %v (acked batches are skipped)", got, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

func TestSecondOpenOfADirectoryFails(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	_, err := Open(dir)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory", err)
	}
	s.Close()
	s = mustOpen(t, dir) // the lock went with Close
	s.Close()
}

func TestOpenRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string][]Option{
		"zero interval":   {WithSync(SyncInterval(0))},
		"tiny segment":    {WithSegmentSize(100)},
		"budget < 2 segs": {WithMaxBytes(1 << 20), WithSegmentSize(1 << 20)},
	} {
		if _, err := Open(t.TempDir(), opts...); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

func TestOpenFailsOnUnreadableDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		// root reads everything; check the error path with a file in the way instead.
		p := filepath.Join(t.TempDir(), "f")
		os.WriteFile(p, nil, 0o644)
		if _, err := Open(p); err == nil {
			t.Fatal("Open of a regular file succeeded")
		}
		return
	}
	dir := t.TempDir()
	os.Chmod(dir, 0)
	defer os.Chmod(dir, 0o755)
	if _, err := Open(dir); err == nil {
		t.Fatal("Open of an unreadable directory succeeded")
	}
}

func TestSegmentsRotateAndAreReclaimed(t *testing.T) {
	m := newMemFS()
	s := mustOpen(t, "/d", withFS(m), WithSegmentSize(4096), WithMaxBytes(1<<20))
	var keys []string
	for i := range 50 {
		k := fmt.Sprintf("k%02d", i)
		keys = append(keys, k)
		if err := s.Append(testBatch(t, k, 5)); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Segments < 3 {
		t.Fatalf("%d segments after 50 batches of ~500 bytes in 4 KiB segments", st.Segments)
	}
	if int64(len(m.segmentFiles())) != int64(st.Segments) {
		t.Errorf("Stats says %d segments, the directory holds %d", st.Segments, len(m.segmentFiles()))
	}
	for _, k := range keys[:25] {
		s.Ack(k)
	}
	mid := s.Stats()
	if mid.Segments >= st.Segments {
		t.Errorf("acking half the batches left %d segments (were %d)", mid.Segments, st.Segments)
	}
	if mid.Bytes != m.used() { // the spare's file counts: it holds disk
		t.Errorf("after acking half: Stats.Bytes %d, files hold %d", mid.Bytes, m.used())
	}
	for _, k := range keys[25:] {
		s.Ack(k)
	}
	end := s.Stats()
	if end.Batches != 0 {
		t.Errorf("%d batches after acking all", end.Batches)
	}
	s.Close()
	onDisk := m.used()
	if onDisk != end.Bytes {
		t.Errorf("Stats.Bytes %d, files hold %d", end.Bytes, onDisk)
	}
	s = mustOpen(t, "/d", withFS(m), WithSegmentSize(4096), WithMaxBytes(1<<20))
	defer s.Close()
	if st := s.Stats(); st.Bytes != onDisk || st.Batches != 0 {
		t.Errorf("reopened: Bytes %d (files %d), Batches %d", st.Bytes, onDisk, st.Batches)
	}
	if got := replayKeys(t, s, five); len(got) != 0 {
		t.Errorf("replayed %v after everything was acked", got)
	}
}

func TestBudgetFullThenRoomAfterAcks(t *testing.T) {
	m := newMemFS()
	s := mustOpen(t, "/d", withFS(m), WithSegmentSize(4096), WithMaxBytes(16384))
	defer s.Close()
	var keys []string
	var full error
	for i := range 100 {
		k := fmt.Sprintf("k%02d", i)
		if full = s.Append(testBatch(t, k, 5)); full != nil {
			break
		}
		keys = append(keys, k)
	}
	if !errors.Is(full, ErrFull) || !errors.Is(full, batchproc.ErrFull) {
		t.Fatalf("Append into a full spool: %v, want ErrFull wrapping batchproc.ErrFull", full)
	}
	st := s.Stats()
	if st.Bytes > 16384 || st.Full != 1 {
		t.Errorf("Bytes %d over the budget of 16384, or Full %d != 1", st.Bytes, st.Full)
	}
	for _, k := range keys[:len(keys)/2] {
		s.Ack(k)
	}
	if err := s.Append(testBatch(t, "again", 5)); err != nil {
		t.Errorf("Append after acking half: %v", err)
	}
	if err := s.Append(testBatch(t, "huge", 2000)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Append of a batch larger than the budget: %v, want ErrTooLarge", err)
	}
	if err := s.Append(testBatch(t, "again", 5)); !errors.Is(err, ErrDuplicateKey) {
		t.Errorf("Append of a spooled key: %v, want ErrDuplicateKey", err)
	}
}

func TestDropOldestMakesRoomAndHandsOverTheBatches(t *testing.T) {
	m := newMemFS()
	var dropped []string
	s := mustOpen(t, "/d", withFS(m), WithSegmentSize(4096), WithMaxBytes(16384),
		WithDropOldest(func(b *batchproc.Batch) {
			if d := diffBatch(b, b.Key(), 5); d != "" {
				t.Errorf("dropped batch differs: %s", d)
			}
			dropped = append(dropped, b.Key())
		}))
	var keys []string
	for i := range 200 {
		k := fmt.Sprintf("k%03d", i)
		keys = append(keys, k)
		if err := s.Append(testBatch(t, k, 5)); err != nil {
			t.Fatalf("Append %d with drop-oldest: %v", i, err)
		}
		if b := s.Stats().Bytes; b > 16384 {
			t.Fatalf("Bytes %d over the budget", b)
		}
	}
	st := s.Stats()
	if len(dropped) == 0 || uint64(len(dropped)) != st.Dropped {
		t.Fatalf("dropped %d batches, Stats.Dropped %d", len(dropped), st.Dropped)
	}
	if !slices.Equal(dropped, keys[:len(dropped)]) {
		t.Errorf("dropped %v, want the oldest %v", dropped, keys[:len(dropped)])
	}
	if st.Appended != st.Dropped+uint64(st.Batches)+st.Acked {
		t.Errorf("accounting: Appended %d != Dropped %d + Batches %d + Acked %d", st.Appended, st.Dropped, st.Batches, st.Acked)
	}
	s.Close()
	s = mustOpen(t, "/d", withFS(m), WithSegmentSize(4096), WithMaxBytes(16384))
	defer s.Close()
	if got := replayKeys(t, s, five); !slices.Equal(got, keys[len(dropped):]) {
		t.Errorf("replayed %v, want %v (dropped batches never come back)", got, keys[len(dropped):])
	}
}

func TestENOSPCIsFullAndLeavesNoPartialRecord(t *testing.T) {
	m := newMemFS()
	s := mustOpen(t, "/d", withFS(m), WithSegmentSize(1<<20), WithMaxBytes(8<<20))
	m.limit = 3000 // the filesystem fills long before the budget
	var keys []string
	var err error
	for i := range 100 {
		k := fmt.Sprintf("k%02d", i)
		if err = s.Append(testBatch(t, k, 5)); err != nil {
			break
		}
		keys = append(keys, k)
	}
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Append on a full filesystem: %v, want ErrFull", err)
	}
	if st := s.Stats(); st.Err != nil {
		t.Errorf("ENOSPC made the spool fail: %v", st.Err)
	}
	var onDisk int64
	for _, d := range m.segmentFiles() {
		onDisk += int64(len(d))
	}
	if onDisk != s.Stats().Bytes {
		t.Errorf("files hold %d bytes, Stats %d: the partial record was not cut off", onDisk, s.Stats().Bytes)
	}
	m.limit = 0
	if err := s.Append(testBatch(t, "after", 5)); err != nil {
		t.Fatalf("Append once space is back: %v", err)
	}
	keys = append(keys, "after")
	s.Close()
	s = mustOpen(t, "/d", withFS(m), WithSegmentSize(1<<20), WithMaxBytes(8<<20))
	defer s.Close()
	if got := replayKeys(t, s, five); !slices.Equal(got, keys) {
		t.Errorf("replayed %v, want %v", got, keys)
	}
	if st := s.Stats(); st.TornBytes != 0 || st.LostBytes != 0 {
		t.Errorf("recovery found damage after ENOSPC: %+v", st)
	}
}

// ENOSPC at every byte of the first two records, so that it cuts short
// the write of a record's head and the write of its NDJSON (a batch record
// is written in two calls): the spool reports full, the files hold exactly
// what Stats counts, and recovery finds no damage.
func TestENOSPCAtEveryByteLeavesNoPartialRecord(t *testing.T) {
	one := int64(len(appendBatchHead(nil, 0, testBatch(t, "k00", 5))) + len(testBatch(t, "k00", 5).NDJSON()))
	for limit := int64(1); limit < 2*one+8; limit++ {
		m := newMemFS()
		s := mustOpen(t, "/d", withFS(m), WithSegmentSize(1<<20), WithMaxBytes(8<<20))
		m.limit = limit
		var keys []string
		var err error
		for i := range 4 {
			k := fmt.Sprintf("k%02d", i)
			if err = s.Append(testBatch(t, k, 5)); err != nil {
				break
			}
			keys = append(keys, k)
		}
		if !errors.Is(err, ErrFull) {
			t.Fatalf("limit %d: Append on a full filesystem: %v, want ErrFull", limit, err)
		}
		var onDisk int64
		for _, d := range m.segmentFiles() {
			onDisk += int64(len(d))
		}
		if onDisk != s.Stats().Bytes {
			t.Fatalf("limit %d: files hold %d bytes, Stats %d: the partial record was not cut off", limit, onDisk, s.Stats().Bytes)
		}
		s.Close()
		m.limit = 0
		s = mustOpen(t, "/d", withFS(m), WithSegmentSize(1<<20), WithMaxBytes(8<<20))
		if got := replayKeys(t, s, five); !slices.Equal(got, keys) {
			t.Errorf("limit %d: replayed %v, want %v", limit, got, keys)
		}
		if st := s.Stats(); st.TornBytes != 0 || st.LostBytes != 0 {
			t.Errorf("limit %d: recovery found damage after ENOSPC: %+v", limit, st)
		}
		s.Close()
	}
}

func TestFsyncFailureIsStickyAndNeverRetried(t *testing.T) {
	for _, mode := range []SyncMode{SyncBatch, SyncInterval(time.Hour)} {
		t.Run(mode.String(), func(t *testing.T) {
			m := newMemFS()
			var logBuf syncBuffer
			s := mustOpen(t, "/d", withFS(m), WithSync(mode), WithLogger(slog.New(slog.NewTextHandler(&logBuf, nil))))
			if err := s.Append(testBatch(t, "ok", 5)); err != nil {
				t.Fatal(err)
			}
			s.syncTick()
			m.failSyncs = true
			err := s.Append(testBatch(t, "bad", 5))
			if mode != SyncBatch {
				if err != nil {
					t.Fatalf("SyncInterval Append before the tick: %v", err)
				}
				s.syncTick()
				err = s.Append(testBatch(t, "bad2", 5))
			}
			var fe *FailedError
			if !errors.As(err, &fe) || fe.Op != "fsync" || !errors.Is(err, syscall.EIO) {
				t.Fatalf("Append after a failed fsync: %v, want a *FailedError wrapping EIO", err)
			}
			fsyncs := s.Stats().Fsyncs
			m.failSyncs = false // the disk "recovers": the spool must not believe it
			if err2 := s.Append(testBatch(t, "later", 5)); !errors.Is(err2, fe) {
				t.Errorf("Append after the failure: %v, want the sticky %v", err2, fe)
			}
			s.syncTick()
			if got := s.Stats().Fsyncs; got != fsyncs {
				t.Errorf("the spool fsynced again after a failed fsync (%d -> %d)", fsyncs, got)
			}
			if err := s.Ack("ok"); !errors.Is(err, fe) {
				t.Errorf("Ack after the failure: %v, want the sticky error", err)
			}
			if st := s.Stats(); !errors.Is(st.Err, fe) {
				t.Errorf("Stats.Err %v", st.Err)
			}
			if !strings.Contains(logBuf.String(), "spool failed") {
				t.Errorf("nothing logged: %q", logBuf.String())
			}
			if err := s.Close(); !errors.Is(err, fe) {
				t.Errorf("Close: %v, want the sticky error", err)
			}
			// A new Open starts from what is on disk.
			s = mustOpen(t, "/d", withFS(m), WithSync(mode))
			defer s.Close()
			if err := s.Append(testBatch(t, "reopened", 5)); err != nil {
				t.Errorf("Append after reopening: %v", err)
			}
		})
	}
}

// Appends that arrive while an fsync runs share the next one: with one
// fsync held up and n Appends waiting behind it, n+1 Appends take 2 fsyncs.
func TestGroupCommitSharesOneFsync(t *testing.T) {
	m := newMemFS()
	waiting := make(chan struct{}, 100)
	release := make(chan struct{})
	var first sync.Once
	s := mustOpen(t, "/d", withFS(m), withSyncWaitHook(func() { waiting <- struct{}{} }))
	defer s.Close()
	m.beforeSync = func() { first.Do(func() { <-release }) }
	before := s.Stats().Fsyncs

	const n = 8
	errs := make(chan error, n+1)
	go func() { errs <- s.Append(testBatch(t, "leader", 5)) }()
	for i := range n {
		go func() { errs <- s.Append(testBatch(t, fmt.Sprintf("f%d", i), 5)) }()
	}
	for range n { // every follower has written its record and waits for an fsync
		<-waiting
	}
	close(release)
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Stats().Fsyncs - before; got != 2 {
		t.Errorf("%d Appends took %d fsyncs, want 2 (group commit)", n+1, got)
	}
}

func withSyncWaitHook(f func()) Option { return optionFunc(func(c *config) { c.onSyncWait = f }) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestHistogramQuantile(t *testing.T) {
	var h Histogram
	for range 90 {
		h.observe(200 * time.Microsecond) // bucket (100µs, 250µs]
	}
	for range 10 {
		h.observe(20 * time.Millisecond) // bucket (10ms, 25ms]
	}
	if p50 := h.Quantile(0.5); p50 <= 100*time.Microsecond || p50 > 250*time.Microsecond {
		t.Errorf("p50 %v, want within (100µs, 250µs]", p50)
	}
	if p99 := h.Quantile(0.99); p99 <= 10*time.Millisecond || p99 > 20*time.Millisecond {
		t.Errorf("p99 %v, want within (10ms, 20ms] (capped by Max)", p99)
	}
	if h.Count != 100 || h.Max != 20*time.Millisecond {
		t.Errorf("Count %d Max %v", h.Count, h.Max)
	}
}

// SyncInterval's background goroutine fsyncs every interval: after one
// interval, what was appended before it survives a power loss; what was
// appended after it does not have to.
func TestSyncIntervalFsyncsInTheBackground(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemFS()
		s := mustOpen(t, "/d", withFS(m), WithSync(SyncInterval(time.Second)))
		if err := s.Append(testBatch(t, "a", 5)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // fake time: one tick
		synctest.Wait()
		if st := s.Stats(); st.Fsyncs != 1 {
			t.Fatalf("%d fsyncs after one interval, want 1", st.Fsyncs)
		}
		if err := s.Append(testBatch(t, "b", 5)); err != nil {
			t.Fatal(err)
		}
		m.crash()
		s.Close()
		m.powerLoss(nil)
		s = mustOpen(t, "/d", withFS(m), WithSync(SyncInterval(time.Second)))
		defer s.Close()
		if got := replayKeys(t, s, five); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("after a power loss: replayed %v, want [a] (b came after the last fsync)", got)
		}
	})
}

// Appends, Acks, Replays and Stats from many goroutines, with segments
// rotating and being reclaimed under group-commit fsyncs (run with -race):
// afterwards the spool holds exactly the batches not acked.
func TestConcurrentSafe(t *testing.T) {
	for _, mode := range []SyncMode{SyncBatch, SyncInterval(time.Millisecond), SyncNever} {
		t.Run(mode.String(), func(t *testing.T) {
			m := newMemFS()
			opts := []Option{withFS(m), WithSync(mode), WithSegmentSize(2048), WithMaxBytes(8 << 20)}
			s := mustOpen(t, "/d", opts...)
			for i := range 20 { // something for Replay to find
				s.Append(testBatch(t, fmt.Sprintf("old%02d", i), 3))
			}
			s.Close()
			s = mustOpen(t, "/d", opts...)
			const workers, per = 4, 150
			var wg sync.WaitGroup
			kept := make([][]string, workers)
			for w := range workers {
				wg.Go(func() {
					for i := range per {
						k := fmt.Sprintf("w%d-%03d", w, i)
						if err := s.Append(testBatch(t, k, 1+i%4)); err != nil {
							t.Error(err)
							return
						}
						if i%2 == 0 {
							if err := s.Ack(k); err != nil {
								t.Error(err)
							}
						} else {
							kept[w] = append(kept[w], k)
						}
					}
				})
			}
			done := make(chan struct{})
			var readers sync.WaitGroup
			readers.Go(func() {
				for { // at least one whole pass, however soon the writers end
					s.Stats()
					s.Replay(func(b *batchproc.Batch) error {
						if strings.HasPrefix(b.Key(), "old") && b.Key() < "old10" {
							s.Ack(b.Key())
						}
						return nil
					})
					select {
					case <-done:
						return
					default:
					}
				}
			})
			wg.Wait()
			close(done)
			readers.Wait()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, "/d", opts...)
			defer s.Close()
			var want []string
			for i := 10; i < 20; i++ {
				want = append(want, fmt.Sprintf("old%02d", i))
			}
			got := replayKeys(t, s, func(k string) int {
				var w, i int
				if _, err := fmt.Sscanf(k, "w%d-%d", &w, &i); err == nil {
					return 1 + i%4
				}
				return 3
			})
			var gotNew []string
			for _, k := range got {
				if !strings.HasPrefix(k, "old") {
					gotNew = append(gotNew, k)
				}
			}
			if !slices.Equal(got[:min(len(got), len(want))], want) {
				t.Errorf("replay starts %v, want %v", got[:min(len(got), len(want))], want)
			}
			var wantNew []string
			for _, ks := range kept {
				wantNew = append(wantNew, ks...)
			}
			slices.Sort(wantNew)
			sortedNew := slices.Sorted(slices.Values(gotNew))
			if !slices.Equal(sortedNew, wantNew) {
				t.Errorf("replayed %d new batches, want %d", len(gotNew), len(wantNew))
			}
			for w := range workers { // each worker's batches in its own order
				var mine []string
				for _, k := range gotNew {
					if strings.HasPrefix(k, fmt.Sprintf("w%d-", w)) {
						mine = append(mine, k)
					}
				}
				if !slices.IsSorted(mine) {
					t.Errorf("worker %d's batches out of order: %v", w, mine)
				}
			}
		})
	}
}

// TestLoadWriteAndDroppedKeys: Load reads back a batch appended with Write
// (whose durable function, with SyncBatch, returns after an fsync covering
// it); a key never appended is ErrUnknownKey; a dropped key says
// batchproc.ErrDropped once, to Load or to Ack, and is unknown after.
func TestLoadWriteAndDroppedKeys(t *testing.T) {
	m := newMemFS()
	s := mustOpen(t, "/d", withFS(m), WithSegmentSize(4096), WithMaxBytes(16384), WithDropOldest(nil))
	defer s.Close()
	durable, err := s.Write(testBatch(t, "w0", 5))
	if err != nil {
		t.Fatal(err)
	}
	before := s.Stats().Fsyncs
	if err := durable(); err != nil {
		t.Fatal(err)
	}
	if s.Stats().Fsyncs != before+1 {
		t.Errorf("durable() ran %d fsyncs, want 1", s.Stats().Fsyncs-before)
	}
	if err := durable(); err != nil || s.Stats().Fsyncs != before+1 {
		t.Errorf("a second durable() = %v and fsynced again: it was covered", err)
	}
	b, err := s.Load("w0")
	if err != nil {
		t.Fatal(err)
	}
	if d := diffBatch(b, "w0", 5); d != "" {
		t.Fatalf("Load: %s", d)
	}
	if _, err := s.Load("nope"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Load of an unknown key: %v", err)
	}
	for i := 1; s.Stats().Dropped < 2; i++ { // fill until w0 and one more were dropped
		if i > 1000 {
			t.Fatal("nothing dropped")
		}
		if err := s.Append(testBatch(t, fmt.Sprintf("k%03d", i), 5)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Load("w0"); !errors.Is(err, batchproc.ErrDropped) {
		t.Fatalf("Load of a dropped key: %v, want ErrDropped", err)
	}
	if _, err := s.Load("w0"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("second Load of a dropped key: %v, want ErrUnknownKey", err)
	}
	if err := s.Ack("k001"); !errors.Is(err, batchproc.ErrDropped) {
		t.Fatalf("Ack of a dropped key: %v, want ErrDropped", err)
	}
	if err := s.Ack("k001"); err != nil {
		t.Fatalf("second Ack of a dropped key: %v, want nil", err)
	}
}
