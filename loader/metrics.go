package loader

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are a Server's Prometheus metrics, in a registry of its own so
// that several Servers (tests, an embedding program) never collide.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec // by endpoint and status code
	events       prometheus.Counter
	batches      prometheus.Counter
	duplicates   prometheus.Counter
	rejected     prometheus.Counter
	kafkaRejects prometheus.Counter
	bytesIn      prometheus.Counter
	bytesDecoded prometheus.Counter
	storeSeconds prometheus.Histogram
	inFlight     prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batchloader_http_requests_total",
			Help: "HTTP requests answered, by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchloader_events_stored_total",
			Help: "Events stored (duplicates excluded).",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchloader_batches_stored_total",
			Help: "Batches stored (duplicates excluded).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchloader_duplicate_batches_total",
			Help: "Batches acknowledged again for an Idempotency-Key already stored.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchloader_rejected_batches_total",
			Help: "POST /v1/batches requests answered with an error status.",
		}),
		kafkaRejects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchloader_kafka_records_rejected_total",
			Help: "Kafka records skipped as no storable batch (bad key or headers, invalid NDJSON, over a limit); each is logged.",
		}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchloader_received_bytes_total",
			Help: "Batch request body bytes received, as sent (compressed).",
		}),
		bytesDecoded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchloader_decoded_bytes_total",
			Help: "Batch request body bytes after decompression.",
		}),
		storeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "batchloader_store_duration_seconds",
			Help:    "Time of one Store call.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14), // 100µs .. ~15s
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "batchloader_ingest_in_flight",
			Help: "Batch requests being decoded or stored.",
		}),
	}
	m.reg.MustRegister(m.requests, m.events, m.batches, m.duplicates, m.rejected, m.kafkaRejects,
		m.bytesIn, m.bytesDecoded, m.storeSeconds, m.inFlight,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// codeLabels avoids formatting the common status codes per request.
var codeLabels = map[int]string{}

func init() {
	for _, c := range []int{200, 400, 401, 404, 405, 413, 415, 429, 431, 500, 503} {
		codeLabels[c] = strconv.Itoa(c)
	}
}

func (m *metrics) request(endpoint string, code int) {
	label, ok := codeLabels[code]
	if !ok {
		label = strconv.Itoa(code)
	}
	m.requests.WithLabelValues(endpoint, label).Inc()
}
