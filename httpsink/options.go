package httpsink

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Defaults used when an option is not given.
const (
	// DefaultTimeout bounds one HTTP request: connecting, sending the body
	// and reading the response.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxResponseBody is how many bytes of a response body are read
	// at most (64 KiB). Protocol responses are a few dozen bytes.
	DefaultMaxResponseBody = 64 << 10
	// DefaultGzipLevel is the gzip level without [WithCompressionLevel]:
	// klauspost/compress's default.
	DefaultGzipLevel = 5
	// DefaultZstdLevel is the zstd level without [WithCompressionLevel]: 3,
	// the encoder's "default" speed.
	DefaultZstdLevel = 3
)

// minResponseBody is the smallest cap [WithMaxResponseBody] accepts: room
// for any 200 answer of the protocol and the start of an error message.
const minResponseBody = 256

// Framing is how a batch's events are laid out in the request body.
type Framing int

const (
	// NDJSON posts one event per line, Content-Type application/x-ndjson.
	// The body is the batch's own buffer, [batchproc.Batch.NDJSON]: no copy.
	NDJSON Framing = iota
	// JSONArray posts one JSON array of the events, Content-Type
	// application/json. It costs one copy of the batch per request.
	JSONArray
)

func (f Framing) String() string {
	switch f {
	case NDJSON:
		return "ndjson"
	case JSONArray:
		return "json-array"
	}
	return fmt.Sprintf("Framing(%d)", int(f))
}

// Compression is the Content-Encoding of the request body.
type Compression int

const (
	// None sends the body as is (no Content-Encoding).
	None Compression = iota
	// Gzip compresses the body with gzip (Content-Encoding: gzip).
	Gzip
	// Zstd compresses the body with Zstandard (Content-Encoding: zstd).
	Zstd
)

func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// config is the sink's settings after all options were applied.
type config struct {
	client      *http.Client
	transport   http.RoundTripper
	token       string
	tokenSet    bool
	headers     [][2]string // WithHeader calls, in order
	framing     Framing
	compression Compression
	level       int
	levelSet    bool
	timeout     time.Duration
	maxResponse int64

	errs []error // option errors found while applying (nil client, ...)
}

func defaultConfig() config {
	return config{
		framing:     NDJSON,
		compression: None,
		timeout:     DefaultTimeout,
		maxResponse: DefaultMaxResponseBody,
	}
}

// reservedHeaders are the headers the sink sets itself: the protocol's own,
// and those net/http derives from the request. WithHeader refuses them.
var reservedHeaders = map[string]string{
	"Content-Type":      "set by WithFraming",
	"Content-Encoding":  "set by WithCompression",
	"Idempotency-Key":   "the batch's key, set on every request",
	"Authorization":     "set by WithToken",
	"Content-Length":    "set by net/http",
	"Host":              "taken from the URL",
	"Transfer-Encoding": "set by net/http",
	"Connection":        "managed by net/http",
}

func (c *config) validate() error {
	errs := c.errs
	if c.client != nil && c.transport != nil {
		errs = append(errs, errors.New("WithClient and WithTransport exclude each other: set the transport on the client"))
	}
	if c.tokenSet {
		if err := checkToken(c.token); err != nil {
			errs = append(errs, fmt.Errorf("WithToken: %w", err))
		}
	}
	for _, kv := range c.headers {
		if err := checkHeader(kv[0], kv[1]); err != nil {
			errs = append(errs, fmt.Errorf("WithHeader(%q, %q): %w", kv[0], kv[1], err))
		}
	}
	if c.framing != NDJSON && c.framing != JSONArray {
		errs = append(errs, fmt.Errorf("WithFraming(%d): unknown framing; use NDJSON or JSONArray", int(c.framing)))
	}
	switch c.compression {
	case None:
		if c.levelSet {
			errs = append(errs, fmt.Errorf("WithCompressionLevel(%d) without WithCompression(Gzip or Zstd)", c.level))
		}
	case Gzip:
		if c.levelSet && (c.level < gzip.BestSpeed || c.level > gzip.BestCompression) {
			errs = append(errs, fmt.Errorf("WithCompressionLevel(%d): gzip levels are %d..%d", c.level, gzip.BestSpeed, gzip.BestCompression))
		}
	case Zstd:
		if c.levelSet && (c.level < 1 || c.level > 22) {
			errs = append(errs, fmt.Errorf("WithCompressionLevel(%d): zstd levels are 1..22", c.level))
		}
	default:
		errs = append(errs, fmt.Errorf("WithCompression(%d): unknown compression; use None, Gzip or Zstd", int(c.compression)))
	}
	if c.timeout <= 0 {
		errs = append(errs, fmt.Errorf("WithTimeout(%v): must be positive", c.timeout))
	}
	if c.maxResponse < minResponseBody {
		errs = append(errs, fmt.Errorf("WithMaxResponseBody(%d): must be at least %d bytes", c.maxResponse, minResponseBody))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("httpsink: invalid configuration: %w", err)
	}
	return nil
}

// checkToken accepts a bearer token of visible ASCII characters.
func checkToken(t string) error {
	if t == "" {
		return errors.New("empty token; omit the option to send no Authorization header")
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return fmt.Errorf("byte %d of the token is not a visible ASCII character", i)
		}
	}
	return nil
}

// checkHeader accepts an RFC 9110 field name that the sink does not set
// itself, and a value without control characters other than tab.
func checkHeader(k, v string) error {
	if k == "" {
		return errors.New("empty header name")
	}
	for i := 0; i < len(k); i++ {
		if !isTokenChar(k[i]) {
			return fmt.Errorf("invalid character %q in header name", k[i])
		}
	}
	if why, ok := reservedHeaders[http.CanonicalHeaderKey(k)]; ok {
		return fmt.Errorf("%s is reserved (%s)", http.CanonicalHeaderKey(k), why)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return fmt.Errorf("control character %q in header value", c)
		}
	}
	return nil
}

func isTokenChar(c byte) bool {
	return c < 0x7f && c > ' ' && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
}

// An Option configures a [Sink]. Options are made by the With functions of
// this package.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithClient sends requests with c, as it is: its Transport, Timeout,
// redirect policy and cookie jar apply, and [Sink.Close] leaves its
// connections alone. It excludes [WithTransport]. By default the sink uses
// its own client over a tuned transport (see [New]).
func WithClient(c *http.Client) Option {
	return optionFunc(func(cfg *config) {
		if c == nil {
			cfg.errs = append(cfg.errs, errors.New("WithClient(nil): pass a client, or omit the option"))
			return
		}
		cfg.client = c
	})
}

// WithTransport sends requests over rt, with the sink's own redirect policy
// (only 307 and 308 are followed). [Sink.Close] leaves rt's connections
// alone. It excludes [WithClient]. By default the sink uses its own tuned
// transport (see [New]).
func WithTransport(rt http.RoundTripper) Option {
	return optionFunc(func(cfg *config) {
		if rt == nil {
			cfg.errs = append(cfg.errs, errors.New("WithTransport(nil): pass a transport, or omit the option"))
			return
		}
		cfg.transport = rt
	})
}

// WithToken sends "Authorization: Bearer <token>" on every request. The
// token must be non-empty visible ASCII. By default no Authorization header
// is sent.
func WithToken(token string) Option {
	return optionFunc(func(c *config) { c.token = token; c.tokenSet = true })
}

// WithHeader adds the header k: v to every request; repeated calls add
// values, as [http.Header.Add] does. It may set User-Agent (by default
// "batchproc-httpsink") but refuses the headers the protocol or net/http
// own: Content-Type, Content-Encoding, Idempotency-Key, Authorization
// (use [WithToken]), Content-Length, Host, Transfer-Encoding, Connection. By
// default no extra header is sent.
func WithHeader(k, v string) Option {
	return optionFunc(func(c *config) { c.headers = append(c.headers, [2]string{k, v}) })
}

// WithFraming sets the body's framing: [NDJSON] (the default: the batch's
// own buffer, no copy) or [JSONArray].
func WithFraming(f Framing) Option {
	return optionFunc(func(c *config) { c.framing = f })
}

// WithCompression compresses request bodies with [Gzip] or [Zstd], or not
// at all with [None], the default. Compression costs CPU and one pooled
// buffer per request in flight; it pays off when the network, not the CPU,
// is the bottleneck.
func WithCompression(comp Compression) Option {
	return optionFunc(func(c *config) { c.compression = comp })
}

// WithCompressionLevel sets the level of [WithCompression] on the codec's
// usual scale: gzip 1 (fastest) to 9 (smallest), default 5
// ([DefaultGzipLevel]); zstd 1 to 22, mapped to the encoder's four speeds
// as zstd.EncoderLevelFromZstd does, default 3 ([DefaultZstdLevel]). It
// requires WithCompression(Gzip) or WithCompression(Zstd).
func WithCompressionLevel(level int) Option {
	return optionFunc(func(c *config) { c.level = level; c.levelSet = true })
}

// WithTimeout bounds each HTTP request (connect, send, read the response)
// to d, which must be positive. A batch split after a 413 makes one request
// per part, each with its own d. It overrides the default of 30 s
// ([DefaultTimeout]). A request that times out is a retryable failure.
func WithTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.timeout = d })
}

// WithMaxResponseBody caps, in bytes, how much of a response body is read;
// the rest is not read and its connection is not reused. n must be at least
// 256. It overrides the default of 64 KiB (65,536 bytes,
// [DefaultMaxResponseBody]).
func WithMaxResponseBody(n int64) Option {
	return optionFunc(func(c *config) { c.maxResponse = n })
}
