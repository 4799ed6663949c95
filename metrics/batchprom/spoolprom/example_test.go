package spoolprom_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/metrics/batchprom"
	"github.com/batchproc/batchproc/metrics/batchprom/spoolprom"
	"github.com/batchproc/batchproc/spool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func Example() {
	dir, err := os.MkdirTemp("", "spool") // /var/lib/myservice/spool in a service
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Both collectors are hooks: the processor binds them to itself and
	// to its spool.
	c, sc := batchprom.New(), spoolprom.New()
	sink := &batchproctest.Recorder{} // httpsink.New(...) in a service
	p, err := batchproc.New(sink, spool.WithSpool(dir), batchproc.WithHooks(c, sc))
	if err != nil {
		log.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, sc)

	ctx := context.Background()
	for i := range 3 {
		_ = p.Add(ctx, batchproc.Event{ID: fmt.Sprint(i), Payload: []byte(`{"msg":"hello"}`)})
	}
	_ = p.Shutdown(ctx)

	w := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(w.Body.String()) {
		if strings.HasPrefix(line, "batchproc_spool_batches") || strings.HasPrefix(line, "batchproc_spool_failed") {
			fmt.Print(line)
		}
	}
	// Output:
	// batchproc_spool_batches 0
	// batchproc_spool_batches_acked_total 1
	// batchproc_spool_batches_appended_total 1
	// batchproc_spool_batches_dropped_total 0
	// batchproc_spool_batches_in_regions 0
	// batchproc_spool_batches_recovered_total 0
	// batchproc_spool_batches_replayed_total 0
	// batchproc_spool_failed 0
}
