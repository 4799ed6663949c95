package httpsink_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/httpsink"
)

// newDiscardServer answers every POST 200 without storing anything. Its
// accepted count is events, or, when events is 0, the number of lines of
// an uncompressed NDJSON body.
func newDiscardServer(t testing.TB, events int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var lc lineCounter
		_, _ = io.Copy(&lc, r.Body)
		n := events
		if n == 0 {
			n = int(lc)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"accepted":%d,"duplicate":false}`, n)
	}))
	t.Cleanup(srv.Close)
	return srv
}

type lineCounter int

func (c *lineCounter) Write(p []byte) (int, error) {
	*c += lineCounter(bytes.Count(p, []byte{'\n'}))
	return len(p), nil
}

// stubTransport answers every request 200 with its body, after reading the
// request body: a loader with no network in between.
type stubTransport string

func (s stubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	_, err := io.Copy(io.Discard, r.Body)
	r.Body.Close()
	if err != nil {
		return nil, err
	}
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: io.NopCloser(strings.NewReader(string(s))), Request: r,
	}, nil
}

// benchBatch returns n JSON events of exactly size bytes each: an id, a
// type, a timestamp and random lowercase padding, roughly as compressible as
// real events.
func benchBatch(b *testing.B, n, size int) *batchproc.Batch {
	rng := rand.New(rand.NewPCG(1, 2))
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	events := make([]batchproc.Event, n)
	for i := range events {
		p := fmt.Appendf(nil, `{"id":"evt-%08d","type":"checkout","ts":%q,"pad":"`, i, ts.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano))
		for len(p) < size-2 {
			p = append(p, byte('a'+rng.IntN(26)))
		}
		p = append(p, '"', '}')
		events[i] = batchproc.Event{ID: fmt.Sprint(i), Payload: p}
	}
	batch, err := batchproc.NewBatch("bench", events...)
	if err != nil {
		b.Fatal(err)
	}
	return batch
}

// BenchmarkSend posts a batch of 1,000 events of 200 bytes to a loopback
// server that discards it, sequentially over one kept-alive connection.
func BenchmarkSend(b *testing.B) {
	const events, size = 1000, 200
	batch := benchBatch(b, events, size)
	for _, bc := range []struct {
		name string
		opts []httpsink.Option
	}{
		// The sink's own cost: no network, no server in the process.
		{"ndjson-stub-transport", []httpsink.Option{httpsink.WithTransport(stubTransport(fmt.Sprintf(`{"accepted":%d,"duplicate":false}`, events)))}},
		{"ndjson", nil},
		{"json-array", []httpsink.Option{httpsink.WithFraming(httpsink.JSONArray)}},
		{"gzip", []httpsink.Option{httpsink.WithCompression(httpsink.Gzip)}},
		{"zstd", []httpsink.Option{httpsink.WithCompression(httpsink.Zstd)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := newDiscardServer(b, events)
			s, err := httpsink.New(srv.URL, bc.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.SetBytes(int64(batch.Size()))
			b.ReportAllocs()
			sends := 0
			for b.Loop() {
				if err := s.Send(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
				sends++
			}
			b.ReportMetric(float64(sends*events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
