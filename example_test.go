package batchproc_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/batchproc/batchproc"
)

// A processor writing NDJSON to stdout: events are batched, and Shutdown
// sends what remains.
func Example() {
	p, err := batchproc.New(batchproc.NewWriterSink(os.Stdout),
		batchproc.WithMaxBatchEvents(100),
		batchproc.WithFlushInterval(500*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		payload := fmt.Appendf(nil, `{"id":"e%d","type":"signup"}`, i)
		if err := p.Add(ctx, batchproc.Event{ID: fmt.Sprint("e", i), Payload: payload}); err != nil {
			log.Print(err)
		}
	}
	// On shutdown, give the drain a deadline.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Print(err)
	}
	st := p.Stats()
	fmt.Println("delivered", st.Delivered, "of", st.Added)
	// Output:
	// {"id":"e0","type":"signup"}
	// {"id":"e1","type":"signup"}
	// {"id":"e2","type":"signup"}
	// delivered 3 of 3
}

// TryAdd never blocks: a request handler that must not wait sheds the event
// and counts it instead.
func ExampleProcessor_TryAdd() {
	p, _ := batchproc.New(batchproc.NewWriterSink(os.Stdout))
	defer p.Shutdown(context.Background())

	err := p.TryAdd(batchproc.Event{Payload: []byte(`{"type":"click"}`)})
	switch {
	case errors.Is(err, batchproc.ErrFull):
		fmt.Println("shed: memory budget full")
	case err != nil:
		fmt.Println("rejected:", err)
	default:
		fmt.Println("queued")
	}
	// Output:
	// queued
	// {"type":"click"}
}

// A Sink classifies its errors; the processor retries. Here the first send
// fails with a Retry-After hint, and the failure callback stays unused.
func ExampleSinkFunc() {
	attempts := 0
	sink := batchproc.SinkFunc(func(ctx context.Context, b *batchproc.Batch) error {
		attempts++
		if attempts == 1 {
			return batchproc.RetryAfter(errors.New("loader busy"), 10*time.Millisecond)
		}
		fmt.Printf("delivered %d events under key %t\n", b.Len(), b.Key() != "")
		return nil
	})
	p, _ := batchproc.New(sink,
		batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
			fmt.Println("failed:", b.Len(), err)
		}))
	_ = p.Add(context.Background(), batchproc.Event{Payload: []byte(`{}`)})
	_ = p.Flush(context.Background())
	_ = p.Shutdown(context.Background())
	fmt.Println("attempts:", attempts)
	// Output:
	// delivered 1 events under key true
	// attempts: 2
}

// The shutdown order for a service: on SIGTERM (or SIGINT), stop the HTTP
// server first, so no handler adds more events, then drain the processor
// with a fresh context (the signal's context is already cancelled, and a
// drain given it would fail every buffered event), then close the sink.
func ExampleProcessor_Shutdown() {
	sink := batchproc.NewWriterSink(os.Stdout) // httpsink.New(...) in a real service
	p, err := batchproc.New(sink)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /signup", func(w http.ResponseWriter, r *http.Request) {
		if err := p.Add(r.Context(), batchproc.Event{Payload: []byte(`{"type":"signup"}`)}); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { _ = srv.Serve(ln) }()

	// A request, then the signal (here sent by the example to itself).
	resp, err := http.Post("http://"+ln.Addr().String()+"/signup", "application/json", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	self, _ := os.FindProcess(os.Getpid())
	_ = self.Signal(os.Interrupt)
	<-ctx.Done()

	drain, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(drain); err != nil { // 1. no new events
		log.Print(err)
	}
	if err := p.Shutdown(drain); err != nil { // 2. the buffered ones are sent
		log.Print(err)
	}
	// 3. close the sink here (httpsink's Close); a WriterSink has nothing to close.
	st := p.Stats()
	fmt.Println("delivered", st.Delivered, "of", st.Added)
	// Output:
	// {"type":"signup"}
	// delivered 1 of 1
}
