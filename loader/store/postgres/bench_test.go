package postgres_test

import (
	"testing"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/storetest"
)

// BenchmarkStore: go test -run '^$' -bench Store -benchmem -count 6 ./loader/store/postgres
// (client and server share the machine).
func BenchmarkStore(b *testing.B) {
	storetest.Benchmark(b, func(b *testing.B) store.Store { return open(b, testDSN(b)) })
}
