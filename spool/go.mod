module github.com/batchproc/batchproc/spool

go 1.26.0

// The modules of this repository are developed together (go.work);
// this replace makes the module build on its own from a checkout.
replace github.com/batchproc/batchproc => ..

require (
	github.com/batchproc/batchproc v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
	pgregory.net/rapid v1.3.0
)
