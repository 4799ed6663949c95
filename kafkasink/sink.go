package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Record headers the sink sets. Consumers find a record's batch by them.
const (
	// HeaderBatchKey is on every record: the batch's idempotency key,
	// [batchproc.Batch.Key] (or a split part's derived key, see [Sink.Send]).
	HeaderBatchKey = "batchproc-batch-key"
	// HeaderIndex is on [PerEvent] records only: the event's 0-based index
	// in its batch, in decimal.
	HeaderIndex = "batchproc-index"
)

// Sink produces batches to one Kafka topic. Create it with [New]; it is
// safe for concurrent use by any number of goroutines.
type Sink struct {
	cl      *kgo.Client
	own     bool // the sink made cl, and closes it
	topic   string
	layout  Layout
	timeout time.Duration

	closeOnce sync.Once
}

var _ batchproc.Sink = (*Sink)(nil)

// New returns a sink producing to topic through a kgo client of its own,
// seeded with brokers ("host:port" addresses of some of the cluster's
// brokers), or through the client given by [WithClient], brokers then being
// nil.
//
// The sink makes its own client by default because its guarantees rest on
// how the client is set, and because it then owns the client's life:
// [Sink.Close] closes it. The client is kgo's default (idempotent writes,
// acks from all in-sync replicas, snappy compression, records up to
// kgo's 1,000,012-byte batch limit) with two changes: no linger (the
// processor has already batched, and Send waits for its records anyway) and
// kgo.AllowIdempotentProduceCancellation, so that a Send whose context ends
// returns promptly, even when a broker has stopped answering a request (see
// [Sink.Send]); writes stay idempotent, and kgo's own retries are still
// de-duplicated by the broker. [WithClientOptions] adds to or
// overrides these. New does not connect: the first Send does.
func New(brokers []string, topic string, opts ...Option) (*Sink, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if err := cfg.validate(brokers, topic); err != nil {
		return nil, err
	}
	s := &Sink{topic: topic, layout: cfg.layout, timeout: cfg.timeout, cl: cfg.client}
	if s.cl == nil {
		kopts := append([]kgo.Opt{
			kgo.SeedBrokers(brokers...),
			kgo.ProducerLinger(0),
			kgo.AllowIdempotentProduceCancellation(),
		}, cfg.clientOpts...)
		cl, err := kgo.NewClient(kopts...)
		if err != nil {
			return nil, fmt.Errorf("kafkasink: %w", err)
		}
		s.cl, s.own = cl, true
	}
	return s, nil
}

// Close closes the client [New] made, once; it leaves a client given with
// [WithClient] alone. Call it after the processor's Shutdown: records still
// buffered in the client fail (kgo's Close does not wait for them), and
// Send after Close fails permanently. It always returns nil, so that *Sink
// is an io.Closer.
func (s *Sink) Close() error {
	if s.own {
		s.closeOnce.Do(s.cl.Close)
	}
	return nil
}

// Send produces b to the topic, as [WithLayout] says, and returns once Kafka
// has acknowledged every record, or once every record has failed or been
// given up on. It classifies the outcome for the processor:
//
//   - every record acknowledged: nil. An empty batch produces nothing.
//   - a [PerBatch] record too large for the client's or the broker's limit
//     (kerr.MessageTooLarge or kerr.RecordListTooLarge), for a batch of two
//     events or more: the batch is split in halves ([batchproc.Batch.Split])
//     produced as records of their own under the derived keys, one after
//     the other, recursively; Send returns nil only if every part was
//     acknowledged, else the first failure, whose Key names the part.
//   - errors that will come back on a retry (a record or batch too large
//     that cannot be split, an authorization failure, an invalid record, a
//     topic that does not exist, a closed sink): a [batchproc.Permanent]
//     [*ProduceError].
//   - any other failure (brokers unreachable or not answering within
//     [WithTimeout], kgo's ErrRecordTimeout, ...): a retryable
//     *ProduceError. kgo has already retried what Kafka calls retriable.
//   - ctx done: ctx.Err().
//
// # The batch's memory
//
// The records' keys, values and headers alias b: the sink copies nothing.
// So Send does not return before kgo has finished with every record (kgo
// calls back once per record, after which it never reads it again); it
// never leaves a record behind in the client.
//
// # Context and duplicates
//
// When ctx ends (or WithTimeout runs out), kgo fails the records not yet
// written to a broker at once, and gives up on a request already on the
// wire: at once with the sink's own client (it allows idempotent produce
// cancellation), else when the broker answers, however long that takes.
// Send then returns. But the broker may append records that were on the
// wire all the same: an error from Send does not mean the batch is absent
// from Kafka, and the processor's retry may put it there twice. The same
// holds when a split batch failed after some parts were acknowledged.
// Every record carries its batch's key (or its part's derived key, the
// same on every attempt) so that consumers de-duplicate: the Batch Loader
// stores each key once.
func (s *Sink) Send(ctx context.Context, b *batchproc.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var err error
	if s.layout == PerEvent {
		err = s.sendEvents(sctx, b)
	} else {
		err = s.sendBatch(sctx, b)
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	}
	var pe *ProduceError
	if errors.As(err, &pe) && pe.permanent {
		return batchproc.Permanent(err)
	}
	return err
}

// sendBatch produces b as one record. A record too large for the client's
// or the broker's limit is split in halves produced one after the other
// (together they could land in one record batch of kgo's, too large again),
// recursively; the first failure ends the walk.
func (s *Sink) sendBatch(ctx context.Context, b *batchproc.Batch) error {
	key := []byte(b.Key())
	rec := &kgo.Record{
		Topic:   s.topic,
		Key:     key,
		Value:   b.NDJSON(),
		Headers: []kgo.RecordHeader{{Key: HeaderBatchKey, Value: key}},
	}
	err := s.cl.ProduceSync(ctx, rec).FirstErr()
	if err == nil {
		return nil
	}
	if isTooLarge(err) && b.Len() >= 2 && ctx.Err() == nil {
		left, right := b.Split()
		if err := s.sendBatch(ctx, left); err != nil {
			return err
		}
		return s.sendBatch(ctx, right)
	}
	return &ProduceError{Key: b.Key(), Failed: 1, Records: 1, Err: err, permanent: isPermanent(err)}
}

// sendEvents produces one record per event of b. The records' keys and
// index headers are packed in one buffer, their headers in one slice: a
// handful of allocations per batch, whatever its length.
func (s *Sink) sendEvents(ctx context.Context, b *batchproc.Batch) error {
	n := b.Len()
	size := 0
	for i := range n {
		size += len(b.Event(i).ID) + 20
	}
	buf := make([]byte, 0, size)
	recs := make([]kgo.Record, n)
	ptrs := make([]*kgo.Record, n)
	hdrs := make([]kgo.RecordHeader, 2*n)
	batchKey := []byte(b.Key())
	for i := range n {
		e := b.Event(i)
		r := &recs[i]
		r.Topic = s.topic
		r.Value = e.Payload
		if e.ID != "" {
			start := len(buf)
			buf = append(buf, e.ID...)
			r.Key = buf[start:len(buf):len(buf)]
		}
		start := len(buf)
		buf = strconv.AppendInt(buf, int64(i), 10)
		hdrs[2*i] = kgo.RecordHeader{Key: HeaderBatchKey, Value: batchKey}
		hdrs[2*i+1] = kgo.RecordHeader{Key: HeaderIndex, Value: buf[start:len(buf):len(buf)]}
		r.Headers = hdrs[2*i : 2*i+2 : 2*i+2]
		ptrs[i] = r
	}
	results := s.cl.ProduceSync(ctx, ptrs...)

	pe := &ProduceError{Key: b.Key(), Records: n}
	for _, res := range results {
		if res.Err == nil {
			continue
		}
		pe.Failed++
		if p := isPermanent(res.Err); pe.Err == nil || p && !pe.permanent {
			pe.Err, pe.permanent = res.Err, p
		}
	}
	if pe.Failed > 0 {
		return pe
	}
	return nil
}
