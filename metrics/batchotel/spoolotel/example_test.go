package spoolotel_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"slices"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
	"github.com/batchproc/batchproc/metrics/batchotel/spoolotel"
	"github.com/batchproc/batchproc/spool"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func Example() {
	dir, err := os.MkdirTemp("", "spool") // /var/lib/myservice/spool in a service
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	reader := sdkmetric.NewManualReader() // the service's exporter
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	ctx := context.Background()
	defer provider.Shutdown(ctx)

	// A hook: the processor binds it to its spool (batchotel.New's
	// Metrics goes beside it for the processor's own metrics).
	m, err := spoolotel.New(spoolotel.WithMeterProvider(provider))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	p, err := batchproc.New(&batchproctest.Recorder{}, spool.WithSpool(dir), batchproc.WithHooks(m))
	if err != nil {
		log.Fatal(err)
	}
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
			if sum, ok := mt.Data.(metricdata.Sum[int64]); ok && len(sum.DataPoints) == 1 && mt.Unit == "{batch}" {
				lines = append(lines, fmt.Sprintf("%s %d", mt.Name, sum.DataPoints[0].Value))
			}
		}
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// batchproc.spool.batch.acked 1
	// batchproc.spool.batch.appended 1
	// batchproc.spool.batch.dropped 0
	// batchproc.spool.batch.in_regions 0
	// batchproc.spool.batch.recovered 0
	// batchproc.spool.batch.region_appended 0
	// batchproc.spool.batch.replayed 0
	// batchproc.spool.batches 0
	// batchproc.spool.open_batch.overflowed 0
	// batchproc.spool.open_batch.recovered 0
	// batchproc.spool.open_batch.unguarded 0
	// batchproc.spool.recovery.lost_batches 0
}
