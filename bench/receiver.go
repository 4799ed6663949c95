package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/batchproc/batchproc/loader"
)

// endpoint is the receiving side of one run: the in-process loader, the null
// endpoint, or an external loader.
type endpoint interface {
	// URL is the base URL (no trailing slash) designs post to.
	URL() string
	// Delivered is the number of events the receiving side has stored (or
	// counted) so far in this run.
	Delivered(ctx context.Context) (int64, error)
	// E2E is the end-to-end latency histogram (nanoseconds, Add to commit),
	// or nil when the receiving side is not in this process.
	E2E() *hdrhistogram.Histogram
	Close(ctx context.Context) error
}

// receiver records what the receiving side committed: event and batch
// counts and, from each event's t0, the end-to-end latency.
type receiver struct {
	events, batches, duplicates atomic.Int64

	mu  sync.Mutex
	e2e *hdrhistogram.Histogram
}

func newReceiver() *receiver { return &receiver{e2e: newLatencyHistogram()} }

// committed records one committed batch of n events; payload(i) returns the
// i-th event's JSON.
func (r *receiver) committed(n int, payload func(i int) []byte) {
	now := time.Now().UnixNano()
	r.events.Add(int64(n))
	r.batches.Add(1)
	r.mu.Lock()
	for i := range n {
		if t0, ok := extractT0(payload(i)); ok && now >= t0 {
			_ = r.e2e.RecordValue(max(now-t0, 1))
		}
	}
	r.mu.Unlock()
}

func (r *receiver) histogram() *hdrhistogram.Histogram {
	r.mu.Lock()
	defer r.mu.Unlock()
	return hdrhistogram.Import(r.e2e.Export())
}

var t0Key = []byte(`"t0":`)

// extractT0 finds the harness's "t0" member without decoding the event.
func extractT0(p []byte) (int64, bool) {
	i := bytes.Index(p, t0Key)
	if i < 0 {
		return 0, false
	}
	p = p[i+len(t0Key):]
	j := 0
	for j < len(p) && p[j] >= '0' && p[j] <= '9' {
		j++
	}
	v, err := strconv.ParseInt(string(p[:j]), 10, 64)
	return v, err == nil
}

// serveLabelled serves srv on ln in a goroutine labelled side=loader, so
// that the CPU profile can tell the receiving side from the design; the
// connection goroutines inherit the label.
func serveLabelled(srv *http.Server, ln net.Listener, serve func(net.Listener) error) chan error {
	done := make(chan error, 1)
	go pprof.Do(context.Background(), pprof.Labels(labelSide, sideLoader), func(context.Context) {
		err := serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	})
	return done
}

// nullEndpoint speaks just enough of protocol.md to be posted to: it reads
// each body, counts its lines, records their latency, remembers keys to
// acknowledge repeats, waits the configured latency and answers 200. It
// stores nothing: the client-side ceiling.
type nullEndpoint struct {
	rec      *receiver
	latency  time.Duration
	knee     int          // requests at once past which latency grows (0: none)
	inflight atomic.Int64 // requests in their latency wait
	// slots, when not nil, are the ingest slots of a loader with a
	// concurrency limit (Config.LoaderLimit): a request waits up to
	// slotWait for one and is answered 429 with Retry-After otherwise, as
	// the real loader does (protocol.md, Admission).
	slots      chan struct{}
	slotWait   time.Duration
	slotsValue []string     // the Ingest-Slots header's value: cap(slots)
	retryAfter string       // the Retry-After value, whole seconds
	rejected   atomic.Int64 // requests answered 429
	srv        *http.Server
	ln         net.Listener
	done       chan error

	keysMu sync.Mutex
	keys   map[string]struct{}
	bufs   sync.Pool
}

func startNullEndpoint(latency time.Duration) (*nullEndpoint, error) {
	return startNullEndpointShaped(latency, endpointShape{})
}

// endpointShape is the capacity of a null endpoint: a knee (see
// Config.LoaderKnee) and a concurrency limit answered with 429 (see
// Config.LoaderLimit). The zero value is neither.
type endpointShape struct {
	knee     int           // 0: no knee
	limit    int           // requests served at once; 0: no limit
	slotWait time.Duration // how long a request past limit waits for a slot
}

// startNullEndpointShaped is startNullEndpoint with the capacity shape.
func startNullEndpointShaped(latency time.Duration, shape endpointShape) (*nullEndpoint, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n := &nullEndpoint{rec: newReceiver(), latency: latency, knee: shape.knee, ln: ln, keys: map[string]struct{}{},
		slotWait: shape.slotWait, retryAfter: strconv.FormatInt(int64((loader.DefaultRetryAfter+time.Second-1)/time.Second), 10)}
	if shape.limit > 0 {
		n.slots = make(chan struct{}, shape.limit)
		n.slotsValue = []string{strconv.Itoa(shape.limit)}
	}
	n.bufs.New = func() any { return new(bytes.Buffer) }
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/batches", (&receiverHandler{n}).batches)
	mux.HandleFunc("GET /v1/stats", (&receiverHandler{n}).stats)
	n.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	n.done = serveLabelled(n.srv, ln, n.srv.Serve)
	return n, nil
}

// receiverHandler carries the null endpoint's handlers; its name marks
// their stacks as the receiving side's in profiles (see serverPrefixes).
type receiverHandler struct{ n *nullEndpoint }

// receiver-side stacks are recognised by "bench.(*receiver" too.
func (h *receiverHandler) batches(w http.ResponseWriter, r *http.Request) {
	n := h.n
	if n.slots != nil { // as the loader tells its ingest slots
		w.Header()[loader.IngestSlotsHeader] = n.slotsValue
	}
	buf := n.bufs.Get().(*bytes.Buffer)
	defer n.bufs.Put(buf)
	buf.Reset()
	if _, err := io.Copy(buf, http.MaxBytesReader(w, r.Body, 64<<20)); err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": err.Error()})
		return
	}
	received := time.Now() // what follows is the endpoint's time (Server-Timing), as the loader's
	body := buf.Bytes()
	var lines [][]byte
	for len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		if i < 0 {
			i = len(body)
		}
		if line := bytes.TrimSpace(body[:i]); len(line) > 0 {
			lines = append(lines, line)
		}
		body = body[min(i+1, len(body)):]
	}
	if len(lines) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "empty batch"})
		return
	}
	if n.slots != nil {
		if !n.takeSlot(r.Context()) {
			n.rejected.Add(1)
			w.Header().Set("Retry-After", n.retryAfter)
			writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": "no ingest slot free within " + n.slotWait.String()})
			return
		}
		defer func() { <-n.slots }()
	}
	if n.latency > 0 {
		at := n.inflight.Add(1)
		t := time.NewTimer(n.wait(at))
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			n.inflight.Add(-1)
			return
		}
		n.inflight.Add(-1)
	}
	w.Header().Set(loader.ServerTimingHeader, loader.ServerTiming(time.Since(received)))
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		n.keysMu.Lock()
		_, dup := n.keys[key]
		n.keys[key] = struct{}{}
		n.keysMu.Unlock()
		if dup {
			n.rec.duplicates.Add(1)
			writeJSON(w, http.StatusOK, map[string]any{"accepted": len(lines), "duplicate": true})
			return
		}
	}
	n.rec.committed(len(lines), func(i int) []byte { return lines[i] })
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"accepted":%d,"duplicate":false}`, len(lines))
}

// takeSlot takes an ingest slot, waiting up to slotWait for one; false:
// none freed in time (or the request was cancelled).
func (n *nullEndpoint) takeSlot(ctx context.Context) bool {
	select {
	case n.slots <- struct{}{}:
		return true
	default:
	}
	if n.slotWait <= 0 {
		return false
	}
	t := time.NewTimer(n.slotWait)
	defer t.Stop()
	select {
	case n.slots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// wait is the latency of a request that found at requests in their wait,
// itself included: the base latency, stretched past the knee.
func (n *nullEndpoint) wait(at int64) time.Duration {
	if n.knee <= 0 || at <= int64(n.knee) {
		return n.latency
	}
	return time.Duration(float64(n.latency) * float64(at) / float64(n.knee))
}

func (h *receiverHandler) stats(w http.ResponseWriter, _ *http.Request) {
	r := h.n.rec
	writeJSON(w, http.StatusOK, map[string]any{"events": r.events.Load(), "batches": r.batches.Load(),
		"duplicates": r.duplicates.Load(), "rejected": h.n.rejected.Load()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (n *nullEndpoint) URL() string { return "http://" + n.ln.Addr().String() }
func (n *nullEndpoint) Delivered(context.Context) (int64, error) {
	return n.rec.events.Load(), nil
}
func (n *nullEndpoint) E2E() *hdrhistogram.Histogram { return n.rec.histogram() }
func (n *nullEndpoint) Close(ctx context.Context) error {
	err := n.srv.Shutdown(ctx)
	if e := <-n.done; err == nil {
		err = e
	}
	return err
}

// externalEndpoint is a loader this process did not start (-target): the
// run's deliveries are the growth of its /v1/stats "events".
type externalEndpoint struct {
	url    string
	client *http.Client
	base   int64
}

func newExternalEndpoint(ctx context.Context, url string) (*externalEndpoint, error) {
	e := &externalEndpoint{url: url, client: &http.Client{Timeout: 10 * time.Second}}
	n, err := e.events(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: target %s: %w", url, err)
	}
	e.base = n
	return e, nil
}

func (e *externalEndpoint) events(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/v1/stats", nil)
	if err != nil {
		return 0, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /v1/stats: %s", resp.Status)
	}
	var s struct {
		Events int64 `json:"events"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&s); err != nil {
		return 0, fmt.Errorf("GET /v1/stats: %w", err)
	}
	return s.Events, nil
}

func (e *externalEndpoint) URL() string { return e.url }
func (e *externalEndpoint) Delivered(ctx context.Context) (int64, error) {
	n, err := e.events(ctx)
	return n - e.base, err
}
func (e *externalEndpoint) E2E() *hdrhistogram.Histogram { return nil }
func (e *externalEndpoint) Close(context.Context) error {
	e.client.CloseIdleConnections()
	return nil
}
