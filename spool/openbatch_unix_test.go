//go:build unix

package spool_test

import (
	"os"
	"syscall"
	"testing"
	"unsafe"
)

// BenchmarkOpenBatchCopy measures ways to make the batch being filled
// crash-safe, against a copy into a heap buffer: the same copy into a
// shared memory-mapped file with the filled length stored after each
// event (the page cache, which a killed process cannot lose: what the
// spool's regions do, the region being the batch's own buffer), and one
// write(2) per event into a file.
func BenchmarkOpenBatchCopy(b *testing.B) {
	const region = 1 << 20
	run := func(b *testing.B, buf []byte, commit func(n int)) {
		b.SetBytes(int64(len(benchPayload)))
		off := 0
		for b.Loop() {
			if off+len(benchPayload)+1 > len(buf) {
				off = 0
			}
			copy(buf[off:], benchPayload)
			buf[off+len(benchPayload)] = '\n'
			off += len(benchPayload) + 1
			commit(off)
		}
	}
	b.Run("heap", func(b *testing.B) {
		buf := make([]byte, region)
		run(b, buf, func(int) {})
	})
	b.Run("mmap", func(b *testing.B) {
		f, err := os.Create(b.TempDir() + "/open.buf")
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(region + 8); err != nil {
			b.Fatal(err)
		}
		m, err := syscall.Mmap(int(f.Fd()), 0, region+8, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
		if err != nil {
			b.Fatal(err)
		}
		defer syscall.Munmap(m)
		hdr := (*uint64)(unsafe.Pointer(&m[0]))
		run(b, m[8:], func(n int) { *hdr = uint64(n) })
	})
	b.Run("write", func(b *testing.B) {
		f, err := os.Create(b.TempDir() + "/open.log")
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		line := append(append([]byte(nil), benchPayload...), '\n')
		b.SetBytes(int64(len(benchPayload)))
		var off int64
		for b.Loop() {
			if off > region {
				off = 0
			}
			if _, err := f.WriteAt(line, off); err != nil {
				b.Fatal(err)
			}
			off += int64(len(line))
		}
	})
}
