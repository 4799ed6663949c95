package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"

	"github.com/batchproc/batchproc"
)

// Record framing: see the package documentation, "On-disk format".
const (
	headerSize = 9 // length (4) + CRC32C (4) + type (1)

	recBatch   byte = 1
	recAck     byte = 2
	recSegment byte = 3 // a segment's first record, and only there

	// segmentRecordSize is the size of a segment's first record: its
	// nonce and its file's previous nonce, 8 bytes each.
	segmentRecordSize = headerSize + 16

	// maxBody bounds a record's length field, so a corrupt length is
	// recognised as such before anything is read or allocated for it.
	maxBody = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordCRC is the CRC32C of the length field, the type and the body: the
// record's CRC before its segment's nonce is bound in (bindCRC).
func recordCRC(hdr []byte, body []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr[0:4])
	c = crc32.Update(c, castagnoli, hdr[8:9])
	return crc32.Update(c, castagnoli, body)
}

// bindCRC extends a record's CRC with a 64-bit value: its segment's nonce
// (a segment record: the segment's id). A record checks only in its own
// segment. A segment file is reused for a later segment (Spool.reclaim
// keeps one spare) and overwritten from its start, so past the new
// records' end lie the records of its previous lives; bound to another
// nonce, none of them checks as part of the new segment. The nonce is
// random, not the id: after a power loss without directory fsyncs
// (SyncNever) a file may be back under an older name with records of a
// later segment in it, and ids the lost directory entries had used are
// used again.
func bindCRC(c uint32, v uint64) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return crc32.Update(c, castagnoli, b[:])
}

// appendBatchHead appends to dst the batch record of b, with sequence
// number seq, all but its last part: the header, then the body's seq, key,
// event count and ids. The record ends with b.NDJSON(), which the header's
// length and CRC cover and which the caller writes right after what this
// returns: the batch's events are not copied on their way to the file. The
// CRC field holds recordCRC, unbound: writeRecord binds it to the segment
// the record lands in.
func appendBatchHead(dst []byte, seq uint64, b *batchproc.Batch) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, headerSize)...)
	dst = binary.AppendUvarint(dst, seq)
	key := b.Key()
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	n := b.Len()
	dst = binary.AppendUvarint(dst, uint64(n))
	for i := range n {
		id := b.Event(i).ID
		dst = binary.AppendUvarint(dst, uint64(len(id)))
		dst = append(dst, id...)
	}
	head, ndjson := dst[start:], b.NDJSON()
	binary.LittleEndian.PutUint32(head[0:4], uint32(len(head)-headerSize+len(ndjson)))
	head[8] = recBatch
	c := recordCRC(head, head[headerSize:])
	if sum, ok := b.NDJSONChecksum(); ok {
		// Kept by Add while the bytes were in its core's cache: reading
		// the batch again here, from another core's, was a fifth of a
		// saturated spool's CPU.
		c = crcCombine(c, sum, len(ndjson))
	} else {
		c = crc32.Update(c, castagnoli, ndjson)
	}
	binary.LittleEndian.PutUint32(head[4:8], c)
	return dst
}

// appendAckRecord appends the ack record of the batch with sequence number
// seq to dst.
func appendAckRecord(dst []byte, seq uint64) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, headerSize)...)
	dst = binary.AppendUvarint(dst, seq)
	sealRecord(dst[start:], recAck)
	return dst
}

// appendSegmentRecord appends to dst the record a segment starts with:
// its nonce, and the nonce of the segment whose file it reuses (0 for a
// new file).
func appendSegmentRecord(dst []byte, nonce, prev uint64) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, headerSize)...)
	dst = binary.LittleEndian.AppendUint64(dst, nonce)
	dst = binary.LittleEndian.AppendUint64(dst, prev)
	sealRecord(dst[start:], recSegment)
	return dst
}

// decodeSegment decodes a segment record's body.
func decodeSegment(body []byte) (nonce, prev uint64, err error) {
	if len(body) != 16 {
		return 0, 0, errBadBody
	}
	return binary.LittleEndian.Uint64(body), binary.LittleEndian.Uint64(body[8:]), nil
}

// sealRecord fills in the header of rec, whose body follows the header,
// with the CRC unbound (see bindCRC).
func sealRecord(rec []byte, typ byte) []byte {
	binary.LittleEndian.PutUint32(rec[0:4], uint32(len(rec)-headerSize))
	rec[8] = typ
	binary.LittleEndian.PutUint32(rec[4:8], recordCRC(rec, rec[headerSize:]))
	return rec
}

// parseRecord reads the record at the start of data, whose CRC binds it to
// bind (see bindCRC). It returns its type, body and total length, or
// ok=false if data does not start with a whole record whose CRC, bound to
// bind, matches and whose body decodes.
func parseRecord(data []byte, bind uint64) (typ byte, body []byte, n int, ok bool) {
	typ, body, n, which, ok := parseRecordIn(data, bind, bind)
	return typ, body, n, ok && which == 0
}

// parseRecordIn is parseRecord for a record that may be bound to either of
// two values: which is 0 if its CRC binds it to bind, 1 if to other
// (computing the body's CRC once).
func parseRecordIn(data []byte, bind, other uint64) (typ byte, body []byte, n, which int, ok bool) {
	if len(data) < headerSize {
		return 0, nil, 0, 0, false
	}
	bodyLen := binary.LittleEndian.Uint32(data[0:4])
	if bodyLen > maxBody || int64(bodyLen) > int64(len(data)-headerSize) {
		return 0, nil, 0, 0, false
	}
	n = headerSize + int(bodyLen)
	body = data[headerSize:n]
	typ = data[8]
	if typ != recBatch && typ != recAck && typ != recSegment { // before the CRC: cheap
		return 0, nil, 0, 0, false
	}
	c, want := recordCRC(data, body), binary.LittleEndian.Uint32(data[4:8])
	switch want {
	case bindCRC(c, bind):
	case bindCRC(c, other):
		which = 1
	default:
		return 0, nil, 0, 0, false
	}
	var err error
	switch typ {
	case recBatch:
		_, _, err = decodeBatchHead(body)
	case recAck:
		_, err = decodeUvarint(body)
	case recSegment:
		_, _, err = decodeSegment(body)
	}
	if err != nil {
		return 0, nil, 0, 0, false
	}
	return typ, body, n, which, true
}

var errBadBody = errors.New("spool: malformed record body")

func uvarint(p []byte) (uint64, []byte, error) {
	v, k := binary.Uvarint(p)
	if k <= 0 {
		return 0, nil, errBadBody
	}
	return v, p[k:], nil
}

// decodeBatchHead returns the sequence number and key of a batch record's
// body, checking the whole body's structure on the way.
func decodeBatchHead(body []byte) (seq uint64, key string, err error) {
	seq, _, key, _, err = decodeBatch(body, nil)
	return seq, key, err
}

// decodeBatch decodes a batch record's body. If events is not nil, it
// appends the events to it (their payloads and ids alias body's memory
// only through the returned slice's payloads; ids are strings).
func decodeBatch(body []byte, events []batchproc.Event) (seq uint64, n int, key string, out []batchproc.Event, err error) {
	p := body
	if seq, p, err = uvarint(p); err != nil {
		return
	}
	var kl uint64
	if kl, p, err = uvarint(p); err != nil {
		return
	}
	if kl == 0 || kl > uint64(len(p)) {
		err = errBadBody
		return
	}
	key, p = string(p[:kl]), p[kl:]
	var cnt uint64
	if cnt, p, err = uvarint(p); err != nil {
		return
	}
	if cnt > uint64(len(p)) { // every event takes at least one byte (its id length)
		err = errBadBody
		return
	}
	n = int(cnt)
	idRegion := p
	for range n {
		var il uint64
		if il, p, err = uvarint(p); err != nil {
			return
		}
		if il > uint64(len(p)) {
			err = errBadBody
			return
		}
		p = p[il:]
	}
	var ids []string
	if events != nil {
		// One string for all the ids, sliced: one allocation per batch,
		// not one per event.
		all := string(idRegion[:len(idRegion)-len(p)])
		ids = make([]string, 0, n)
		for range n {
			il, k := binary.Uvarint([]byte(all[:min(len(all), binary.MaxVarintLen64)]))
			ids = append(ids, all[k:k+int(il)])
			all = all[k+int(il):]
		}
	}
	// The rest is the NDJSON: exactly n non-empty lines, each ending in '\n'.
	if n == 0 {
		if len(p) != 0 {
			err = errBadBody
		}
		return
	}
	if len(p) == 0 || p[len(p)-1] != '\n' {
		err = errBadBody
		return
	}
	out = events
	for i := range n {
		j := bytes.IndexByte(p, '\n')
		if j <= 0 || (i == n-1) != (j == len(p)-1) {
			err = errBadBody
			return
		}
		if events != nil {
			out = append(out, batchproc.Event{ID: ids[i], Payload: p[:j]})
		}
		p = p[j+1:]
	}
	return
}

// decodeUvarint decodes a body of one uvarint: an ack record's (the seq it
// acks).
func decodeUvarint(body []byte) (uint64, error) {
	seq, rest, err := uvarint(body)
	if err == nil && len(rest) != 0 {
		err = errBadBody
	}
	return seq, err
}
