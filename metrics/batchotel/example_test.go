package batchotel_test

import (
	"context"
	"fmt"
	"log"
	"slices"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/metrics/batchotel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func Example() {
	// A service sets up its SDK and exporter once; a ManualReader stands in
	// for the exporter here.
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	ctx := context.Background()
	defer provider.Shutdown(ctx)

	// The instrumentation comes first: the processor takes it as a hook.
	m, err := batchotel.New(batchotel.WithMeterProvider(provider))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	sink := &batchproctest.Recorder{} // httpsink.New(...) in a service
	p, err := batchproc.New(sink, batchproc.WithHooks(m))
	if err != nil {
		log.Fatal(err)
	}
	m.Observe(p) // its Stats are observed at every collection

	for i := range 3 {
		_ = p.Add(ctx, batchproc.Event{ID: fmt.Sprint(i), Payload: []byte(`{"msg":"hello"}`)})
	}
	_ = p.Shutdown(ctx)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		log.Fatal(err)
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if sum, ok := mt.Data.(metricdata.Sum[int64]); ok && sum.IsMonotonic && len(sum.DataPoints) == 1 {
				lines = append(lines, fmt.Sprintf("%s %d %s", mt.Name, sum.DataPoints[0].Value, mt.Unit))
			}
		}
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// batchproc.batch.delivered 1 {batch}
	// batchproc.batch.journaled 0 {batch}
	// batchproc.batch.unguarded 0 {batch}
	// batchproc.batch.unjournaled 0 {batch}
	// batchproc.event.added 3 {event}
	// batchproc.event.delivered 3 {event}
	// batchproc.event.failed 0 {event}
	// batchproc.event.replayed 0 {event}
	// batchproc.send.retried 0 {send}
}
