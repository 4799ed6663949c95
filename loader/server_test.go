package loader

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/batchproc/batchproc/loader/store"
)

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// TestProtocol walks the rows of protocol.md's tables.
func TestProtocol(t *testing.T) {
	ts := startServer(t, Config{
		MaxBody: 64 << 10, MaxDecodedBody: 128 << 10, MaxEvents: 5, MaxLine: 200,
	})
	ms := ts.cfg.Store.(*memStore)
	three := []byte("{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n")
	big := bytes.Repeat([]byte("{\"pad\":\""+strings.Repeat("x", 150)+"\"}\n"), 600) // 93 KiB
	rows := []struct {
		name     string
		method   string
		path     string
		body     []byte
		hdr      []string
		code     int
		body200  string // exact body of a 200
		line     int    // the 400's "line"
		errMatch string // substring of the error
		stored   int    // events stored by this request
	}{
		{name: "ndjson", body: three, code: 200, body200: `{"accepted":3,"duplicate":false}`, stored: 3},
		{name: "ndjson no final newline", body: []byte("{}\n{}"), code: 200, body200: `{"accepted":2,"duplicate":false}`, stored: 2},
		{name: "ndjson CRLF", body: []byte("{}\r\n{}\r\n"), code: 200, body200: `{"accepted":2,"duplicate":false}`, stored: 2},
		{name: "ndjson charset", body: three, hdr: []string{"Content-Type", "application/x-ndjson; charset=utf-8"}, code: 200, stored: 3},
		{name: "no content type", body: three, hdr: []string{"Content-Type", ""}, code: 200, stored: 3},
		{name: "json array", body: []byte(` [ {"id":"a"} , {"b":[1,{}]} ] `), hdr: []string{"Content-Type", "application/json"}, code: 200, body200: `{"accepted":2,"duplicate":false}`, stored: 2},
		{name: "json array charset", body: []byte(`[{}]`), hdr: []string{"Content-Type", "Application/JSON; charset=UTF-8"}, code: 200, stored: 1},
		{name: "gzip", body: gzipBytes(t, three), hdr: []string{"Content-Encoding", "gzip"}, code: 200, stored: 3},
		{name: "zstd", body: zstdBytes(t, three), hdr: []string{"Content-Encoding", "zstd"}, code: 200, stored: 3},
		{name: "identity", body: three, hdr: []string{"Content-Encoding", "identity"}, code: 200, stored: 3},
		{name: "valid key", body: three, hdr: []string{"Idempotency-Key", "Ab09._:-" + strings.Repeat("k", 120)}, code: 200, stored: 3},

		{name: "405 GET", method: "GET", path: "/v1/batches", code: 405, errMatch: "not allowed"},
		{name: "405 PUT", method: "PUT", path: "/v1/batches", body: three, code: 405, errMatch: "not allowed"},
		{name: "405 healthz POST", method: "POST", path: "/healthz", code: 405, errMatch: "not allowed"},
		{name: "404", method: "GET", path: "/v2/batches", code: 404, errMatch: "not found"},
		{name: "404 trailing slash", method: "POST", path: "/v1/batches/", body: three, code: 404, errMatch: "not found"},
		{name: "404 pprof off", method: "GET", path: "/debug/pprof/", code: 404, errMatch: "not found"},

		{name: "415 content type", body: three, hdr: []string{"Content-Type", "text/plain"}, code: 415, errMatch: "Content-Type"},
		{name: "415 charset", body: three, hdr: []string{"Content-Type", "application/json; charset=latin1"}, code: 415, errMatch: "Content-Type"},
		{name: "415 param", body: three, hdr: []string{"Content-Type", "application/x-ndjson; q=1"}, code: 415, errMatch: "Content-Type"},
		{name: "415 encoding", body: three, hdr: []string{"Content-Encoding", "br"}, code: 415, errMatch: "Content-Encoding"},
		{name: "415 two encodings", body: three, hdr: []string{"Content-Encoding", "gzip", "Content-Encoding", "zstd"}, code: 415, errMatch: "Content-Encoding"},

		{name: "400 key too long", body: three, hdr: []string{"Idempotency-Key", strings.Repeat("k", 129)}, code: 400, errMatch: "Idempotency-Key"},
		{name: "400 key chars", body: three, hdr: []string{"Idempotency-Key", "a/b"}, code: 400, errMatch: "Idempotency-Key"},
		{name: "400 key empty", body: three, hdr: []string{"Idempotency-Key", ""}, code: 400, errMatch: "Idempotency-Key"},
		{name: "400 two keys", body: three, hdr: []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, code: 400, errMatch: "Idempotency-Key"},
		{name: "400 empty body", body: nil, code: 400, errMatch: "empty batch"},
		{name: "400 empty array", body: []byte(" [ ] "), hdr: []string{"Content-Type", "application/json"}, code: 400, errMatch: "empty batch"},
		{name: "400 empty gzip batch", body: gzipBytes(t, nil), hdr: []string{"Content-Encoding", "gzip"}, code: 400, errMatch: "empty batch"},
		{name: "400 bad line", body: []byte("{}\n{}\n{\"a\":}\n{}\n"), code: 400, line: 3, errMatch: "invalid JSON"},
		{name: "400 not an object", body: []byte("{}\n[1]\n"), code: 400, line: 2, errMatch: "not a JSON object"},
		{name: "400 blank line", body: []byte("{}\n\n{}\n"), code: 400, line: 2, errMatch: "empty line"},
		{name: "400 two newlines at end", body: []byte("{}\n\n"), code: 400, line: 2, errMatch: "empty line"},
		{name: "400 data after object", body: []byte("{} {}\n"), code: 400, line: 1, errMatch: "after the object"},
		{name: "400 id not a string", body: []byte("{}\n{\"id\":7}\n"), code: 400, line: 2, errMatch: `"id"`},
		{name: "400 type not a string", body: []byte("{\"type\":null}\n"), code: 400, line: 1, errMatch: `"type"`},
		{name: "400 bad ts", body: []byte("{\"ts\":\"2026-13-01T00:00:00Z\"}\n"), code: 400, line: 1, errMatch: `"ts"`},
		{name: "400 invalid utf8", body: []byte("{}\n{\"a\":\"\xff\"}\n"), code: 400, line: 2, errMatch: "UTF-8"},
		{name: "400 array malformed", body: []byte(`[{},{}`), hdr: []string{"Content-Type", "application/json"}, code: 400, errMatch: "malformed JSON array"},
		{name: "400 array not array", body: []byte(`{}`), hdr: []string{"Content-Type", "application/json"}, code: 400, errMatch: "malformed JSON array"},
		{name: "400 array trailing", body: []byte(`[{}] x`), hdr: []string{"Content-Type", "application/json"}, code: 400, errMatch: "after the array"},
		{name: "400 array element", body: []byte(`[{}, {}, 3]`), hdr: []string{"Content-Type", "application/json"}, code: 400, line: 3, errMatch: "not a JSON object"},
		{name: "400 array bad element", body: []byte(`[{}, {"a" 1}]`), hdr: []string{"Content-Type", "application/json"}, code: 400, line: 2, errMatch: "invalid JSON"},
		{name: "400 gzip malformed", body: []byte("not gzip at all"), hdr: []string{"Content-Encoding", "gzip"}, code: 400, errMatch: "malformed gzip"},
		{name: "400 zstd malformed", body: []byte("not zstd at all"), hdr: []string{"Content-Encoding", "zstd"}, code: 400, errMatch: "malformed zstd"},

		{name: "413 body", body: big, code: 413, errMatch: "request body over the limit"},
		{name: "413 decoded body", body: gzipBytes(t, bytes.Repeat(big, 2)), hdr: []string{"Content-Encoding", "gzip"}, code: 413, errMatch: "decompressed body over the limit"},
		{name: "413 decoded body zstd", body: zstdBytes(t, bytes.Repeat(big, 2)), hdr: []string{"Content-Encoding", "zstd"}, code: 413, errMatch: "over the limit"},
		{name: "413 events", body: ndjson(6), code: 413, errMatch: "more than 5 events"},
		{name: "413 events array", body: []byte(`[{},{},{},{},{},{}]`), hdr: []string{"Content-Type", "application/json"}, code: 413, errMatch: "more than 5 events"},
		{name: "413 line", body: []byte("{}\n{\"a\":\"" + strings.Repeat("x", 200) + "\"}\n"), code: 413, errMatch: "line 2 is 208 bytes"},
		{name: "413 element", body: []byte(`[{}, {"a":"` + strings.Repeat("x", 200) + `"}]`), hdr: []string{"Content-Type", "application/json"}, code: 413, errMatch: "element 2 is 208 bytes"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			before := ms.Counts().Events
			if r.method == "" {
				r.method = http.MethodPost
			}
			if r.path == "" {
				r.path = "/v1/batches"
			}
			hdr := r.hdr
			if r.method == http.MethodPost && r.path == "/v1/batches" {
				hasCT := false
				for i := 0; i < len(hdr); i += 2 {
					hasCT = hasCT || hdr[i] == "Content-Type"
				}
				if !hasCT {
					hdr = append(hdr, "Content-Type", "application/x-ndjson")
				}
			}
			resp := ts.do(r.method, r.path, r.body, hdr...)
			if resp.code != r.code {
				t.Fatalf("status %d, want %d; body %s", resp.code, r.code, resp.body)
			}
			if ct := resp.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			m := resp.json(t)
			if r.code == 200 {
				if r.body200 != "" && string(resp.body) != r.body200 {
					t.Errorf("body %s, want %s", resp.body, r.body200)
				}
				if m["accepted"] != float64(r.stored) || m["duplicate"] != false {
					t.Errorf("body %s, want accepted %d, duplicate false", resp.body, r.stored)
				}
			} else {
				msg, _ := m["error"].(string)
				if !strings.Contains(msg, r.errMatch) {
					t.Errorf("error %q does not contain %q", msg, r.errMatch)
				}
				line, hasLine := m["line"]
				if r.line > 0 && line != float64(r.line) {
					t.Errorf("line %v, want %d", line, r.line)
				}
				if r.line == 0 && hasLine {
					t.Errorf("unexpected line %v", line)
				}
				if len(m) != 1+btoi(hasLine) {
					t.Errorf("body %s has members besides error and line", resp.body)
				}
			}
			if r.code == 405 {
				if resp.header.Get("Allow") == "" {
					t.Error("405 without Allow")
				}
			}
			if got := ms.Counts().Events - before; got != int64(r.stored) {
				t.Errorf("%d events stored, want %d", got, r.stored)
			}
		})
	}
	// The rejected POST /v1/batches requests are counted in /v1/stats.
	var wantRejected int64
	for _, r := range rows {
		if r.code != 200 && (r.method == "" || r.method == http.MethodPost) && (r.path == "" || r.path == "/v1/batches") {
			wantRejected++
		}
	}
	if got := ts.Stats().Rejected; got != wantRejected {
		t.Errorf("Stats().Rejected = %d, want %d", got, wantRejected)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestAuth(t *testing.T) {
	ts := startServer(t, Config{Tokens: []string{"secret-one", "s2"}})
	body := ndjson(2)
	for _, c := range []struct {
		name string
		auth string
		code int
	}{
		{"missing", "", 401},
		{"wrong", "Bearer secret-two", 401},
		{"prefix of a token", "Bearer secret", 401},
		{"wrong scheme", "Basic c2VjcmV0LW9uZQ==", 401},
		{"first token", "Bearer secret-one", 200},
		{"second token, lower-case scheme", "bearer s2", 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			var hdr []string
			if c.auth != "" {
				hdr = []string{"Authorization", c.auth}
			}
			resp := ts.post(body, hdr...)
			if resp.code != c.code {
				t.Fatalf("status %d, want %d: %s", resp.code, c.code, resp.body)
			}
			if c.code == 401 {
				if msg, _ := resp.json(t)["error"].(string); msg == "" {
					t.Errorf("401 body %s has no error", resp.body)
				}
				if resp.header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			}
		})
	}
	// The other endpoints need no token.
	if resp := ts.do("GET", "/healthz", nil); resp.code != 200 {
		t.Errorf("healthz: %d", resp.code)
	}
}

func TestIdempotentRepeat(t *testing.T) {
	ts := startServer(t, Config{})
	ms := ts.cfg.Store.(*memStore)
	body := ndjson(4)
	for i, want := range []string{`{"accepted":4,"duplicate":false}`, `{"accepted":4,"duplicate":true}`, `{"accepted":4,"duplicate":true}`} {
		resp := ts.post(body, "Idempotency-Key", "batch-1")
		if resp.code != 200 || string(resp.body) != want {
			t.Fatalf("attempt %d: %d %s, want 200 %s", i, resp.code, resp.body, want)
		}
	}
	if got := len(ms.stored()); got != 1 {
		t.Fatalf("%d batches stored, want 1", got)
	}
	// Without a key the same body is a new batch each time.
	ts.post(body)
	ts.post(body)
	if got := len(ms.stored()); got != 3 {
		t.Fatalf("%d batches stored, want 3", got)
	}
	st := ts.Stats()
	if st != (Stats{Events: 12, Batches: 3, Duplicates: 2}) {
		t.Errorf("Stats = %+v", st)
	}
	// One count= line per stored batch; the repeats log none.
	counts := regexp.MustCompile(`(?m)\bcount=(\d+)`).FindAllStringSubmatch(ts.logs.String(), -1)
	if len(counts) != 3 {
		t.Fatalf("%d count= lines, want 3:\n%s", len(counts), ts.logs.String())
	}
	for _, c := range counts {
		if c[1] != "4" {
			t.Errorf("count=%s, want 4", c[1])
		}
	}
	if n := strings.Count(ts.logs.String(), "duplicate batch"); n != 2 {
		t.Errorf("%d duplicate log lines, want 2", n)
	}
}

func TestStoredEvents(t *testing.T) {
	ts := startServer(t, Config{})
	ms := ts.cfg.Store.(*memStore)
	body := "{\"id\":\"a\\u00e9\\ud83d\\ude00\",\"type\":\"click\",\"ts\":\"2026-01-02T03:04:05.5+01:00\",\"x\":{\"id\":1}}\r\n" +
		"  {\"type\":\"t\\\"q\",\"id\":\"first\",\"id\":\"last\"}\t\n" +
		"{}\n"
	resp := ts.post([]byte(body), "Idempotency-Key", "k1")
	if resp.code != 200 {
		t.Fatalf("%d %s", resp.code, resp.body)
	}
	b := ms.stored()[0]
	if b.Key != "k1" || len(b.Events) != 3 {
		t.Fatalf("batch %+v", b)
	}
	e := b.Events
	wantTS := time.Date(2026, 1, 2, 2, 4, 5, 5e8, time.UTC)
	if e[0].ID != "aé😀" || e[0].Type != "click" || !e[0].TS.Equal(wantTS) ||
		string(e[0].Payload) != `{"id":"a\u00e9\ud83d\ude00","type":"click","ts":"2026-01-02T03:04:05.5+01:00","x":{"id":1}}` {
		t.Errorf("event 0: %+v %s", e[0], e[0].Payload)
	}
	if e[1].ID != "last" || e[1].Type != `t"q` || !e[1].TS.IsZero() || string(e[1].Payload) != `{"type":"t\"q","id":"first","id":"last"}` {
		t.Errorf("event 1: %+v %s", e[1], e[1].Payload)
	}
	if e[2].ID != "" || e[2].Type != "" || string(e[2].Payload) != "{}" {
		t.Errorf("event 2: %+v", e[2])
	}
}

func TestOverloaded429(t *testing.T) {
	ms := newMemStore()
	ms.entered = make(chan string, 1)
	ms.release = make(chan struct{})
	ts := startServer(t, Config{Store: ms, MaxConcurrent: 1, RetryAfter: 1500 * time.Millisecond})
	first := make(chan response, 1)
	go func() { first <- ts.post(ndjson(1), "Idempotency-Key", "first") }()
	<-ms.entered // the only slot is taken and held in Store

	resp := ts.post(ndjson(1))
	if resp.code != 429 {
		t.Fatalf("status %d, want 429: %s", resp.code, resp.body)
	}
	if ra := resp.header.Get("Retry-After"); ra != "2" {
		t.Errorf("Retry-After %q, want 2", ra)
	}
	if msg, _ := resp.json(t)["error"].(string); !strings.Contains(msg, "overloaded") {
		t.Errorf("body %s", resp.body)
	}
	close(ms.release)
	if r := <-first; r.code != 200 {
		t.Fatalf("first: %d %s", r.code, r.body)
	}
	// The slot is free again.
	if r := ts.post(ndjson(1)); r.code != 200 {
		t.Fatalf("after release: %d %s", r.code, r.body)
	}
}

func TestShutdownDrains(t *testing.T) {
	ms := newMemStore()
	ms.entered = make(chan string, 1)
	ms.release = make(chan struct{})
	ts := startServer(t, Config{Store: ms})
	if r := ts.do("GET", "/readyz", nil); r.code != 200 {
		t.Fatalf("readyz before: %d %s", r.code, r.body)
	}
	inflight := make(chan response, 1)
	go func() { inflight <- ts.post(ndjson(3), "Idempotency-Key", "in-flight") }()
	<-ms.entered

	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	<-ts.drainCh // Shutdown has begun; it waits for the request in flight

	resp := ts.post(ndjson(1))
	if resp.code != 503 || resp.header.Get("Retry-After") != "1" {
		t.Fatalf("during shutdown: %d Retry-After %q: %s", resp.code, resp.header.Get("Retry-After"), resp.body)
	}
	if msg, _ := resp.json(t)["error"].(string); !strings.Contains(msg, "shutting down") {
		t.Errorf("body %s", resp.body)
	}
	if r := ts.do("GET", "/readyz", nil); r.code != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("readyz during shutdown: %d %s", r.code, r.body)
	}
	if r := ts.do("GET", "/healthz", nil); r.code != 200 {
		t.Fatalf("healthz during shutdown: %d", r.code)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	if ms.isClosed() {
		t.Fatal("store closed with a request in flight")
	}

	close(ms.release)
	if r := <-inflight; r.code != 200 || string(r.body) != `{"accepted":3,"duplicate":false}` {
		t.Fatalf("in-flight request: %d %s", r.code, r.body)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !ms.isClosed() {
		t.Error("store not closed after Shutdown")
	}
	if len(ms.stored()) != 1 {
		t.Errorf("%d batches stored, want 1", len(ms.stored()))
	}
	// Idempotent; the listener is closed.
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if _, err := ts.client.Get(ts.url + "/healthz"); err == nil {
		t.Error("server still accepting after Shutdown")
	}
}

func TestShutdownTimeout(t *testing.T) {
	ms := newMemStore()
	ms.entered = make(chan string, 1)
	ms.release = make(chan struct{})
	ts := startServer(t, Config{Store: ms, Logger: nopLogger()})
	inflight := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", ts.url+"/v1/batches", bytes.NewReader(ndjson(1)))
		resp, err := ts.client.Do(req)
		if err != nil {
			inflight <- 0
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	<-ms.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with a done ctx: %v, want context.Canceled", err)
	}
	// The connection was closed under the request, whose Store call sees
	// its context end.
	if code := <-inflight; code == 200 {
		t.Fatal("request answered 200 after a forced shutdown")
	}
	if !ms.isClosed() {
		t.Error("store not closed")
	}
}

func TestLatencyHoldsNoSlot(t *testing.T) {
	waiting := make(chan struct{}, 1)
	ts := startServer(t, Config{MaxConcurrent: 1, Latency: time.Hour})
	ts.onLatencyWait = func() { waiting <- struct{}{} }
	first := make(chan response, 1)
	go func() { first <- ts.post(ndjson(1)) }()
	<-waiting
	// The first request is stored and waits out its latency without its slot.
	second := make(chan response, 1)
	go func() { second <- ts.post(ndjson(2)) }()
	<-waiting
	if got := ts.Stats(); got.Batches != 2 {
		t.Fatalf("Stats %+v, want 2 batches stored during their latency", got)
	}
	// Shutdown cuts the waits short: both are already durable.
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []chan response{first, second} {
		if r := <-c; r.code != 200 {
			t.Errorf("%d %s", r.code, r.body)
		}
	}
}

func TestLatencyDelaysAnswer(t *testing.T) {
	ts := startServer(t, Config{Latency: 100 * time.Millisecond})
	t0 := time.Now()
	if r := ts.post(ndjson(1)); r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if d := time.Since(t0); d < 100*time.Millisecond {
		t.Errorf("answered after %v, want at least the 100ms latency", d)
	}
}

func TestStoreFailure503(t *testing.T) {
	ms := newMemStore()
	ms.err = errors.New("disk on fire")
	ms.pingErr = errors.New("unreachable")
	ts := startServer(t, Config{Store: ms, Logger: nopLogger()})
	resp := ts.post(ndjson(2))
	if resp.code != 503 || resp.header.Get("Retry-After") != "1" {
		t.Fatalf("%d Retry-After %q %s", resp.code, resp.header.Get("Retry-After"), resp.body)
	}
	if msg, _ := resp.json(t)["error"].(string); !strings.Contains(msg, "store unavailable") {
		t.Errorf("body %s", resp.body)
	}
	if r := ts.do("GET", "/readyz", nil); r.code != 503 {
		t.Errorf("readyz with a failing store: %d", r.code)
	}
	if got := ts.Stats(); got.Rejected != 1 || got.Batches != 0 {
		t.Errorf("Stats %+v", got)
	}
}

func TestStatsAndMetrics(t *testing.T) {
	ts := startServer(t, Config{})
	ts.post(ndjson(3), "Idempotency-Key", "a")
	ts.post(ndjson(3), "Idempotency-Key", "a")
	ts.post([]byte("nope\n"))
	resp := ts.do("GET", "/v1/stats", nil)
	if resp.code != 200 || string(resp.body) != `{"events":3,"batches":1,"duplicates":1,"rejected":1}` {
		t.Fatalf("stats: %d %s", resp.code, resp.body)
	}
	resp = ts.do("GET", "/metrics", nil)
	if resp.code != 200 {
		t.Fatalf("metrics: %d", resp.code)
	}
	for _, want := range []string{
		`batchloader_http_requests_total{code="200",endpoint="batches"} 2`,
		`batchloader_http_requests_total{code="400",endpoint="batches"} 1`,
		`batchloader_http_requests_total{code="200",endpoint="stats"} 1`,
		"batchloader_events_stored_total 3\n",
		"batchloader_batches_stored_total 1\n",
		"batchloader_duplicate_batches_total 1\n",
		"batchloader_rejected_batches_total 1\n",
		"batchloader_store_duration_seconds_count 2\n",
		"batchloader_received_bytes_total ",
		"go_goroutines ",
	} {
		if !strings.Contains(string(resp.body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// A second Server in the same process registers the same metrics
	// without conflict: each has its registry.
	ts2 := startServer(t, Config{})
	if r := ts2.do("GET", "/metrics", nil); r.code != 200 || !strings.Contains(string(r.body), "batchloader_events_stored_total 0") {
		t.Errorf("second server's metrics: %d", r.code)
	}
}

// TestPprofOnDebugListenerOnly: pprof (whose cmdline shows the secrets of a
// command line) is served on the debug listener, never the ingest one.
func TestPprofOnDebugListenerOnly(t *testing.T) {
	ts := startServer(t, Config{Pprof: true, Tokens: []string{"s3cret"}})
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=2", "/debug/pprof/symbol"} {
		if r := ts.do("GET", p, nil, "Authorization", "Bearer s3cret"); r.code != 404 {
			t.Errorf("ingest port %s: %d, want 404", p, r.code)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ts.ServeDebug(ln) }()
	base := "http://" + ln.Addr().String()
	get := func(p string) (int, string) {
		resp, err := ts.client.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("debug listener pprof index: %d", code)
	}
	if code, _ := get("/debug/pprof/cmdline"); code != 200 {
		t.Errorf("debug listener cmdline: %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "batchloader_events_stored_total") {
		t.Errorf("debug listener metrics: %d", code)
	}
	if code, _ := get("/v1/batches"); code != 404 {
		t.Errorf("debug listener /v1/batches: %d, want 404", code)
	}
	ts.client.CloseIdleConnections()
	if err := ts.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("ServeDebug returned %v", err)
	}
}

// TestNoPprofWithoutFlag: without Pprof the debug handler has /metrics
// only.
func TestNoPprofWithoutFlag(t *testing.T) {
	s, err := New(Config{Store: newMemStore(), Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(t.Context())
	rec := httptest.NewRecorder()
	s.DebugHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/cmdline", nil))
	if rec.Code != 404 {
		t.Errorf("cmdline without Pprof: %d", rec.Code)
	}
}

func TestReadyzHealthz(t *testing.T) {
	ts := startServer(t, Config{})
	if r := ts.do("GET", "/healthz", nil); r.code != 200 || string(r.body) != `{"status":"ok"}` {
		t.Errorf("healthz %d %s", r.code, r.body)
	}
	if r := ts.do("GET", "/readyz", nil); r.code != 200 {
		t.Errorf("readyz %d %s", r.code, r.body)
	}
	ts.cfg.Store.(*memStore).mu.Lock()
	ts.cfg.Store.(*memStore).pingErr = errors.New("down")
	ts.cfg.Store.(*memStore).mu.Unlock()
	if r := ts.do("GET", "/readyz", nil); r.code != 503 || r.header.Get("Retry-After") == "" {
		t.Errorf("readyz with the store down: %d %s", r.code, r.body)
	}
}

func TestConfigErrors(t *testing.T) {
	ms := newMemStore()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "Store is required"},
		{Config{Store: ms, MaxBody: -1}, "MaxBody"},
		{Config{Store: ms, MaxBody: 10 << 20, MaxDecodedBody: 1 << 20}, "MaxDecodedBody"},
		{Config{Store: ms, MaxLine: 1}, "MaxLine"},
		{Config{Store: ms, MaxEvents: -5}, "MaxEvents"},
		{Config{Store: ms, MaxConcurrent: -1}, "MaxConcurrent"},
		{Config{Store: ms, Latency: -time.Second}, "Latency"},
		{Config{Store: ms, Tokens: []string{"ok", ""}}, "Tokens[1]"},
		{Config{Store: ms, Tokens: []string{"has space"}}, "Tokens[0]"},
		{Config{Store: ms, MaxZstdWindow: 100}, "MaxZstdWindow"},
		{Config{Store: ms, ReadHeaderTimeout: -1}, "ReadHeaderTimeout"},
		{Config{Store: ms, SlotWait: -1}, "SlotWait"},
		{Config{Store: ms, BodyMemory: 1 << 20}, "BodyMemory"},
		{Config{Store: ms, DecodeMemory: 1 << 20}, "DecodeMemory"},
	} {
		_, err := New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error about %s", c.cfg, err, c.want)
		}
	}
	s, err := New(Config{Store: ms})
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.MaxBody != 8<<20 || c.MaxDecodedBody != 64<<20 || c.MaxEvents != 100000 || c.MaxLine != 1<<20 ||
		c.MaxConcurrent < 4 || c.Addr != ":8080" || c.ReadHeaderTimeout == 0 || c.WriteTimeout == 0 {
		t.Errorf("defaults: %+v", c)
	}
}

// panicStore panics in its first Store call.
type panicStore struct {
	*memStore
	panicked bool
}

func (p *panicStore) Store(ctx context.Context, b *store.Batch) (bool, error) {
	if !p.panicked {
		p.panicked = true
		panic("store bug")
	}
	return p.memStore.Store(ctx, b)
}

// TestStorePanicFreesSlot: a panic in Store (recovered by net/http) does
// not leak the ingest slot.
func TestStorePanicFreesSlot(t *testing.T) {
	ps := &panicStore{memStore: newMemStore()}
	ts := startServer(t, Config{Store: ps, MaxConcurrent: 1, Logger: nopLogger()})
	req, _ := http.NewRequest("POST", ts.url+"/v1/batches", bytes.NewReader(ndjson(1)))
	if resp, err := ts.client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("panicking request answered %d", resp.StatusCode)
	}
	if r := ts.post(ndjson(1)); r.code != 200 {
		t.Fatalf("after a panic: %d %s", r.code, r.body)
	}
}
