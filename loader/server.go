package loader

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the Batch Loader: an http.Handler speaking the ingest protocol
// in front of a store.Store. Create it with [New]; serve it with
// [Server.Serve] or mount [Server.Handler] in a mux of your own; stop it
// with [Server.Shutdown]. A Server cannot be restarted.
type Server struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	http    *http.Server
	handler http.Handler
	metrics http.Handler
	// debugHandler serves /metrics and, with Config.Pprof, /debug/pprof/:
	// on a listener of its own (debug), never the ingest one.
	debugHandler http.Handler
	debug        *http.Server
	tokens       [][sha256.Size]byte
	slots        chan struct{} // ingest slots: a send takes one
	slotsValue   []string      // the Ingest-Slots header's value: cap(slots)
	bodyMem      *budget       // bodies as sent, being received or held (Config.BodyMemory)
	// decodeMem bounds the decompressed bodies (Config.DecodeMemory).
	decodeMem *budget
	works     sync.Pool // *work
	codecs    *codecs

	retryAfter string // Retry-After value, whole seconds

	rejected atomic.Int64

	onLatencyWait func() // test hook: a request begins its Latency wait
	onReceive     func() // test hook: a request begins to read its body
	onSlotWait    func() // test hook: a request begins to wait for a slot
	onDecodeWait  func() // test hook: a request waits for decode memory

	drainCtx    context.Context // done when Shutdown begins
	cancelDrain context.CancelFunc

	mu       sync.Mutex
	draining bool          // Shutdown has begun
	inflight int           // batch requests admitted and not yet answered
	drainCh  chan struct{} // closed when Shutdown begins
	idle     chan struct{} // closed when draining and inflight reaches 0
	doneCh   chan struct{} // closed when Shutdown has finished
	doneErr  error
	kafka    *kafkaRun // the consumer ServeKafka runs; nil until it starts
}

// New validates cfg and returns a Server for it. From here on the Server
// owns cfg.Store and closes it in Shutdown.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		m:          newMetrics(),
		slots:      make(chan struct{}, cfg.MaxConcurrent),
		slotsValue: []string{strconv.Itoa(cfg.MaxConcurrent)},
		bodyMem:    newBudget(cfg.BodyMemory),
		decodeMem:  newBudget(cfg.DecodeMemory),
		codecs:     newCodecs(&cfg),
		retryAfter: strconv.FormatInt(int64((cfg.RetryAfter+time.Second-1)/time.Second), 10),
		drainCh:    make(chan struct{}),
		idle:       make(chan struct{}),
		doneCh:     make(chan struct{}),
	}
	s.drainCtx, s.cancelDrain = context.WithCancel(context.Background())
	for _, t := range cfg.Tokens {
		s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
	}
	s.works.New = func() any {
		return &work{dec: decoder{maxLine: cfg.MaxLine, maxEvents: cfg.MaxEvents}}
	}
	s.metrics = promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})
	debug := http.NewServeMux()
	debug.Handle("GET /metrics", s.metrics)
	if cfg.Pprof {
		debug.HandleFunc("/debug/pprof/", pprof.Index)
		debug.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		debug.HandleFunc("/debug/pprof/profile", pprof.Profile)
		debug.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		debug.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.debugHandler = debug
	s.debug = &http.Server{
		Handler:           debug,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	s.handler = http.HandlerFunc(s.serveHTTP)
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Handler returns the Server's HTTP handler, for mounting in another
// server. Shutdown still drains the batch requests it is serving.
func (s *Server) Handler() http.Handler { return s.handler }

// DebugHandler returns the handler of the debug listener: /metrics and,
// with [Config.Pprof], net/http/pprof under /debug/pprof/. It is not part
// of [Server.Handler]: /debug/pprof/cmdline shows the process's command
// line and profiles cost CPU, so mount it only where the network is
// trusted (Run serves it on [Config.DebugAddr], loopback by default).
func (s *Server) DebugHandler() http.Handler { return s.debugHandler }

// ServeDebug serves [Server.DebugHandler] on ln until Shutdown, like
// Serve: it returns http.ErrServerClosed after Shutdown, and closes ln.
func (s *Server) ServeDebug(ln net.Listener) error {
	return s.debug.Serve(ln)
}

// Serve accepts connections on ln and serves them until Shutdown, like
// http.Server.Serve: it returns http.ErrServerClosed after Shutdown, and
// closes ln. The caller knows the address from ln.Addr(), so a listener on
// port 0 suits tests and in-process harnesses.
func (s *Server) Serve(ln net.Listener) error {
	return s.http.Serve(ln)
}

// Shutdown stops the Server gracefully: from its start new batch requests
// are answered 503 with Retry-After and /readyz answers 503; batch
// requests in flight finish (their batches are stored and answered); then
// the listeners and idle connections are closed, remaining handlers are
// waited for, and the store is closed. Meanwhile the Kafka consumer, if
// [Server.ServeKafka] runs, finishes the batch it is storing, commits and
// leaves its group; the store is closed after it stopped.
//
// If ctx ends first, the connections are closed at once, the consumer's
// store and commit calls are cancelled, the store is closed once the
// consumer has returned, and ctx's error is returned. Shutdown is
// idempotent: later calls wait for the first one and return its result (or
// their ctx's error).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	first := !s.draining
	if first {
		s.draining = true
		close(s.drainCh)
		s.cancelDrain()
		if s.inflight == 0 {
			close(s.idle)
		}
	}
	s.mu.Unlock()
	if !first {
		select {
		case <-s.doneCh:
			return s.doneErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.log.Info("shutting down: draining batch requests")
	var err error
	select {
	case <-s.idle:
		err = s.http.Shutdown(ctx)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		_ = s.http.Close()
	}
	_ = s.debug.Close() // a profile being taken is cut short
	if kerr := s.stopKafka(ctx); err == nil {
		err = kerr
	}
	if cerr := s.cfg.Store.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	c := s.cfg.Store.Counts()
	s.log.Info("stopped", "events", c.Events, "batches", c.Batches, "duplicates", c.Duplicates,
		"rejected", s.rejected.Load(), "err", err)
	s.doneErr = err
	close(s.doneCh)
	return err
}

// enter admits a batch request unless the Server is draining.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.inflight++
	return true
}

func (s *Server) leave() {
	s.mu.Lock()
	s.inflight--
	if s.draining && s.inflight == 0 {
		close(s.idle)
	}
	s.mu.Unlock()
}

func (s *Server) isDraining() bool {
	select {
	case <-s.drainCh:
		return true
	default:
		return false
	}
}

// Run serves cfg until ctx is done, then drains within cfg.ShutdownTimeout
// (see [Server.Shutdown]). It listens on cfg.Addr and logs
// "listening addr=..." once connections are accepted; with cfg.Pprof it
// first serves [Server.DebugHandler] on cfg.DebugAddr ("debug listening
// addr=..."). It logs a warning when it listens beyond loopback without
// tokens, and when the debug listener is not on loopback; with cfg.Kafka set it
// also consumes that topic ([Server.ServeKafka]), and stops early when the
// Kafka client cannot be made. It returns nil after a clean drain. Run owns
// cfg.Store: the store is closed when Run returns, also when cfg is invalid
// or the address cannot be listened on.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		if cfg.Store != nil {
			_ = cfg.Store.Close()
		}
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		_ = s.cfg.Store.Close()
		return err
	}
	var debugErr chan error // nil without pprof
	if s.cfg.Pprof {
		dln, err := net.Listen("tcp", s.cfg.DebugAddr)
		if err != nil {
			_ = ln.Close()
			_ = s.cfg.Store.Close()
			return fmt.Errorf("debug listener: %w", err)
		}
		s.log.Info("debug listening", "addr", dln.Addr().String(), "pprof", true)
		if !isLoopback(dln.Addr()) {
			s.log.Warn("the debug listener (pprof: command line, goroutine dumps, profiles) is reachable beyond loopback; restrict it with -debug-addr 127.0.0.1:6060", "addr", dln.Addr().String())
		}
		debugErr = make(chan error, 1)
		go func() { debugErr <- s.ServeDebug(dln) }()
	}
	if len(s.tokens) == 0 && !isLoopback(ln.Addr()) {
		s.log.Warn("no bearer token configured: anyone who can reach this address can post batches; set -token-file or BATCHLOADER_TOKEN", "addr", ln.Addr().String())
	}
	s.log.Info("listening", "addr", ln.Addr().String())
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve(ln) }()
	var kafkaErr chan error // nil without Kafka: never ready
	if s.cfg.Kafka != nil {
		kafkaErr = make(chan error, 1)
		go func() { kafkaErr <- s.ServeKafka() }()
	}

	var err1, err3 error
	select {
	case err1 = <-serveErr:
		serveErr <- err1 // for the receive below
	case err3 = <-kafkaErr:
		kafkaErr <- err3
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err2 := s.Shutdown(sctx)
	err1 = <-serveErr
	if errors.Is(err1, http.ErrServerClosed) {
		err1 = nil
	}
	if debugErr != nil {
		if derr := <-debugErr; !errors.Is(derr, http.ErrServerClosed) {
			err1 = errors.Join(err1, derr)
		}
	}
	if kafkaErr != nil {
		if err3 = <-kafkaErr; errors.Is(err3, http.ErrServerClosed) {
			err3 = nil
		}
	}
	return errors.Join(err1, err2, err3)
}

// isLoopback reports whether addr is a loopback IP address; an unspecified
// address (":8080", "0.0.0.0") listens on every interface and is not.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
