package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/batchproc/batchproc"
)

// newTransport is the one HTTP transport configuration every design uses,
// so that they differ only in how they batch and dispatch: enough idle
// connections per host for the widest design (a pool of 100 workers, or
// seed-async's unbounded sends), keep-alives on, no compression.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}

// sendStats counts one design's sends, whichever way they go: HTTP requests
// (countingTransport), or Kafka produce calls with -sink kafka (one per
// batch: countingSink, kafkaProducer). How many, how many failed, and the
// most under way at once (seed-async's unbounded sends show there).
type sendStats struct {
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	requests    atomic.Int64
	failures    atomic.Int64
	status429   atomic.Int64 // HTTP answers 429 Too Many Requests
}

// begin counts a send starting.
func (c *sendStats) begin() {
	n := c.inFlight.Add(1)
	for {
		m := c.maxInFlight.Load()
		if n <= m || c.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	c.requests.Add(1)
}

// end counts a send finished.
func (c *sendStats) end(failed bool) {
	if failed {
		c.failures.Add(1)
	}
	c.inFlight.Add(-1)
}

// countingTransport counts the requests of one design's run, whichever
// client makes them (the harness's poster or httpsink); a failure is an
// error or a status other than 200.
type countingTransport struct {
	rt http.RoundTripper
	sendStats
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.begin()
	resp, err := c.rt.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		c.status429.Add(1)
	}
	c.end(err != nil || resp.StatusCode != http.StatusOK)
	return resp, err
}

// poster posts NDJSON bodies to a Batch Loader's /v1/batches for the designs
// that have no sink of their own: the seed's and the OpenTelemetry peer's.
type poster struct {
	client *http.Client
	url    string // full URL of /v1/batches
}

func newPoster(baseURL string, rt http.RoundTripper) *poster {
	return &poster{client: &http.Client{Transport: rt}, url: baseURL + "/v1/batches"}
}

// statusError is a non-200 answer.
type statusError struct {
	Code int
	Body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("loader answered %d: %s", e.Code, e.Body)
}

// post sends one batch. key may be "" (the seed designs and the OpenTelemetry
// peer send none). The error is classified for batchproc's retry loop per
// protocol.md's client rule: 429, 503 and other 5xx, timeouts and connection
// errors are retryable (with Retry-After when given); other 4xx permanent.
func (p *poster) post(ctx context.Context, body []byte, key string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return batchproc.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err // connection error or timeout: retryable
	}
	// Read (a bounded part of) the body so the connection is reused.
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	serr := &statusError{Code: resp.StatusCode, Body: string(bytes.TrimSpace(msg))}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			return batchproc.RetryAfter(serr, time.Duration(s)*time.Second)
		}
		return serr
	case resp.StatusCode >= 500:
		return serr
	default:
		return batchproc.Permanent(serr)
	}
}
