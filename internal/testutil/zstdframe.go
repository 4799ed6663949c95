package testutil

import "encoding/binary"

// ZstdRLEFrame builds a zstd frame declaring a window of 1<<windowLog
// bytes, made of blocks RLE blocks of 128 KiB of 'a' each: 4 bytes of input
// per 128 KiB of output. It is built by hand, byte by byte, because no
// encoder writes such a frame: the decompression-bomb tests of the loader
// and of cmd/batchloader use it.
func ZstdRLEFrame(windowLog, blocks int) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte(windowLog-10) << 3}
	const blockSize = 128 << 10
	for i := range blocks {
		h := uint32(blockSize<<3 | 1<<1) // RLE
		if i == blocks-1 {
			h |= 1 // last block
		}
		b = binary.LittleEndian.AppendUint32(b, h)[:len(b)+3]
		b = append(b, 'a')
	}
	return b
}
