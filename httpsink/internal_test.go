package httpsink

import (
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
)

// TestFence: once closed, no reader of a body touches its memory again.
func TestFence(t *testing.T) {
	data := []byte("0123456789")
	f := newFence(data)
	p := make([]byte, 4)
	if n, err := f.first.Read(p); n != 4 || err != nil || string(p) != "0123" {
		t.Fatalf("Read = %d, %v, %q", n, err, p)
	}
	replay, err := f.getBody()
	if err != nil {
		t.Fatal(err)
	}
	if all, err := io.ReadAll(replay); err != nil || string(all) != string(data) {
		t.Fatalf("replayed body %q, %v", all, err)
	}
	f.close()
	if n, err := f.first.Read(p); n != 0 || !errors.Is(err, errBodyClosed) {
		t.Errorf("Read after close = %d, %v", n, err)
	}
	if _, err := f.getBody(); !errors.Is(err, errBodyClosed) {
		t.Errorf("getBody after close: %v", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{" 5 ", 5 * time.Second, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"5s", 0, false},
		{"soon", 0, false},
		{"99999999999999999999999", maxRetryAfter, true},
		{"86401", maxRetryAfter, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"Sun, 01 Mar 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Sunday, 01-Mar-26 12:00:30 GMT", 30 * time.Second, true}, // RFC 850
		{"Sun Mar  1 12:00:30 2026", 30 * time.Second, true},       // asctime
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestAppendJSONArray(t *testing.T) {
	b := newTestBatch(t, `{"a":1}`, `{}`, `{"b":"x,y"}`)
	if got, want := string(appendJSONArray([]byte("pre"), b)), `pre[{"a":1},{},{"b":"x,y"}]`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func newTestBatch(t *testing.T, payloads ...string) *batchproc.Batch {
	t.Helper()
	var events []batchproc.Event
	for _, p := range payloads {
		events = append(events, batchproc.Event{Payload: []byte(p)})
	}
	b, err := batchproc.NewBatch("k", events...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseServerTiming(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   time.Duration
		ok     bool
	}{
		{[]string{"ingest;dur=1.5"}, 1500 * time.Microsecond, true},
		{[]string{"ingest;dur=0"}, 0, true},
		{[]string{`cdn;dur=5, ingest;desc="a, b; c";dur=12.25`}, 12250 * time.Microsecond, true},
		{[]string{"cdn;dur=5", "Ingest ; DUR = 7"}, 7 * time.Millisecond, true},
		{[]string{`ingest;dur="3"`}, 3 * time.Millisecond, true},
		{[]string{"ingest;dur=2, ingest;dur=9"}, 2 * time.Millisecond, true}, // the first counts
		{[]string{"cdn;dur=5"}, 0, false},
		{[]string{"ingest"}, 0, false},
		{[]string{"ingest;desc=x"}, 0, false},
		{[]string{"ingest;dur=-1"}, 0, false},
		{[]string{"ingest;dur=NaN"}, 0, false},
		{[]string{"ingest;dur=Inf"}, 0, false},
		{[]string{"ingest;dur=1e300"}, 0, false},
		{[]string{"ingest;dur=soon"}, 0, false},
		{[]string{`x;desc="ingest;dur=1"`}, 0, false}, // inside a quoted desc
		{nil, 0, false},
	} {
		d, ok := parseServerTiming(tc.values)
		if d != tc.want || ok != tc.ok {
			t.Errorf("parseServerTiming(%q) = %v, %v; want %v, %v", tc.values, d, ok, tc.want, tc.ok)
		}
	}
}
