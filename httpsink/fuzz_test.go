package httpsink

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
)

// FuzzParseRetryAfter: any header value parses without panic to a wait in
// [0, 24h]; a plain number of seconds parses to exactly that.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "1", " 7 ", "-5", "1.5", "soon", "99999999999999999999",
		"Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := parseRetryAfter(v, now)
		if !ok {
			if d != 0 {
				t.Fatalf("parseRetryAfter(%q) = %v, false: want 0 when not ok", v, d)
			}
			return
		}
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %v, out of [0, %v]", v, d, maxRetryAfter)
		}
		if n, err := strconv.ParseUint(string(bytes.TrimSpace([]byte(v))), 10, 64); err == nil && n <= uint64(maxRetryAfter/time.Second) {
			if d != time.Duration(n)*time.Second {
				t.Fatalf("parseRetryAfter(%q) = %v, want %ds", v, d, n)
			}
		}
	})
}

// FuzzReadResponse: whatever a server answers, the sink classifies it
// without panic; only a 200 whose body says every event was accepted (or
// that the batch is a duplicate) is a success; 400/401/415 are permanent.
func FuzzReadResponse(f *testing.F) {
	f.Add(200, []byte(`{"accepted":3,"duplicate":false}`), "")
	f.Add(200, []byte(`{"accepted":1,"duplicate":true}`), "")
	f.Add(200, []byte(`{"accepted":2}`), "")
	f.Add(200, []byte(`not json`), "")
	f.Add(400, []byte(`{"error":"bad line","line":2}`), "")
	f.Add(429, []byte(`{"error":"busy"}`), "3")
	f.Add(503, []byte{}, "Wed, 21 Oct 2015 07:28:00 GMT")
	f.Add(413, bytes.Repeat([]byte("x"), 5000), "")
	b, err := batchproc.NewBatch("k", batchproc.Event{Payload: []byte(`{"a":1}`)}, batchproc.Event{Payload: []byte(`{"b":2}`)}, batchproc.Event{Payload: []byte(`{}`)})
	if err != nil {
		f.Fatal(err)
	}
	s := &Sink{maxResp: 1024}
	f.Fuzz(func(t *testing.T, code int, body []byte, retryAfter string) {
		if code < 100 || code > 999 {
			return
		}
		resp := &http.Response{StatusCode: code, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
		if retryAfter != "" {
			resp.Header.Set("Retry-After", retryAfter)
		}
		err := s.readResponse(resp, b)
		if err == nil && code != http.StatusOK {
			t.Fatalf("status %d classified as success", code)
		}
		var se *StatusError
		if err != nil && !errors.As(err, &se) {
			t.Fatalf("status %d: error %v is not a *StatusError", code, err)
		}
		if se != nil && se.Code != code {
			t.Fatalf("StatusError code %d for status %d", se.Code, code)
		}
	})
}

// FuzzParseServerTiming: any header value parses without panic, to a
// non-negative time when it parses; a value with the loader's metric
// first, as the loader writes it, parses to its dur.
func FuzzParseServerTiming(f *testing.F) {
	for _, s := range []string{"", "ingest;dur=1.5", `cdn;dur=5, ingest;desc="a, b";dur=12.25`, "ingest", "ingest;dur=NaN",
		`x;desc="\"ingest;dur=1`, "ingest;dur=-0", ";;,,", `"`} {
		f.Add(s, uint32(1234))
	}
	f.Fuzz(func(t *testing.T, v string, us uint32) {
		if d, ok := parseServerTiming([]string{v}); ok && d < 0 {
			t.Fatalf("parseServerTiming(%q) = %v", v, d)
		} else if !ok && d != 0 {
			t.Fatalf("parseServerTiming(%q) = %v, false: want 0 when not ok", v, d)
		}
		want := time.Duration(us) * time.Microsecond
		loader := "ingest;dur=" + strconv.FormatFloat(float64(want)/float64(time.Millisecond), 'f', 3, 64)
		d, ok := parseServerTiming([]string{loader, v})
		if diff := d - want; !ok || diff > time.Microsecond || diff < -time.Microsecond {
			t.Fatalf("parseServerTiming(%q, %q) = %v, %v; want %v", loader, v, d, ok, want)
		}
	})
}
