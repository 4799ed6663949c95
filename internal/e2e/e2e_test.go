// Package e2e runs the whole system over loopback: Processor → httpsink →
// real HTTP → loader → SQLite and PostgreSQL, with transport faults.
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/batchproc/batchproc/internal/testutil"

	"go.uber.org/goleak"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/httpsink"
	"github.com/batchproc/batchproc/internal/testutil/faults"
	"github.com/batchproc/batchproc/internal/testutil/pgtest"
	"github.com/batchproc/batchproc/loader"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/postgres"
	"github.com/batchproc/batchproc/loader/store/sqlite"
	"github.com/batchproc/batchproc/loader/store/storetest"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashEnvDir) != "" {
		crashChild() // a child process of TestCrashSpoolKill9: never returns
	}
	if os.Getenv(faultEnvClient) != "" {
		faultClient() // a client child process of TestFaults: never returns
	}
	goleak.VerifyTestMain(m)
}

// sumCounts sums the count=N attributes of lines with the given message.
func sumCounts(logs, msg string) int {
	sum := 0
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `" count=(\d+)`)
	for _, m := range re.FindAllStringSubmatch(logs, -1) {
		n, _ := strconv.Atoi(m[1])
		sum += n
	}
	return sum
}

// stores returns, per backend, a function that picks a fresh location for
// t and returns an opener for it: the test opens it twice, for the loader
// and, after the loader closed it, to read back.
func stores() map[string]func(t *testing.T) func() store.Store {
	return map[string]func(t *testing.T) func() store.Store{
		"sqlite": func(t *testing.T) func() store.Store {
			path := filepath.Join(t.TempDir(), "e2e.db")
			return func() store.Store {
				s, err := sqlite.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
		},
		"postgres": func(t *testing.T) func() store.Store {
			dsn := pgtest.DSN(t)
			return func() store.Store {
				s, err := postgres.Open(t.Context(), dsn)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
		},
	}
}

// TestEndToEnd sends N events from many goroutines through the real
// system while the transport misbehaves: the first request is answered 503
// before the loader sees it, and the third is committed by the loader but
// its connection drops before the answer. Every event must be stored
// exactly once, intact, and the count= lines of both sides must sum to N.
func TestEndToEnd(t *testing.T) {
	for name, location := range stores() {
		t.Run(name, func(t *testing.T) {
			open := location(t)
			st := open()
			var loaderLogs, clientLogs testutil.SyncBuffer
			srv, err := loader.New(loader.Config{
				Store:  st,
				Logger: slog.New(slog.NewTextHandler(&loaderLogs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			fh := &faults.Handler{Next: srv.Handler(), Plan: func(n int, r *http.Request) faults.Fault {
				switch {
				case r.URL.Path != "/v1/batches":
					return faults.None
				case n == 1:
					return faults.Unavailable
				case n == 3:
					return faults.DropAfterServe
				}
				return faults.None
			}}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			hs := &http.Server{Handler: fh, ReadHeaderTimeout: 5 * time.Second}
			served := make(chan error, 1)
			go func() { served <- hs.Serve(ln) }()

			sink, err := httpsink.New("http://"+ln.Addr().String(), httpsink.WithTimeout(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			p, err := batchproc.New(sink,
				batchproc.WithMaxBatchEvents(100),
				batchproc.WithLogger(slog.New(slog.NewTextHandler(&clientLogs, nil))),
				batchproc.WithRetry(batchproc.RetryPolicy{MaxAttempts: 10, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}),
				batchproc.WithOnFailure(func(b *batchproc.Batch, err error) { t.Errorf("batch %s failed: %v", b.Key(), err) }))
			if err != nil {
				t.Fatal(err)
			}

			const goroutines, perG = 8, 500
			const n = goroutines * perG
			want := map[string]string{}
			var wantMu sync.Mutex
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					for i := range perG {
						id := fmt.Sprintf("g%d-%d", g, i)
						payload := fmt.Sprintf(`{"id":%q,"type":"e2e","ts":"2026-11-25T10:00:00.%06dZ","n":%d}`, id, i, g*perG+i)
						wantMu.Lock()
						want[id] = payload
						wantMu.Unlock()
						if err := p.Add(t.Context(), batchproc.Event{ID: id, Payload: []byte(payload)}); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if err := p.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}
			if err := hs.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			<-served
			if err := srv.Shutdown(ctx); err != nil { // closes the store
				t.Fatal(err)
			}

			if fh.Injected(faults.Unavailable) != 1 || fh.Injected(faults.DropAfterServe) != 1 {
				t.Fatalf("faults injected: %d unavailable, %d drops", fh.Injected(faults.Unavailable), fh.Injected(faults.DropAfterServe))
			}
			stats := p.Stats()
			// The 503 is a retry of the processor's; the dropped connection may
			// be one too, or be replayed by Go's transport itself (the request
			// carries an Idempotency-Key): either way the loader sees the batch
			// twice and must store it once.
			if stats.Delivered != n || stats.Failed != 0 || stats.Retries < 1 {
				t.Fatalf("processor stats %+v: want %d delivered, none failed, >= 1 retry", stats, n)
			}
			ls := srv.Stats()
			if ls.Events != n || ls.Duplicates < 1 {
				t.Fatalf("loader stats %+v: want %d events and the dropped batch's retry as a duplicate", ls, n)
			}
			if got := sumCounts(clientLogs.String(), "batch delivered"); got != n {
				t.Fatalf("client count= lines sum to %d, want %d", got, n)
			}
			if got := sumCounts(loaderLogs.String(), "batch stored"); got != n {
				t.Fatalf("loader count= lines sum to %d, want %d", got, n)
			}

			// Read every row back (from a fresh handle: the loader closed its store).
			rd := open().(storetest.Reader)
			defer rd.(store.Store).Close()
			batches, err := rd.Batches(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, b := range batches {
				for _, e := range b.Events {
					if seen[e.ID] {
						t.Fatalf("event %s stored twice", e.ID)
					}
					seen[e.ID] = true
					if string(e.Payload) != want[e.ID] || e.Type != "e2e" || e.TS.IsZero() {
						t.Fatalf("event %s stored as %q (type %q ts %v), want %q", e.ID, e.Payload, e.Type, e.TS, want[e.ID])
					}
				}
			}
			if len(seen) != n {
				t.Fatalf("%d events stored, want %d", len(seen), n)
			}
		})
	}
}
