package batchotel_test

import (
	"testing"
	"time"

	"github.com/batchproc/batchproc"
)

// What a hook costs a send with the SDK behind it: run on the processor's
// goroutine once per Send attempt.
func BenchmarkOnSend(b *testing.B) {
	m, _ := newMetrics(b)
	info := batchproc.SendInfo{Key: "k", Events: 1000, Bytes: 200_000, Attempt: 1, Duration: 3 * time.Millisecond, Outcome: batchproc.SendDelivered}
	b.ReportAllocs()
	for b.Loop() {
		m.OnSend(info)
	}
}

func BenchmarkOnReject(b *testing.B) {
	m, _ := newMetrics(b)
	b.ReportAllocs()
	for b.Loop() {
		m.OnReject(batchproc.ErrFull)
	}
}
