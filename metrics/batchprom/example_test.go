package batchprom_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"strings"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/metrics/batchprom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func Example() {
	// The collector comes first: the processor takes it as a hook.
	c := batchprom.New(batchprom.WithNamespace("myservice"))
	sink := &batchproctest.Recorder{} // httpsink.New(...) in a service
	p, err := batchproc.New(sink, batchproc.WithHooks(c))
	if err != nil {
		log.Fatal(err)
	}
	c.Observe(p) // its Stats are read at every scrape
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)

	ctx := context.Background()
	for i := range 3 {
		_ = p.Add(ctx, batchproc.Event{ID: fmt.Sprint(i), Payload: []byte(`{"msg":"hello"}`)})
	}
	_ = p.Shutdown(ctx)

	// A service serves it: http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})).
	w := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(w.Body.String()) {
		if strings.HasPrefix(line, "myservice_batchproc_events_") && !strings.Contains(line, "{") {
			fmt.Print(line)
		}
	}
	// Output:
	// myservice_batchproc_events_added_total 3
	// myservice_batchproc_events_delivered_total 3
	// myservice_batchproc_events_failed_total 0
	// myservice_batchproc_events_pending 0
	// myservice_batchproc_events_replayed_total 0
}
