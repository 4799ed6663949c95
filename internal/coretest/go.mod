module github.com/batchproc/batchproc/internal/coretest

go 1.26.0

// The modules of this repository are developed together (go.work);
// these replaces make each one build on its own from a checkout.
replace (
	github.com/batchproc/batchproc => ../..
	github.com/batchproc/batchproc/bench => ../../bench
	github.com/batchproc/batchproc/cmd/batchbench => ../../cmd/batchbench
	github.com/batchproc/batchproc/cmd/batchloader => ../../cmd/batchloader
	github.com/batchproc/batchproc/internal/e2e => ../e2e
	github.com/batchproc/batchproc/internal/testutil/pgtest => ../testutil/pgtest
	github.com/batchproc/batchproc/kafkasink => ../../kafkasink
	github.com/batchproc/batchproc/loader => ../../loader
)

require (
	github.com/batchproc/batchproc v0.0.0-00010101000000-000000000000
	go.opentelemetry.io/otel v1.47.0
	go.opentelemetry.io/otel/sdk/log v1.47.0
	go.uber.org/goleak v1.3.0
	pgregory.net/rapid v1.3.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/go-logr/logr v1.4.4 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/google/uuid v1.6.0 // indirect
	go.opentelemetry.io/auto/sdk v1.2.1 // indirect
	go.opentelemetry.io/otel/log v1.47.0 // indirect
	go.opentelemetry.io/otel/metric v1.47.0 // indirect
	go.opentelemetry.io/otel/sdk v1.47.0 // indirect
	go.opentelemetry.io/otel/trace v1.47.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
