package batchprom_test

import (
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/metrics/batchprom"
)

// What a hook costs a send: run on the processor's goroutine once per
// Send attempt.
func BenchmarkOnSend(b *testing.B) {
	c := batchprom.New()
	info := batchproc.SendInfo{Key: "k", Events: 1000, Bytes: 200_000, Attempt: 1, Duration: 3 * time.Millisecond, Outcome: batchproc.SendDelivered}
	b.ReportAllocs()
	for b.Loop() {
		c.OnSend(info)
	}
}

func BenchmarkOnReject(b *testing.B) {
	c := batchprom.New()
	b.ReportAllocs()
	for b.Loop() {
		c.OnReject(batchproc.ErrFull)
	}
}
