package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/batchproc/batchproc/loader/store"
)

// Defaults of [Config]; a zero field takes its default.
const (
	DefaultAddr              = ":8080"
	DefaultMaxBody           = 8 << 20  // bytes, as sent
	DefaultMaxDecodedBody    = 64 << 20 // bytes, after decompression
	DefaultMaxEvents         = 100_000
	DefaultMaxLine           = 1 << 20 // bytes
	DefaultMaxZstdWindow     = 8 << 20 // bytes; what zstd encoders use at their default levels
	DefaultRetryAfter        = time.Second
	DefaultStoreTimeout      = 30 * time.Second
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = time.Minute
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultSlotWait          = 250 * time.Millisecond
	DefaultMinBodyRate       = 1 << 10 // bytes per second, after DefaultBodyRateGrace
	DefaultBodyRateGrace     = 5 * time.Second
	DefaultBodyMemory        = 128 << 20 // bytes, as sent, across all requests
	DefaultDecodeMemory      = 64 << 20  // bytes, decompressed, across all requests
	DefaultDebugAddr         = "127.0.0.1:6060"
)

// IngestSlotsHeader is the response header of POST /v1/batches that
// tells the loader's ingest slots, [Config.MaxConcurrent] (protocol.md,
// Responses): a client may take it as the number of batches the loader
// works on at once, where slow start stops (httpsink passes it to
// batchproc.ReportCapacity).
const IngestSlotsHeader = "Ingest-Slots"

// ServerTimingHeader is the response header in which a 200 of POST
// /v1/batches tells how long the loader held the batch after receiving
// its body, as the metric [ServerTimingMetric] of the W3C Server-Timing
// header, in milliseconds: `Server-Timing: ingest;dur=1.234`. It covers the
// wait for an ingest slot, the decoding, the store's commit and
// Config.Latency: the queueing and the work that are the loader's, not
// the network's nor the client's (protocol.md). httpsink hands it to
// batchproc.ReportServerTime, so that a client's adaptive send limit is
// cut by a queue at the loader and not by a busy client host.
const ServerTimingHeader = "Server-Timing"

// ServerTimingMetric is the metric name of the loader's entry in
// [ServerTimingHeader].
const ServerTimingMetric = "ingest"

// ServerTiming formats the value of [ServerTimingHeader] for a batch the
// loader held for d.
func ServerTiming(d time.Duration) string {
	var b [40]byte
	v := append(b[:0], ServerTimingMetric+";dur="...)
	v = strconv.AppendFloat(v, float64(d)/float64(time.Millisecond), 'f', 3, 64)
	return string(v)
}

// DefaultMaxConcurrent is the default of [Config.MaxConcurrent]:
// 2 × GOMAXPROCS, at least 4.
func DefaultMaxConcurrent() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// Config configures a [Server]. Only Store is required; every zero field
// takes the default named in its comment, and [New] rejects negative or
// inconsistent values instead of replacing them.
type Config struct {
	// Addr is the TCP address [Run] listens on. Default ":8080".
	Addr string
	// Store receives the decoded batches. Required. The Server owns it from
	// New on and closes it at the end of Shutdown.
	Store store.Store
	// Tokens, when not empty, are the accepted bearer tokens: a batch
	// request needs "Authorization: Bearer <one of them>". Default none
	// (no authentication).
	Tokens []string

	// MaxBody limits the request body as sent, in bytes. Default 8 MiB.
	MaxBody int64
	// MaxDecodedBody limits the body after decompression, in bytes; a
	// decompression bomb is cut off there. At least MaxBody. Default 64 MiB.
	MaxDecodedBody int64
	// MaxEvents limits the events of one batch. Default 100,000.
	MaxEvents int
	// MaxLine limits one event (an NDJSON line without its newline, or a
	// JSON array element), in bytes. Default 1 MiB.
	MaxLine int
	// MaxZstdWindow is the largest zstd window a request may declare, in
	// bytes; it bounds a zstd decoder's memory. Default 8 MiB.
	MaxZstdWindow int64

	// BodyMemory bounds the bytes of request bodies, as sent, held at once
	// across all batch requests: bodies are read in full before their
	// request takes an ingest slot, and a request whose body would go over
	// is answered 429. A client holds only what it has sent (buffers start
	// at 64 KiB whatever Content-Length says). At least MaxBody.
	// Default 128 MiB.
	BodyMemory int64
	// DecodeMemory bounds the bytes of decompressed bodies held at once
	// across all batch requests. A request that does not fit waits (holding
	// nothing of it) until its exact decoded size does; a decompression bomb
	// is answered 413 without holding more than it had. At least
	// MaxDecodedBody. Default the larger of 64 MiB and MaxDecodedBody: one
	// body of the default limit at a time, hundreds of typical ones. zstd
	// decoders' window buffers count in it.
	DecodeMemory int64

	// MaxConcurrent is the number of batch requests decoded and stored at
	// once (ingest slots). A request takes one only once its body has been
	// received, so slow clients hold none. Every answer of POST /v1/batches
	// tells it in the [IngestSlotsHeader] header. Default
	// [DefaultMaxConcurrent].
	MaxConcurrent int
	// SlotWait is how long a request whose body has been received waits
	// for an ingest slot before it is answered 429: a burst queues briefly
	// instead of being refused. Default 250ms.
	SlotWait time.Duration
	// Latency is added to every batch request after its batch is stored
	// (or refused by the store as a duplicate) and before it is answered,
	// to model a remote loader; the request holds no ingest slot and no
	// CPU meanwhile. Default 0.
	Latency time.Duration
	// RetryAfter is the wait announced by 429 and 503 answers, rounded up
	// to whole seconds. Default 1s.
	RetryAfter time.Duration
	// StoreTimeout bounds one Store call. Default 30s.
	StoreTimeout time.Duration

	// MinBodyRate is the slowest a body may arrive, in bytes per second on
	// average, once BodyRateGrace has passed since its request began: a
	// slower body is answered 408. It keeps slow clients from holding
	// BodyMemory and connections for the whole ReadTimeout. Default 1 KiB/s
	// (an 8 MiB body may take over two hours; a byte every 2 s is cut off
	// after the grace).
	MinBodyRate int64
	// BodyRateGrace is how long a body may arrive below MinBodyRate before
	// the rate counts. Default 5s.
	BodyRateGrace time.Duration

	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included: a body
	// not received in time is answered 408. Default 1 minute.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end
	// of its answer. Default ReadTimeout + StoreTimeout + Latency + 10s.
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection. Default 2 minutes.
	IdleTimeout time.Duration
	// MaxHeaderBytes limits the request headers. Default 64 KiB.
	MaxHeaderBytes int
	// ShutdownTimeout bounds the drain of [Run] once its context is done.
	// Default 30s.
	ShutdownTimeout time.Duration

	// Kafka, when set, is a Kafka topic the Server also consumes batches
	// from, as a member of a consumer group: [Run] does, see
	// [Server.ServeKafka]. Default nil: HTTP only.
	Kafka *KafkaConfig

	// Pprof serves net/http/pprof under /debug/pprof/ on the debug
	// listener ([Server.DebugHandler]; [Run] listens on DebugAddr for it),
	// never on the ingest listener: /debug/pprof/cmdline shows the command
	// line and profiles are costly. Default off.
	Pprof bool
	// DebugAddr is the TCP address [Run] serves [Server.DebugHandler] on
	// when Pprof is set: pprof and /metrics. Default "127.0.0.1:6060",
	// loopback only; Run warns when it is not a loopback address.
	DebugAddr string
	// Logger receives one line per stored batch (with count=N) and the
	// server's life cycle. Default slog.Default().
	Logger *slog.Logger
}

// withDefaults validates c and returns it with its defaults filled in.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("loader: "+format, a...)) }
	if c.Store == nil {
		bad("Config.Store is required")
	}
	for i, t := range c.Tokens {
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			bad("Config.Tokens[%d] is empty or contains whitespace", i)
		}
	}
	defInt64 := func(name string, v *int64, def int64) {
		switch {
		case *v < 0:
			bad("Config.%s = %d is negative", name, *v)
		case *v == 0:
			*v = def
		}
	}
	defInt := func(name string, v *int, def int) {
		switch {
		case *v < 0:
			bad("Config.%s = %d is negative", name, *v)
		case *v == 0:
			*v = def
		}
	}
	defDur := func(name string, v *time.Duration, def time.Duration) {
		switch {
		case *v < 0:
			bad("Config.%s = %v is negative", name, *v)
		case *v == 0:
			*v = def
		}
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.DebugAddr == "" {
		c.DebugAddr = DefaultDebugAddr
	}
	defInt64("MaxBody", &c.MaxBody, DefaultMaxBody)
	defInt64("MaxDecodedBody", &c.MaxDecodedBody, DefaultMaxDecodedBody)
	defInt("MaxEvents", &c.MaxEvents, DefaultMaxEvents)
	defInt("MaxLine", &c.MaxLine, DefaultMaxLine)
	defInt64("MaxZstdWindow", &c.MaxZstdWindow, DefaultMaxZstdWindow)
	defInt64("BodyMemory", &c.BodyMemory, max(DefaultBodyMemory, c.MaxBody))
	defInt64("DecodeMemory", &c.DecodeMemory, max(DefaultDecodeMemory, c.MaxDecodedBody))
	defInt("MaxConcurrent", &c.MaxConcurrent, DefaultMaxConcurrent())
	defDur("SlotWait", &c.SlotWait, DefaultSlotWait)
	defInt64("MinBodyRate", &c.MinBodyRate, DefaultMinBodyRate)
	defDur("BodyRateGrace", &c.BodyRateGrace, DefaultBodyRateGrace)
	if c.Latency < 0 {
		bad("Config.Latency = %v is negative", c.Latency)
	}
	defDur("RetryAfter", &c.RetryAfter, DefaultRetryAfter)
	defDur("StoreTimeout", &c.StoreTimeout, DefaultStoreTimeout)
	defDur("ReadHeaderTimeout", &c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	defDur("ReadTimeout", &c.ReadTimeout, DefaultReadTimeout)
	defDur("WriteTimeout", &c.WriteTimeout, c.ReadTimeout+c.StoreTimeout+max(c.Latency, 0)+10*time.Second)
	defDur("IdleTimeout", &c.IdleTimeout, DefaultIdleTimeout)
	defInt("MaxHeaderBytes", &c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	defDur("ShutdownTimeout", &c.ShutdownTimeout, DefaultShutdownTimeout)

	if c.MaxDecodedBody > 0 && c.MaxBody > c.MaxDecodedBody {
		bad("Config.MaxDecodedBody = %d is less than Config.MaxBody = %d", c.MaxDecodedBody, c.MaxBody)
	}
	if c.BodyMemory > 0 && c.BodyMemory < c.MaxBody {
		bad("Config.BodyMemory = %d is less than Config.MaxBody = %d: a body of the limit could never be received", c.BodyMemory, c.MaxBody)
	}
	if c.DecodeMemory > 0 && c.DecodeMemory < c.MaxDecodedBody {
		bad("Config.DecodeMemory = %d is less than Config.MaxDecodedBody = %d: a body of the limit could never be decoded", c.DecodeMemory, c.MaxDecodedBody)
	}
	if c.MaxLine > 0 && c.MaxLine < 2 {
		bad("Config.MaxLine = %d cannot hold the smallest event, {}", c.MaxLine)
	}
	if c.MaxZstdWindow > 0 && c.MaxZstdWindow < 1<<10 {
		bad("Config.MaxZstdWindow = %d is under zstd's minimum window of 1 KiB", c.MaxZstdWindow)
	}
	if int64(int(c.MaxDecodedBody)) != c.MaxDecodedBody {
		bad("Config.MaxDecodedBody = %d does not fit in an int", c.MaxDecodedBody)
	}
	if c.Kafka != nil {
		k, kerrs := c.Kafka.withDefaults()
		c.Kafka = &k
		errs = append(errs, kerrs...)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, errors.Join(errs...)
}
