package bench

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
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
type recordingStore struct {
	inner store.Store
	rec   *receiver
}

func (s *recordingStore) Store(ctx context.Context, b *store.Batch) (bool, error) {
	dup, err := s.inner.Store(ctx, b)
	if err == nil && !dup {
		s.rec.committed(len(b.Events), func(i int) []byte { return b.Events[i].Payload })
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
	var inner store.Store
	switch kind {
	case LoaderDiscard:
		inner = store.NewDiscard()
	case LoaderSQLite:
		dir, err := os.MkdirTemp("", "batchbench-")
		if err != nil {
			return nil, err
		}
		e.dir = dir
		st, err := sqlite.Open(filepath.Join(dir, "loader.db"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		inner = st
	default:
		return nil, errors.New("bench: unknown loader " + kind)
	}
	e.st = inner
	var h slog.Handler = slog.DiscardHandler
	if logW != nil {
		h = slog.NewTextHandler(logW, nil)
	}
	srv, err := loader.New(loader.Config{
		Store:         &recordingStore{inner: inner, rec: e.rec},
		Latency:       latency,
		MaxConcurrent: loaderMaxConcurrent,
		Logger:        slog.New(h),
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
