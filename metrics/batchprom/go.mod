module github.com/batchproc/batchproc/metrics/batchprom

go 1.26.0

// The modules of this repository are developed together (go.work);
// these replaces make the module build on its own from a checkout.
replace (
	github.com/batchproc/batchproc => ../..
	github.com/batchproc/batchproc/internal/testutil/spooltest => ../../internal/testutil/spooltest
	github.com/batchproc/batchproc/spool => ../../spool
)

require (
	github.com/batchproc/batchproc v0.0.0-00010101000000-000000000000
	github.com/batchproc/batchproc/spool v0.0.0-00010101000000-000000000000
	github.com/prometheus/client_golang v1.25.0
	github.com/prometheus/client_model v0.6.3
	github.com/prometheus/common v0.74.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/batchproc/batchproc/internal/testutil/spooltest v0.0.0-00010101000000-000000000000
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/kylelemons/godebug v1.1.0 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/pandatix/go-abnf v0.5.5 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
