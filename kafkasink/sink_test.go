package kafkasink_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/kafkasink"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const topic = "events"

// newCluster starts an in-process Kafka cluster (one broker unless opts
// say otherwise) with the topic "events" of 3 partitions.
func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newSink(t *testing.T, brokers []string, topic string, opts ...kafkasink.Option) *kafkasink.Sink {
	t.Helper()
	s, err := kafkasink.New(brokers, topic, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readAll returns every record of the topic: it lists the partitions' end
// offsets, then consumes from the start until it has read that many.
func readAll(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("listing end offsets: %v", err)
	}
	total := 0
	ends.Each(func(o kadm.ListedOffset) { total += int(o.Offset) })
	var recs []*kgo.Record
	for len(recs) < total {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records: %v", len(recs), total, err)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		recs = append(recs, fs.Records()...)
	}
	return recs
}

func header(r *kgo.Record, k string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

// events makes n events with distinct payloads; every fifth has no ID.
func events(n int) []batchproc.Event {
	es := make([]batchproc.Event, n)
	for i := range es {
		if i%5 != 0 {
			es[i].ID = "ev-" + strconv.Itoa(i)
		}
		es[i].Payload = fmt.Appendf(nil, `{"id":%q,"n":%d}`, es[i].ID, i)
	}
	return es
}

// runProcessor sends es through a processor over s, with small batches
// and several sends in flight, and checks that all were delivered.
func runProcessor(t *testing.T, s batchproc.Sink, es []batchproc.Event) batchproc.Stats {
	t.Helper()
	p, err := batchproc.New(s, batchproc.WithMaxBatchEvents(7), batchproc.WithMaxInFlight(4))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if err := p.Add(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Delivered != uint64(len(es)) || st.Failed != 0 {
		t.Fatalf("stats %+v, want %d delivered", st, len(es))
	}
	return st
}

// TestProcessorPerBatch: a real processor over the default layout; every
// record is one batch under its own key, and every event is in exactly one.
func TestProcessorPerBatch(t *testing.T) {
	c := newCluster(t, kfake.NumBrokers(3))
	s := newSink(t, c.ListenAddrs(), topic)
	es := events(200)
	st := runProcessor(t, s, es)

	recs := readAll(t, c.ListenAddrs(), topic)
	if uint64(len(recs)) != st.Batches {
		t.Errorf("%d records, want one per delivered batch: %d", len(recs), st.Batches)
	}
	seen := make(map[string]int)
	keys := make(map[string]bool)
	for _, r := range recs {
		hk, ok := header(r, kafkasink.HeaderBatchKey)
		if !ok || hk == "" || string(r.Key) != hk {
			t.Errorf("record key %q, batch key header %q (present %v): want equal, non-empty", r.Key, hk, ok)
		}
		if keys[hk] {
			t.Errorf("batch key %q in two records", hk)
		}
		keys[hk] = true
		if _, ok := header(r, kafkasink.HeaderIndex); ok {
			t.Errorf("per-batch record %q has an index header", hk)
		}
		if !bytes.HasSuffix(r.Value, []byte("\n")) {
			t.Errorf("record %q: value %q is not NDJSON", hk, r.Value)
		}
		for line := range strings.Lines(string(r.Value)) {
			seen[strings.TrimSuffix(line, "\n")]++
		}
	}
	for _, e := range es {
		if n := seen[string(e.Payload)]; n != 1 {
			t.Errorf("event %s in %d records, want 1", e.Payload, n)
		}
	}
	if len(seen) != len(es) {
		t.Errorf("%d distinct events in the topic, want %d", len(seen), len(es))
	}
}

// TestProcessorPerEvent: one record per event, keyed by the event's ID,
// with its batch's key and its index in the batch as headers.
func TestProcessorPerEvent(t *testing.T) {
	c := newCluster(t)
	s := newSink(t, c.ListenAddrs(), topic, kafkasink.WithLayout(kafkasink.PerEvent))
	es := events(200)
	byPayload := make(map[string]batchproc.Event)
	for _, e := range es {
		byPayload[string(e.Payload)] = e
	}
	st := runProcessor(t, s, es)

	recs := readAll(t, c.ListenAddrs(), topic)
	if len(recs) != len(es) {
		t.Errorf("%d records, want %d", len(recs), len(es))
	}
	seen := make(map[string]int)
	indexes := make(map[string][]int) // batch key -> indexes
	for _, r := range recs {
		seen[string(r.Value)]++
		e, ok := byPayload[string(r.Value)]
		if !ok {
			t.Errorf("unknown record value %q", r.Value)
			continue
		}
		if string(r.Key) != e.ID || (e.ID == "") != (r.Key == nil) {
			t.Errorf("record %s: key %q, want the event ID %q (none when empty)", r.Value, r.Key, e.ID)
		}
		hk, ok1 := header(r, kafkasink.HeaderBatchKey)
		hi, ok2 := header(r, kafkasink.HeaderIndex)
		i, err := strconv.Atoi(hi)
		if !ok1 || !ok2 || hk == "" || err != nil {
			t.Errorf("record %s: headers %v", r.Value, r.Headers)
			continue
		}
		indexes[hk] = append(indexes[hk], i)
	}
	for _, e := range es {
		if n := seen[string(e.Payload)]; n != 1 {
			t.Errorf("event %s in %d records, want 1", e.Payload, n)
		}
	}
	if uint64(len(indexes)) != st.Batches {
		t.Errorf("%d batch keys, want %d", len(indexes), st.Batches)
	}
	for k, is := range indexes {
		slices.Sort(is)
		for j, i := range is {
			if i != j {
				t.Errorf("batch %s: indexes %v, want 0..%d", k, is, len(is)-1)
				break
			}
		}
	}
}

// TestSplitTooLarge: a batch larger than a record may be is split in
// halves under derived keys until each fits, whether the client or the
// broker enforces the limit; every event still lands exactly once.
func TestSplitTooLarge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster []kfake.Opt
		sink    []kafkasink.Option
	}{
		{"client limit", nil, []kafkasink.Option{kafkasink.WithClientOptions(kgo.ProducerBatchMaxBytes(1024))}},
		{"broker limit", []kfake.Opt{kfake.BrokerConfigs(map[string]string{"message.max.bytes": "1024"})},
			// Uncompressed, or the padding would shrink below the limit.
			[]kafkasink.Option{kafkasink.WithClientOptions(kgo.ProducerBatchCompression(kgo.NoCompression()))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, tc.cluster...)
			s := newSink(t, c.ListenAddrs(), topic, tc.sink...)
			es := events(40) // about 3,800 bytes of NDJSON
			for i := range es {
				es[i].Payload = fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 80))
			}
			b, err := batchproc.NewBatch("k1", es...)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(t.Context(), b); err != nil {
				t.Fatalf("Send: %v", err)
			}
			recs := readAll(t, c.ListenAddrs(), topic)
			if len(recs) < 2 {
				t.Fatalf("%d records, want the batch split", len(recs))
			}
			seen := make(map[string]int)
			keys := make(map[string]bool)
			for _, r := range recs {
				k := string(r.Key)
				if hk, _ := header(r, kafkasink.HeaderBatchKey); hk != k || !strings.HasPrefix(k, "k1.") || keys[k] {
					t.Errorf("record key %q, header %q: want a distinct derived key k1.…", k, hk)
				}
				keys[k] = true
				for line := range strings.Lines(string(r.Value)) {
					seen[strings.TrimSuffix(line, "\n")]++
				}
			}
			for _, e := range es {
				if seen[string(e.Payload)] != 1 {
					t.Errorf("event %d in %d records, want 1", e.Payload[5], seen[string(e.Payload)])
				}
			}
		})
	}
}

// TestPermanentErrors: failures a retry cannot fix are Permanent, carry
// the broker's error, and the processor gives the batch up at once.
func TestPermanentErrors(t *testing.T) {
	c := newCluster(t)
	big := batchproc.Event{Payload: fmt.Appendf(nil, `{"pad":"%s"}`, strings.Repeat("x", 2000))}

	t.Run("event too large", func(t *testing.T) {
		for _, layout := range []kafkasink.Layout{kafkasink.PerBatch, kafkasink.PerEvent} {
			s := newSink(t, c.ListenAddrs(), topic, kafkasink.WithLayout(layout),
				kafkasink.WithClientOptions(kgo.ProducerBatchMaxBytes(1024)))
			b, _ := batchproc.NewBatch("big", big)
			err := s.Send(t.Context(), b)
			var pe *kafkasink.ProduceError
			if !batchproc.IsPermanent(err) || !errors.Is(err, kerr.MessageTooLarge) || !errors.As(err, &pe) || pe.Key != "big" || pe.Failed != 1 {
				t.Errorf("%v: Send: %v, want a permanent *ProduceError for key big wrapping MESSAGE_TOO_LARGE", layout, err)
			}
		}
	})

	t.Run("unknown topic", func(t *testing.T) {
		// kfake creates no topic on its own: kgo gives up after
		// UnknownTopicRetries metadata refreshes.
		s := newSink(t, c.ListenAddrs(), "missing", kafkasink.WithClientOptions(
			kgo.UnknownTopicRetries(1), kgo.MetadataMinAge(10*time.Millisecond), kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond })))
		b, _ := batchproc.NewBatch("k", batchproc.Event{Payload: []byte(`{}`)})
		err := s.Send(t.Context(), b)
		if !batchproc.IsPermanent(err) || !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Errorf("Send: %v, want permanent UNKNOWN_TOPIC_OR_PARTITION", err)
		}
	})

	t.Run("closed sink", func(t *testing.T) {
		s := newSink(t, c.ListenAddrs(), topic)
		s.Close()
		b, _ := batchproc.NewBatch("k", batchproc.Event{Payload: []byte(`{}`)})
		if err := s.Send(t.Context(), b); !batchproc.IsPermanent(err) || !errors.Is(err, kgo.ErrClientClosed) {
			t.Errorf("Send after Close: %v, want permanent ErrClientClosed", err)
		}
	})

	t.Run("processor gives up at once", func(t *testing.T) {
		s := newSink(t, c.ListenAddrs(), topic, kafkasink.WithClientOptions(kgo.ProducerBatchMaxBytes(1024)))
		var mu sync.Mutex
		var failed []error
		p, err := batchproc.New(s, batchproc.WithOnFailure(func(_ *batchproc.Batch, err error) {
			mu.Lock()
			failed = append(failed, err)
			mu.Unlock()
		}))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Add(t.Context(), big); err != nil {
			t.Fatal(err)
		}
		if err := p.Shutdown(t.Context()); !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("Shutdown: %v, want the failure reported", err)
		}
		st := p.Stats()
		if st.Failed != 1 || st.Retries != 0 || len(failed) != 1 || !errors.Is(failed[0], kerr.MessageTooLarge) {
			t.Errorf("stats %+v, failures %v: want 1 failed without retries", st, failed)
		}
	})
}

// deadAddr returns a local address nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestUnreachableRetryable: brokers that cannot be reached make a
// retryable error once WithTimeout runs out.
func TestUnreachableRetryable(t *testing.T) {
	s := newSink(t, []string{deadAddr(t)}, topic, kafkasink.WithTimeout(200*time.Millisecond))
	b, _ := batchproc.NewBatch("k", batchproc.Event{Payload: []byte(`{}`)})
	err := s.Send(t.Context(), b)
	var pe *kafkasink.ProduceError
	if err == nil || batchproc.IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &pe) {
		t.Fatalf("Send: %v, want a retryable *ProduceError after the timeout", err)
	}
	if !strings.Contains(err.Error(), "in time") {
		t.Errorf("message %q does not say it timed out", err)
	}
}

// bufferedHook tells when kgo has buffered a record.
type bufferedHook chan struct{}

func (h bufferedHook) OnProduceRecordBuffered(*kgo.Record) {
	select {
	case h <- struct{}{}:
	default:
	}
}

// TestContextCancelWaiting: records waiting for a broker fail as soon as
// ctx ends, and Send returns ctx's error, long before its 30 s timeout.
func TestContextCancelWaiting(t *testing.T) {
	buffered := make(bufferedHook, 1)
	s := newSink(t, []string{deadAddr(t)}, topic, kafkasink.WithClientOptions(kgo.WithHooks(buffered)))
	b, _ := batchproc.NewBatch("k", events(10)...)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Send(ctx, b) }()
	<-buffered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Send: %v, want context.Canceled", err)
	}
}

// TestContextCancelOnTheWire: ctx ends while the produce request is with
// the broker. kgo gives the record up at once (the sink's client allows
// idempotent produce cancellation), so Send returns ctx's error without
// waiting for the broker; the broker then appends the batch all the same:
// an error from Send does not mean the batch is absent from Kafka. Once
// Send has returned the batch's memory is the caller's again: overwriting
// it changes nothing in Kafka (and the race detector sees no read after
// the return).
func TestContextCancelOnTheWire(t *testing.T) {
	c := newCluster(t)
	held := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(held)
			c.SleepControl(func() { <-release })
		})
		return nil, nil, false // then let the cluster handle it
	})
	s := newSink(t, c.ListenAddrs(), topic)
	b, _ := batchproc.NewBatch("k", batchproc.Event{Payload: []byte(`{"v":"original"}`)})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Send(ctx, b) }()
	<-held
	cancel()
	err := <-done
	close(release)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Send: %v, want context.Canceled", err)
	}
	copy(b.Event(0).Payload, `{"v":"overwrite"}`)

	recs := readAll(t, c.ListenAddrs(), topic)
	if len(recs) != 1 || string(recs[0].Value) != "{\"v\":\"original\"}\n" || string(recs[0].Key) != "k" {
		t.Fatalf("topic holds %d records (first %q), want the original batch once", len(recs), recs[0].Value)
	}
}

func TestNewInvalid(t *testing.T) {
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ok := []string{"127.0.0.1:9092"}
	for _, tc := range []struct {
		name    string
		brokers []string
		topic   string
		opts    []kafkasink.Option
		want    string
	}{
		{"no brokers", nil, topic, nil, "no seed brokers"},
		{"empty broker", []string{""}, topic, nil, "empty address"},
		{"space in broker", []string{"a b:9092"}, topic, nil, "space"},
		{"empty topic", ok, "", nil, "empty topic"},
		{"bad topic", ok, "a/b", nil, "invalid character"},
		{"dot topic", ok, "..", nil, `".."`},
		{"long topic", ok, strings.Repeat("t", 250), nil, "249"},
		{"layout", ok, topic, []kafkasink.Option{kafkasink.WithLayout(7)}, "unknown layout"},
		{"timeout", ok, topic, []kafkasink.Option{kafkasink.WithTimeout(0)}, "must be positive"},
		{"nil client", nil, topic, []kafkasink.Option{kafkasink.WithClient(nil)}, "WithClient(nil)"},
		{"client and brokers", ok, topic, []kafkasink.Option{kafkasink.WithClient(cl)}, "brokers given with WithClient"},
		{"client and options", nil, topic, []kafkasink.Option{kafkasink.WithClient(cl), kafkasink.WithClientOptions(kgo.ProducerLinger(0))}, "exclude each other"},
	} {
		s, err := kafkasink.New(tc.brokers, tc.topic, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "kafkasink: ") {
			t.Errorf("%s: New: %v, want an error containing %q", tc.name, err, tc.want)
		}
		if s != nil {
			t.Errorf("%s: New returned a sink with its error", tc.name)
		}
	}
	// A client given with WithClient is left open by Close.
	s, err := kafkasink.New(nil, topic, kafkasink.WithClient(cl))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	pctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := cl.Ping(pctx); errors.Is(err, kgo.ErrClientClosed) {
		t.Errorf("Close closed the caller's client")
	}
}

func TestLayoutString(t *testing.T) {
	for l, want := range map[kafkasink.Layout]string{kafkasink.PerBatch: "per-batch", kafkasink.PerEvent: "per-event", 9: "Layout(9)"} {
		if got := l.String(); got != want {
			t.Errorf("%d: %q, want %q", int(l), got, want)
		}
	}
}
