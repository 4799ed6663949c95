package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/sqlite"
	"github.com/batchproc/batchproc/loader/store/storetest"
)

// BenchmarkStore: go test -run '^$' -bench Store -benchmem -count 6 ./loader/store/sqlite
//
// With the default synchronous=FULL (sync=FULL), the same without group
// commit (sync=FULL-nogroup), and with synchronous=NORMAL.
func BenchmarkStore(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []sqlite.Option
	}{
		{"sync=FULL", nil},
		{"sync=FULL-nogroup", []sqlite.Option{sqlite.WithGroupCommit(0)}},
		{"sync=NORMAL", []sqlite.Option{sqlite.WithSynchronous(sqlite.SyncNormal)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			storetest.Benchmark(b, func(b *testing.B) store.Store {
				s, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"), c.opts...)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = s.Close() })
				return s
			})
		})
	}
}
