package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/bench/seeddesigns"
	"github.com/batchproc/batchproc/httpsink"
	"github.com/batchproc/batchproc/kafkasink"
	"go.opentelemetry.io/otel/attribute"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
)

// Design names, exactly as the -designs flag takes them.
const (
	SeedPool10        = "seed-pool-10"
	SeedPool100       = "seed-pool-100"
	SeedAsync         = "seed-async"
	Batchproc         = "batchproc"
	BatchprocPool10   = "batchproc-pool-10"
	BatchprocOrdered  = "batchproc-ordered"
	OtelLog           = "otel-log"
	SeedAsyncDefaultT = "seed-async-default-transport" // seed-async on Go's default transport, reported once
	// Calibration is the no-op design run under the same load as the
	// others when they run isolated: its process's CPU is the load
	// generator's (and the harness's), which is subtracted from theirs.
	Calibration = "calibration-noop"
)

// AllDesigns is the default -designs list, in report order. The
// default-transport variant of seed-async is run once, in fixed mode.
var AllDesigns = []string{SeedPool10, SeedPool100, SeedAsync, Batchproc, BatchprocSpool, BatchprocPool10, BatchprocOrdered, OtelLog}

// designEnv is what a design is built with.
type designEnv struct {
	url       string            // the receiving side's base URL (-sink http)
	transport http.RoundTripper // the run's (counting) transport (-sink http)
	poster    *poster           // posts over transport (-sink http)
	// send delivers one NDJSON body, for the designs without a sink of
	// their own (the seed's and the OpenTelemetry peer's): poster.post, or
	// with -sink kafka kafkaProducer.send. key may be "".
	send      func(ctx context.Context, body []byte, key string) error
	kafka     *kafkaTarget // the topic batchproc's kafkasink produces to; nil: httpsink
	logger    *slog.Logger // the design's log; count=N lines are summed from it
	seedQueue int          // the seed designs' channel capacity
}

type designSpec struct {
	name string
	doc  string
	// defaultTransport: post with a clone of http.DefaultTransport (two idle
	// connections per host) instead of the shared configuration.
	defaultTransport bool
	newClient        func(env designEnv) (Client, error)
}

var designSpecs = map[string]designSpec{
	SeedPool10: {name: SeedPool10, doc: "seed design 1: 10 workers, shared unbuffered queue, sync sends",
		newClient: func(env designEnv) (Client, error) { return newSeedClient(env, 10), nil }},
	SeedPool100: {name: SeedPool100, doc: "seed design 1: 100 workers",
		newClient: func(env designEnv) (Client, error) { return newSeedClient(env, 100), nil }},
	SeedAsync: {name: SeedAsync, doc: "seed design 2: 1 worker, deepCopy, one goroutine per send (unbounded)",
		newClient: func(env designEnv) (Client, error) { return newSeedClient(env, 0), nil }},
	SeedAsyncDefaultT: {name: SeedAsyncDefaultT, doc: "seed design 2 on Go's default HTTP transport", defaultTransport: true,
		newClient: func(env designEnv) (Client, error) { return newSeedClient(env, 0), nil }},
	Batchproc: {name: Batchproc, doc: "batchproc, default options",
		newClient: func(env designEnv) (Client, error) { return newBatchprocClient(env) }},
	BatchprocPool10: {name: BatchprocPool10, doc: "batchproc WithWorkerPool(10)",
		newClient: func(env designEnv) (Client, error) {
			return newBatchprocClient(env, batchproc.WithWorkerPool(10))
		}},
	BatchprocOrdered: {name: BatchprocOrdered, doc: "batchproc WithOrdered (one send at a time)",
		newClient: func(env designEnv) (Client, error) { return newBatchprocClient(env, batchproc.WithOrdered()) }},
	Calibration: {name: Calibration, doc: "calibration: Add returns at once and keeps nothing",
		newClient: func(designEnv) (Client, error) { return noopClient{}, nil }},
	OtelLog: {name: OtelLog, doc: "OpenTelemetry Go sdk/log BatchProcessor (batch 1,000, 1 s), NDJSON exporter",
		newClient: func(env designEnv) (Client, error) { return newOtelClient(env), nil }},
}

// FixedLimits are the fixed send limits batchbench sets the adaptive one
// against: design batchproc-fixed-N is batchproc with WithMaxInFlight(N).
var FixedLimits = []int{1, 4, 16, 64, 256}

// FixedDesign names the batchproc design with a fixed send limit n.
func FixedDesign(n int) string { return "batchproc-fixed-" + strconv.Itoa(n) }

func init() {
	for _, n := range FixedLimits {
		designSpecs[FixedDesign(n)] = designSpec{name: FixedDesign(n),
			doc: "batchproc WithMaxInFlight(" + strconv.Itoa(n) + "): a fixed send limit instead of the adaptive one",
			newClient: func(env designEnv) (Client, error) {
				return newBatchprocClient(env, batchproc.WithMaxInFlight(n))
			}}
	}
}

// ParseDesigns checks a -designs list ("" or "all": every design).
func ParseDesigns(list string) ([]string, error) {
	if list == "" || list == "all" {
		return append([]string(nil), AllDesigns...), nil
	}
	var out []string
	seen := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		if _, ok := designSpecs[n]; !ok {
			return nil, fmt.Errorf("bench: unknown design %q (known: %s, %s, batchproc-fixed-{1,4,16,64,256})", n, strings.Join(AllDesigns, ", "), SeedAsyncDefaultT)
		}
		seen[n] = true
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: -designs %q names no design", list)
	}
	return out, nil
}

// noopClient is the calibration design: it takes every event and does
// nothing with it.
type noopClient struct{}

func (noopClient) Add(context.Context, string, []byte) error { return nil }
func (noopClient) Shutdown(context.Context) error            { return nil }

// seedClient adapts the seed's BatchProcessor. workers 0 means design 2.
type seedClient struct{ q *seeddesigns.BatchProcessor }

func newSeedClient(env designEnv, workers int) *seedClient {
	cfg := seeddesigns.Config{
		Send: func(ctx context.Context, payload []byte, _ []string) error {
			return env.send(ctx, payload, "") // the seed sent no idempotency key
		},
		Logger:    env.logger,
		QueueSize: env.seedQueue,
	}
	if workers == 0 {
		return &seedClient{seeddesigns.NewAsync(cfg)}
	}
	return &seedClient{seeddesigns.NewWorkerPool(workers, cfg)}
}

func (c *seedClient) Add(ctx context.Context, id string, payload []byte) error {
	return c.q.Add(ctx, seeddesigns.Event{TraceID: id, Payload: payload})
}
func (c *seedClient) Shutdown(ctx context.Context) error { return c.q.Stop(ctx) }

// batchprocClient is the library with its HTTP sink (package httpsink), over
// the shared transport configuration, or with -sink kafka its Kafka sink
// (package kafkasink, default options: one record per batch).
type batchprocClient struct {
	p    *batchproc.Processor
	sink io.Closer
}

func newBatchprocClient(env designEnv, opts ...batchproc.Option) (*batchprocClient, error) {
	var sink batchproc.Sink
	var closer io.Closer
	if env.kafka != nil {
		ks, err := kafkasink.New(env.kafka.brokers, env.kafka.topic, kafkasink.WithClientOptions(kafkaClientOpts...))
		if err != nil {
			return nil, err
		}
		sink, closer = &countingSink{sink: ks, stats: env.kafka.stats}, ks
	} else {
		hs, err := httpsink.New(env.url, httpsink.WithTransport(env.transport))
		if err != nil {
			return nil, err
		}
		sink, closer = hs, hs
	}
	opts = append([]batchproc.Option{batchproc.WithLogger(env.logger)}, opts...)
	p, err := batchproc.New(sink, opts...)
	if err != nil {
		closer.Close()
		return nil, err
	}
	return &batchprocClient{p: p, sink: closer}, nil
}

func (c *batchprocClient) Add(ctx context.Context, id string, payload []byte) error {
	return c.p.Add(ctx, batchproc.Event{ID: id, Payload: payload})
}
func (c *batchprocClient) Shutdown(ctx context.Context) error {
	err := c.p.Shutdown(ctx)
	c.sink.Close()
	return err
}

// otelClient is the peer: an OpenTelemetry LoggerProvider with the sdk/log
// BatchProcessor (export batches of 1,000 and a 1 s interval, as the seed;
// the queue keeps its default of 2,048 and drops records when full) and an
// exporter that posts the records' bodies as NDJSON to the same loader (or
// produces them as one record, with -sink kafka).
type otelClient struct {
	provider *sdklog.LoggerProvider
	logger   otellog.Logger
}

func newOtelClient(env designEnv) *otelClient {
	exp := &ndjsonExporter{send: env.send, log: env.logger}
	bp := sdklog.NewBatchProcessor(exp,
		sdklog.WithExportMaxBatchSize(seeddesigns.DefaultBufferLimit),
		sdklog.WithExportInterval(seeddesigns.DefaultInterval))
	provider := sdklog.NewLoggerProvider(sdklog.WithProcessor(bp))
	return &otelClient{provider: provider, logger: provider.Logger("batchbench")}
}

// Add emits one record whose body is the event. Emit reports nothing: a
// record the full queue drops is lost without the caller knowing, so every
// Add counts as offered.
func (c *otelClient) Add(ctx context.Context, _ string, payload []byte) error {
	var r otellog.Record
	r.SetTimestamp(time.Now())
	r.SetBody(attribute.StringValue(string(payload)))
	c.logger.Emit(ctx, r)
	return nil
}
func (c *otelClient) Shutdown(ctx context.Context) error { return c.provider.Shutdown(ctx) }

// ndjsonExporter sends each export's record bodies, one per line. The SDK
// never calls Export concurrently, so one body buffer is reused.
type ndjsonExporter struct {
	send func(ctx context.Context, body []byte, key string) error
	log  *slog.Logger
	buf  []byte
}

func (e *ndjsonExporter) Export(ctx context.Context, records []sdklog.Record) error {
	if len(records) == 0 {
		return nil
	}
	e.buf = e.buf[:0]
	for i := range records {
		b := records[i].Body()
		e.buf = append(append(e.buf, b.AsString()...), '\n')
	}
	if err := e.send(ctx, e.buf, ""); err != nil {
		e.log.Error("export failed", "events", len(records), "err", err)
		return err
	}
	e.log.Info("exported", "count", len(records))
	return nil
}
func (e *ndjsonExporter) Shutdown(context.Context) error   { return nil }
func (e *ndjsonExporter) ForceFlush(context.Context) error { return nil }

// countLog is a design's log: written to a file (when w is not nil) and
// parsed as it is written, summing count=N of INFO lines, as the seed summed
// its log. Only INFO lines count: batchproc also puts count= on its WARN
// "retrying" lines, which are not deliveries.
type countLog struct {
	mu    sync.Mutex
	w     *bufio.Writer
	c     io.Closer
	sum   int64
	lines int64
	part  []byte
}

var countRE = regexp.MustCompile(`(?:^|\s)count=(\d+)(?:\s|$)`)

func newCountLog(w io.WriteCloser) *countLog {
	l := &countLog{}
	if w != nil {
		l.w, l.c = bufio.NewWriterSize(w, 64<<10), w
	}
	return l
}

func (l *countLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w != nil {
		_, _ = l.w.Write(p)
	}
	data := p
	if len(l.part) > 0 {
		data = append(l.part, p...)
		l.part = nil
	}
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			l.part = append([]byte(nil), data...)
			break
		}
		l.line(data[:i])
		data = data[i+1:]
	}
	return len(p), nil
}

func (l *countLog) line(s []byte) {
	if !bytes.Contains(s, []byte("level=INFO")) {
		return
	}
	if m := countRE.FindSubmatch(s); m != nil {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		l.sum += n
		l.lines++
	}
}

// Sum is the total of count= so far.
func (l *countLog) Sum() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sum
}

func (l *countLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		return nil
	}
	err := l.w.Flush()
	if e := l.c.Close(); err == nil {
		err = e
	}
	return err
}

// transportFor returns a fresh transport for one run of the design.
func transportFor(spec designSpec) *http.Transport {
	if spec.defaultTransport {
		return http.DefaultTransport.(*http.Transport).Clone()
	}
	return newTransport()
}
