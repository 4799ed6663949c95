package loader

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/batchproc/batchproc/internal/testutil"

	"go.uber.org/goleak"

	"github.com/batchproc/batchproc/loader/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// memStore is a store.Store for tests: it keeps deep copies of what it
// stores, and can block, fail or refuse pings on demand.
type memStore struct {
	mu      sync.Mutex
	keys    map[string][32]byte // digest by namespace + "\x00" + key
	batches []store.Batch
	counts  store.Counts
	closed  bool
	err     error // returned by Store when set
	pingErr error // returned by Ping when set

	entered chan string   // when set, Store sends the batch key on entry
	release chan struct{} // when set, Store waits for it (or ctx) before storing
}

func newMemStore() *memStore { return &memStore{keys: map[string][32]byte{}} }

func (m *memStore) Store(ctx context.Context, b *store.Batch) (bool, error) {
	if m.entered != nil {
		m.entered <- b.Key
	}
	if m.release != nil {
		select {
		case <-m.release:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false, store.ErrClosed
	}
	if m.err != nil {
		return false, m.err
	}
	k := b.Namespace + "\x00" + b.Key
	if sum, ok := m.keys[k]; ok && b.Key != "" {
		if sum != b.Digest() {
			return false, store.ErrKeyReused
		}
		m.counts.Duplicates++
		return true, nil
	}
	if b.Key != "" {
		m.keys[k] = b.Digest()
	}
	c := store.Batch{Namespace: b.Namespace, Key: b.Key}
	for _, e := range b.Events {
		e.Payload = bytes.Clone(e.Payload)
		c.Events = append(c.Events, e)
	}
	m.batches = append(m.batches, c)
	m.counts.Batches++
	m.counts.Events += int64(len(b.Events))
	return false, nil
}

func (m *memStore) Ping(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return store.ErrClosed
	}
	return m.pingErr
}

func (m *memStore) Counts() store.Counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts
}

func (m *memStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

func (m *memStore) stored() []store.Batch {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]store.Batch(nil), m.batches...)
}

func (m *memStore) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// testServer is a Server listening on loopback with a client of its own.
type testServer struct {
	*Server
	t      *testing.T
	url    string
	client *http.Client
	logs   *testutil.SyncBuffer
	served chan error
}

// startServer starts a Server for cfg (Store defaults to a new memStore)
// and shuts it down at the end of the test.
func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = newMemStore()
	}
	logs := &testutil.SyncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{
		Server: s, t: t, url: "http://" + ln.Addr().String(), logs: logs,
		client: &http.Client{Transport: &http.Transport{}},
		served: make(chan error, 1),
	}
	go func() { ts.served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ts.client.CloseIdleConnections()
		already := s.isDraining() // the test shut it down and checked the result
		if err := s.Shutdown(context.Background()); err != nil && !already {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-ts.served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return ts
}

// response is a decoded answer.
type response struct {
	code   int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

func (ts *testServer) do(method, path string, body []byte, hdr ...string) response {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.url+path, bytes.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatal(err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: b}
}

// post sends body as NDJSON unless hdr sets Content-Type.
func (ts *testServer) post(body []byte, hdr ...string) response {
	ts.t.Helper()
	hasCT := false
	for i := 0; i < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Content-Type") {
			hasCT = true
		}
	}
	if !hasCT {
		hdr = append(hdr, "Content-Type", "application/x-ndjson")
	}
	return ts.do(http.MethodPost, "/v1/batches", body, hdr...)
}

// ndjson returns n events, one per line.
func ndjson(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		b.WriteString(`{"id":"e`)
		b.WriteString(strings.Repeat("x", i%3))
		b.WriteString(`","type":"t","ts":"2026-01-02T03:04:05Z","n":[1,2,{"a":null}]}` + "\n")
	}
	return b.Bytes()
}

func nopLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
