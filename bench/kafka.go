package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/kafkasink"
	"github.com/batchproc/batchproc/loader"
)

// Sinks (-sink): how the designs reach the loader.
const (
	SinkHTTP  = "http"  // POST /v1/batches (httpsink; the harness's poster for the others)
	SinkKafka = "kafka" // produce to an in-process Kafka topic the loader consumes
)

// kafkaTopic is the topic of a -sink kafka run; each design run has a
// cluster of its own, so the name never holds another run's records.
const kafkaTopic = "batchbench"

// kafkaClientOpts are added to every kgo client of a -sink kafka run.
// kgo pushes client metrics (KIP-714) to brokers that ask for them, as kfake
// does, every few seconds from each client: a per-client cost (some MiB of
// compression buffers per push) that would swamp the per-event figures, and
// that a broker without a metrics plugin does not ask for.
var kafkaClientOpts = []kgo.Opt{kgo.DisableClientMetrics()}

// kafkaTarget is where a design produces with -sink kafka.
type kafkaTarget struct {
	brokers []string
	topic   string
	stats   *sendStats // the run's produce calls
}

// kafkaEndpoint is the receiving side of a -sink kafka run: an in-process
// Kafka cluster (kfake, one broker) with the run's topic, and a fresh Batch
// Loader consuming it with its Kafka consumer (loader.Config.Kafka,
// ServeKafka) into the same stores, through the same recordingStore, as the
// HTTP path. The loader serves no HTTP.
type kafkaEndpoint struct {
	cluster *kfake.Cluster
	srv     *loader.Server
	st      *recordingStore
	rec     *receiver
	done    chan error // ServeKafka's result
	dir     string     // temporary directory of the SQLite file, removed at Close
	logCl   io.Closer
}

// startKafkaLoader starts the cluster and the consuming loader. Both run
// under side=loader (their goroutines inherit the label), so that the CPU
// profile leaves them out like the HTTP loader.
func startKafkaLoader(kind string, logW io.WriteCloser) (e *kafkaEndpoint, err error) {
	e = &kafkaEndpoint{rec: newReceiver(), logCl: logW}
	defer func() {
		if err != nil {
			e.cleanup()
		}
	}()
	inner, dir, err := openStore(kind)
	if err != nil {
		return nil, err
	}
	e.dir = dir
	e.st = &recordingStore{inner: inner, rec: e.rec, handled: make(chan struct{}, 1)}
	pprof.Do(context.Background(), pprof.Labels(labelSide, sideLoader), func(context.Context) {
		e.cluster, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(-1, kafkaTopic))
	})
	if err != nil {
		inner.Close()
		return nil, fmt.Errorf("bench: in-process Kafka: %w", err)
	}
	e.srv, err = loader.New(loader.Config{
		Store: e.st,
		Kafka: &loader.KafkaConfig{Brokers: e.cluster.ListenAddrs(), Topic: kafkaTopic,
			ClientOptions: kafkaClientOpts},
		Logger: loaderLogger(logW),
	})
	if err != nil {
		inner.Close()
		return nil, err
	}
	e.done = serveLabelled(nil, nil, func(net.Listener) error { return e.srv.ServeKafka() })
	return e, nil
}

// URL names the cluster; no design posts to it.
func (e *kafkaEndpoint) URL() string { return "kafka://" + strings.Join(e.cluster.ListenAddrs(), ",") }

// Delivered is the store's own count of events stored in this run.
func (e *kafkaEndpoint) Delivered(context.Context) (int64, error) {
	return e.st.Counts().Events, nil
}

func (e *kafkaEndpoint) E2E() *hdrhistogram.Histogram { return e.rec.histogram() }

// settle waits, after the design's Shutdown, for the consumer to be done
// with every record in the topic: the store has returned without error
// (stored, or a duplicate) as many times as the topic holds records (the
// sum of its partitions' end offsets; nothing is transactional or
// compacted, so offsets count records). Kafka decouples the two sides: a
// design is finished once Kafka acknowledged its records, which the loader
// may not have stored yet. A record the loader rejects (logged in
// loader.log) is never stored: settle then waits until ctx ends.
func (e *kafkaEndpoint) settle(ctx context.Context) error {
	var want int64
	var err error
	pprof.Do(ctx, pprof.Labels(labelSide, sideHarness), func(ctx context.Context) {
		var cl *kgo.Client
		if cl, err = kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.cluster.ListenAddrs()...)}, kafkaClientOpts...)...); err != nil {
			return
		}
		defer cl.Close()
		var ends kadm.ListedOffsets
		if ends, err = kadm.NewClient(cl).ListEndOffsets(ctx, kafkaTopic); err == nil {
			err = ends.Error()
		}
		ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	})
	if err != nil {
		return fmt.Errorf("listing the topic's end offsets: %w", err)
	}
	for {
		got := e.st.done.Load()
		if got >= want {
			return nil
		}
		select {
		case <-e.st.handled:
		case <-ctx.Done():
			return fmt.Errorf("the loader consumed %d of the topic's %d records: %w", got, want, ctx.Err())
		}
	}
}

// Close stops the loader (its consumer commits and leaves the group, then
// the store is closed), then the cluster.
func (e *kafkaEndpoint) Close(ctx context.Context) error {
	err := e.srv.Shutdown(ctx)
	if serr := <-e.done; err == nil {
		err = serr
	}
	e.cluster.Close()
	e.cleanup()
	return err
}

func (e *kafkaEndpoint) cleanup() {
	if e.logCl != nil {
		e.logCl.Close()
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

// kafkaProducer is the Kafka variant of the poster, for the designs that
// have no sink of their own (the seed's and the OpenTelemetry peer's): each
// send produces its NDJSON body as one record, laid out as kafkasink's
// PerBatch records are, so that the loader stores and de-duplicates it the
// same way: the key and the batchproc-batch-key header are the batch's
// idempotency key. The client is set as kafkasink sets its own (no linger,
// cancellable idempotent produce), and as the harness sets kafkasink's (no
// KIP-714 client metrics, see kafkaClientOpts).
type kafkaProducer struct {
	cl     *kgo.Client
	topic  string
	stats  *sendStats
	prefix string // of the keys made for sends without one
	seq    atomic.Uint64
}

func newKafkaProducer(t *kafkaTarget) (*kafkaProducer, error) {
	var r [6]byte
	_, _ = rand.Read(r[:])
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(t.brokers...),
		kgo.ProducerLinger(0),
		kgo.AllowIdempotentProduceCancellation(),
	}, kafkaClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("bench: Kafka producer: %w", err)
	}
	return &kafkaProducer{cl: cl, topic: t.topic, stats: t.stats, prefix: "bench-" + hex.EncodeToString(r[:]) + "-"}, nil
}

// send produces body as one record and waits for Kafka's acknowledgement
// (at most kafkasink.DefaultTimeout). The seed's designs and the peer send
// no key: each send gets a fresh one, so that only a record Kafka itself
// duplicated would be stored once instead of twice. Like the HTTP
// poster's, a failure is retryable unless it cannot succeed later.
func (p *kafkaProducer) send(ctx context.Context, body []byte, key string) error {
	if key == "" {
		key = p.prefix + strconv.FormatUint(p.seq.Add(1), 10)
	}
	k := []byte(key)
	rec := &kgo.Record{
		Topic:   p.topic,
		Key:     k,
		Value:   body,
		Headers: []kgo.RecordHeader{{Key: kafkasink.HeaderBatchKey, Value: k}},
	}
	ctx, cancel := context.WithTimeout(ctx, kafkasink.DefaultTimeout)
	defer cancel()
	p.stats.begin()
	err := p.cl.ProduceSync(ctx, rec).FirstErr()
	p.stats.end(err != nil)
	if errors.Is(err, kgo.ErrClientClosed) {
		return batchproc.Permanent(err)
	}
	return err
}

// Close closes the client, after the design's Shutdown.
func (p *kafkaProducer) Close() { p.cl.Close() }

// countingSink counts kafkasink's sends (one produce call per batch) as the
// counting transport counts httpsink's requests.
type countingSink struct {
	sink  batchproc.Sink
	stats *sendStats
}

func (s *countingSink) Send(ctx context.Context, b *batchproc.Batch) error {
	s.stats.begin()
	err := s.sink.Send(ctx, b)
	s.stats.end(err != nil)
	return err
}
