package spool

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// crcCombine agrees with hash/crc32 on the concatenation, for lengths
// around every power of two up to 4 MiB and random contents.
func TestCRCCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 4<<20+256)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	lengths := []int{0, 1, 2, 3, 7}
	for n := 8; n <= 4<<20; n *= 2 {
		lengths = append(lengths, n-1, n, n+1)
	}
	for _, lenA := range []int{0, 1, 9, 200} {
		for _, lenB := range lengths {
			a, b := buf[:lenA], buf[lenA:lenA+lenB]
			want := crc32.Checksum(buf[:lenA+lenB], castagnoli)
			if got := crcCombine(crc32.Checksum(a, castagnoli), crc32.Checksum(b, castagnoli), lenB); got != want {
				t.Fatalf("len(a) %d, len(b) %d: combined %08x, want %08x", lenA, lenB, got, want)
			}
		}
	}
}

func FuzzCRCCombine(f *testing.F) {
	f.Add([]byte("head"), []byte("{\"a\":1}\n"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		want := crc32.Checksum(append(append([]byte(nil), a...), b...), castagnoli)
		if got := crcCombine(crc32.Checksum(a, castagnoli), crc32.Checksum(b, castagnoli), len(b)); got != want {
			t.Fatalf("combined %08x, want %08x", got, want)
		}
	})
}
