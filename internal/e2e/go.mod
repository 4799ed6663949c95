module github.com/batchproc/batchproc/internal/e2e

go 1.26.0

// The modules of this repository are developed together (go.work);
// these replaces make each one build on its own from a checkout.
replace (
	github.com/batchproc/batchproc => ../..
	github.com/batchproc/batchproc/bench => ../../bench
	github.com/batchproc/batchproc/cmd/batchbench => ../../cmd/batchbench
	github.com/batchproc/batchproc/cmd/batchloader => ../../cmd/batchloader
	github.com/batchproc/batchproc/internal/coretest => ../coretest
	github.com/batchproc/batchproc/internal/testutil/pgtest => ../testutil/pgtest
	github.com/batchproc/batchproc/kafkasink => ../../kafkasink
	github.com/batchproc/batchproc/loader => ../../loader
	github.com/batchproc/batchproc/spool => ../../spool
)

require (
	github.com/batchproc/batchproc v0.0.0-00010101000000-000000000000
	github.com/batchproc/batchproc/internal/testutil/pgtest v0.0.0-00010101000000-000000000000
	github.com/batchproc/batchproc/loader v0.0.0-00010101000000-000000000000
	github.com/batchproc/batchproc/spool v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dustin/go-humanize v1.1.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/pgx/v5 v5.13.0 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/mattn/go-isatty v0.0.24 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/ncruces/go-strftime v1.1.0 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	github.com/remyoudompheng/bigfft v0.0.0-20230129092748-24d4a6f8daec // indirect
	github.com/twmb/franz-go v1.22.3 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.1 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	modernc.org/libc v1.80.1 // indirect
	modernc.org/mathutil v1.7.1 // indirect
	modernc.org/memory v1.12.1 // indirect
	modernc.org/sqlite v1.62.0 // indirect
)
