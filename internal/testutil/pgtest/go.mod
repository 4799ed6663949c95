module github.com/batchproc/batchproc/internal/testutil/pgtest

go 1.26.0

// The modules of this repository are developed together (go.work);
// these replaces make each one build on its own from a checkout.
replace (
	github.com/batchproc/batchproc => ../../..
	github.com/batchproc/batchproc/bench => ../../../bench
	github.com/batchproc/batchproc/cmd/batchbench => ../../../cmd/batchbench
	github.com/batchproc/batchproc/cmd/batchloader => ../../../cmd/batchloader
	github.com/batchproc/batchproc/internal/coretest => ../../coretest
	github.com/batchproc/batchproc/internal/e2e => ../../e2e
	github.com/batchproc/batchproc/kafkasink => ../../../kafkasink
	github.com/batchproc/batchproc/loader => ../../../loader
)

require github.com/jackc/pgx/v5 v5.13.0

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	golang.org/x/text v0.41.0 // indirect
)
