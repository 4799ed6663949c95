package faults

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// server runs h behind a Handler planning f for every request and returns
// the handler and how many requests reached h.
func server(t *testing.T, f Fault) (*httptest.Server, *Handler, *atomic.Int64) {
	t.Helper()
	var served atomic.Int64
	h := &Handler{
		Next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.ReadAll(r.Body); err != nil {
				t.Error(err)
			}
			served.Add(1)
			_, _ = w.Write([]byte("ok"))
		}),
		Plan: func(int, *http.Request) Fault { return f },
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, h, &served
}

func post(c *http.Client, url string) (*http.Response, error) {
	body := bytes.Repeat([]byte("x"), 256<<10)
	resp, err := c.Post(url, "application/x-ndjson", bytes.NewReader(body))
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

func TestResetMidRequest(t *testing.T) {
	srv, h, served := server(t, ResetMidRequest)
	if _, err := post(srv.Client(), srv.URL); err == nil {
		t.Fatal("request through a reset succeeded")
	}
	if served.Load() != 0 || h.Injected(ResetMidRequest) == 0 {
		t.Fatalf("served %d, injected %d: the server must not see a reset request", served.Load(), h.Injected(ResetMidRequest))
	}
}

func TestDropAfterServe(t *testing.T) {
	srv, _, served := server(t, DropAfterServe)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := post(c, srv.URL); err == nil {
		t.Fatal("request whose answer was dropped succeeded")
	}
	if served.Load() < 1 {
		t.Fatal("the server did not handle the request")
	}
}

func TestDelayPastTimeout(t *testing.T) {
	srv, h, served := server(t, DelayPastTimeout)
	h.MaxDelay = time.Minute // the client's timeout must end the wait, not this
	c := &http.Client{Timeout: 200 * time.Millisecond}
	start := time.Now()
	_, err := post(c, srv.URL)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("want a client timeout, got %v", err)
	}
	// The server handles the request once the client gave up: wait for it
	// (bounded) by closing the server, which waits for its handlers.
	srv.Close()
	if served.Load() != 1 {
		t.Fatalf("served %d times, want 1 after the client gave up", served.Load())
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("took %v: the wait did not end with the client's timeout", d)
	}
}

func TestUnavailableRetryAfter(t *testing.T) {
	srv, h, served := server(t, UnavailableRetryAfter)
	h.RetryAfter = 1500 * time.Millisecond
	resp, err := post(srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "2" || served.Load() != 0 {
		t.Fatalf("got %d Retry-After %q, served %d: want 503, 2 (1.5 s rounded up), 0", resp.StatusCode, resp.Header.Get("Retry-After"), served.Load())
	}
}

func TestProxy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("up")) }))
	defer srv.Close()
	p, err := NewProxy(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() (string, error) {
		resp, err := c.Get("http://" + p.Addr())
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if got, err := get(); err != nil || got != "up" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	p.SetTarget("")
	if _, err := get(); !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
		t.Fatalf("with no target: %v, want a reset connection", err)
	}
	if p.Refused() != 1 {
		t.Fatalf("refused %d, want 1", p.Refused())
	}
	p.SetTarget(strings.TrimPrefix(srv.URL, "http://"))
	if got, err := get(); err != nil || got != "up" {
		t.Fatalf("target back: %q, %v", got, err)
	}
	c.CloseIdleConnections()
}
