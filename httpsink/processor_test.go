package httpsink_test

import (
	"context"
	"slices"
	"strconv"
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
