package seeddesigns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/batchproc/batchproc/internal/testutil"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a SendFunc that keeps what it was sent.
type recorder struct {
	mu     sync.Mutex
	bodies []string
	ids    [][]string
}

func (r *recorder) send(_ context.Context, payload []byte, traceIDs []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies = append(r.bodies, string(payload))
	r.ids = append(r.ids, append([]string(nil), traceIDs...))
	return nil
}

func (r *recorder) events() (n int, seen map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen = map[string]int{}
	for i, ids := range r.ids {
		lines := strings.Split(strings.TrimSuffix(r.bodies[i], "\n"), "\n")
		if len(lines) != len(ids) {
			panic(fmt.Sprintf("body has %d lines, %d ids", len(lines), len(ids)))
		}
		for j, id := range ids {
			if lines[j] != `{"id":"`+id+`"}` {
				panic(fmt.Sprintf("line %q does not match id %q", lines[j], id))
			}
			seen[id]++
			n++
		}
	}
	return n, seen
}

var countRE = regexp.MustCompile(`\bcount=(\d+)`)

func sumCounts(log string) int {
	n := 0
	for _, m := range countRE.FindAllStringSubmatch(log, -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

func event(i int) Event {
	id := strconv.Itoa(i)
	return Event{TraceID: id, Payload: []byte(`{"id":"` + id + `"}`)}
}

func designs() map[string]func(Config) *BatchProcessor {
	return map[string]func(Config) *BatchProcessor{
		"pool-3": func(c Config) *BatchProcessor { return NewWorkerPool(3, c) },
		"async":  NewAsync,
	}
}

func TestDeliveryOnLimitAndTicker(t *testing.T) {
	for name, newBP := range designs() {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var rec recorder
				var logBuf testutil.SyncBuffer
				q := newBP(Config{Send: rec.send, Logger: slog.New(slog.NewTextHandler(&logBuf, nil)), BufferLimit: 100})
				const total = 1050
				for i := range total {
					if err := q.Add(t.Context(), event(i)); err != nil {
						t.Fatal(err)
					}
				}
				// Before the tick only full buffers went out.
				synctest.Wait()
				n, _ := rec.events()
				if n%100 != 0 || n < total-3*100 {
					t.Fatalf("before the tick %d events were sent, want full buffers of 100 only", n)
				}
				time.Sleep(DefaultInterval)
				synctest.Wait()
				n, seen := rec.events()
				if n != total || len(seen) != total {
					t.Fatalf("after the tick: %d events sent, %d distinct; want %d", n, len(seen), total)
				}
				if got := sumCounts(logBuf.String()); got != total {
					t.Fatalf("count= lines sum to %d, want %d", got, total)
				}
				if err := q.Stop(t.Context()); err != nil {
					t.Fatal(err)
				}
				if err := q.Add(t.Context(), event(0)); !errors.Is(err, ErrStopped) {
					t.Fatalf("Add after Stop = %v, want ErrStopped", err)
				}
			})
		})
	}
}

func TestStopSendsTheRest(t *testing.T) {
	for name, newBP := range designs() {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var rec recorder
				var logBuf testutil.SyncBuffer
				q := newBP(Config{Send: rec.send, Logger: slog.New(slog.NewTextHandler(&logBuf, nil)), QueueSize: 16})
				for i := range 40 {
					if err := q.Add(t.Context(), event(i)); err != nil {
						t.Fatal(err)
					}
				}
				if err := q.Stop(t.Context()); err != nil {
					t.Fatal(err)
				}
				if n, seen := rec.events(); n != 40 || len(seen) != 40 {
					t.Fatalf("%d events sent (%d distinct), want 40", n, len(seen))
				}
				log := logBuf.String()
				stop := strings.Index(log, "stopping BatchProcessor, waiting for remaining events to be sent")
				if stop < 0 {
					t.Fatalf("no stopping line in log:\n%s", log)
				}
				if strings.Contains(log[:stop], "count=") {
					t.Fatalf("a count= line came before the stop, yet nothing was due:\n%s", log)
				}
				if got := sumCounts(log[stop:]); got != 40 {
					t.Fatalf("count= after the stop sum to %d, want 40", got)
				}
				if failed, dropped := q.Counts(); failed != 0 || dropped != 0 {
					t.Fatalf("failed=%d dropped=%d", failed, dropped)
				}
			})
		})
	}
}

// The post's design 1 fault: while every worker is in a synchronous send,
// nobody reads the unbuffered queue and Add blocks.
func TestPoolAddBlocksWhileAllWorkersSend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		send := func(ctx context.Context, _ []byte, _ []string) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		// A limit of 1 puts each worker into a send as soon as it takes an
		// event: two Adds occupy both workers (in the post's run, the
		// tickers firing together did the same once a second).
		q := NewWorkerPool(2, Config{Send: send, Logger: slog.New(slog.DiscardHandler), BufferLimit: 1})
		for i := range 2 {
			if err := q.Add(t.Context(), event(i)); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		if err := q.Add(ctx, event(10)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Add while all workers send = %v, want DeadlineExceeded", err)
		}
		close(release)
		if err := q.Add(t.Context(), event(11)); err != nil {
			t.Fatalf("Add after the sends returned: %v", err)
		}
		if err := q.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

// Design 2 sends a copy: refilling the buffer does not change a request
// already under way, and sends are not bounded.
func TestAsyncSendsACopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var mu sync.Mutex
		var held [][]byte
		var inflight, maxInflight int
		send := func(_ context.Context, payload []byte, _ []string) error {
			mu.Lock()
			held = append(held, payload)
			inflight++
			maxInflight = max(maxInflight, inflight)
			mu.Unlock()
			<-release
			mu.Lock()
			inflight--
			mu.Unlock()
			return nil
		}
		q := NewAsync(Config{Send: send, Logger: slog.New(slog.DiscardHandler), BufferLimit: 2})
		for i := range 10 {
			if err := q.Add(t.Context(), event(i)); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		mu.Lock()
		if maxInflight != 5 {
			t.Errorf("%d sends under way at once, want 5 (no bound)", maxInflight)
		}
		for _, p := range held {
			lines := strings.Split(strings.TrimSuffix(string(p), "\n"), "\n")
			if len(lines) != 2 || lines[0] == lines[1] {
				t.Errorf("request body %q was overwritten", p)
			}
		}
		mu.Unlock()
		close(release)
		if err := q.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestStopDeadlineCancelsSends(t *testing.T) {
	for name, newBP := range designs() {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				send := func(ctx context.Context, _ []byte, _ []string) error {
					<-ctx.Done()
					return ctx.Err()
				}
				var logBuf testutil.SyncBuffer
				q := newBP(Config{Send: send, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
				for i := range 7 {
					if err := q.Add(t.Context(), event(i)); err != nil {
						t.Fatal(err)
					}
				}
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				defer cancel()
				if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Stop = %v, want DeadlineExceeded", err)
				}
				if failed, _ := q.Counts(); failed != 7 {
					t.Fatalf("failed = %d, want 7", failed)
				}
				if sumCounts(logBuf.String()) != 0 {
					t.Fatal("a failed send logged count=")
				}
			})
		})
	}
}

func TestDeepCopy(t *testing.T) {
	if deepCopy[byte](nil) != nil {
		t.Fatal("deepCopy(nil) != nil")
	}
	src := []byte("abc")
	dst := deepCopy(src)
	src[0] = 'x'
	if string(dst) != "abc" {
		t.Fatalf("deepCopy shares memory: %q", dst)
	}
}

// The post's workers were started together, so their tickers fire together:
// every ticker flush of a round happens at the same instant.
func TestPoolTickersFireTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var at []time.Time
		send := func(context.Context, []byte, []string) error {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
			time.Sleep(400 * time.Millisecond) // the loader's round trip
			return nil
		}
		q := NewWorkerPool(4, Config{Send: send, Logger: slog.New(slog.DiscardHandler)})
		for i := range 400 {
			if err := q.Add(t.Context(), event(i)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(DefaultInterval + time.Millisecond)
		mu.Lock()
		if len(at) == 0 {
			t.Fatal("no flush at the tick")
		}
		for _, a := range at {
			if !a.Equal(at[0]) {
				t.Errorf("flushes at %v and %v: tickers not together", at[0], a)
			}
		}
		mu.Unlock()
		synctest.Wait()
		if err := q.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}
