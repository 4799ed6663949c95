package bench

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/batchproc/batchproc/loader"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/sqlite"
)

// Receiving sides (-loader).
const (
	LoaderSQLite  = "sqlite"  // the real loader on a temporary SQLite file
	LoaderDiscard = "discard" // the real loader, validating and storing nothing
	LoaderNull    = "null"    // a null endpoint that only counts: the client-side ceiling
)

// recordingStore wraps the loader's store: after each commit it records
// the batch's events (and their end-to-end latency) on the receiver, then
// answers as the store did. The loader adds its Latency after Store
// returns, so the latency recorded ends at the commit, not the answer.
//
// It also counts the batches the store is done with (stored, or refused as
// duplicates), and signals each on handled when that is not nil: the Kafka
// endpoint waits on it for the consumer to reach the end of the topic.
type recordingStore struct {
	inner store.Store
	rec   *receiver

	done    atomic.Int64  // Store calls that returned no error
	handled chan struct{} // capacity 1; nil: no signal
}

func (s *recordingStore) Store(ctx context.Context, b *store.Batch) (bool, error) {
	dup, err := s.inner.Store(ctx, b)
	if err == nil && !dup {
		s.rec.committed(len(b.Events), func(i int) []byte { return b.Events[i].Payload })
	}
	if err == nil {
		s.done.Add(1)
		if s.handled != nil {
			select {
			case s.handled <- struct{}{}:
			default:
			}
		}
	}
	return dup, err
}

func (s *recordingStore) Ping(ctx context.Context) error { return s.inner.Ping(ctx) }
func (s *recordingStore) Counts() store.Counts           { return s.inner.Counts() }
func (s *recordingStore) Close() error                   { return s.inner.Close() }

// loaderEndpoint is a fresh in-process Batch Loader for one run.
type loaderEndpoint struct {
	srv   *loader.Server
	st    store.Store
	rec   *receiver
	ln    net.Listener
	done  chan error
	dir   string // temporary directory of the SQLite file, removed at Close
	logCl io.Closer
}

// loaderMaxConcurrent lifts the loader's ingest slots (default 2 x CPUs,
// answering 429 past them) so that a burst of concurrent sends, such as the
// seed pool's workers all flushing on the same tick, waits for the SQLite
// writer instead of being refused: the seed's designs do not retry, and the
// seed's loader did not refuse them. A batch is still stored one at a time.
const loaderMaxConcurrent = 1024

func startLoader(kind string, latency time.Duration, logW io.WriteCloser) (*loaderEndpoint, error) {
	e := &loaderEndpoint{rec: newReceiver(), logCl: logW}
	inner, dir, err := openStore(kind)
	if err != nil {
		e.cleanup()
		return nil, err
	}
	e.st, e.dir = inner, dir
	srv, err := loader.New(loader.Config{
		Store:         &recordingStore{inner: inner, rec: e.rec},
		Latency:       latency,
		MaxConcurrent: loaderMaxConcurrent,
		Logger:        loaderLogger(logW),
	})
	if err != nil {
		inner.Close()
		e.cleanup()
		return nil, err
	}
	e.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Shutdown(context.Background())
		e.cleanup()
		return nil, err
	}
	e.ln = ln
	e.done = serveLabelled(nil, ln, srv.Serve)
	return e, nil
}

// openStore opens the store of a -loader kind: for sqlite, a file in a new
// temporary directory (returned, for the caller to remove).
func openStore(kind string) (st store.Store, dir string, err error) {
	switch kind {
	case LoaderDiscard:
		return store.NewDiscard(), "", nil
	case LoaderSQLite:
		dir, err := os.MkdirTemp("", "batchbench-")
		if err != nil {
			return nil, "", err
		}
		st, err := sqlite.Open(filepath.Join(dir, "loader.db"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, "", err
		}
		return st, dir, nil
	}
	return nil, "", errors.New("bench: unknown loader " + kind)
}

// loaderLogger is the in-process loader's log: loader.log, or nothing.
func loaderLogger(logW io.Writer) *slog.Logger {
	var h slog.Handler = slog.DiscardHandler
	if logW != nil {
		h = slog.NewTextHandler(logW, nil)
	}
	return slog.New(h)
}

func (e *loaderEndpoint) URL() string { return "http://" + e.ln.Addr().String() }

// Delivered is the store's own count of events stored in this run.
func (e *loaderEndpoint) Delivered(context.Context) (int64, error) {
	return e.st.Counts().Events, nil
}

func (e *loaderEndpoint) E2E() *hdrhistogram.Histogram { return e.rec.histogram() }

func (e *loaderEndpoint) Close(ctx context.Context) error {
	err := e.srv.Shutdown(ctx) // closes the store
	if serr := <-e.done; err == nil {
		err = serr
	}
	e.cleanup()
	return err
}

func (e *loaderEndpoint) cleanup() {
	if e.logCl != nil {
		e.logCl.Close()
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}
