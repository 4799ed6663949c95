package loader

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/batchproc/batchproc/internal/testutil"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

// gzipBomb returns about 512 KiB of gzip that expands to 512 MiB: one
// member of 8 MiB of zeros, repeated (gzip readers read concatenated
// members).
func gzipBomb(t *testing.T) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(make([]byte, 8<<20)); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return bytes.Repeat(buf.Bytes(), 64)
}

// serveDirect runs one request through the handler in this goroutine and
// reports the bytes allocated meanwhile, a bound on its peak memory.
func serveDirect(s *Server, req *http.Request) (*httptest.ResponseRecorder, uint64) {
	rec := httptest.NewRecorder()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	s.Handler().ServeHTTP(rec, req)
	runtime.ReadMemStats(&m1)
	return rec, m1.TotalAlloc - m0.TotalAlloc
}

func TestDecompressionBombs(t *testing.T) {
	ms := newMemStore()
	s, err := New(Config{Store: ms, MaxBody: 1 << 20, MaxDecodedBody: 1 << 20, Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(t.Context())

	zstdBomb := testutil.ZstdRLEFrame(20, 8192) // 32 KiB → 1 GiB, 1 MiB window
	hugeWindow := testutil.ZstdRLEFrame(29, 9400)
	if len(hugeWindow) > 38<<10 {
		t.Fatalf("frame is %d bytes", len(hugeWindow))
	}
	for _, c := range []struct {
		name, enc string
		body      []byte
		want      string
	}{
		{"gzip bomb", "gzip", gzipBomb(t), "decompressed body over the limit of 1048576 bytes"},
		{"zstd bomb", "zstd", zstdBomb, "decompressed body over the limit of 1048576 bytes"},
		{"zstd 512 MiB window in a 37 KiB frame", "zstd", hugeWindow, "zstd frame over the limits"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/v1/batches", bytes.NewReader(c.body))
			req.Header.Set("Content-Type", "application/x-ndjson")
			req.Header.Set("Content-Encoding", c.enc)
			rec, alloc := serveDirect(s, req)
			if rec.Code != 413 || !strings.Contains(rec.Body.String(), c.want) {
				t.Fatalf("%d %s, want 413 %q", rec.Code, rec.Body, c.want)
			}
			// The bodies expand to 512 MiB and more; the request may use the 1 MiB
			// decoded limit, a 1 MiB zstd window and small change.
			if alloc > 8<<20 {
				t.Errorf("request allocated %d MiB", alloc>>20)
			}
			t.Logf("allocated %d KiB", alloc>>10)
			if n := ms.Counts().Batches; n != 0 {
				t.Errorf("%d batches stored", n)
			}
		})
	}
	// Under the default 8 MiB window limit, the 512 MiB window is refused
	// too, before any decoding.
	s2, _ := New(Config{Store: newMemStore(), Logger: nopLogger()})
	defer s2.Shutdown(t.Context())
	req := httptest.NewRequest("POST", "/v1/batches", bytes.NewReader(hugeWindow))
	req.Header.Set("Content-Encoding", "zstd")
	rec, alloc := serveDirect(s2, req)
	if rec.Code != 413 || alloc > 4<<20 {
		t.Errorf("default limits: %d %s, %d KiB allocated", rec.Code, rec.Body, alloc>>10)
	}
	// A legitimate zstd body below the limits decodes.
	req = httptest.NewRequest("POST", "/v1/batches", bytes.NewReader(zstdBytes(t, ndjson(1000))))
	req.Header.Set("Content-Encoding", "zstd")
	if rec, _ := serveDirect(s2, req); rec.Code != 200 {
		t.Errorf("zstd batch: %d %s", rec.Code, rec.Body)
	}
}

// TestSlowHeaders: a client that sends its headers a byte at a time, more
// slowly than ReadHeaderTimeout allows, has its connection closed.
func TestSlowHeaders(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ts := startServer(t, Config{ReadHeaderTimeout: timeout})
	// t0 before Dial: the server's header deadline starts at accept, which
	// may come before Dial returns here.
	t0 := time.Now()
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, conn) // returns when the server closes the connection
		close(closed)
	}()
	trickle := "POST /v1/batches HTTP/1.1\r\nHost: loader\r\nX-Slow: " + strings.Repeat("a", 4096)
	tick := time.NewTicker(20 * time.Millisecond) // the pace of the slow client
	defer tick.Stop()
	giveUp := time.NewTimer(10 * time.Second)
	defer giveUp.Stop()
	for i := 0; ; i++ {
		select {
		case <-closed:
			if d := time.Since(t0); d < timeout {
				t.Errorf("closed after %v, before the %v timeout", d, timeout)
			}
			t.Logf("closed after %d header bytes, %v", i, time.Since(t0))
			return
		case <-giveUp.C:
			t.Fatalf("connection still open after %d header bytes, %v", i, time.Since(t0))
		case <-tick.C:
			if i < len(trickle) {
				_, _ = conn.Write([]byte{trickle[i]})
			}
		}
	}
}

func TestHeaderTooLarge(t *testing.T) {
	ts := startServer(t, Config{MaxHeaderBytes: 4 << 10})
	resp := ts.post(ndjson(1), "X-Big", strings.Repeat("b", 16<<10))
	if resp.code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.code)
	}
}

func TestMaxBodyWithoutContentLength(t *testing.T) {
	ts := startServer(t, Config{MaxBody: 1 << 10, MaxDecodedBody: 1 << 20})
	// A chunked body (no Content-Length) is cut off by http.MaxBytesReader.
	req, _ := http.NewRequest("POST", ts.url+"/v1/batches", io.MultiReader(bytes.NewReader(ndjson(100))))
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || !strings.Contains(string(body), "request body over the limit of 1024 bytes") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// And so is a gzip body whose compressed size is over the limit.
	rnd := rand.New(rand.NewPCG(1, 2))
	var incompressible []byte
	for range 200 {
		incompressible = fmt.Appendf(incompressible, "{\"r\":\"%x\"}\n", rnd.Uint64())
	}
	big := gzipBytes(t, incompressible)
	if len(big) <= 1<<10 {
		t.Fatalf("test body too small: %d", len(big))
	}
	req, _ = http.NewRequest("POST", ts.url+"/v1/batches", io.MultiReader(bytes.NewReader(big)))
	req.Header.Set("Content-Encoding", "gzip")
	resp, err = ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || !strings.Contains(string(body), "request body over the limit") {
		t.Fatalf("gzip: %d %s", resp.StatusCode, body)
	}
}

// startHooked is startServer with hooks set before the Server serves.
func startHooked(t *testing.T, cfg Config, hook func(*Server)) *testServer {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = newMemStore()
	}
	if cfg.Logger == nil {
		cfg.Logger = nopLogger()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hook(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, t: t, url: "http://" + ln.Addr().String(),
		client: &http.Client{Transport: &http.Transport{}}, served: make(chan error, 1)}
	go func() { ts.served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ts.client.CloseIdleConnections()
		_ = s.Shutdown(context.Background())
		<-ts.served
	})
	return ts
}

// countHook returns a hook counting its calls and a channel closed at the
// n-th.
func countHook(n int64) (func(), <-chan struct{}) {
	var calls atomic.Int64
	reached := make(chan struct{})
	return func() {
		if calls.Add(1) == n {
			close(reached)
		}
	}, reached
}

// trickle opens a connection that sends a batch request's headers
// (Content-Length: declared) and then one body byte per tick until the
// server answers; it returns the status (0: the connection failed first).
func trickle(t *testing.T, addr string, declared int, tick time.Duration) (status int) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer conn.Close()
	answered := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	_, _ = fmt.Fprintf(conn, "POST /v1/batches HTTP/1.1\r\nHost: loader\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n{", declared)
	tk := time.NewTicker(tick) // the pace of the slow client: load, not synchronisation
	defer tk.Stop()
	for sent := 1; ; {
		select {
		case code := <-answered:
			return code
		case <-tk.C:
			if sent < declared-1 {
				if _, err := conn.Write([]byte{' '}); err == nil {
					sent++
				}
			}
		}
	}
}

// TestSlowBodiesDoNotStarveIngest: 64 connections trickle their bodies at
// a byte per 100 ms (4 ingest slots) while a normal client posts batches
// over loopback. Bodies are received before a request takes a slot, so
// every normal batch is stored at once, with a p99 latency within 1 s of
// the one measured without the slow clients; the slow clients are answered
// 408 at the read timeout, and nothing of theirs is stored.
func TestSlowBodiesDoNotStarveIngest(t *testing.T) {
	const (
		slow        = 64
		readTimeout = 4 * time.Second
		batches     = 150
	)
	ms := newMemStore()
	// The hook counts the normal client's requests too: it reaches
	// batches+slow once the base phase is done and every slow client has
	// begun its body.
	onReceive, allReceiving := countHook(batches + slow)
	ts := startHooked(t, Config{Store: ms, MaxConcurrent: 4, ReadTimeout: readTimeout}, func(s *Server) { s.onReceive = onReceive })
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	body := ndjson(100)
	postAll := func(phase string) []time.Duration {
		var lat []time.Duration
		for i := range batches {
			req, _ := http.NewRequest("POST", ts.url+"/v1/batches", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/x-ndjson")
			req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", phase, i))
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			lat = append(lat, time.Since(t0))
			if resp.StatusCode != 200 {
				t.Fatalf("%s batch %d: %d %s", phase, i, resp.StatusCode, b)
			}
		}
		slices.Sort(lat)
		return lat
	}
	base := postAll("base")

	codes := make(chan int, slow)
	var ended atomic.Int64 // when the first slow client was answered, unix ns
	for range slow {
		go func() {
			code := trickle(t, strings.TrimPrefix(ts.url, "http://"), 100_000, 100*time.Millisecond)
			ended.CompareAndSwap(0, time.Now().UnixNano())
			codes <- code
		}()
	}
	giveUp := time.NewTimer(readTimeout)
	defer giveUp.Stop()
	select {
	case <-allReceiving:
	case <-giveUp.C:
		t.Fatal("the slow clients did not all begin their bodies")
	}
	load := postAll("load")
	loadEnd := time.Now()
	p := func(l []time.Duration, q float64) time.Duration { return l[int(q*float64(len(l)-1))] }
	added := p(load, 0.99) - p(base, 0.99)
	t.Logf("normal client, %d batches each: p50 %v p99 %v alone; p50 %v p99 %v with %d slow clients: p99 added %v",
		batches, p(base, 0.5), p(base, 0.99), p(load, 0.5), p(load, 0.99), slow, added)
	if added >= time.Second {
		t.Errorf("p99 added latency %v, want under 1 s", added)
	}

	n408 := 0
	for range slow {
		switch code := <-codes; code {
		case http.StatusRequestTimeout:
			n408++
		case 0: // the server closed the connection before its answer was read
		default:
			t.Errorf("slow client answered %d, want 408", code)
		}
	}
	if first := time.Unix(0, ended.Load()); first.Before(loadEnd) {
		t.Errorf("a slow client ended at %v, before the normal client finished at %v: the test measured less than it claims", first, loadEnd)
	}
	t.Logf("slow clients: %d of %d answered 408", n408, slow)
	if n408 < slow/2 {
		t.Errorf("only %d of %d slow clients read a 408", n408, slow)
	}
	if got := ms.Counts().Batches; got != 2*batches {
		t.Errorf("%d batches stored, want %d", got, 2*batches)
	}
}

// rawRequest sends a batch request's headers declaring declared body bytes
// and then body, and returns the answer's status and body. It sends
// nothing more: the server has to time out or answer on its own.
func rawRequest(t *testing.T, url string, declared int, body string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = fmt.Fprintf(conn, "POST /v1/batches HTTP/1.1\r\nHost: loader\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n%s", declared, body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBodyTimeout408: a body not received within ReadTimeout is answered
// 408 (retryable), not 400 (the failure path of the sink).
func TestBodyTimeout408(t *testing.T) {
	ms := newMemStore()
	ts := startServer(t, Config{Store: ms, ReadTimeout: 300 * time.Millisecond, Logger: nopLogger()})
	code, body := rawRequest(t, ts.url, 1000, `{"id":"a"}`+"\n")
	if code != http.StatusRequestTimeout || !strings.Contains(body, "not received within the read timeout") {
		t.Fatalf("%d %s, want 408", code, body)
	}
	if n := ms.Counts().Batches; n != 0 {
		t.Errorf("%d batches stored", n)
	}
}

// TestSlotWaitQueuesBurst: a request that finds every slot busy waits up
// to SlotWait for one instead of being refused at once.
func TestSlotWaitQueuesBurst(t *testing.T) {
	ms := newMemStore()
	ms.entered = make(chan string, 2)
	ms.release = make(chan struct{})
	waiting := make(chan struct{}, 1)
	ts := startHooked(t, Config{Store: ms, MaxConcurrent: 1, SlotWait: time.Minute},
		func(s *Server) { s.onSlotWait = func() { waiting <- struct{}{} } })
	first := make(chan response, 1)
	go func() { first <- ts.post(ndjson(1), "Idempotency-Key", "first") }()
	<-ms.entered // the only slot is held in Store
	second := make(chan response, 1)
	go func() { second <- ts.post(ndjson(2), "Idempotency-Key", "second") }()
	<-waiting // the second request waits for the slot
	close(ms.release)
	for name, ch := range map[string]chan response{"first": first, "second": second} {
		if r := <-ch; r.code != 200 {
			t.Errorf("%s: %d %s", name, r.code, r.body)
		}
	}
	if n := ms.Counts().Batches; n != 2 {
		t.Errorf("%d batches stored, want 2", n)
	}
}

// TestBodyMemory429: a body that would take the bodies' memory over
// BodyMemory is answered 429 (retryable) at once; a slow client holds only
// the 64 KiB it was given.
func TestBodyMemory429(t *testing.T) {
	onReceive, receiving := countHook(1)
	ts := startHooked(t, Config{MaxBody: 64 << 10, MaxDecodedBody: 64 << 10, BodyMemory: 100 << 10, ReadTimeout: 5 * time.Second},
		func(s *Server) { s.onReceive = onReceive })
	slow := make(chan int, 1)
	go func() { slow <- trickle(t, strings.TrimPrefix(ts.url, "http://"), 64<<10, 50*time.Millisecond) }()
	<-receiving // the slow client holds 64 KiB of the 100
	big := ndjson(700)
	if len(big) <= 36<<10 || len(big) > 64<<10 {
		t.Fatalf("test body of %d bytes", len(big))
	}
	if r := ts.post(ndjson(1)); r.code != 200 { // what is left is for the small
		t.Errorf("small batch: %d %s", r.code, r.body)
	}
	r := ts.post(big)
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || !strings.Contains(string(r.body), "memory for request bodies") {
		t.Errorf("%d %s, want 429 with Retry-After", r.code, r.body)
	}
	ts.client.CloseIdleConnections()
	if err := ts.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if code := <-slow; code != http.StatusServiceUnavailable && code != 0 {
		t.Errorf("slow client at shutdown: %d, want 503", code)
	}
}

// TestShutdownCutsSlowBody: Shutdown does not wait for bodies still
// arriving: they are answered 503 at once.
func TestShutdownCutsSlowBody(t *testing.T) {
	onReceive, receiving := countHook(1)
	ts := startHooked(t, Config{ReadTimeout: time.Minute}, func(s *Server) { s.onReceive = onReceive })
	slow := make(chan int, 1)
	go func() { slow <- trickle(t, strings.TrimPrefix(ts.url, "http://"), 1000, 50*time.Millisecond) }()
	<-receiving
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (it waited for the slow body)", err)
	}
	if code := <-slow; code != http.StatusServiceUnavailable {
		t.Errorf("slow client: %d, want 503", code)
	}
}

// TestDecodeMemoryPaths: the paths of decompress store exactly what was
// sent: a body compressed far more than 16 times (its size is counted,
// then it is decoded again into one buffer), and a body that has to wait
// for the decode budget while another request holds it.
func TestDecodeMemoryPaths(t *testing.T) {
	ms := newMemStore()
	ms.entered = make(chan string, 2)
	ms.release = make(chan struct{})
	waiting := make(chan struct{}, 1)
	ts := startHooked(t, Config{Store: ms, MaxBody: 1 << 20, MaxDecodedBody: 1 << 20, DecodeMemory: 1 << 20, MaxConcurrent: 2},
		func(s *Server) { s.onDecodeWait = func() { waiting <- struct{}{} } })
	same := bytes.Repeat([]byte(`{"id":"same","type":"t","pad":"................................"}`+"\n"), 12000) // 840 KB
	if len(same) > 1<<20 {
		t.Fatalf("body of %d bytes", len(same))
	}
	first := make(chan response, 1)
	go func() { first <- ts.post(gzipBytes(t, same), "Content-Encoding", "gzip", "Idempotency-Key", "first") }()
	<-ms.entered // first holds 840 KB of the 1 MiB decode budget in Store
	second := make(chan response, 1)
	go func() { second <- ts.post(zstdBytes(t, same), "Content-Encoding", "zstd", "Idempotency-Key", "second") }()
	<-waiting // second found the budget short, counted its size and waits
	close(ms.release)
	for name, ch := range map[string]chan response{"first": first, "second": second} {
		if r := <-ch; r.code != 200 || !strings.Contains(string(r.body), `"accepted":12000`) {
			t.Errorf("%s: %d %s", name, r.code, r.body)
		}
	}
	for _, b := range ms.stored() {
		var got bytes.Buffer
		for _, e := range b.Events {
			got.Write(e.Payload)
			got.WriteByte('\n')
		}
		if !bytes.Equal(got.Bytes(), same) {
			t.Errorf("batch %s: stored %d bytes, not what was sent", b.Key, got.Len())
		}
	}
	if got := ts.decodeMem.sem.TryAcquire(1 << 20); !got {
		t.Error("the decode budget was not all given back")
	}
}

// TestMinBodyRate408: a body arriving slower than MinBodyRate is answered
// 408 once BodyRateGrace has passed, long before the read timeout; one
// above it is received.
func TestMinBodyRate408(t *testing.T) {
	ms := newMemStore()
	ts := startServer(t, Config{Store: ms, MinBodyRate: 1000, BodyRateGrace: 300 * time.Millisecond, ReadTimeout: time.Minute, Logger: nopLogger()})
	t0 := time.Now()
	slow := make(chan int, 1)
	go func() { slow <- trickle(t, strings.TrimPrefix(ts.url, "http://"), 1000, 20*time.Millisecond) }() // 50 B/s
	giveUp := time.NewTimer(20 * time.Second)
	defer giveUp.Stop()
	select {
	case code := <-slow:
		if code != http.StatusRequestTimeout {
			t.Errorf("slow body: %d, want 408", code)
		}
		t.Logf("a body at 50 B/s cut off after %v", time.Since(t0))
	case <-giveUp.C:
		t.Fatal("a body at 50 B/s was still being received after 20 s")
	}
	if r := ts.post(ndjson(100)); r.code != 200 {
		t.Errorf("a fast body: %d %s", r.code, r.body)
	}
	if n := ms.Counts().Batches; n != 1 {
		t.Errorf("%d batches stored, want 1", n)
	}
}

// TestMinBodyRateSparesTheStore: once the body is in, the rate's deadline
// is gone: a store slower than the grace does not see its request
// cancelled.
func TestMinBodyRateSparesTheStore(t *testing.T) {
	ms := newMemStore()
	ms.entered = make(chan string, 1)
	ms.release = make(chan struct{})
	const grace = 100 * time.Millisecond
	ts := startServer(t, Config{Store: ms, MinBodyRate: 1000, BodyRateGrace: grace, Logger: nopLogger()})
	go func() {
		<-ms.entered
		// The store takes 5 graces: what a slow database does, not a wait
		// for another goroutine.
		time.AfterFunc(5*grace, func() { close(ms.release) })
	}()
	if r := ts.post(ndjson(1)); r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
}

// TestIngestSlotsHeader: every answer of POST /v1/batches tells the ingest
// slots (Config.MaxConcurrent) in Ingest-Slots: a 200, a 400, a 405 and
// the 429 of a request that found every slot busy for SlotWait.
func TestIngestSlotsHeader(t *testing.T) {
	ms := newMemStore()
	ms.entered = make(chan string, 2)
	ms.release = make(chan struct{})
	ts := startServer(t, Config{Store: ms, MaxConcurrent: 1, SlotWait: time.Millisecond})
	check := func(what string, r response, code int) {
		t.Helper()
		if r.code != code {
			t.Errorf("%s: %d %s, want %d", what, r.code, r.body, code)
		}
		if got := r.header.Values(IngestSlotsHeader); len(got) != 1 || got[0] != "1" {
			t.Errorf("%s: %s %q, want one value \"1\"", what, IngestSlotsHeader, got)
		}
	}
	first := make(chan response, 1)
	go func() { first <- ts.post(ndjson(1), "Idempotency-Key", "first") }()
	<-ms.entered // the only slot is held in Store
	check("all slots busy", ts.post(ndjson(1), "Idempotency-Key", "second"), http.StatusTooManyRequests)
	close(ms.release)
	check("stored", <-first, http.StatusOK)
	check("bad body", ts.post([]byte("not json\n")), http.StatusBadRequest)
	check("GET", ts.do(http.MethodGet, "/v1/batches", nil), http.StatusMethodNotAllowed)

	other := startServer(t, Config{MaxConcurrent: 37})
	if got := other.post(ndjson(2)).header.Get(IngestSlotsHeader); got != "37" {
		t.Errorf("MaxConcurrent 37: %s %q", IngestSlotsHeader, got)
	}
}

// TestServerTimingHeader: a 200 of POST /v1/batches tells how long the
// loader held the batch after its body arrived (Server-Timing: ingest):
// at least as long as the store held it, at most the client's round trip.
// A duplicate's 200 tells it too.
func TestServerTimingHeader(t *testing.T) {
	ms := newMemStore()
	ms.entered = make(chan string, 1)
	ms.release = make(chan struct{})
	ts := startServer(t, Config{Store: ms, MaxConcurrent: 1})
	dur := func(r response) time.Duration {
		t.Helper()
		v := r.header.Values(ServerTimingHeader)
		if len(v) != 1 {
			t.Fatalf("%s %q, want one value", ServerTimingHeader, v)
		}
		ms, ok := strings.CutPrefix(v[0], ServerTimingMetric+";dur=")
		f, err := strconv.ParseFloat(ms, 64)
		if !ok || err != nil || f < 0 {
			t.Fatalf("%s %q, want %s;dur=<milliseconds>", ServerTimingHeader, v[0], ServerTimingMetric)
		}
		return time.Duration(f * float64(time.Millisecond))
	}
	first := make(chan response, 1)
	var rtt time.Duration
	go func() {
		t0 := time.Now()
		r := ts.post(ndjson(1), "Idempotency-Key", "k")
		rtt = time.Since(t0)
		first <- r
	}()
	<-ms.entered
	t0 := time.Now()
	// The store holds the batch while another request's round trip is made.
	if r := ts.do(http.MethodGet, "/v1/stats", nil); r.code != http.StatusOK {
		t.Fatalf("GET /v1/stats: %d", r.code)
	}
	held := time.Since(t0)
	close(ms.release)
	r := <-first
	if r.code != http.StatusOK {
		t.Fatalf("%d %s", r.code, r.body)
	}
	// The header has microseconds: allow one for the rounding.
	if d := dur(r); d+time.Microsecond < held || d > rtt {
		t.Errorf("the loader told %v, want between the %v the store held the batch and the client's round trip of %v", d, held, rtt)
	}
	ms.entered = nil
	if r := ts.post(ndjson(1), "Idempotency-Key", "k"); r.code != http.StatusOK {
		t.Fatalf("the duplicate: %d %s", r.code, r.body)
	} else if d := dur(r); d > time.Minute {
		t.Errorf("the duplicate: told %v", d)
	}
}
