//go:build linux

package spool

import (
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// BenchmarkFileWrite is what reusing segment files rests on: writing
// 200 KB chunks (a batch) through a 64 MiB file that is new each time it
// fills (removed after), fallocated new, reused (its pages in the page
// cache), or mapped fresh, against a plain memory copy, in one run:
//
//	go test -run '^$' -bench FileWrite -count 3 ./spool/
func BenchmarkFileWrite(b *testing.B) {
	const chunk, seg = 200 << 10, 64 << 20
	src := make([]byte, chunk)
	run := func(b *testing.B, open func(n int) (write func(off int64), done func())) {
		b.SetBytes(chunk)
		var write func(int64)
		var done func()
		off, n := int64(seg), 0
		for b.Loop() {
			if off+chunk > seg {
				if done != nil {
					done()
				}
				write, done = open(n)
				n, off = n+1, 0
			}
			write(off)
			off += chunk
		}
		done()
	}
	newFile := func(b *testing.B, dir string, n int, size int64, falloc bool) *os.File {
		f, err := os.Create(filepath.Join(dir, strconv.Itoa(n)))
		if err != nil {
			b.Fatal(err)
		}
		if falloc {
			if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
				b.Fatal("fallocate:", err)
			}
		}
		return f
	}
	for _, falloc := range []bool{false, true} {
		name := "file=new"
		if falloc {
			name = "file=fallocated"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			run(b, func(n int) (func(int64), func()) {
				f := newFile(b, dir, n, seg, falloc)
				return func(off int64) { f.WriteAt(src, off) }, func() { f.Close(); os.Remove(f.Name()) }
			})
		})
	}
	b.Run("file=reused", func(b *testing.B) {
		f := newFile(b, b.TempDir(), 0, 0, false)
		defer f.Close()
		for off := int64(0); off < seg; off += chunk {
			f.WriteAt(src, off)
		}
		run(b, func(int) (func(int64), func()) {
			return func(off int64) { f.WriteAt(src, off) }, func() {}
		})
	})
	b.Run("file=mmap-new", func(b *testing.B) {
		dir := b.TempDir()
		run(b, func(n int) (func(int64), func()) {
			f := newFile(b, dir, n, 0, false)
			if err := f.Truncate(seg); err != nil {
				b.Fatal(err)
			}
			m, err := syscall.Mmap(int(f.Fd()), 0, seg, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
			if err != nil {
				b.Fatal(err)
			}
			return func(off int64) { copy(m[off:], src) }, func() { syscall.Munmap(m); f.Close(); os.Remove(f.Name()) }
		})
	})
	b.Run("file=none", func(b *testing.B) { // the floor: a memory copy
		dst := make([]byte, seg)
		run(b, func(int) (func(int64), func()) {
			return func(off int64) { copy(dst[off:], src) }, func() {}
		})
	})
}

// BenchmarkChecksum is the CRC-32C of a 200 KB batch whose bytes are in
// this core's cache, as the processor computes it at the cut.
func BenchmarkChecksum(b *testing.B) {
	buf := make([]byte, 200<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		crc32.Checksum(buf, castagnoli)
	}
}
