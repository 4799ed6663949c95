// Package faults injects transport faults between an HTTP client and a
// server in tests: a refusal before the server sees the request, a
// connection reset in the middle of the request, a connection that drops
// after the server did its work but before the client reads the answer, an
// answer held until the client gave up, and (Proxy) a TCP proxy whose
// backend can die and come back under a stable address.
package faults

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Fault is what happens to one request.
type Fault int

const (
	// None passes the request through.
	None Fault = iota
	// Unavailable answers 503 with Retry-After: 0 without calling the
	// server.
	Unavailable
	// DropAfterServe lets the server handle the request completely (a
	// loader commits the batch), then closes the connection without sending
	// its response.
	DropAfterServe
	// ResetMidRequest reads part of the request body (at most 1 KiB), then
	// resets the connection (RST): the server never sees the request.
	ResetMidRequest
	// DelayPastTimeout reads the whole request, waits until the client gave
	// up on it (its connection closed: a client timeout) or Handler.MaxDelay
	// passed, then lets the server handle it anyway, unanswered: the server
	// commits a request its client already counts as failed.
	DelayPastTimeout
	// UnavailableRetryAfter answers 503 with Retry-After: Handler.RetryAfter
	// (whole seconds, default 1) without calling the server.
	UnavailableRetryAfter
)

// DefaultMaxDelay bounds DelayPastTimeout's wait when Handler.MaxDelay is 0.
const DefaultMaxDelay = 30 * time.Second

// Handler wraps Next, asking Plan for the fault of each request (numbered
// from 1 in arrival order).
type Handler struct {
	Next http.Handler
	Plan func(n int, r *http.Request) Fault
	// RetryAfter is UnavailableRetryAfter's Retry-After, rounded up to whole
	// seconds; 0 means 1 s.
	RetryAfter time.Duration
	// MaxDelay bounds DelayPastTimeout's wait for the client to give up; 0
	// means DefaultMaxDelay.
	MaxDelay time.Duration

	mu       sync.Mutex
	n        int
	injected map[Fault]int
}

// Injected returns how many times f was injected.
func (h *Handler) Injected(f Fault) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.injected[f]
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.n++
	n := h.n
	h.mu.Unlock()
	f := None
	if h.Plan != nil {
		f = h.Plan(n, r)
	}
	if f != None {
		h.mu.Lock()
		if h.injected == nil {
			h.injected = map[Fault]int{}
		}
		h.injected[f]++
		h.mu.Unlock()
	}
	switch f {
	case Unavailable:
		w.Header().Set("Retry-After", "0")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"injected fault"}`))
	case UnavailableRetryAfter:
		secs := int64((h.RetryAfter + time.Second - 1) / time.Second)
		if secs <= 0 {
			secs = 1
		}
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"injected fault"}`))
	case DropAfterServe:
		rec := &discardWriter{header: http.Header{}}
		h.Next.ServeHTTP(rec, r)
		hijack(w).Close()
	case ResetMidRequest:
		_, _ = io.CopyN(io.Discard, r.Body, 1<<10)
		reset(hijack(w))
	case DelayPastTimeout:
		body, err := io.ReadAll(r.Body)
		if err != nil {
			reset(hijack(w))
			return
		}
		// With the body read to its end, the server watches the connection:
		// the request's context ends when the client closes it.
		maxDelay := h.MaxDelay
		if maxDelay <= 0 {
			maxDelay = DefaultMaxDelay
		}
		giveUp := time.NewTimer(maxDelay)
		select {
		case <-r.Context().Done():
		case <-giveUp.C:
		}
		giveUp.Stop()
		r2 := r.Clone(context.WithoutCancel(r.Context()))
		r2.Body = io.NopCloser(bytes.NewReader(body))
		h.Next.ServeHTTP(&discardWriter{header: http.Header{}}, r2)
		hijack(w).Close()
	default:
		h.Next.ServeHTTP(w, r)
	}
}

func hijack(w http.ResponseWriter) net.Conn {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic("faults: cannot hijack: " + err.Error())
	}
	return conn
}

// reset closes conn with a TCP RST instead of a FIN.
func reset(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// discardWriter collects a response that is never sent.
type discardWriter struct {
	header http.Header
	body   bytes.Buffer
	code   int
}

func (d *discardWriter) Header() http.Header  { return d.header }
func (d *discardWriter) WriteHeader(code int) { d.code = code }
func (d *discardWriter) Write(b []byte) (int, error) {
	if d.code == 0 {
		d.code = http.StatusOK
	}
	return d.body.Write(b)
}

// String describes the fault.
func (f Fault) String() string {
	switch f {
	case None:
		return "none"
	case Unavailable:
		return "unavailable"
	case DropAfterServe:
		return "drop-after-serve"
	case ResetMidRequest:
		return "reset-mid-request"
	case DelayPastTimeout:
		return "delay-past-timeout"
	case UnavailableRetryAfter:
		return "unavailable-retry-after"
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}
