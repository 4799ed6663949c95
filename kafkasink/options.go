package kafkasink

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultTimeout bounds one [Sink.Send] when [WithTimeout] is not given: the
// time for Kafka to acknowledge every record of the batch.
const DefaultTimeout = 30 * time.Second

// Layout is how a batch is laid out in Kafka records.
type Layout int

const (
	// PerBatch produces one record per batch: the value is the batch's
	// NDJSON ([batchproc.Batch.NDJSON], no copy), the key is the batch's
	// idempotency key ([batchproc.Batch.Key]), and the header
	// [HeaderBatchKey] repeats it. A batch is then stored or lost as a whole,
	// and a consumer de-duplicates a batch produced twice by its key: this is
	// the layout the Batch Loader's Kafka consumer stores atomically, hence
	// the default.
	PerBatch Layout = iota
	// PerEvent produces one record per event: the value is the event's
	// payload, the key is the event's ID (no key when it is empty), and the
	// headers [HeaderBatchKey] and [HeaderIndex] name the batch and the
	// event's place in it. Events keyed by ID keep their per-key order in
	// Kafka, but a batch is spread over partitions: a consumer must
	// de-duplicate event by event (the Batch Loader stores each such record
	// as its own batch, keyed "<batch key>:<index>").
	PerEvent
)

func (l Layout) String() string {
	switch l {
	case PerBatch:
		return "per-batch"
	case PerEvent:
		return "per-event"
	}
	return fmt.Sprintf("Layout(%d)", int(l))
}

// config is the sink's settings after all options were applied.
type config struct {
	client     *kgo.Client
	clientOpts []kgo.Opt
	layout     Layout
	timeout    time.Duration

	errs []error // option errors found while applying (nil client, ...)
}

func defaultConfig() config {
	return config{layout: PerBatch, timeout: DefaultTimeout}
}

func (c *config) validate(brokers []string, topic string) error {
	errs := c.errs
	if c.client != nil {
		if len(brokers) > 0 {
			errs = append(errs, errors.New("brokers given with WithClient: the client already knows its brokers; pass nil"))
		}
		if len(c.clientOpts) > 0 {
			errs = append(errs, errors.New("WithClientOptions and WithClient exclude each other: configure the client you pass"))
		}
	} else {
		if len(brokers) == 0 {
			errs = append(errs, errors.New("no seed brokers"))
		}
		for i, b := range brokers {
			if err := checkBroker(b); err != nil {
				errs = append(errs, fmt.Errorf("brokers[%d] %q: %w", i, b, err))
			}
		}
	}
	if err := checkTopic(topic); err != nil {
		errs = append(errs, fmt.Errorf("topic %q: %w", topic, err))
	}
	if c.layout != PerBatch && c.layout != PerEvent {
		errs = append(errs, fmt.Errorf("WithLayout(%d): unknown layout; use PerBatch or PerEvent", int(c.layout)))
	}
	if c.timeout <= 0 {
		errs = append(errs, fmt.Errorf("WithTimeout(%v): must be positive", c.timeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kafkasink: invalid configuration: %w", err)
	}
	return nil
}

// checkBroker accepts a non-empty "host", "host:port" or "[v6]:port"
// without spaces; kgo resolves it when it first connects.
func checkBroker(b string) error {
	if b == "" {
		return errors.New("empty address")
	}
	for i := 0; i < len(b); i++ {
		if b[i] <= ' ' || b[i] >= 0x7f {
			return fmt.Errorf("byte %d is a space, a control or a non-ASCII character", i)
		}
	}
	return nil
}

// checkTopic applies Kafka's rule for topic names: 1 to 249 characters of
// [a-zA-Z0-9._-], and neither "." nor "..".
func checkTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty topic name")
	case len(t) > 249:
		return fmt.Errorf("%d characters, over Kafka's limit of 249", len(t))
	case t == "." || t == "..":
		return errors.New(`"." and ".." are not valid topic names`)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("invalid character %q; Kafka allows [a-zA-Z0-9._-]", c)
		}
	}
	return nil
}

// An Option configures a [Sink]. Options are made by the With functions of
// this package.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithLayout sets how batches become records: [PerBatch] (the default: one
// record per batch, its NDJSON, no copy) or [PerEvent] (one record per
// event).
func WithLayout(l Layout) Option {
	return optionFunc(func(c *config) { c.layout = l })
}

// WithTimeout bounds each [Sink.Send] to d, which must be positive: when
// Kafka has not acknowledged every record of the batch by then, Send fails
// with a retryable error and the processor sends the batch again later. It
// overrides the default of 30 s ([DefaultTimeout]). See [Sink.Send] for
// what a timeout leaves behind.
func WithTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.timeout = d })
}

// WithClientOptions adds opts to the options [New] gives kgo.NewClient for
// the sink's own client, after the sink's own (see [New]), so they override
// them: TLS (kgo.DialTLSConfig), SASL (kgo.SASL), compression
// (kgo.ProducerBatchCompression), a logger (kgo.WithLogger), the record
// batch limit (kgo.ProducerBatchMaxBytes, which must not exceed the topic's
// max.message.bytes), ... It excludes [WithClient]. By default the sink's
// client takes kgo's defaults apart from the few New sets.
func WithClientOptions(opts ...kgo.Opt) Option {
	return optionFunc(func(c *config) { c.clientOpts = append(c.clientOpts, opts...) })
}

// WithClient produces with cl, as it is configured, instead of a client of
// the sink's own; [New]'s brokers must then be nil, and [Sink.Close] leaves
// cl open (its owner closes it, after the processor's Shutdown). Share a
// client this way with other producers of the program. Without
// kgo.AllowIdempotentProduceCancellation on cl, a Send whose context ends
// waits for records already on the wire, however long the broker takes to
// answer (see [Sink.Send]). It excludes [WithClientOptions]. By default the sink makes
// its own client.
func WithClient(cl *kgo.Client) Option {
	return optionFunc(func(c *config) {
		if cl == nil {
			c.errs = append(c.errs, errors.New("WithClient(nil): pass a client, or omit the option"))
			return
		}
		c.client = cl
	})
}
