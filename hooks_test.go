package batchproc_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
)

type recordingHook struct {
	mu      sync.Mutex
	sends   []batchproc.SendInfo
	fails   []batchproc.FailureInfo
	rejects []error
	limits  []string
}

func (h *recordingHook) OnSend(i batchproc.SendInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sends = append(h.sends, i)
}

func (h *recordingHook) OnBatchFailed(i batchproc.FailureInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fails = append(h.fails, i)
}

func (h *recordingHook) OnReject(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rejects = append(h.rejects, err)
}

func (h *recordingHook) OnLimitChange(from, to int, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.limits = append(h.limits, reason)
}

func TestHooks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &batchproctest.Recorder{Hook: func(_ context.Context, b *batchproc.Batch, attempt int) error {
			switch {
			case strings.HasSuffix(b.Key(), "-1") && attempt == 1:
				time.Sleep(50 * time.Millisecond)
				return errors.New("503")
			case strings.HasSuffix(b.Key(), "-2"):
				return batchproc.Permanent(errors.New("400"))
			}
			return nil
		}}
		h := &recordingHook{}
		p := mustNew(t, rec, batchproc.WithHooks(h), batchproc.WithMaxBatchEvents(2), batchproc.WithMemoryLimit(1<<21))
		for i := range 4 {
			_ = p.Add(t.Context(), ev(i))
		}
		_ = p.Flush(t.Context())
		if err := p.TryAdd(batchproc.Event{}); !errors.Is(err, batchproc.ErrInvalidEvent) {
			t.Fatal(err)
		}
		_ = p.Shutdown(t.Context())
		_ = p.TryAdd(ev(9))
		h.mu.Lock()
		defer h.mu.Unlock()
		got := map[string][]batchproc.SendOutcome{}
		for _, s := range h.sends {
			got[s.Key[strings.LastIndex(s.Key, "-"):]] = append(got[s.Key[strings.LastIndex(s.Key, "-"):]], s.Outcome)
			if s.Events != 2 || s.Bytes != 16 || s.Attempt < 1 {
				t.Errorf("send %+v", s)
			}
			if s.Key[len(s.Key)-2:] == "-1" && s.Attempt == 1 && s.Duration != 50*time.Millisecond {
				t.Errorf("first send took %v, want 50ms", s.Duration)
			}
		}
		want := map[string][]batchproc.SendOutcome{
			"-1": {batchproc.SendRetrying, batchproc.SendDelivered},
			"-2": {batchproc.SendFailed},
		}
		for k, w := range want {
			if strings.Join(strs(got[k]), ",") != strings.Join(strs(w), ",") {
				t.Errorf("batch %s: outcomes %v, want %v", k, got[k], w)
			}
		}
		if len(h.fails) != 1 || h.fails[0].Events != 2 || h.fails[0].Attempts != 1 || !strings.Contains(h.fails[0].Err.Error(), "400") {
			t.Errorf("failures %+v", h.fails)
		}
		if len(h.rejects) != 2 || !errors.Is(h.rejects[0], batchproc.ErrInvalidEvent) || !errors.Is(h.rejects[1], batchproc.ErrClosed) {
			t.Errorf("rejects %v", h.rejects)
		}
		if len(h.limits) == 0 {
			t.Errorf("no limit change seen after a failed send")
		}
	})
}

func strs(o []batchproc.SendOutcome) []string {
	var s []string
	for _, x := range o {
		s = append(s, string(x))
	}
	return s
}

func TestHookMustImplementSomething(t *testing.T) {
	if _, err := batchproc.New(&batchproctest.Recorder{}, batchproc.WithHooks(struct{}{})); err == nil || !strings.Contains(err.Error(), "implements no hook interface") {
		t.Fatalf("New with a hook of no interface: %v", err)
	}
}
