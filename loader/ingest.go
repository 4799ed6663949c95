package loader

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/batchproc/batchproc/loader/store"
)

// serveBatches answers POST /v1/batches. The checks that cost nothing run
// first (method, auth, headers, key), then the body is received (bounded,
// see limits.go), then the request takes an ingest slot (or is answered 429
// after Config.SlotWait), then the body is decoded (all-or-nothing) and
// stored; only a committed batch is answered 200.
//
// Every answer says how many ingest slots the loader has (Ingest-Slots,
// protocol.md), so that a client's concurrency limit stops its growth
// there instead of stepping past the slots into 429s; a 200 says how long
// the loader held the batch once its body was received (Server-Timing), so
// that the limit is cut by a queue here, not by a busy client.
func (s *Server) serveBatches(w http.ResponseWriter, r *http.Request) {
	w.Header()[IngestSlotsHeader] = s.slotsValue // shared, read only, as net/http only reads it
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use POST", 0)
		return
	}
	code := s.ingest(w, r)
	if code != http.StatusOK {
		s.rejected.Add(1)
		s.m.rejected.Inc()
	}
}

// ingest handles a POST /v1/batches and returns the status it answered.
func (s *Server) ingest(w http.ResponseWriter, r *http.Request) int {
	fail := func(code int, msg string, line int) int {
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", s.retryAfter)
		}
		writeError(w, code, msg, line)
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "batch refused",
			slog.Int("status", code), slog.String("err", msg), slog.Int("line", line))
		return code
	}
	namespace, ok := s.authorized(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="batchloader"`)
		return fail(http.StatusUnauthorized, "missing or wrong bearer token", 0)
	}
	fr, ok := parseContentType(r.Header.Get("Content-Type"))
	if !ok {
		return fail(http.StatusUnsupportedMediaType,
			"unsupported Content-Type "+strconv.Quote(r.Header.Get("Content-Type"))+"; use application/x-ndjson or application/json", 0)
	}
	enc, ok := parseContentEncoding(r.Header.Values("Content-Encoding"))
	if !ok {
		return fail(http.StatusUnsupportedMediaType,
			"unsupported Content-Encoding "+strconv.Quote(r.Header.Get("Content-Encoding"))+"; use identity, gzip or zstd", 0)
	}
	var key string
	if ks, present := r.Header["Idempotency-Key"]; present {
		if len(ks) != 1 || !validKey(ks[0]) {
			return fail(http.StatusBadRequest, "bad Idempotency-Key: want one value of 1..128 characters of [A-Za-z0-9._:-]", 0)
		}
		key = ks[0]
	}
	if r.ContentLength > s.cfg.MaxBody {
		return fail(http.StatusRequestEntityTooLarge,
			"request body over the limit of "+strconv.FormatInt(s.cfg.MaxBody, 10)+" bytes", 0)
	}

	if !s.enter() {
		return fail(http.StatusServiceUnavailable, "shutting down", 0)
	}
	defer s.leave()
	// The body is received before the request takes a slot (limits.go).
	wk := s.works.Get().(*work)
	defer s.putWork(wk)
	if err := s.receive(w, r, wk); err != nil {
		code, msg := bodyError(err, encIdentity, &s.cfg)
		return fail(code, msg, 0)
	}
	received := time.Now() // what follows is the loader's time (Server-Timing)
	if code, msg := s.takeSlot(r); code != 0 {
		return fail(code, msg, 0)
	}
	s.m.inFlight.Inc()
	code, accepted, dup, msg, line := s.decodeAndStore(r, wk, fr, enc, namespace, key)
	if code != http.StatusOK {
		return fail(code, msg, line)
	}

	if d := s.cfg.Latency; d > 0 {
		// A timer, not a sleeping CPU; shutdown cuts the wait short since
		// the batch is already durable.
		t := time.NewTimer(d)
		if s.onLatencyWait != nil {
			s.onLatencyWait()
		}
		select {
		case <-t.C:
		case <-s.drainCh:
		case <-r.Context().Done():
		}
		t.Stop()
	}
	var b [64]byte
	body := append(b[:0], `{"accepted":`...)
	body = strconv.AppendInt(body, int64(accepted), 10)
	body = append(body, `,"duplicate":`...)
	body = strconv.AppendBool(body, dup)
	body = append(body, '}')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set(ServerTimingHeader, ServerTiming(time.Since(received)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return http.StatusOK
}

// decodeAndStore reads, decodes and stores the batch, holding the ingest
// slot the caller took; it releases the slot also if the store panics.
func (s *Server) decodeAndStore(r *http.Request, wk *work, fr framing, enc encoding, namespace, key string) (code, accepted int, dup bool, msg string, line int) {
	defer func() {
		s.m.inFlight.Dec()
		<-s.slots
	}()
	s.m.bytesIn.Add(float64(len(wk.raw)))
	body := wk.raw
	if enc != encIdentity {
		if err := s.decompress(r.Context(), wk, enc); err != nil {
			code, msg = bodyError(err, enc, &s.cfg)
			return code, 0, false, msg, 0
		}
		body = wk.buf
	}
	s.m.bytesDecoded.Add(float64(len(body)))

	d := &wk.dec
	var derr *decodeError
	if fr == frameJSONArray {
		derr = d.decodeJSONArray(body)
	} else {
		derr = d.decodeNDJSON(body)
	}
	if derr != nil {
		return derr.status, 0, false, derr.msg, derr.line
	}

	wk.batch.Namespace = namespace
	wk.batch.Key = key
	wk.batch.Events = d.events
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
	t0 := time.Now()
	var err error
	dup, err = s.cfg.Store.Store(ctx, &wk.batch)
	elapsed := time.Since(t0)
	cancel()
	s.m.storeSeconds.Observe(elapsed.Seconds())
	n := len(d.events)
	if errors.Is(err, store.ErrKeyReused) {
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "idempotency key reused",
			slog.String("key", key), slog.Int("events", n))
		return http.StatusUnprocessableEntity, 0, false,
			"Idempotency-Key " + strconv.Quote(key) + " was already used for a batch with other content; a retry must send the same events, a new batch needs a new key", 0
	}
	if err != nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "store failed",
			slog.String("key", key), slog.Int("events", n), slog.String("err", err.Error()))
		return http.StatusServiceUnavailable, 0, false, "store unavailable: " + err.Error(), 0
	}
	if dup {
		s.m.duplicates.Inc()
		// Not a stored batch: no count attribute, so log-based delivery
		// counts see each batch once.
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "duplicate batch",
			slog.String("key", key), slog.Int("events", n))
		return http.StatusOK, n, true, "", 0
	}
	s.m.batches.Inc()
	s.m.events.Add(float64(n))
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "batch stored",
		slog.Int("count", n), slog.String("key", key),
		slog.Int("bytes", len(body)), slog.Duration("store", elapsed))
	return http.StatusOK, n, false, "", 0
}

func (s *Server) putWork(wk *work) {
	wk.dec.reset()
	wk.batch = store.Batch{}
	s.freeBodies(wk)
	s.works.Put(wk)
}
