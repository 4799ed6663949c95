package e2e

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/httpsink"
	"github.com/batchproc/batchproc/loader"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/sqlite"
)

// BenchmarkEndToEnd measures Processor.Add → httpsink → loopback HTTP →
// loader → store, with 200-byte events in batches of 1,000, reporting
// delivered events/s (everything added is flushed inside the timing).
//
//	go test -run '^$' -bench EndToEnd -benchmem -count 6 ./internal/e2e
func BenchmarkEndToEnd(b *testing.B) {
	for _, name := range []string{"discard", "sqlite"} {
		b.Run("store="+name, func(b *testing.B) {
			var st store.Store = store.NewDiscard()
			if name == "sqlite" {
				s, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"))
				if err != nil {
					b.Fatal(err)
				}
				st = s
			}
			srv, err := loader.New(loader.Config{Store: st})
			if err != nil {
				b.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			sink, err := httpsink.New("http://" + ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			p, err := batchproc.New(sink, batchproc.WithOnFailure(func(_ *batchproc.Batch, err error) { b.Error(err) }))
			if err != nil {
				b.Fatal(err)
			}
			payload := []byte(`{"id":"0123456789abcdef","type":"page_view","ts":"2026-11-25T09:00:00Z","pad":"`)
			for len(payload) < 198 {
				payload = append(payload, 'x')
			}
			payload = append(payload, '"', '}')
			e := batchproc.Event{ID: "0123456789abcdef", Payload: payload}
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			start := time.Now()
			for b.Loop() {
				if err := p.Add(context.Background(), e); err != nil {
					b.Fatal(err)
				}
			}
			if err := p.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			b.StopTimer()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = p.Shutdown(ctx)
			_ = sink.Close()
			_ = srv.Shutdown(ctx)
			if err := <-served; err != http.ErrServerClosed {
				b.Fatal(err)
			}
			if got := srv.Stats().Events; got != int64(p.Stats().Delivered) {
				b.Fatalf("loader stored %d events, processor delivered %d", got, p.Stats().Delivered)
			}
		})
	}
}
