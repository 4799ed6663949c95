package batchproc_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/batchproc/batchproc"
)

func TestBatchViews(t *testing.T) {
	events := []batchproc.Event{
		{ID: "a", Payload: []byte(`{"a":1}`)},
		{ID: "b", Payload: []byte(`{"b":22}`)},
		{ID: "c", Payload: []byte(`{"c":333}`)},
		{ID: "d", Payload: []byte(`{}`)},
		{ID: "e", Payload: []byte(`[5]`)},
	}
	b, err := batchproc.NewBatch("k1", events...)
	if err != nil {
		t.Fatal(err)
	}
	if b.Key() != "k1" || b.Len() != 5 {
		t.Fatalf("key %q len %d", b.Key(), b.Len())
	}
	var want strings.Builder
	for i, e := range events {
		want.Write(e.Payload)
		want.WriteByte('\n')
		got := b.Event(i)
		if got.ID != e.ID || string(got.Payload) != string(e.Payload) {
			t.Fatalf("Event(%d) = %q %q", i, got.ID, got.Payload)
		}
	}
	if string(b.NDJSON()) != want.String() || b.Size() != want.Len() {
		t.Fatalf("NDJSON %q size %d", b.NDJSON(), b.Size())
	}

	// Split halves recursively; the views cover every event once, in order,
	// under derived keys, without copying.
	var leaves []*batchproc.Batch
	var walk func(*batchproc.Batch)
	walk = func(x *batchproc.Batch) {
		if x.Len() == 1 {
			leaves = append(leaves, x)
			return
		}
		l, r := x.Split()
		if l.Len()+r.Len() != x.Len() || string(l.NDJSON())+string(r.NDJSON()) != string(x.NDJSON()) {
			t.Fatalf("split of %s does not cover it", x.Key())
		}
		walk(l)
		walk(r)
	}
	walk(b)
	wantKeys := []string{"k1.0.0", "k1.0.1", "k1.1.0", "k1.1.1.0", "k1.1.1.1"}
	for i, l := range leaves {
		if l.Key() != wantKeys[i] || string(l.Event(0).Payload) != string(events[i].Payload) || l.Event(0).ID != events[i].ID {
			t.Fatalf("leaf %d: key %s payload %q", i, l.Key(), l.Event(0).Payload)
		}
		if string(l.NDJSON()) != string(events[i].Payload)+"\n" {
			t.Fatalf("leaf %d NDJSON %q", i, l.NDJSON())
		}
	}
	if &leaves[0].NDJSON()[0] != &b.NDJSON()[0] {
		t.Fatal("split copied the buffer")
	}

	if _, err := batchproc.NewBatch("k", batchproc.Event{Payload: []byte("a\nb")}); !errors.Is(err, batchproc.ErrInvalidEvent) {
		t.Fatalf("NewBatch with newline: %v", err)
	}
	empty, _ := batchproc.NewBatch("k")
	if empty.NDJSON() != nil || empty.Size() != 0 {
		t.Fatal("empty batch has bytes")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Split of one event did not panic")
		}
	}()
	leaves[0].Split()
}

func TestErrorHelpers(t *testing.T) {
	base := errors.New("x")
	if batchproc.Permanent(nil) != nil || batchproc.RetryAfter(nil, 1) != nil {
		t.Fatal("nil not kept nil")
	}
	p := batchproc.Permanent(base)
	if !errors.Is(p, base) || !batchproc.IsPermanent(p) || batchproc.IsPermanent(base) {
		t.Fatal("Permanent does not wrap or classify")
	}
	var ra *batchproc.RetryAfterError
	if !errors.As(batchproc.RetryAfter(base, -5), &ra) || ra.After != 0 || !errors.Is(ra, base) {
		t.Fatalf("RetryAfter: %+v", ra)
	}
}

// NDJSON of a Split half is capped: appending to the left half must not
// overwrite the right half's events.
func TestSplitNDJSONCapped(t *testing.T) {
	b, err := batchproc.NewBatch("k", batchproc.Event{Payload: []byte("aa")}, batchproc.Event{Payload: []byte("bb")})
	if err != nil {
		t.Fatal(err)
	}
	left, right := b.Split()
	_ = append(left.NDJSON(), "XXXX"...)
	if got := string(right.NDJSON()); got != "bb\n" {
		t.Fatalf("right half %q after appending to the left half", got)
	}
}

// Only a processor with a journal keeps a checksum of its batches'
// NDJSON; NewBatch and a Split half report none.
func TestNDJSONChecksumOnlyWithAJournal(t *testing.T) {
	b, err := batchproc.NewBatch("k", batchproc.Event{Payload: []byte(`{"a":1}`)}, batchproc.Event{Payload: []byte(`{"b":2}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.NDJSONChecksum(); ok {
		t.Error("NewBatch's batch has a checksum")
	}
	if l, _ := b.Split(); l != nil {
		if _, ok := l.NDJSONChecksum(); ok {
			t.Error("a Split half has a checksum")
		}
	}
	seen := make(chan bool, 1)
	p, err := batchproc.New(batchproc.SinkFunc(func(_ context.Context, b *batchproc.Batch) error {
		_, ok := b.NDJSONChecksum()
		seen <- ok
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Add(t.Context(), batchproc.Event{Payload: []byte(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if <-seen {
		t.Error("a processor without a journal kept a checksum")
	}
}
