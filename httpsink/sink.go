package httpsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/batchproc/batchproc"
)

// endpoint is the protocol's ingest path.
const endpoint = "/v1/batches"

// Sink posts batches to a Batch Loader. Create one with [New]; it is safe
// for concurrent use by any number of goroutines.
type Sink struct {
	url     string
	client  *http.Client
	own     *http.Transport // the transport New made, nil if the user gave one
	header  http.Header     // headers of every request; values shared read-only
	enc     *encoder
	timeout time.Duration
	maxResp int64
}

var _ batchproc.Sink = (*Sink)(nil)

// New returns a sink posting to the Batch Loader at rawURL: a base URL
// ("http://loader:8080", "https://gw.example/ingest"), to which the sink
// appends /v1/batches, or the endpoint itself (a path ending in
// /v1/batches), used as is. The scheme must be http or https, the host must
// be present, and credentials belong in [WithToken], not in the URL.
//
// Without [WithClient] or [WithTransport], the sink makes its own transport
// tuned for many sends to one host: up to 64 idle keep-alive connections
// per host (256 in all) kept 90 s, HTTP/2 when TLS offers it, 10 s to dial
// and 10 s for the TLS handshake, proxies from the environment as net/http
// does. [Sink.Close] closes its idle connections.
func New(rawURL string, opts ...Option) (*Sink, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	enc, err := newEncoder(&cfg)
	if err != nil {
		return nil, fmt.Errorf("httpsink: %w", err)
	}
	s := &Sink{
		url:     u.String(),
		enc:     enc,
		timeout: cfg.timeout,
		maxResp: cfg.maxResponse,
		header:  make(http.Header),
	}
	switch {
	case cfg.client != nil:
		s.client = cfg.client
	case cfg.transport != nil:
		s.client = &http.Client{Transport: cfg.transport, CheckRedirect: checkRedirect}
	default:
		s.own = newTransport()
		s.client = &http.Client{Transport: s.own, CheckRedirect: checkRedirect}
	}
	for _, kv := range cfg.headers {
		s.header.Add(kv[0], kv[1])
	}
	if s.header.Get("User-Agent") == "" {
		s.header.Set("User-Agent", "batchproc-httpsink")
	}
	if cfg.framing == JSONArray {
		s.header.Set("Content-Type", "application/json")
	} else {
		s.header.Set("Content-Type", "application/x-ndjson")
	}
	if cfg.compression != None {
		s.header.Set("Content-Encoding", cfg.compression.String())
	}
	if cfg.tokenSet {
		s.header.Set("Authorization", "Bearer "+cfg.token)
	}
	return s, nil
}

func parseURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("httpsink: invalid URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("httpsink: URL %q: scheme must be http or https", rawURL)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("httpsink: URL %q has no host", rawURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("httpsink: URL %q holds credentials; pass a token with WithToken instead", u.Redacted())
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("httpsink: URL %q has a fragment", rawURL)
	}
	if p := strings.TrimSuffix(u.Path, "/"); strings.HasSuffix(p, endpoint) {
		u.Path, u.RawPath = p, ""
	} else {
		u = u.JoinPath(endpoint)
	}
	return u, nil
}

func newTransport() *http.Transport {
	// Built rather than cloned from http.DefaultTransport, which a program
	// may have replaced with another RoundTripper.
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Responses are a few bytes of JSON; asking for gzip would only make
		// the response cap count decompressed bytes.
		DisableCompression: true,
	}
}

// checkRedirect follows only 307 and 308, which keep the method and body
// (replayed through GetBody). A 301, 302 or 303 would turn the POST into a
// GET, so it is returned as the response: a permanent failure.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("httpsink: stopped after 10 redirects")
	}
	if c := req.Response.StatusCode; c != http.StatusTemporaryRedirect && c != http.StatusPermanentRedirect {
		return http.ErrUseLastResponse
	}
	return nil
}

// Close closes the idle connections of the transport New made; it leaves a
// transport or client given with [WithTransport] or [WithClient] alone.
// Call it after the processor's Shutdown. It always returns nil, so that
// *Sink is an io.Closer.
func (s *Sink) Close() error {
	if s.own != nil {
		s.own.CloseIdleConnections()
	}
	return nil
}

// Send posts b to the loader and classifies the outcome for the processor,
// as protocol.md's client rule says:
//
//   - 200: nil, also for a duplicate (a retry of a stored key). A 200 whose
//     body is not the protocol's JSON, or whose accepted count differs from
//     b.Len() on a non-duplicate, is a [batchproc.Permanent] *StatusError
//     with Code 200: retrying cannot help, and hiding it could hide lost
//     events.
//   - 408, 429, 503 and every other 5xx: a retryable *StatusError, wrapped by
//     [batchproc.RetryAfter] when a usable Retry-After header came with it.
//   - 413 for a batch of two events or more: b is split in halves
//     ([batchproc.Batch.Split]) sent one after the other under the derived
//     keys, recursively; Send returns nil only if every part was stored,
//     else the first failure, wrapped in a *PartialError when some parts
//     were stored (itself wrapped by [batchproc.Partial], so the processor
//     counts the stored prefix as delivered if the batch finally fails).
//     A single event answered 413 is permanent.
//   - 400, 401, 415 and every other status: a permanent *StatusError.
//   - A timeout ([WithTimeout]) or a connection error: a plain, retryable
//     error. If ctx is done, Send returns ctx.Err(), wrapped by
//     [batchproc.Partial] when parts of a split batch were stored.
//
// An empty batch is not sent (the loader answers 400 to one): Send returns
// nil, as there is nothing to deliver.
//
// # Retries after a split
//
// The processor retries the whole batch under its own key. If a split batch
// failed retryably after some parts were stored, the retry posts the whole
// batch again, is answered 413 again, and resends the stored parts under the
// same derived keys, which are deterministic: the loader acknowledges them
// as duplicates and stores nothing twice. That holds as long as the
// loader's limits do not grow between the attempts; if the whole batch
// then fits, it is stored under its own key, and the parts stored before
// are stored twice.
func (s *Sink) Send(ctx context.Context, b *batchproc.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	var stored int
	err := s.send(ctx, b, &stored)
	if err == nil || stored == 0 {
		return err
	}
	// batchproc.Partial tells the processor that the prefix was stored: if
	// the batch finally fails, only the rest goes to its failure callback.
	if ctx.Err() != nil {
		return batchproc.Partial(ctx.Err(), stored)
	}
	return batchproc.Partial(&PartialError{Key: b.Key(), Stored: stored, Len: b.Len(), Err: err}, stored)
}

// send posts b and, on a 413, its halves; stored counts the events of the
// parts the loader acknowledged. Parts are sent in order and the first
// failure ends the walk, so the stored events are a prefix of the batch.
func (s *Sink) send(ctx context.Context, b *batchproc.Batch, stored *int) error {
	err := s.post(ctx, b)
	if se, ok := err.(*StatusError); ok && se.Code == http.StatusRequestEntityTooLarge && b.Len() > 1 && ctx.Err() == nil {
		left, right := b.Split()
		if err := s.send(ctx, left, stored); err != nil {
			return err
		}
		return s.send(ctx, right, stored)
	}
	if err = classify(ctx, err); err == nil {
		*stored += b.Len()
	}
	return err
}

// classify turns post's outcome into the processor's vocabulary.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	se, ok := err.(*StatusError)
	if !ok {
		return err // transport error or timeout: retryable
	}
	if retryableStatus(se.Code) {
		if se.retryAfterSet {
			return batchproc.RetryAfter(se, se.RetryAfter)
		}
		return se
	}
	return batchproc.Permanent(se)
}

// post makes one request for b: nil for a well-formed 200, a *StatusError
// for any other response, a transport error otherwise.
func (s *Sink) post(ctx context.Context, b *batchproc.Batch) error {
	body := s.enc.encode(b)
	defer body.release()
	f := newFence(body.data)
	defer f.close() // before release: no read of body.data after this

	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, s.url, nil)
	if err != nil {
		return fmt.Errorf("httpsink: %w", err) // the URL was checked by New
	}
	req.Header = s.headersFor(b.Key())
	req.Body = &f.first
	req.GetBody = f.getBody
	req.ContentLength = int64(len(body.data))

	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("httpsink: batch %s: no response within %v: %w", b.Key(), s.timeout, err)
		}
		return fmt.Errorf("httpsink: batch %s: %w", b.Key(), err)
	}
	reportSlots(ctx, resp.Header)
	if resp.StatusCode == http.StatusOK {
		if d, ok := parseServerTiming(resp.Header.Values(serverTimingHeader)); ok {
			reportServerTime(ctx, d)
		}
	}
	return s.readResponse(resp, b)
}

// serverTimingHeader carries, on a 200 of the loader, how long it held the
// batch once its body was received: the metric serverTimingMetric, in
// milliseconds (protocol.md, Responses).
const (
	serverTimingHeader = "Server-Timing"
	serverTimingMetric = "ingest"
)

// reportServerTime is batchproc.ReportServerTime; tests replace it to see
// what the sink reports.
var reportServerTime = batchproc.ReportServerTime

// parseServerTiming returns the dur of the loader's metric in the values
// of a W3C Server-Timing header (`ingest;dur=1.234`, among other metrics
// a proxy may add, in one value or several), and whether there was one
// that parsed: a finite, non-negative number of milliseconds. The first
// "ingest" metric counts, with or without a dur.
func parseServerTiming(values []string) (time.Duration, bool) {
	for _, v := range values {
		for len(v) > 0 {
			var metric string
			metric, v = cutUnquoted(v, ',')
			if name, params := cutUnquoted(metric, ';'); strings.EqualFold(strings.TrimSpace(name), serverTimingMetric) {
				return metricDur(params)
			}
		}
	}
	return 0, false
}

// metricDur returns the dur parameter among a Server-Timing metric's
// params (`desc="x";dur=1.5`), in milliseconds.
func metricDur(params string) (time.Duration, bool) {
	for len(params) > 0 {
		var param string
		param, params = cutUnquoted(params, ';')
		k, val, _ := strings.Cut(param, "=")
		if !strings.EqualFold(strings.TrimSpace(k), "dur") {
			continue
		}
		ms, err := strconv.ParseFloat(strings.Trim(strings.TrimSpace(val), `"`), 64)
		if err != nil || !(ms >= 0 && ms <= maxServerTimingMs) { // NaN fails both
			return 0, false
		}
		return time.Duration(ms * float64(time.Millisecond)), true
	}
	return 0, false
}

// maxServerTimingMs is the longest dur taken: what a time.Duration holds.
const maxServerTimingMs = float64(math.MaxInt64 / int64(time.Millisecond))

// cutUnquoted cuts s at the first sep outside a quoted string (a metric's
// desc may be one: `desc="a, b"`).
func cutUnquoted(s string, sep byte) (before, after string) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted && i+1 < len(s):
			i++
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

// ingestSlotsHeader is the loader's count of ingest slots, on every answer
// of POST /v1/batches (protocol.md, Responses).
const ingestSlotsHeader = "Ingest-Slots"

// reportSlots hands the loader's Ingest-Slots count to the processor whose
// send this is ([batchproc.ReportCapacity]): its adaptive send limit stops
// slow start there instead of stepping past the slots into 429s. A missing
// or malformed value (not one positive integer) is ignored.
func reportSlots(ctx context.Context, h http.Header) {
	v, ok := h[ingestSlotsHeader]
	if !ok || len(v) != 1 {
		return
	}
	if n, err := strconv.Atoi(v[0]); err == nil && n > 0 {
		batchproc.ReportCapacity(ctx, n)
	}
}

// headersFor returns the headers of a request for the batch with key k. The
// value slices are shared with every other request: net/http and
// RoundTrippers only read them.
func (s *Sink) headersFor(key string) http.Header {
	h := make(http.Header, len(s.header)+1)
	for k, v := range s.header {
		h[k] = v
	}
	if key != "" {
		h["Idempotency-Key"] = []string{key}
	}
	return h
}

// response is the union of the protocol's response bodies.
type response struct {
	Accepted  *int   `json:"accepted"`
	Duplicate bool   `json:"duplicate"`
	Error     string `json:"error"`
	Line      int    `json:"line"`
}

// readResponse reads at most maxResp bytes of the body, so that a huge or
// endless body costs a bounded read; a body within the cap is read to its
// end, so the connection goes back to the pool.
func (s *Sink) readResponse(resp *http.Response, b *batchproc.Batch) error {
	defer resp.Body.Close()
	buf := getBuffer()
	defer putBuffer(buf)
	truncated, readErr := readCapped(resp.Body, buf, s.maxResp)
	data := buf.b

	var r response
	parseErr := json.Unmarshal(data, &r)
	if resp.StatusCode == http.StatusOK {
		switch {
		case readErr != nil:
			// The batch is stored (200 means committed), but the answer was
			// lost: a retry is acknowledged as a duplicate.
			return fmt.Errorf("httpsink: batch %s: 200 OK, but reading the response failed: %w", b.Key(), readErr)
		case truncated:
			return &StatusError{Code: resp.StatusCode, Key: b.Key(), Message: fmt.Sprintf("response body longer than %d bytes", s.maxResp)}
		case parseErr != nil || r.Accepted == nil:
			return &StatusError{Code: resp.StatusCode, Key: b.Key(), Message: "response is not the protocol's {\"accepted\": N, ...}: " + snippet(data)}
		case !r.Duplicate && *r.Accepted != b.Len():
			return &StatusError{Code: resp.StatusCode, Key: b.Key(), Message: fmt.Sprintf("loader accepted %d of %d events", *r.Accepted, b.Len())}
		}
		return nil
	}
	se := &StatusError{Code: resp.StatusCode, Key: b.Key()}
	if parseErr == nil && r.Error != "" {
		se.Message, se.Line = r.Error, r.Line
	} else {
		se.Message = snippet(data)
	}
	se.RetryAfter, se.retryAfterSet = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	return se
}

// readCapped appends r's bytes to buf until EOF or limit bytes; truncated
// reports that r held more. It reads limit+1 bytes at most.
func readCapped(r io.Reader, buf *buffer, limit int64) (truncated bool, err error) {
	lr := io.LimitedReader{R: r, N: limit + 1}
	for {
		if len(buf.b) == cap(buf.b) {
			buf.b = slices.Grow(buf.b, 512)
		}
		n, err := lr.Read(buf.b[len(buf.b):cap(buf.b)])
		buf.b = buf.b[:len(buf.b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, err
		}
	}
	if int64(len(buf.b)) > limit {
		buf.b = buf.b[:limit]
		return true, nil
	}
	return false, nil
}

// snippet returns the start of a body as printable text for a message.
func snippet(data []byte) string {
	const max = 200
	cut := len(data) > max
	if cut {
		data = data[:max]
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(data), "\uFFFD"))
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	if cut {
		s += "..."
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}
