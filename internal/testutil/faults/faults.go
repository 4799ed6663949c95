// Package faults injects transport faults between an HTTP client and a
// server in tests: a refusal before the server sees the request, or a
// connection that drops after the server did its work but before the client
// reads the answer.
package faults

import (
	"bytes"
	"net/http"
	"strconv"
	"sync"
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
)

// Handler wraps Next, asking Plan for the fault of each request (numbered
// from 1 in arrival order).
type Handler struct {
	Next http.Handler
	Plan func(n int, r *http.Request) Fault

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
	case DropAfterServe:
		rec := &discardWriter{header: http.Header{}}
		h.Next.ServeHTTP(rec, r)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic("faults: cannot hijack: " + err.Error())
		}
		_ = conn.Close()
	default:
		h.Next.ServeHTTP(w, r)
	}
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
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}
