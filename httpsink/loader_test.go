package httpsink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/httpsink"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// request is one POST the fake loader received.
type request struct {
	Path    string
	Key     string
	Header  http.Header
	Body    []byte   // as sent on the wire
	Decoded []byte   // after Content-Encoding
	Events  [][]byte // split by Content-Type
	Err     string   // why the fake could not decode it, "" if it could
}

// reply is what a respond hook answers; Status 0 means "do the default".
type reply struct {
	Status  int
	Body    string
	Headers map[string]string
}

// fakeLoader is a loopback Batch Loader implementing protocol.md's
// responses: it decodes bodies, de-duplicates keys and answers 413 above
// maxEvents. A respond hook can override any answer.
type fakeLoader struct {
	srv       *httptest.Server
	maxEvents int
	respond   func(ctx context.Context, n int, r *request) reply
	headers   map[string]string // set on every answer

	newConns atomic.Int32
	closed   chan struct{} // receives on each closed connection (buffered)

	mu     sync.Mutex
	reqs   []*request
	stored map[string][][]byte
}

func newFakeLoader(t testing.TB, configure func(*fakeLoader)) *fakeLoader {
	t.Helper()
	f := &fakeLoader{stored: make(map[string][][]byte), closed: make(chan struct{}, 1024)}
	if configure != nil {
		configure(f)
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serveHTTP))
	f.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			f.newConns.Add(1)
		case http.StateClosed, http.StateHijacked:
			select {
			case f.closed <- struct{}{}:
			default:
			}
		}
	}
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeLoader) URL() string { return f.srv.URL }

func (f *fakeLoader) requests() []*request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*request(nil), f.reqs...)
}

func (f *fakeLoader) keys() []string {
	var keys []string
	for _, r := range f.requests() {
		keys = append(keys, r.Key)
	}
	return keys
}

// storedEvents returns every event stored, over all keys.
func (f *fakeLoader) storedEvents() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int)
	for _, evs := range f.stored {
		for _, e := range evs {
			out[string(e)]++
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeLoader) serveHTTP(w http.ResponseWriter, r *http.Request) {
	for k, v := range f.headers {
		w.Header().Set(k, v)
	}
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method"})
		return
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	req := &request{Path: r.URL.Path, Key: r.Header.Get("Idempotency-Key"), Header: r.Header.Clone(), Body: raw}
	req.Decoded, req.Events, err = decode(r.Header, raw)
	if err != nil {
		req.Err = err.Error()
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	n := len(f.reqs)
	f.mu.Unlock()

	if f.respond != nil {
		if rep := f.respond(r.Context(), n, req); rep.Status != 0 {
			for k, v := range rep.Headers {
				w.Header().Set(k, v)
			}
			w.WriteHeader(rep.Status)
			_, _ = io.WriteString(w, rep.Body)
			return
		}
	}
	switch {
	case r.URL.Path != "/v1/batches":
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such path"})
	case req.Err != "":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": req.Err})
	case f.maxEvents > 0 && len(req.Events) > f.maxEvents:
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "too many events"})
	default:
		key := req.Key
		if key == "" {
			key = "#" + strconv.Itoa(n) // no key: stored as new
		}
		f.mu.Lock()
		_, dup := f.stored[key]
		if !dup {
			f.stored[key] = req.Events
		}
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"accepted": len(req.Events), "duplicate": dup})
	}
}

// decode undoes Content-Encoding and splits the events by Content-Type.
func decode(h http.Header, raw []byte) ([]byte, [][]byte, error) {
	var dec []byte
	switch ce := h.Get("Content-Encoding"); ce {
	case "", "identity":
		dec = raw
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, nil, err
		}
		if dec, err = io.ReadAll(zr); err != nil {
			return nil, nil, err
		}
	case "zstd":
		zr, err := zstd.NewReader(nil)
		if err != nil {
			return nil, nil, err
		}
		defer zr.Close()
		if dec, err = zr.DecodeAll(raw, nil); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("unsupported Content-Encoding %q", ce)
	}
	var events [][]byte
	switch ct := h.Get("Content-Type"); ct {
	case "application/x-ndjson":
		if len(dec) == 0 || dec[len(dec)-1] != '\n' {
			return dec, nil, fmt.Errorf("ndjson body does not end in a newline")
		}
		for i, line := range bytes.Split(dec[:len(dec)-1], []byte("\n")) {
			if !json.Valid(line) || line[0] != '{' {
				return dec, nil, fmt.Errorf("line %d is not a JSON object", i+1)
			}
			events = append(events, line)
		}
	case "application/json":
		var arr []json.RawMessage
		if err := json.Unmarshal(dec, &arr); err != nil {
			return dec, nil, err
		}
		for _, e := range arr {
			events = append(events, []byte(e))
		}
	default:
		return dec, nil, fmt.Errorf("unsupported Content-Type %q", ct)
	}
	return dec, events, nil
}

// newBatch returns a batch of n events {"id":"e<i>","n":<i>} under key.
func newBatch(t testing.TB, key string, n int) *batchproc.Batch {
	t.Helper()
	events := make([]batchproc.Event, n)
	for i := range events {
		id := key + "-e" + strconv.Itoa(i)
		events[i] = batchproc.Event{ID: id, Payload: fmt.Appendf(nil, `{"id":%q,"n":%d}`, id, i)}
	}
	b, err := batchproc.NewBatch(key, events...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newSink(t testing.TB, url string, opts ...httpsink.Option) *httpsink.Sink {
	t.Helper()
	s, err := httpsink.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
