package httpsink_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/httpsink"
)

// fastRetry retries at once in practice: tests must not wait seconds.
var fastRetry = batchproc.RetryPolicy{
	MaxAttempts:    5,
	InitialBackoff: time.Millisecond,
	MaxBackoff:     2 * time.Millisecond,
	MaxElapsed:     10 * time.Second,
}

// TestProcessorEndToEnd runs a real processor over the sink against a
// loader that answers 503 with Retry-After: 0 to the first request and
// stores after: the batch is delivered once, on its second attempt, under
// the same key.
func TestProcessorEndToEnd(t *testing.T) {
	fl := newFakeLoader(t, func(f *fakeLoader) {
		f.respond = func(_ context.Context, n int, _ *request) reply {
			if n == 1 {
				return reply{Status: 503, Body: `{"error":"store unavailable"}`, Headers: map[string]string{"Retry-After": "0"}}
			}
			return reply{}
		}
	})
	s := newSink(t, fl.URL(), httpsink.WithCompression(httpsink.Zstd))
	var mu sync.Mutex
	var failures []error
	p, err := batchproc.New(s, batchproc.WithMaxBatchEvents(10), batchproc.WithRetry(fastRetry),
		batchproc.WithOnFailure(func(_ *batchproc.Batch, err error) {
			mu.Lock()
			failures = append(failures, err)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[string]int)
	for i := range 10 {
		payload := `{"id":"` + strconv.Itoa(i) + `","type":"order"}`
		want[payload] = 1
		if err := p.Add(t.Context(), batchproc.Event{Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}

	keys := fl.keys()
	if len(keys) != 2 || keys[0] != keys[1] || keys[0] == "" {
		t.Errorf("keys %q, want the same non-empty key twice", keys)
	}
	got := fl.storedEvents()
	if len(got) != len(want) {
		t.Errorf("stored %v, want %v", got, want)
	}
	for e := range want {
		if got[e] != 1 {
			t.Errorf("event %s stored %d times", e, got[e])
		}
	}
	st := p.Stats()
	if st.Delivered != 10 || st.Failed != 0 || st.Retries != 1 || st.Batches != 1 {
		t.Errorf("stats %+v, want 10 delivered in 1 batch after 1 retry", st)
	}
	if len(failures) != 0 {
		t.Errorf("failure callback called: %v", failures)
	}
}

// TestProcessorSplit: a processor's batches of 8 events against a loader
// taking 3 at most reach the store split, each event once.
func TestProcessorSplit(t *testing.T) {
	fl := newFakeLoader(t, func(f *fakeLoader) { f.maxEvents = 3 })
	s := newSink(t, fl.URL(), httpsink.WithFraming(httpsink.JSONArray))
	p, err := batchproc.New(s, batchproc.WithMaxBatchEvents(8), batchproc.WithRetry(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 16 {
		payload := `{"id":"` + strconv.Itoa(i) + `"}`
		want = append(want, payload)
		if err := p.Add(t.Context(), batchproc.Event{Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for e, n := range fl.storedEvents() {
		for range n {
			got = append(got, e)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("stored %q, want %q", got, want)
	}
	if st := p.Stats(); st.Delivered != 16 || st.Failed != 0 || st.Retries != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestProcessorPartial: a batch of 8 split after a 413 has its first half
// stored, and then its second half rejected with a 400, or still being sent
// when Shutdown's context ends. Either way the processor counts the first
// half as delivered and hands only the second to the failure callback.
func TestProcessorPartial(t *testing.T) {
	for _, tc := range []struct {
		name       string
		atShutdown bool // else the loader rejects the second half
	}{{"rejected", false}, {"at shutdown", true}} {
		t.Run(tc.name, func(t *testing.T) {
			entered := make(chan struct{})
			fl := newFakeLoader(t, func(f *fakeLoader) {
				f.maxEvents = 4
				f.respond = func(ctx context.Context, _ int, r *request) reply {
					switch {
					case !strings.HasSuffix(r.Key, ".1"):
						return reply{}
					case !tc.atShutdown:
						return reply{Status: 400, Body: `{"error":"bad event","line":1}`}
					}
					close(entered)
					<-ctx.Done() // until the sink gives up on the request
					return reply{Status: 503}
				}
			})
			var failed []string
			var reason error
			// Room for 9, and no linger: the 8 events are cut and sent by
			// Shutdown, which then covers their failure. (Cut by the 8th
			// Add, the batch could fail before Shutdown began and not be
			// Shutdown's to report: 4 runs in 200 on linux/386 did.)
			p, err := batchproc.New(newSink(t, fl.URL()), batchproc.WithMaxBatchEvents(9),
				batchproc.WithFlushInterval(time.Hour), batchproc.WithRetry(fastRetry),
				batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
					reason = err
					for i := range b.Len() {
						failed = append(failed, string(b.Event(i).Payload))
					}
				}))
			if err != nil {
				t.Fatal(err)
			}
			var payloads []string
			for i := range 8 {
				payloads = append(payloads, `{"id":"`+strconv.Itoa(i)+`"}`)
				if err := p.Add(t.Context(), batchproc.Event{Payload: []byte(payloads[i])}); err != nil {
					t.Fatal(err)
				}
			}
			ctx, wantErr := t.Context(), error(nil)
			if tc.atShutdown {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				go func() { <-entered; cancel() }()
				wantErr = context.Canceled
			}
			// Shutdown reports the failed half, and the cancellation if any.
			err = p.Shutdown(ctx)
			if de, ok := errors.AsType[*batchproc.DeliveryError](err); !ok || de.Events != 4 || (wantErr != nil && !errors.Is(err, wantErr)) {
				t.Fatalf("Shutdown: %v, want a DeliveryError for 4 events (and %v)", err, wantErr)
			}

			if st := p.Stats(); st.Delivered != 4 || st.Failed != 4 || st.Retries != 0 {
				t.Errorf("stats %+v, want 4 delivered and 4 failed, no retry", st)
			}
			if !slices.Equal(failed, payloads[4:]) {
				t.Errorf("failure callback got %q, want the second half %q", failed, payloads[4:])
			}
			if _, isShutdown := errors.AsType[*batchproc.ShutdownError](reason); isShutdown != tc.atShutdown {
				t.Errorf("failure reason %v; a ShutdownError only at shutdown", reason)
			}
			stored := fl.storedEvents()
			for _, e := range payloads[:4] {
				if stored[e] != 1 {
					t.Errorf("event %s stored %d times, want once", e, stored[e])
				}
			}
		})
	}
}

// limitLog is a batchproc.LimitHook recording the limit's changes.
type limitLog struct {
	mu      sync.Mutex
	changes []string
}

func (l *limitLog) OnLimitChange(from, to int, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, strconv.Itoa(from)+"->"+strconv.Itoa(to)+" "+reason)
}

func (l *limitLog) first() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.changes) == 0 {
		return ""
	}
	return l.changes[0]
}

// The loader's Ingest-Slots reaches the processor's adaptive limit over
// real HTTP: slow start's first step stops at the 8 slots (4 -> 8) where
// it would step to 16. A malformed value is ignored. The fake loader holds
// the first 4 requests until all 4 have arrived, so the limit of 4 is
// reached, which growth needs, whatever the machine's speed.
func TestIngestSlotsReachTheLimit(t *testing.T) {
	for _, tc := range []struct{ slots, want string }{
		{"8", "4->8 capacity"},
		{"", "4->16 slow start"},
		{"eight", "4->16 slow start"},
		{"-8", "4->16 slow start"},
	} {
		t.Run("Ingest-Slots="+tc.slots, func(t *testing.T) {
			gate := make(chan struct{})
			fl := newFakeLoader(t, func(f *fakeLoader) {
				if tc.slots != "" {
					f.headers = map[string]string{"Ingest-Slots": tc.slots}
				}
				f.respond = func(ctx context.Context, n int, _ *request) reply {
					if n == 4 {
						close(gate)
					}
					if n <= 4 {
						select {
						case <-gate:
						case <-ctx.Done():
						}
					}
					return reply{}
				}
			})
			s := newSink(t, fl.URL())
			log := &limitLog{}
			p, err := batchproc.New(s, batchproc.WithMaxBatchEvents(1), batchproc.WithHooks(log))
			if err != nil {
				t.Fatal(err)
			}
			addAndShutdown(t, p, 64)
			if got := log.first(); got != tc.want {
				t.Errorf("first limit change %q, want %q (all: %v)", got, tc.want, log.changes)
			}
			if st := p.Stats(); st.Delivered != 64 {
				t.Errorf("delivered %d of 64", st.Delivered)
			}
		})
	}
}

// addAndShutdown adds n events, {"id":"0"} to {"id":"n-1"}, and shuts p
// down, failing t on any error.
func addAndShutdown(t *testing.T, p *batchproc.Processor, n int) {
	t.Helper()
	for i := range n {
		if err := p.Add(t.Context(), batchproc.Event{Payload: []byte(`{"id":"` + strconv.Itoa(i) + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// The loader's Server-Timing reaches ReportServerTime on a 200, with the
// Send's ctx, and not on another status.
func TestServerTimingReported(t *testing.T) {
	var mu sync.Mutex
	var got []time.Duration
	*httpsink.ReportServerTimeHook = func(ctx context.Context, d time.Duration) {
		mu.Lock()
		got = append(got, d)
		mu.Unlock()
		batchproc.ReportServerTime(ctx, d)
	}
	defer func() { *httpsink.ReportServerTimeHook = batchproc.ReportServerTime }()
	fl := newFakeLoader(t, func(f *fakeLoader) {
		f.headers = map[string]string{"Server-Timing": `cdn;dur=5, ingest;desc="x, y";dur=12.5`}
		f.respond = func(_ context.Context, n int, _ *request) reply {
			if n == 1 {
				return reply{Status: 503}
			}
			return reply{}
		}
	})
	p, err := batchproc.New(newSink(t, fl.URL()), batchproc.WithMaxBatchEvents(1),
		batchproc.WithRetry(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	addAndShutdown(t, p, 3)
	mu.Lock()
	defer mu.Unlock()
	// 4 requests: the 503 reports nothing, the three 200s 12.5 ms each.
	if len(got) != 3 || slices.ContainsFunc(got, func(d time.Duration) bool { return d != 12500*time.Microsecond }) {
		t.Errorf("reported %v, want three times 12.5ms (the 503 not)", got)
	}
}
