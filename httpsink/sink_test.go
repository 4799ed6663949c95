package httpsink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/httpsink"
)

func TestNewValidation(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		opts      []httpsink.Option
		want      string // substring of the error
	}{
		{"ftp scheme", "ftp://x", nil, "scheme must be http or https"},
		{"no scheme", "loader:8080", nil, "scheme must be http or https"},
		{"no host", "http:///v1/batches", nil, "has no host"},
		{"credentials", "http://u:p@loader", nil, "WithToken"},
		{"unparsable", "http://[::1", nil, "invalid URL"},
		{"both client and transport", "http://x", []httpsink.Option{httpsink.WithClient(http.DefaultClient), httpsink.WithTransport(http.DefaultTransport)}, "exclude each other"},
		{"nil client", "http://x", []httpsink.Option{httpsink.WithClient(nil)}, "WithClient(nil)"},
		{"nil transport", "http://x", []httpsink.Option{httpsink.WithTransport(nil)}, "WithTransport(nil)"},
		{"empty token", "http://x", []httpsink.Option{httpsink.WithToken("")}, "empty token"},
		{"token with space", "http://x", []httpsink.Option{httpsink.WithToken("a b")}, "visible ASCII"},
		{"reserved header", "http://x", []httpsink.Option{httpsink.WithHeader("content-type", "text/plain")}, "Content-Type is reserved"},
		{"idempotency header", "http://x", []httpsink.Option{httpsink.WithHeader("Idempotency-Key", "k")}, "Idempotency-Key is reserved"},
		{"authorization header", "http://x", []httpsink.Option{httpsink.WithHeader("Authorization", "Basic x")}, "WithToken"},
		{"bad header name", "http://x", []httpsink.Option{httpsink.WithHeader("X Bad", "v")}, "header name"},
		{"header value newline", "http://x", []httpsink.Option{httpsink.WithHeader("X-A", "a\r\nB: c")}, "control character"},
		{"framing", "http://x", []httpsink.Option{httpsink.WithFraming(7)}, "unknown framing"},
		{"compression", "http://x", []httpsink.Option{httpsink.WithCompression(7)}, "unknown compression"},
		{"level without compression", "http://x", []httpsink.Option{httpsink.WithCompressionLevel(3)}, "without WithCompression"},
		{"gzip level", "http://x", []httpsink.Option{httpsink.WithCompression(httpsink.Gzip), httpsink.WithCompressionLevel(10)}, "gzip levels are 1..9"},
		{"zstd level", "http://x", []httpsink.Option{httpsink.WithCompression(httpsink.Zstd), httpsink.WithCompressionLevel(0)}, "zstd levels are 1..22"},
		{"timeout", "http://x", []httpsink.Option{httpsink.WithTimeout(0)}, "WithTimeout(0s): must be positive"},
		{"max response", "http://x", []httpsink.Option{httpsink.WithMaxResponseBody(10)}, "at least 256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := httpsink.New(tc.url, tc.opts...)
			if err == nil {
				s.Close()
				t.Fatalf("New succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "httpsink: ") {
				t.Fatalf("error %q, want one starting httpsink: and containing %q", err, tc.want)
			}
		})
	}

	t.Run("all errors reported", func(t *testing.T) {
		_, err := httpsink.New("http://x", httpsink.WithTimeout(-1), httpsink.WithMaxResponseBody(0), httpsink.WithFraming(9))
		for _, want := range []string{"WithTimeout", "WithMaxResponseBody", "WithFraming"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not mention %s", err, want)
			}
		}
	})

	t.Run("valid", func(t *testing.T) {
		s, err := httpsink.New("https://loader.example:8443/prefix",
			httpsink.WithToken("tok.en-1"), httpsink.WithHeader("X-Service", "checkout"),
			httpsink.WithHeader("User-Agent", "svc/1"), httpsink.WithFraming(httpsink.JSONArray),
			httpsink.WithCompression(httpsink.Zstd), httpsink.WithCompressionLevel(19),
			httpsink.WithTimeout(time.Second), httpsink.WithMaxResponseBody(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	})
}

// TestURL checks that a base URL gets /v1/batches appended and an endpoint
// URL is used as is.
func TestURL(t *testing.T) {
	fl := newFakeLoader(t, nil)
	for _, u := range []string{fl.URL(), fl.URL() + "/", fl.URL() + "/v1/batches", fl.URL() + "/v1/batches/"} {
		s := newSink(t, u)
		if err := s.Send(t.Context(), newBatch(t, "k", 1)); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, r := range fl.requests() {
		if r.Path != "/v1/batches" {
			t.Errorf("posted to %q", r.Path)
		}
	}
}

func TestSendNDJSON(t *testing.T) {
	fl := newFakeLoader(t, nil)
	s := newSink(t, fl.URL(), httpsink.WithToken("s3cret"),
		httpsink.WithHeader("X-Service", "checkout"), httpsink.WithHeader("X-Multi", "a"), httpsink.WithHeader("X-Multi", "b"))
	b := newBatch(t, "proc1:7", 5)
	if err := s.Send(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	reqs := fl.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if !bytes.Equal(r.Body, b.NDJSON()) {
		t.Errorf("body %q, want b.NDJSON() %q", r.Body, b.NDJSON())
	}
	for k, want := range map[string]string{
		"Content-Type":    "application/x-ndjson",
		"Idempotency-Key": "proc1:7",
		"Authorization":   "Bearer s3cret",
		"X-Service":       "checkout",
		"User-Agent":      "batchproc-httpsink",
		"Content-Length":  strconv.Itoa(len(b.NDJSON())),
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if got := r.Header.Values("X-Multi"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("X-Multi = %q", got)
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q without compression", ce)
	}
}

func TestSendEmptyBatch(t *testing.T) {
	fl := newFakeLoader(t, nil)
	s := newSink(t, fl.URL())
	b, _ := batchproc.NewBatch("empty")
	if err := s.Send(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	if n := len(fl.requests()); n != 0 {
		t.Fatalf("%d requests for an empty batch", n)
	}
}

// TestBodies checks every framing and compression against the fake loader,
// which decodes the body as the real one does.
func TestBodies(t *testing.T) {
	fl := newFakeLoader(t, nil)
	for _, framing := range []httpsink.Framing{httpsink.NDJSON, httpsink.JSONArray} {
		for _, comp := range []httpsink.Compression{httpsink.None, httpsink.Gzip, httpsink.Zstd} {
			for _, level := range []int{0, 1, 9} {
				if comp == httpsink.None && level != 0 {
					continue
				}
				name := framing.String() + "/" + comp.String()
				opts := []httpsink.Option{httpsink.WithFraming(framing), httpsink.WithCompression(comp)}
				if level != 0 {
					opts = append(opts, httpsink.WithCompressionLevel(level))
					name += "/" + string(rune('0'+level))
				}
				t.Run(name, func(t *testing.T) {
					s := newSink(t, fl.URL(), opts...)
					b := newBatch(t, "k-"+strings.ReplaceAll(name, "/", "-"), 50)
					if err := s.Send(t.Context(), b); err != nil {
						t.Fatal(err)
					}
					reqs := fl.requests()
					r := reqs[len(reqs)-1]
					if r.Err != "" {
						t.Fatal(r.Err)
					}
					wantCT := map[httpsink.Framing]string{httpsink.NDJSON: "application/x-ndjson", httpsink.JSONArray: "application/json"}[framing]
					wantCE := map[httpsink.Compression]string{httpsink.None: "", httpsink.Gzip: "gzip", httpsink.Zstd: "zstd"}[comp]
					if ct, ce := r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"); ct != wantCT || ce != wantCE {
						t.Errorf("Content-Type %q, Content-Encoding %q; want %q, %q", ct, ce, wantCT, wantCE)
					}
					if framing == httpsink.NDJSON && !bytes.Equal(r.Decoded, b.NDJSON()) {
						t.Errorf("decoded body %q, want %q", r.Decoded, b.NDJSON())
					}
					if framing == httpsink.JSONArray {
						var arr []json.RawMessage
						if err := json.Unmarshal(r.Decoded, &arr); err != nil || !json.Valid(r.Decoded) {
							t.Fatalf("body is not a JSON array: %v: %q", err, r.Decoded)
						}
					}
					if len(r.Events) != b.Len() {
						t.Fatalf("%d events, want %d", len(r.Events), b.Len())
					}
					for i, e := range r.Events {
						if !bytes.Equal(e, b.Event(i).Payload) {
							t.Errorf("event %d = %q, want %q", i, e, b.Event(i).Payload)
						}
					}
				})
			}
		}
	}
}

func TestSendDuplicate(t *testing.T) {
	fl := newFakeLoader(t, nil)
	s := newSink(t, fl.URL())
	b := newBatch(t, "dup", 3)
	for range 2 {
		if err := s.Send(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	if got := fl.storedEvents(); len(got) != 3 {
		t.Fatalf("stored %v", got)
	}
}

// TestStatus checks each protocol response against the client rule.
func TestStatus(t *testing.T) {
	date := time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)
	type want struct {
		permanent  bool
		retryAfter time.Duration // -1: no RetryAfterError
		retryMin   time.Duration // for dates: lower bound
		code, line int
		message    string
	}
	for _, tc := range []struct {
		name string
		rep  reply
		want want
	}{
		{"400 with line", reply{400, `{"error":"line 3 is not a JSON object","line":3}`, nil}, want{true, -1, 0, 400, 3, "line 3 is not a JSON object"}},
		{"401", reply{401, `{"error":"missing token"}`, nil}, want{true, -1, 0, 401, 0, "missing token"}},
		{"415", reply{415, `{"error":"unsupported Content-Encoding"}`, nil}, want{true, -1, 0, 415, 0, "unsupported Content-Encoding"}},
		{"422 key reused", reply{422, `{"error":"Idempotency-Key \"k\" was already used for a batch with other content"}`, nil}, want{true, -1, 0, 422, 0, "already used for a batch with other content"}},
		{"404", reply{404, `{"error":"no such path"}`, nil}, want{true, -1, 0, 404, 0, "no such path"}},
		{"405 text body", reply{405, "method not allowed\n", nil}, want{true, -1, 0, 405, 0, "method not allowed"}},
		{"302 not followed", reply{302, "", map[string]string{"Location": "/elsewhere"}}, want{true, -1, 0, 302, 0, "(empty body)"}},
		{"429 seconds", reply{429, `{"error":"queue full"}`, map[string]string{"Retry-After": "7"}}, want{false, 7 * time.Second, 7 * time.Second, 429, 0, "queue full"}},
		{"429 date", reply{429, `{"error":"queue full"}`, map[string]string{"Retry-After": date}}, want{false, 3 * time.Second, time.Second, 429, 0, "queue full"}},
		{"429 zero", reply{429, `{"error":"queue full"}`, map[string]string{"Retry-After": "0"}}, want{false, 0, 0, 429, 0, "queue full"}},
		{"429 unparsable", reply{429, `{"error":"queue full"}`, map[string]string{"Retry-After": "soon"}}, want{false, -1, 0, 429, 0, "queue full"}},
		{"429 negative", reply{429, `{"error":"queue full"}`, map[string]string{"Retry-After": "-5"}}, want{false, -1, 0, 429, 0, "queue full"}},
		{"503 seconds", reply{503, `{"error":"shutting down"}`, map[string]string{"Retry-After": "2"}}, want{false, 2 * time.Second, 2 * time.Second, 503, 0, "shutting down"}},
		{"503 without Retry-After", reply{503, `{"error":"store down"}`, nil}, want{false, -1, 0, 503, 0, "store down"}},
		{"408", reply{408, `{"error":"request body not received in time"}`, nil}, want{false, -1, 0, 408, 0, "not received in time"}},
		{"408 with Retry-After", reply{408, `{"error":"slow body"}`, map[string]string{"Retry-After": "1"}}, want{false, time.Second, time.Second, 408, 0, "slow body"}},
		{"500", reply{500, `{"error":"boom"}`, nil}, want{false, -1, 0, 500, 0, "boom"}},
		{"502 html", reply{502, "<html>Bad Gateway</html>", nil}, want{false, -1, 0, 502, 0, "<html>Bad Gateway</html>"}},
		{"200 not JSON", reply{200, "<html>hello</html>", nil}, want{true, -1, 0, 200, 0, "not the protocol's"}},
		{"200 without accepted", reply{200, `{"ok":true}`, nil}, want{true, -1, 0, 200, 0, "not the protocol's"}},
		{"200 accepted mismatch", reply{200, `{"accepted":1,"duplicate":false}`, nil}, want{true, -1, 0, 200, 0, "loader accepted 1 of 2 events"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fl := newFakeLoader(t, func(f *fakeLoader) {
				f.respond = func(context.Context, int, *request) reply { return tc.rep }
			})
			s := newSink(t, fl.URL())
			err := s.Send(t.Context(), newBatch(t, "st", 2))
			if err == nil {
				t.Fatal("Send returned nil")
			}
			if got := batchproc.IsPermanent(err); got != tc.want.permanent {
				t.Errorf("IsPermanent = %v, want %v (%v)", got, tc.want.permanent, err)
			}
			var se *httpsink.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("%v is not a *StatusError", err)
			}
			if se.Code != tc.want.code || se.Line != tc.want.line || !strings.Contains(se.Message, tc.want.message) || se.Key != "st" {
				t.Errorf("StatusError %+v, want code %d line %d message ~%q key st", se, tc.want.code, tc.want.line, tc.want.message)
			}
			ra, isRA := errors.AsType[*batchproc.RetryAfterError](err)
			switch {
			case tc.want.retryAfter < 0 && isRA:
				t.Errorf("RetryAfterError %v, want none", ra)
			case tc.want.retryAfter >= 0 && !isRA:
				t.Errorf("no RetryAfterError in %v", err)
			case isRA && (ra.After < tc.want.retryMin || ra.After > tc.want.retryAfter || se.RetryAfter != ra.After):
				t.Errorf("retry after %v (StatusError %v), want in [%v, %v]", ra.After, se.RetryAfter, tc.want.retryMin, tc.want.retryAfter)
			}
			if !strings.Contains(err.Error(), "st") || !strings.Contains(err.Error(), tc.want.message) {
				t.Errorf("message %q lacks the key or the server's message", err)
			}
		})
	}
}

func TestStatusErrorMessage(t *testing.T) {
	err := &httpsink.StatusError{Code: 400, Message: "not a JSON object", Line: 3, Key: "p:1.0"}
	if got, want := err.Error(), "httpsink: batch p:1.0: 400 Bad Request: not a JSON object (line 3)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestSplit413 sends 7 events to a loader taking at most 2 per request:
// 7 -> 3 + 4 -> (1 + 2) + (2 + 2).
func TestSplit413(t *testing.T) {
	fl := newFakeLoader(t, func(f *fakeLoader) { f.maxEvents = 2 })
	s := newSink(t, fl.URL(), httpsink.WithCompression(httpsink.Gzip))
	b := newBatch(t, "big", 7)
	if err := s.Send(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"big", "big.0", "big.0.0", "big.0.1", "big.1", "big.1.0", "big.1.1"}
	if got := fl.keys(); !slices.Equal(got, wantKeys) {
		t.Errorf("keys %q, want %q", got, wantKeys)
	}
	checkStoredOnce(t, fl, b)
}

func checkStoredOnce(t *testing.T, fl *fakeLoader, b *batchproc.Batch) {
	t.Helper()
	got := fl.storedEvents()
	if len(got) != b.Len() {
		t.Errorf("%d distinct events stored, want %d", len(got), b.Len())
	}
	for i := range b.Len() {
		if n := got[string(b.Event(i).Payload)]; n != 1 {
			t.Errorf("event %d stored %d times", i, n)
		}
	}
}

func TestSingleEvent413(t *testing.T) {
	fl := newFakeLoader(t, func(f *fakeLoader) {
		f.respond = func(context.Context, int, *request) reply {
			return reply{Status: 413, Body: `{"error":"event line over 1 MiB"}`}
		}
	})
	s := newSink(t, fl.URL())
	err := s.Send(t.Context(), newBatch(t, "one", 1))
	var se *httpsink.StatusError
	if !batchproc.IsPermanent(err) || !errors.As(err, &se) || se.Code != 413 || se.Message != "event line over 1 MiB" {
		t.Fatalf("got %v, want a permanent 413 StatusError", err)
	}
	if n := len(fl.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// TestSplitRetry: after a split, the second half fails retryably; the retry
// of the whole batch resends the stored first half under its derived key,
// which the loader acknowledges as a duplicate: nothing is stored twice.
func TestSplitRetry(t *testing.T) {
	fl := newFakeLoader(t, func(f *fakeLoader) {
		f.maxEvents = 2
		f.respond = func(_ context.Context, n int, r *request) reply {
			if r.Key == "r.1" && n < 5 {
				return reply{Status: 503, Body: `{"error":"store down"}`, Headers: map[string]string{"Retry-After": "1"}}
			}
			return reply{}
		}
	})
	s := newSink(t, fl.URL())
	b := newBatch(t, "r", 4)

	err := s.Send(t.Context(), b)
	if batchproc.IsPermanent(err) {
		t.Fatalf("first send: %v, want retryable", err)
	}
	pe, ok := errors.AsType[*httpsink.PartialError](err)
	if !ok || pe.Stored != 2 || pe.Len != 4 || pe.Key != "r" {
		t.Fatalf("first send: %v, want a PartialError with 2 of 4 stored", err)
	}
	if ra, ok := errors.AsType[*batchproc.RetryAfterError](err); !ok || ra.After != time.Second {
		t.Errorf("first send: %v, want RetryAfter 1s", err)
	}

	if err := s.Send(t.Context(), b); err != nil { // the processor's retry
		t.Fatalf("retry: %v", err)
	}
	wantKeys := []string{"r", "r.0", "r.1", "r", "r.0", "r.1"}
	if got := fl.keys(); !slices.Equal(got, wantKeys) {
		t.Errorf("keys %q, want %q", got, wantKeys)
	}
	checkStoredOnce(t, fl, b)
}

// TestSplitPermanent: a 400 in the second half fails the batch permanently,
// with the part's key and line, and says how much was stored.
func TestSplitPermanent(t *testing.T) {
	fl := newFakeLoader(t, func(f *fakeLoader) {
		f.maxEvents = 2
		f.respond = func(_ context.Context, _ int, r *request) reply {
			if r.Key == "p.1" {
				return reply{Status: 400, Body: `{"error":"bad","line":2}`}
			}
			return reply{}
		}
	})
	s := newSink(t, fl.URL())
	err := s.Send(t.Context(), newBatch(t, "p", 4))
	se, ok := errors.AsType[*httpsink.StatusError](err)
	if !batchproc.IsPermanent(err) || !ok || se.Key != "p.1" || se.Line != 2 {
		t.Fatalf("got %v, want a permanent StatusError for p.1 line 2", err)
	}
	if pe, ok := errors.AsType[*httpsink.PartialError](err); !ok || pe.Stored != 2 {
		t.Fatalf("got %v, want a PartialError with 2 stored", err)
	}
	if pe, ok := errors.AsType[*batchproc.PartialError](err); !ok || pe.Delivered != 2 {
		t.Fatalf("got %v, want a batchproc.Partial with 2 delivered, for the processor", err)
	}
}

// TestTimeout: a loader that never answers; the per-request timeout ends
// the request with a retryable error, while ctx is still live.
func TestTimeout(t *testing.T) {
	fl := newFakeLoader(t, func(f *fakeLoader) {
		f.respond = func(ctx context.Context, _ int, _ *request) reply {
			<-ctx.Done() // until the client gives up
			return reply{Status: 500}
		}
	})
	s := newSink(t, fl.URL(), httpsink.WithTimeout(50*time.Millisecond))
	err := s.Send(t.Context(), newBatch(t, "slow", 1))
	if err == nil || batchproc.IsPermanent(err) || t.Context().Err() != nil {
		t.Fatalf("got %v, want a retryable error", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no response within 50ms") {
		t.Errorf("got %v, want a timeout naming 50ms", err)
	}
}

// TestContextCancel: cancelling Send's ctx ends a request under way at once
// (the timeout is the default 30 s) and returns ctx's error.
func TestContextCancel(t *testing.T) {
	arrived := make(chan struct{})
	fl := newFakeLoader(t, func(f *fakeLoader) {
		f.respond = func(ctx context.Context, _ int, _ *request) reply {
			close(arrived)
			<-ctx.Done()
			return reply{Status: 500}
		}
	})
	s := newSink(t, fl.URL())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Send(ctx, newBatch(t, "c", 1)) }()
	<-arrived
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not return after ctx was cancelled")
	}
}

// countingTransport counts the response body bytes the sink reads.
type countingTransport struct {
	rt   http.RoundTripper
	mu   sync.Mutex
	read int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, c: c}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	c *countingTransport
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.mu.Lock()
	b.c.read += int64(n)
	b.c.mu.Unlock()
	return n, err
}

func newTestTransport(t testing.TB) *http.Transport {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// TestEndlessResponseBody: a response body that never ends is read up to
// the cap, and Send returns.
func TestEndlessResponseBody(t *testing.T) {
	for _, status := range []int{200, 500} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			chunk := bytes.Repeat([]byte("x"), 32<<10)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(status)
				for { // until the client hangs up
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			}))
			t.Cleanup(srv.Close)
			ct := &countingTransport{rt: newTestTransport(t)}
			const limit = 4096
			s := newSink(t, srv.URL, httpsink.WithTransport(ct), httpsink.WithMaxResponseBody(limit))
			err := s.Send(t.Context(), newBatch(t, "endless", 1))
			if se, ok := errors.AsType[*httpsink.StatusError](err); !ok || se.Code != status {
				t.Fatalf("got %v, want a %d StatusError", err, status)
			}
			if status == 200 && !batchproc.IsPermanent(err) {
				t.Errorf("an over-long 200 answer should be permanent: %v", err)
			}
			ct.mu.Lock()
			read := ct.read
			ct.mu.Unlock()
			if read > limit+1 {
				t.Errorf("read %d bytes of the response body, cap %d", read, limit)
			}
		})
	}
}

// TestConnectionReuse: 100 sequential sends, with answers of every kind and
// error bodies of 8 KiB, go over one connection: every body is drained.
func TestConnectionReuse(t *testing.T) {
	long := strings.Repeat("e", 8<<10)
	fl := newFakeLoader(t, func(f *fakeLoader) {
		f.respond = func(_ context.Context, n int, _ *request) reply {
			switch n % 4 {
			case 1:
				return reply{Status: 503, Body: `{"error":"` + long + `"}`, Headers: map[string]string{"Retry-After": "1"}}
			case 2:
				return reply{Status: 400, Body: `{"error":"bad","line":1}`}
			case 3:
				return reply{Status: 500, Body: long}
			}
			return reply{}
		}
	})
	for _, comp := range []httpsink.Compression{httpsink.None, httpsink.Zstd} {
		fl.newConns.Store(0)
		s := newSink(t, fl.URL(), httpsink.WithCompression(comp))
		for i := range 100 {
			_ = s.Send(t.Context(), newBatch(t, "reuse-"+comp.String()+"-"+string(rune('a'+i%26)), 3))
		}
		if n := fl.newConns.Load(); n != 1 {
			t.Errorf("%s: 100 sends opened %d connections, want 1", comp, n)
		}
		s.Close()
	}
}

// TestOverCapDropsConnection is the converse: a body over the cap is not
// drained, so its connection is not reused.
func TestOverCapDropsConnection(t *testing.T) {
	long := strings.Repeat("e", 1024)
	fl := newFakeLoader(t, func(f *fakeLoader) {
		f.respond = func(_ context.Context, n int, _ *request) reply {
			return reply{Status: 500, Body: long}
		}
	})
	s := newSink(t, fl.URL(), httpsink.WithMaxResponseBody(512))
	for range 3 {
		_ = s.Send(t.Context(), newBatch(t, "cap", 1))
	}
	if n := fl.newConns.Load(); n != 3 {
		t.Errorf("3 sends with over-cap answers opened %d connections, want 3", n)
	}
}

// TestClose: Close closes the idle connections of the sink's own transport.
func TestClose(t *testing.T) {
	fl := newFakeLoader(t, nil)
	s := newSink(t, fl.URL())
	if err := s.Send(t.Context(), newBatch(t, "close", 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fl.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the server saw no connection closed after Close")
	}
}

// TestRedirect: a 307 is followed with the body replayed; a 302 is not.
func TestRedirect(t *testing.T) {
	fl := newFakeLoader(t, func(f *fakeLoader) {
		f.respond = func(_ context.Context, _ int, r *request) reply {
			if r.Path == "/old/v1/batches" {
				return reply{Status: 307, Headers: map[string]string{"Location": "/v1/batches"}}
			}
			return reply{}
		}
	})
	for _, comp := range []httpsink.Compression{httpsink.None, httpsink.Gzip} {
		s := newSink(t, fl.URL()+"/old/v1/batches", httpsink.WithCompression(comp))
		b := newBatch(t, "moved-"+comp.String(), 10)
		if err := s.Send(t.Context(), b); err != nil {
			t.Fatal(err)
		}
		reqs := fl.requests()
		last := reqs[len(reqs)-1]
		if last.Path != "/v1/batches" || !bytes.Equal(last.Decoded, b.NDJSON()) || last.Key != b.Key() {
			t.Errorf("%s: redirected request %s key %q body %q", comp, last.Path, last.Key, last.Decoded)
		}
	}
}

// TestSendConcurrentSafe runs sends of every encoding at once, so that the
// race detector sees the pooled buffers and compressors shared.
func TestSendConcurrentSafe(t *testing.T) {
	fl := newFakeLoader(t, nil)
	var sinks []*httpsink.Sink
	for _, f := range []httpsink.Framing{httpsink.NDJSON, httpsink.JSONArray} {
		for _, c := range []httpsink.Compression{httpsink.None, httpsink.Gzip, httpsink.Zstd} {
			sinks = append(sinks, newSink(t, fl.URL(), httpsink.WithFraming(f), httpsink.WithCompression(c)))
		}
	}
	var wg sync.WaitGroup
	var total int
	for i, s := range sinks {
		for j := range 4 {
			total += 10 * 20
			wg.Go(func() {
				for k := range 10 {
					b := newBatch(t, "cc"+string(rune('a'+i))+string(rune('a'+j))+string(rune('a'+k)), 20)
					if err := s.Send(t.Context(), b); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	wg.Wait()
	for _, r := range fl.requests() {
		if r.Err != "" {
			t.Error(r.Err)
		}
	}
	if n := len(fl.storedEvents()); n != total {
		t.Errorf("stored %d events, want %d", n, total)
	}
}

// TestNDJSONAllocsConstant: the NDJSON path allocates per batch, not per
// event: a batch 100 times larger costs (almost) no more allocations.
func TestNDJSONAllocsConstant(t *testing.T) {
	if testing.Short() {
		t.Skip("measures allocations")
	}
	srv := newDiscardServer(t, 0)
	s := newSink(t, srv.URL)
	small, large := newBatch(t, "s", 10), newBatch(t, "l", 1000)
	allocs := func(b *batchproc.Batch) float64 {
		return testing.AllocsPerRun(50, func() {
			if err := s.Send(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		})
	}
	as, al := allocs(small), allocs(large)
	if al > as+10 {
		t.Errorf("allocs per send: %v for 10 events, %v for 1,000", as, al)
	}
}
