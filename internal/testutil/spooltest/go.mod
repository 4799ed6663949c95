module github.com/batchproc/batchproc/internal/testutil/spooltest

go 1.26.0

// The modules of this repository are developed together (go.work);
// these replaces make the module build on its own from a checkout.
replace (
	github.com/batchproc/batchproc => ../../..
	github.com/batchproc/batchproc/spool => ../../../spool
)

require (
	github.com/batchproc/batchproc v0.0.0-00010101000000-000000000000
	github.com/batchproc/batchproc/spool v0.0.0-00010101000000-000000000000
)
