package spool

// The CRC-32C arithmetic that lets a batch record's CRC be computed from
// the CRC of its head and the CRC the processor computed of its NDJSON at
// the batch's cut (batchproc.Batch.NDJSONChecksum), without reading the
// NDJSON again: crc(a || b) = crc(a) * x^(8*len(b)) + crc(b), modulo the
// polynomial, as zlib's crc32_combine computes it. hash/crc32 has no
// combine, and no library that does is worth a dependency for 30 lines.

// castagnoliReversed is the Castagnoli polynomial, bit-reversed, as
// hash/crc32 uses it (crc32.Castagnoli).
const castagnoliReversed = 0x82f63b78

// multModP returns a(x) * b(x) modulo the polynomial (bit-reversed
// representation: the top bit is x^0).
func multModP(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				break
			}
		}
		if b&1 != 0 {
			b = b>>1 ^ castagnoliReversed
		} else {
			b >>= 1
		}
	}
	return p
}

// x2n[k] is x^(2^k) modulo the polynomial.
var x2n = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	for k := range t {
		t[k] = p
		p = multModP(p, p)
	}
	return t
}()

// crcCombine returns the CRC-32C of a || b from crcA, that of a, and crcB,
// that of b, which is lenB bytes long.
func crcCombine(crcA, crcB uint32, lenB int) uint32 {
	// x^(8*lenB): the product of x^(2^k) over the bits k of 8*lenB.
	p := uint32(1) << 31 // x^0
	for n, k := uint64(lenB), 3; n != 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = multModP(x2n[k&31], p)
		}
	}
	return multModP(p, crcA) ^ crcB
}
