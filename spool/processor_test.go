package spool_test

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/spool"
)

// These tests run a processor over a real spool directory. The sink is a
// batchproctest.Recorder told to fail while the "loader" is down.

var errDown = errors.New("loader down") // retryable

// quiet keeps the processor's retry and failure lines out of the test log.
var quiet = batchproc.WithLogger(slog.New(slog.DiscardHandler))

// fastRetry keeps retries quick; a batch in the spool ignores MaxAttempts.
var fastRetry = batchproc.WithRetry(batchproc.RetryPolicy{
	MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxElapsed: time.Minute,
})

func payload(i int) []byte {
	return fmt.Appendf(nil, `{"i":%d,"pad":"%0180d"}`, i, i)
}

// downSink returns a recorder that fails with errDown while down is set.
func downSink(down *atomic.Bool) *batchproctest.Recorder {
	return &batchproctest.Recorder{Hook: func(ctx context.Context, b *batchproc.Batch, attempt int) error {
		if down.Load() {
			return errDown
		}
		return nil
	}}
}

// delivered counts the events a recorder stored, by payload, once per key
// (the loader de-duplicates by key), and fails on an event stored under two
// keys.
func delivered(t *testing.T, r *batchproctest.Recorder) map[string]int {
	t.Helper()
	seen := map[string]bool{}
	got := map[string]int{}
	for _, s := range r.Delivered() {
		if seen[s.Key] {
			continue
		}
		seen[s.Key] = true
		for _, e := range s.Events {
			got[string(e.Payload)]++
		}
	}
	return got
}

func checkIdentity(t *testing.T, st batchproc.Stats) {
	t.Helper()
	if st.Added+st.Replayed != st.Delivered+st.Failed+st.Pending {
		t.Errorf("accounting: added %d + replayed %d != delivered %d + failed %d + pending %d",
			st.Added, st.Replayed, st.Delivered, st.Failed, st.Pending)
	}
}

// TestProcessorOutageFillsSpoolNotMemory: with the sink down, 8 times the
// memory budget of events is accepted (Add never waits for the sink), and
// the budget holds; once the sink is back every event is delivered once.
// Without spilling, retrying batches keep the budget and Add waits until
// its ctx ends.
func TestProcessorOutageFillsSpoolNotMemory(t *testing.T) {
	const memLimit = 1 << 20
	var down atomic.Bool
	down.Store(true)
	rec := downSink(&down)
	sp, err := spool.Open(t.TempDir(), spool.WithSegmentSize(1<<20), spool.WithSync(spool.SyncNever))
	if err != nil {
		t.Fatal(err)
	}
	p, err := batchproc.New(rec, quiet, batchproc.WithJournal(func() (batchproc.Journal, error) { return sp, nil }),
		batchproc.WithMemoryLimit(memLimit), batchproc.WithMaxBatchEvents(100), batchproc.WithMaxBatchBytes(64<<10), fastRetry,
		batchproc.WithFlushInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	n := 8 * memLimit / 200
	var maxBuffered int64
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		// Add waits while budget is held by batches being cut and
		// journaled: they leave memory once in the spool. It must never
		// wait for the sink, which stays down.
		if err := p.Add(ctx, batchproc.Event{Payload: payload(i)}); err != nil {
			t.Fatalf("Add %d of %d with the sink down: %v; stats %+v", i, n, err, p.Stats())
		}
		maxBuffered = max(maxBuffered, p.Stats().BufferedBytes)
	}
	if maxBuffered > 2*memLimit {
		t.Errorf("buffered %d bytes with a %d budget: spilled batches must leave memory", maxBuffered, memLimit)
	}
	st := p.Stats()
	if st.Delivered != 0 || st.Failed != 0 || st.Journaled == 0 {
		t.Errorf("sink down: %+v", st)
	}
	// What an outage costs on disk, for the README's reliability figures.
	disk := sp.Stats().Bytes
	t.Logf("%d events of %d bytes held by %d bytes of spool: %.1f bytes per event; at 2,000 events/s a 1 GiB spool holds %.0f minutes",
		n, len(payload(0)), disk, float64(disk)/float64(n), float64(spool.DefaultMaxBytes)/(float64(disk)/float64(n))/2000/60)
	down.Store(false)
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = p.Stats()
	checkIdentity(t, st)
	got := delivered(t, rec)
	if len(got) != n || st.Delivered != uint64(n) {
		t.Fatalf("delivered %d distinct events (stats %d), want %d", len(got), st.Delivered, n)
	}
	for pl, c := range got {
		if c != 1 {
			t.Fatalf("event %s delivered %d times", pl[:12], c)
		}
	}
}

// TestProcessorShutdownLeavesBatchesInSpool: a Shutdown whose ctx ends with
// the sink down fails nothing: the batches stay in the spool, Shutdown says
// how many, and the next processor on the directory delivers them under
// the same keys.
func TestProcessorShutdownLeavesBatchesInSpool(t *testing.T) {
	dir := t.TempDir()
	var down atomic.Bool
	down.Store(true)
	rec := downSink(&down)
	var failures atomic.Int64
	p, err := batchproc.New(rec, quiet, spool.WithSpool(dir), batchproc.WithMaxBatchEvents(10), fastRetry,
		batchproc.WithOnFailure(func(b *batchproc.Batch, err error) { failures.Add(int64(b.Len())) }))
	if err != nil {
		t.Fatal(err)
	}
	const n = 95
	for i := range n {
		if err := p.Add(t.Context(), batchproc.Event{Payload: payload(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err = p.Shutdown(ctx)
	left, ok := errors.AsType[*batchproc.LeftInJournalError](err)
	if !ok || left.Events != n || left.Batches != 10 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v; want %d events in 10 batches left in the journal", err, n)
	}
	if failures.Load() != 0 || p.Stats().Failed != 0 {
		t.Fatalf("%d events failed: an interrupted batch must stay in the spool", failures.Load())
	}
	firstKeys := map[string]bool{}
	for _, s := range rec.Sent() {
		firstKeys[s.Key] = true
	}

	down.Store(false)
	rec2 := &batchproctest.Recorder{}
	p2, err := batchproc.New(rec2, spool.WithSpool(dir), fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Flush(t.Context()); err != nil { // covers the replay
		t.Fatal(err)
	}
	if err := p2.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := p2.Stats()
	checkIdentity(t, st)
	if st.Replayed != n || st.Delivered != n || st.Added != 0 {
		t.Fatalf("second processor: %+v; want %d replayed and delivered", st, n)
	}
	for _, s := range rec2.Delivered() {
		if !firstKeys[s.Key] {
			t.Errorf("replayed batch under a new key %s: the loader could not de-duplicate it", s.Key)
		}
	}
	if got := delivered(t, rec2); len(got) != n {
		t.Fatalf("replayed %d distinct events, want %d", len(got), n)
	}
	// Delivered batches were acked: a third processor has nothing to send.
	p3, err := batchproc.New(&batchproctest.Recorder{}, spool.WithSpool(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := p3.Shutdown(t.Context()); err != nil || p3.Stats().Replayed != 0 {
		t.Fatalf("third processor replayed %d (%v): acked batches came back", p3.Stats().Replayed, err)
	}
}

// A Shutdown whose ctx ends while the replay of a previous processor's
// batches is stalled counts the batches the replay had not read back in
// its LeftInJournalError, beside those it held: every batch left is
// counted once. (The replay stalls for budget: one batch is being sent,
// and the ones it read wait spilled, 128 bytes each, until 100 of them
// are more than the 4 KiB budget holds.) The next processor delivers
// them all.
func TestProcessorShutdownCountsUnreplayed(t *testing.T) {
	dir := t.TempDir()
	s, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	const batches, per = 100, 10
	for i := range batches {
		var evs []batchproc.Event
		for j := range per {
			evs = append(evs, batchproc.Event{Payload: payload(i*per + j)})
		}
		b, err := batchproc.NewBatch(fmt.Sprintf("left-%d", i), evs...)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Append(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	started := make(chan struct{}, batches)
	rec := &batchproctest.Recorder{Hook: func(ctx context.Context, b *batchproc.Batch, _ int) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}}
	p, err := batchproc.New(rec, quiet, spool.WithSpool(dir), batchproc.WithMaxBatchBytes(3<<10),
		batchproc.WithMemoryLimit(4<<10), batchproc.WithMaxInFlight(1))
	if err != nil {
		t.Fatal(err)
	}
	<-started
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = p.Shutdown(ctx)
	left, ok := errors.AsType[*batchproc.LeftInJournalError](err)
	if !ok || left.Batches+left.Unread != batches || left.Unread == 0 || left.Events != left.Batches*per {
		t.Fatalf("Shutdown = %v (%+v); want the %d batches counted once, held (with their events) or not read back, some not read back", err, left, batches)
	}
	if want := fmt.Sprintf("%d batches a previous processor left not read back", left.Unread); !strings.Contains(err.Error(), want) {
		t.Errorf("Shutdown's error %q does not say %q", err, want)
	}

	rec2 := &batchproctest.Recorder{}
	p2, err := batchproc.New(rec2, quiet, spool.WithSpool(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := delivered(t, rec2); len(got) != batches*per {
		t.Fatalf("the next processor delivered %d distinct events, want %d", len(got), batches*per)
	}
}

// TestProcessorSpooledBatchNeverGivesUp: a retry policy of 3 attempts does
// not fail a batch in the spool on retryable errors; a permanent error
// still fails it, and it leaves the spool.
func TestProcessorSpooledBatchNeverGivesUp(t *testing.T) {
	dir := t.TempDir()
	rec := &batchproctest.Recorder{Hook: func(ctx context.Context, b *batchproc.Batch, attempt int) error {
		if string(b.Event(0).Payload) == string(payload(1)) {
			return batchproc.Permanent(errors.New("400 bad batch"))
		}
		if attempt <= 10 {
			return errDown
		}
		return nil
	}}
	var failed []error
	var mu sync.Mutex
	p, err := batchproc.New(rec, quiet, spool.WithSpool(dir), batchproc.WithMaxBatchEvents(1), fastRetry,
		batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
			mu.Lock()
			failed = append(failed, err)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := p.Add(t.Context(), batchproc.Event{Payload: payload(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Flush waits for both; it reports the permanent failure only if the
	// batch failed after Flush began, so its error is not checked here.
	if err := p.Flush(t.Context()); err != nil && !errors.As(err, new(*batchproc.DeliveryError)) {
		t.Fatalf("Flush = %v", err)
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Delivered != 1 || st.Failed != 1 || len(failed) != 1 || !batchproc.IsPermanent(failed[0]) {
		t.Fatalf("stats %+v, failures %v: the retryable batch must be delivered after 11 attempts", st, failed)
	}
	p2, err := batchproc.New(&batchproctest.Recorder{}, spool.WithSpool(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Shutdown(t.Context()); err != nil || p2.Stats().Replayed != 0 {
		t.Fatalf("replayed %d after restart: a permanently failed batch must leave the spool", p2.Stats().Replayed)
	}
}

// TestProcessorSpoolDropOldest: a full spool with drop-oldest hands what it
// drops, of the batches waiting on disk only, to the failure callback as
// ErrDropped, counted once; what it drops of batches still in memory is
// sent from memory. The accounting identity holds and every event is
// delivered or failed, never both.
func TestProcessorSpoolDropOldest(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	rec := downSink(&down)
	var dropped atomic.Int64
	var failedKeys sync.Map
	p, err := batchproc.New(rec, quiet,
		// No open batches: under SyncNever a batch's region is its record,
		// outside the disk budget and never dropped, and the batches the
		// drops reach would then be the newest, still in memory (sent from
		// there, not failed).
		spool.WithSpool(t.TempDir(), spool.WithSegmentSize(16<<10), spool.WithMaxBytes(64<<10), spool.WithDropOldest(nil), spool.WithSync(spool.SyncNever), spool.WithOpenBatches(0)),
		batchproc.WithMaxBatchEvents(10),
		// Batches wait on disk only, between attempts: those are what a drop fails.
		batchproc.WithRetry(batchproc.RetryPolicy{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxElapsed: time.Minute}),
		batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
			if errors.Is(err, batchproc.ErrDropped) {
				dropped.Add(int64(b.Len()))
			}
			failedKeys.Store(b.Key(), err)
		}))
	if err != nil {
		t.Fatal(err)
	}
	// Add until a batch waiting on disk was dropped (at 64 KiB, the spool
	// is full after about 300 events), at most 20,000 events.
	n := 0
	for ; n < 20000 && (n < 2000 || dropped.Load() == 0); n++ {
		if err := p.Add(t.Context(), batchproc.Event{Payload: payload(n)}); err != nil {
			t.Fatal(err)
		}
	}
	down.Store(false)
	err = p.Shutdown(t.Context())
	st := p.Stats()
	checkIdentity(t, st)
	if err != nil && !errors.Is(err, batchproc.ErrDropped) {
		t.Fatalf("Shutdown: %v", err)
	}
	if dropped.Load() == 0 || st.Failed != uint64(dropped.Load()) {
		t.Fatalf("dropped %d, stats %+v, Shutdown %v: drops must fail, once each", dropped.Load(), st, err)
	}
	for _, d := range rec.Delivered() {
		if e, ok := failedKeys.Load(d.Key); ok {
			t.Errorf("batch %s delivered and failed (%v)", d.Key, e)
		}
	}
	if st.Delivered+st.Failed != uint64(n) {
		t.Fatalf("delivered %d + failed %d != %d", st.Delivered, st.Failed, n)
	}
	// A batch dropped while in memory is sent from there (and counted
	// delivered); one dropped while only on disk failed and is never sent.
	got := delivered(t, rec)
	if len(got) != int(st.Delivered) {
		t.Fatalf("recorder stored %d distinct events, stats say %d delivered", len(got), st.Delivered)
	}
}

// TestProcessorSpoolRefusesSendsFromMemory: a batch the spool cannot take
// (larger than its budget) is sent from memory and counted.
func TestProcessorSpoolRefusesSendsFromMemory(t *testing.T) {
	rec := &batchproctest.Recorder{}
	p, err := batchproc.New(rec, quiet, spool.WithSpool(t.TempDir(), spool.WithSegmentSize(1<<10), spool.WithMaxBytes(2<<10)),
		batchproc.WithMaxBatchEvents(100), batchproc.WithFlushInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := p.Add(t.Context(), batchproc.Event{Payload: payload(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Unjournaled != 1 || st.Journaled != 0 || st.Delivered != 100 {
		t.Fatalf("stats %+v: want the 20 kB batch sent from memory, unjournaled", st)
	}
}

// TestWithSpoolOpenFails: New fails, and starts nothing, when the spool
// cannot be opened: here another processor holds the directory.
func TestWithSpoolOpenFails(t *testing.T) {
	dir := t.TempDir()
	p, err := batchproc.New(&batchproctest.Recorder{}, spool.WithSpool(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	if _, err := batchproc.New(&batchproctest.Recorder{}, spool.WithSpool(dir)); !errors.Is(err, spool.ErrLocked) {
		t.Fatalf("second New on the same spool: %v, want ErrLocked", err)
	}
}

// TestOf: spool.Of finds the spool WithSpool opened inside New, and its
// Stats count the processor's batches, also after Shutdown closed it; a
// processor without a spool has none.
func TestOf(t *testing.T) {
	rec := &batchproctest.Recorder{}
	p, err := batchproc.New(rec, quiet, spool.WithSpool(t.TempDir()), batchproc.WithMaxBatchEvents(10))
	if err != nil {
		t.Fatal(err)
	}
	s := spool.Of(p)
	if s == nil {
		t.Fatal("spool.Of: nil for a processor with WithSpool")
	}
	for i := range 30 {
		if err := p.Add(t.Context(), batchproc.Event{Payload: payload(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Appended != 3 || st.Acked != 3 || st.Batches != 0 {
		t.Errorf("after Shutdown: Appended %d, Acked %d, Batches %d; want 3, 3, 0", st.Appended, st.Acked, st.Batches)
	}
	bare, err := batchproc.New(rec, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Shutdown(t.Context())
	if s := spool.Of(bare); s != nil {
		t.Errorf("spool.Of of a processor without a journal: %v, want nil", s)
	}
}

// TestProcessorOrderedReplaysFirst: with WithOrdered, what the previous
// processor left in the spool reaches the sink before anything added
// since, in its order, even with a budget that holds only two batches.
func TestProcessorOrderedReplaysFirst(t *testing.T) {
	dir := t.TempDir()
	var down atomic.Bool
	down.Store(true)
	opts := []batchproc.Option{quiet, spool.WithSpool(dir), batchproc.WithOrdered(), batchproc.WithMaxBatchEvents(10),
		batchproc.WithMaxBatchBytes(4 << 10), batchproc.WithMemoryLimit(8 << 10), fastRetry}
	p, err := batchproc.New(downSink(&down), opts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := p.Add(t.Context(), batchproc.Event{Payload: payload(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, ok := errors.AsType[*batchproc.LeftInJournalError](p.Shutdown(ctx)); !ok {
		t.Fatal("nothing left in the spool")
	}

	rec := &batchproctest.Recorder{}
	p2, err := batchproc.New(rec, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := 50; i < 100; i++ {
		if err := p2.Add(t.Context(), batchproc.Event{Payload: payload(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p2.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range rec.Delivered() {
		for _, e := range s.Events {
			got = append(got, string(e.Payload))
		}
	}
	if len(got) != 100 {
		t.Fatalf("delivered %d events, want 100", len(got))
	}
	for i, pl := range got {
		if pl != string(payload(i)) {
			t.Fatalf("event %d delivered is %.12s, want %.12s: the replay must come first, in order", i, pl, payload(i))
		}
	}
}

// TestProcessorOutageOfTinyEventsFillsSpoolNotMemory: with events of 10
// bytes, what a waiting batch keeps in memory must not grow with its
// events (their offsets and IDs are 20 bytes an event in memory, twice
// the payload): 500,000 events, 12 times the budget in events' cost, are
// accepted with the sink down.
func TestProcessorOutageOfTinyEventsFillsSpoolNotMemory(t *testing.T) {
	const memLimit = 1 << 20
	var down atomic.Bool
	down.Store(true)
	rec := downSink(&down)
	p, err := batchproc.New(rec, quiet, spool.WithSpool(t.TempDir(), spool.WithSync(spool.SyncNever)),
		batchproc.WithMemoryLimit(memLimit), batchproc.WithMaxBatchBytes(64<<10), fastRetry,
		batchproc.WithFlushInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	const n = 500_000
	ev := batchproc.Event{Payload: []byte(`{"i":1234}`)}
	for i := range n {
		if err := p.Add(ctx, ev); err != nil {
			t.Fatalf("Add %d of %d with the sink down: %v; stats %+v", i, n, err, p.Stats())
		}
	}
	if st := p.Stats(); st.BufferedBytes > 2*memLimit {
		t.Errorf("buffered %d bytes with a %d budget", st.BufferedBytes, memLimit)
	}
	down.Store(false)
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Delivered != n {
		t.Fatalf("delivered %d of %d", st.Delivered, n)
	}
}

// checkingJournal is a spool that checks, for every batch the processor
// writes through it, the checksum the processor computed of its NDJSON.
type checkingJournal struct {
	*spool.Spool
	checked, bad atomic.Int64
}

func (j *checkingJournal) check(b *batchproc.Batch) {
	sum, ok := b.NDJSONChecksum()
	if !ok || sum != crc32.Checksum(b.NDJSON(), crc32.MakeTable(crc32.Castagnoli)) {
		j.bad.Add(1)
	}
	j.checked.Add(1)
}

func (j *checkingJournal) Write(b *batchproc.Batch) (func() error, error) {
	j.check(b)
	return j.Spool.Write(b)
}

func (j *checkingJournal) Append(b *batchproc.Batch) error {
	j.check(b)
	return j.Spool.Append(b)
}

// With a journal, the processor computes a CRC-32C of each batch's NDJSON
// at its cut (the spool combines it into the record's CRC rather than
// reading the batch again): it is right for batches cut full, cut by size
// and cut by Flush, with events of every size, and the records written
// with it check when the spool is opened again. (Not SyncNever: there a
// batch's region is its record, and nothing is checksummed; see
// TestRegionIsTheRecord.)
func TestProcessorChecksumsAtTheCut(t *testing.T) {
	dir := t.TempDir()
	s, err := spool.Open(dir, spool.WithSync(spool.SyncInterval(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	j := &checkingJournal{Spool: s}
	p, err := batchproc.New(nullSink{}, quiet, batchproc.WithMaxBatchEvents(50), batchproc.WithMaxBatchBytes(8<<10),
		batchproc.WithJournal(func() (batchproc.Journal, error) { return j, nil }))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		pl := fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", i%300))
		if err := p.Add(t.Context(), batchproc.Event{ID: fmt.Sprint(i), Payload: pl}); err != nil {
			t.Fatal(err)
		}
		if i%97 == 0 {
			if err := p.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if j.checked.Load() < 20 || j.bad.Load() != 0 {
		t.Fatalf("%d batches journaled, %d with a wrong or missing checksum", j.checked.Load(), j.bad.Load())
	}
	s, err = spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st.TornBytes != 0 || st.CorruptFiles != 0 || st.LostBatches != 0 {
		t.Fatalf("reopened: %+v", st)
	}
}
