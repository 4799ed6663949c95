// Package seeddesigns re-implements, as baselines, the two Batch Processor
// designs the seed post compared, written to mirror the post's code so a
// reader can hold one against the other:
//
//   - design 1, worker pool + sync IO ([NewWorkerPool]): N workers share one
//     channel queue; each has its own buffer and its own 1 s [time.Ticker]
//     (all created together when the processor starts) and sends its buffer
//     synchronously when it passes the limit or the ticker fires;
//   - design 2, one worker + async IO ([NewAsync]): one worker with the same
//     select; at flush it deep-copies the buffer ([deepCopy]: make + copy)
//     and sends the copy in a new goroutine, with no bound on how many.
//
// Both log `count=N` after each delivered request, and Stop logs "stopping
// BatchProcessor, waiting for remaining events to be sent" before sending
// what is left, as the post's log excerpt shows. Their faults (a shared
// unbuffered queue that nobody reads while every worker is in a synchronous
// send; unbounded goroutines and copies) are kept on purpose: they are what
// the harness measures. Do not use these in a service; use package batchproc.
//
// The post's send has the shape send(payload []byte, traceIDs []string): the
// buffer is the request body being built (events appended to it) plus the
// trace ids of the events in it, and the count logged is len(traceIDs). This
// package keeps that shape; the body is NDJSON (one event per line), and the
// transport is the injected [SendFunc].
package seeddesigns

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Defaults as in the post.
const (
	DefaultBufferLimit = 1000        // events per buffer before a flush
	DefaultInterval    = time.Second // the batch interval (each worker's ticker)
)

// ErrStopped is returned by Add after Stop was called.
var ErrStopped = errors.New("seeddesigns: BatchProcessor stopped")

// SendFunc delivers one request: payload is the NDJSON body (each event
// followed by '\n'), traceIDs the ids of its events, in order. It must not
// keep payload or traceIDs after returning.
type SendFunc func(ctx context.Context, payload []byte, traceIDs []string) error

// Event is what a service pushes onto the queue.
type Event struct {
	TraceID string
	Payload []byte // one JSON object; not copied by Add (the post's Push did not copy)
}

// Config configures both designs.
type Config struct {
	Send        SendFunc      // required
	Logger      *slog.Logger  // count=N lines go here; nil: slog.Default()
	QueueSize   int           // capacity of the shared channel queue; 0 (the post's): unbuffered
	BufferLimit int           // events per buffer; 0: DefaultBufferLimit
	Interval    time.Duration // ticker period; 0: DefaultInterval
}

// BatchProcessor is the post's processor: a shared queue consumed by one or
// more workers.
type BatchProcessor struct {
	queue  chan Event
	stopCh chan struct{}

	send   SendFunc
	logger *slog.Logger
	limit  int

	// sendCtx is the context every send runs under; cancelled when Stop's
	// context ends, so a deadline on Stop bounds the wait.
	sendCtx context.Context
	cancel  context.CancelFunc

	workers  sync.WaitGroup // worker goroutines
	inflight sync.WaitGroup // design 2's async sends

	stopOnce sync.Once
	mu       sync.Mutex
	failed   int // events whose request failed
	dropped  int // events left in the queue after the workers ended
}

func newProcessor(cfg Config) *BatchProcessor {
	if cfg.Send == nil {
		panic("seeddesigns: Config.Send is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BufferLimit <= 0 {
		cfg.BufferLimit = DefaultBufferLimit
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &BatchProcessor{
		queue:   make(chan Event, cfg.QueueSize),
		stopCh:  make(chan struct{}),
		send:    cfg.Send,
		logger:  cfg.Logger,
		limit:   cfg.BufferLimit,
		sendCtx: ctx,
		cancel:  cancel,
	}
}

// NewWorkerPool starts design 1: workers goroutines, each running
// runWithSync with its own buffer and ticker. The tickers are all created
// here, together, as the post's workers were started: so they all fire at
// the same instants, and every worker is in a synchronous send at once.
func NewWorkerPool(workers int, cfg Config) *BatchProcessor {
	if workers <= 0 {
		workers = 1
	}
	q := newProcessor(cfg)
	interval := cfg.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	tickers := make([]*time.Ticker, workers)
	for i := range tickers {
		tickers[i] = time.NewTicker(interval)
	}
	q.workers.Add(workers)
	for _, t := range tickers {
		go q.runWithSync(t)
	}
	return q
}

// NewAsync starts design 2: one worker running run, which deep-copies the
// buffer at each flush and sends the copy in its own goroutine.
func NewAsync(cfg Config) *BatchProcessor {
	q := newProcessor(cfg)
	interval := cfg.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	ticker := time.NewTicker(interval)
	q.workers.Add(1)
	go q.run(ticker)
	return q
}

// Add pushes e onto the shared queue, blocking until a worker takes it (the
// queue is unbuffered by default), ctx is done, or the processor stops.
func (q *BatchProcessor) Add(ctx context.Context, e Event) error {
	select {
	case q.queue <- e:
		return nil
	case <-q.stopCh:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runWithSync is design 1's worker: the post's three-channel select, with a
// synchronous send. The buffer is reused after each send: no deep copy.
func (q *BatchProcessor) runWithSync(ticker *time.Ticker) {
	defer q.workers.Done()
	defer ticker.Stop()
	var payload []byte
	var traceIDs []string
	for {
		select {
		case e := <-q.queue: // 1: pop into the buffer; flush when over the limit
			payload = append(append(payload, e.Payload...), '\n')
			traceIDs = append(traceIDs, e.TraceID)
			if len(traceIDs) >= q.limit {
				q.sendAndLog(payload, traceIDs)
				payload, traceIDs = payload[:0], traceIDs[:0]
			}
		case <-ticker.C: // 2: the batch interval elapsed
			if len(traceIDs) > 0 {
				q.sendAndLog(payload, traceIDs)
				payload, traceIDs = payload[:0], traceIDs[:0]
			}
		case <-q.stopCh: // 3: stop: send what remains and end
			payload, traceIDs = q.drainQueue(payload, traceIDs)
			if len(traceIDs) > 0 {
				q.sendAndLog(payload, traceIDs)
			}
			return
		}
	}
}

// run is design 2's single worker: the same select, but each flush hands a
// deep copy of the buffer to a new goroutine, so the worker can refill its
// buffer at once. Nothing bounds the number of sends under way.
func (q *BatchProcessor) run(ticker *time.Ticker) {
	defer q.workers.Done()
	defer ticker.Stop()
	var payload []byte
	var traceIDs []string
	flush := func() {
		p, ids := deepCopy(payload), deepCopy(traceIDs)
		q.inflight.Add(1)
		go func() {
			defer q.inflight.Done()
			q.sendAndLog(p, ids)
		}()
		payload, traceIDs = payload[:0], traceIDs[:0]
	}
	for {
		select {
		case e := <-q.queue:
			payload = append(append(payload, e.Payload...), '\n')
			traceIDs = append(traceIDs, e.TraceID)
			if len(traceIDs) >= q.limit {
				flush()
			}
		case <-ticker.C:
			if len(traceIDs) > 0 {
				flush()
			}
		case <-q.stopCh:
			payload, traceIDs = q.drainQueue(payload, traceIDs)
			if len(traceIDs) > 0 {
				flush()
			}
			return
		}
	}
}

// deepCopy is the post's copy, verbatim.
func deepCopy[T any](src []T) []T {
	if src == nil {
		return nil
	}
	dst := make([]T, len(src))
	copy(dst, src)
	return dst
}

// drainQueue moves what is still in a buffered queue into the buffer at
// stop. (With the post's unbuffered queue there is never anything.)
func (q *BatchProcessor) drainQueue(payload []byte, traceIDs []string) ([]byte, []string) {
	for {
		select {
		case e := <-q.queue:
			payload = append(append(payload, e.Payload...), '\n')
			traceIDs = append(traceIDs, e.TraceID)
		default:
			return payload, traceIDs
		}
	}
}

// sendAndLog sends one request and, when it succeeded, logs count=N, the
// line the post summed to count deliveries.
func (q *BatchProcessor) sendAndLog(payload []byte, traceIDs []string) {
	if err := q.send(q.sendCtx, payload, traceIDs); err != nil {
		q.mu.Lock()
		q.failed += len(traceIDs)
		q.mu.Unlock()
		q.logger.Error("send failed", "events", len(traceIDs), "err", err)
		return
	}
	q.logger.Info("sent", "count", len(traceIDs))
}

// Stop signals the workers, which send what their buffers hold and end, then
// waits for every send under way. If ctx ends first, the sends still under
// way are cancelled and Stop waits for them to return before returning
// ctx's error: no goroutine of the processor outlives Stop. Add returns
// ErrStopped afterwards. Calls after the first return nil at once.
func (q *BatchProcessor) Stop(ctx context.Context) error {
	err := error(nil)
	q.stopOnce.Do(func() {
		q.logger.Info("stopping BatchProcessor, waiting for remaining events to be sent", "func", "BatchProcessor.Stop")
		close(q.stopCh)
		done := make(chan struct{})
		go func() {
			q.workers.Wait()
			q.inflight.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
			q.cancel()
			<-done
		}
		q.cancel()
		// Anything pushed onto a buffered queue after the workers drained it
		// is counted, not silently forgotten.
		_, rest := q.drainQueue(nil, nil)
		q.mu.Lock()
		q.dropped += len(rest)
		q.mu.Unlock()
	})
	return err
}

// Counts reports events whose request failed and events found in the queue
// after the workers ended. Valid after Stop returned.
func (q *BatchProcessor) Counts() (failed, dropped int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failed, q.dropped
}
