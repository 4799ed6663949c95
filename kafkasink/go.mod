module github.com/batchproc/batchproc/kafkasink

go 1.26.0

// The modules of this repository are developed together (go.work);
// these replaces make each one build on its own from a checkout.
replace (
	github.com/batchproc/batchproc => ..
	github.com/batchproc/batchproc/bench => ../bench
	github.com/batchproc/batchproc/cmd/batchbench => ../cmd/batchbench
	github.com/batchproc/batchproc/cmd/batchloader => ../cmd/batchloader
	github.com/batchproc/batchproc/internal/coretest => ../internal/coretest
	github.com/batchproc/batchproc/internal/e2e => ../internal/e2e
	github.com/batchproc/batchproc/internal/testutil/pgtest => ../internal/testutil/pgtest
	github.com/batchproc/batchproc/loader => ../loader
)

require (
	github.com/batchproc/batchproc v0.0.0-00010101000000-000000000000
	github.com/twmb/franz-go v1.22.3
	github.com/twmb/franz-go/pkg/kadm v1.20.0
	github.com/twmb/franz-go/pkg/kfake v0.0.0-20260918054303-01f206a7e32c
	github.com/twmb/franz-go/pkg/kmsg v1.15.1
)

require (
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
)
