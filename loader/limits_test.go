package loader

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

// zstdRLEFrame builds a zstd frame declaring a window of 1<<windowLog
// bytes, made of blocks RLE blocks of 128 KiB of 'a' each: 4 bytes of input
// per 128 KiB of output.
func zstdRLEFrame(windowLog, blocks int) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte(windowLog-10) << 3}
	const blockSize = 128 << 10
	for i := range blocks {
		h := uint32(blockSize<<3 | 1<<1) // RLE
		if i == blocks-1 {
			h |= 1 // last block
		}
		b = binary.LittleEndian.AppendUint32(b, h)[:len(b)+3]
		b = append(b, 'a')
	}
	return b
}

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

	zstdBomb := zstdRLEFrame(20, 8192) // 32 KiB → 1 GiB, 1 MiB window
	hugeWindow := zstdRLEFrame(29, 9400)
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
