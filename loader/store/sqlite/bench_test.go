package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/sqlite"
	"github.com/batchproc/batchproc/loader/store/storetest"
)

// BenchmarkStore: go test -run '^$' -bench Store -benchmem -count 6 ./loader/store/sqlite
func BenchmarkStore(b *testing.B) {
	storetest.Benchmark(b, func(b *testing.B) store.Store {
		s, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	})
}
