package loader

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/batchproc/batchproc/loader/store"
)

// statusWriter records the status code for the request metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw}
	endpoint := "other"
	switch p := r.URL.Path; {
	case p == "/v1/batches":
		endpoint = "batches"
		s.serveBatches(w, r)
	case p == "/healthz":
		endpoint = "healthz"
		if s.onlyGet(w, r) {
			writeRaw(w, http.StatusOK, `{"status":"ok"}`)
		}
	case p == "/readyz":
		endpoint = "readyz"
		if s.onlyGet(w, r) {
			s.serveReady(w, r)
		}
	case p == "/v1/stats":
		endpoint = "stats"
		if s.onlyGet(w, r) {
			s.serveStats(w)
		}
	case p == "/metrics":
		endpoint = "metrics"
		if s.onlyGet(w, r) {
			s.metrics.ServeHTTP(w, r)
		}
	default:
		writeError(w, http.StatusNotFound, "not found: "+p, 0)
	}
	if w.code == 0 {
		w.code = http.StatusOK
	}
	s.m.request(endpoint, w.code)
}

func (s *Server) onlyGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed", 0)
	return false
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if s.isDraining() {
		w.Header().Set("Retry-After", s.retryAfter)
		writeError(w, http.StatusServiceUnavailable, "shutting down", 0)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Store.Ping(ctx); err != nil {
		w.Header().Set("Retry-After", s.retryAfter)
		writeError(w, http.StatusServiceUnavailable, "store unavailable: "+err.Error(), 0)
		return
	}
	writeRaw(w, http.StatusOK, `{"status":"ready"}`)
}

// Stats are the totals served at /v1/stats (docs/protocol.md, Stats): the
// events and batches in the store (as store.Counts has them: found at Open
// plus stored since), and the duplicates and refused batch requests of this
// Server since it started.
type Stats struct {
	Events     int64 `json:"events"`     // events in the store
	Batches    int64 `json:"batches"`    // batches in the store
	Duplicates int64 `json:"duplicates"` // repeats of an already stored Idempotency-Key, since start
	Rejected   int64 `json:"rejected"`   // POST /v1/batches answered with an error status, since start
}

// Stats returns the totals served at /v1/stats.
func (s *Server) Stats() Stats {
	c := s.cfg.Store.Counts()
	return Stats{Events: c.Events, Batches: c.Batches, Duplicates: c.Duplicates, Rejected: s.rejected.Load()}
}

func (s *Server) serveStats(w http.ResponseWriter) {
	b, _ := json.Marshal(s.Stats())
	writeRaw(w, http.StatusOK, string(b))
}

// writeRaw writes a JSON body.
func writeRaw(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

// writeError writes {"error": msg} (and "line" when line > 0).
func writeError(w http.ResponseWriter, code int, msg string, line int) {
	type errBody struct {
		Error string `json:"error"`
		Line  int    `json:"line,omitempty"`
	}
	b, _ := json.Marshal(errBody{Error: msg, Line: line})
	writeRaw(w, code, string(b))
}

// authorized checks the bearer token in constant time: each configured
// token's SHA-256 is compared with the presented one's, all of them, so
// neither a token's content nor its length leaks through timing. It also
// returns the request's key namespace: "" without auth, else the token's
// tenant (store.TokenNamespace).
func (s *Server) authorized(r *http.Request) (namespace string, ok bool) {
	if len(s.tokens) == 0 {
		return "", true
	}
	h := r.Header.Get("Authorization")
	const scheme = "bearer "
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(h[len(scheme):])))
	match := 0
	for i := range s.tokens {
		match |= subtle.ConstantTimeCompare(sum[:], s.tokens[i][:])
	}
	if match != 1 {
		return "", false
	}
	return store.TokenNamespace(sum), true
}

// framing is a request's Content-Type.
type framing uint8

const (
	frameNDJSON framing = iota
	frameJSONArray
)

// parseContentType accepts application/x-ndjson (also when the header is
// absent) and application/json, with at most a charset=utf-8 parameter.
func parseContentType(v string) (framing, bool) {
	switch v {
	case "", "application/x-ndjson":
		return frameNDJSON, true
	case "application/json":
		return frameJSONArray, true
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		return 0, false
	}
	for k, pv := range params {
		if k != "charset" || !strings.EqualFold(pv, "utf-8") {
			return 0, false
		}
	}
	switch mt { // ParseMediaType lower-cases it
	case "application/x-ndjson":
		return frameNDJSON, true
	case "application/json":
		return frameJSONArray, true
	}
	return 0, false
}

// parseContentEncoding accepts one of identity (or none), gzip and zstd.
func parseContentEncoding(vs []string) (encoding, bool) {
	switch len(vs) {
	case 0:
		return encIdentity, true
	case 1:
	default:
		return 0, false
	}
	switch v := strings.ToLower(strings.TrimSpace(vs[0])); v {
	case "", "identity":
		return encIdentity, true
	case "gzip":
		return encGzip, true
	case "zstd":
		return encZstd, true
	}
	return 0, false
}

// validKey reports whether k is 1..128 chars of [A-Za-z0-9._:-].
func validKey(k string) bool {
	if len(k) == 0 || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
