package coretest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/batchproctest"
)

// TestModel drives random sequences of Add, TryAdd, Flush and sink faults
// through every dispatch mode, and checks the delivery contract against a
// model: each accepted event ends delivered exactly once or failed exactly
// once, never both; batches respect the limits; keys stay the same across
// retries; ordered mode keeps Add order; the accounting identity holds.
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		mode := rapid.SampledFrom([]string{"async", "pool", "ordered"}).Draw(rt, "mode")
		maxEvents := rapid.IntRange(1, 20).Draw(rt, "maxEvents")
		maxBytes := rapid.IntRange(40, 400).Draw(rt, "maxBytes")
		maxAttempts := rapid.IntRange(1, 4).Draw(rt, "maxAttempts")
		memLimit := 4*maxBytes + 1024 // room for a few batches and their overheads

		// Sink faults are decided per key and attempt by rapid, up front.
		var faultMu sync.Mutex
		faults := map[string]string{} // key -> "ok" | "transient" | "permanent"
		faultFor := rapid.SampledFrom([]string{"ok", "ok", "ok", "transient", "permanent"})
		var faultDraws []string
		for range 64 {
			faultDraws = append(faultDraws, faultFor.Draw(rt, "fault"))
		}
		rec := &batchproctest.Recorder{Hook: func(_ context.Context, b *batchproc.Batch, attempt int) error {
			faultMu.Lock()
			f, ok := faults[b.Key()]
			if !ok {
				f = faultDraws[len(faults)%len(faultDraws)]
				faults[b.Key()] = f
			}
			faultMu.Unlock()
			switch {
			case f == "permanent":
				return batchproc.Permanent(errors.New("poison"))
			case f == "transient" && attempt == 1:
				return errors.New("flaky")
			}
			return nil
		}}
		var failMu sync.Mutex
		failedIDs := map[string]int{}
		opts := []batchproc.Option{
			batchproc.WithMaxBatchEvents(maxEvents),
			batchproc.WithMaxBatchBytes(maxBytes),
			batchproc.WithMemoryLimit(memLimit),
			batchproc.WithFlushInterval(time.Hour),
			batchproc.WithLogger(slog.New(slog.DiscardHandler)),
			batchproc.WithRetry(batchproc.RetryPolicy{MaxAttempts: maxAttempts, InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond}),
			batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
				failMu.Lock()
				defer failMu.Unlock()
				for i := range b.Len() {
					failedIDs[b.Event(i).ID]++
				}
			}),
		}
		switch mode {
		case "pool":
			opts = append(opts, batchproc.WithWorkerPool(rapid.IntRange(1, 4).Draw(rt, "workers")))
		case "ordered":
			opts = append(opts, batchproc.WithOrdered())
		}
		p, err := batchproc.New(rec, opts...)
		if err != nil {
			rt.Fatal(err)
		}
		// A draw that rapid discards midway ends the function early: the
		// processor must still stop (Shutdown is idempotent).
		defer func() { _ = p.Shutdown(context.Background()) }()
		var accepted []string
		next := 0
		reported := 0 // failed events that Flush and Shutdown reported
		checkReport := func(err error) {
			if err == nil {
				return
			}
			de, ok := errors.AsType[*batchproc.DeliveryError](err)
			if !ok || de.Events < 1 || de.Batches < 1 || de.Err == nil {
				rt.Fatalf("Flush/Shutdown error %v, want nil or a *DeliveryError", err)
			}
			reported += de.Events
		}
		steps := rapid.IntRange(1, 40).Draw(rt, "steps")
		for range steps {
			switch rapid.IntRange(0, 9).Draw(rt, "op") {
			case 0:
				checkReport(p.Flush(context.Background()))
			default:
				n := rapid.IntRange(1, 10).Draw(rt, "n")
				for range n {
					id := "e" + strconv.Itoa(next)
					next++
					size := rapid.IntRange(1, maxBytes+5).Draw(rt, "size")
					payload := fmt.Appendf(nil, "%s:%0*d", id, max(0, size-len(id)-1), 0)
					err := p.Add(context.Background(), batchproc.Event{ID: id, Payload: payload})
					switch {
					case err == nil:
						accepted = append(accepted, id)
					case errors.Is(err, batchproc.ErrEventTooLarge):
						if len(payload)+1 <= maxBytes {
							rt.Fatalf("event of %d bytes refused as too large (limit %d)", len(payload)+1, maxBytes)
						}
					default:
						rt.Fatal(err)
					}
				}
			}
			st := p.Stats()
			if st.Added != st.Delivered+st.Failed+st.Pending || st.BufferedBytes > int64(memLimit) {
				rt.Fatalf("stats %+v", st)
			}
		}
		checkReport(p.Shutdown(context.Background()))

		delivered := map[string]int{}
		var order []string
		for _, s := range rec.Delivered() {
			if len(s.Events) > maxEvents {
				rt.Fatalf("batch of %d events, limit %d", len(s.Events), maxEvents)
			}
			size := 0
			for _, e := range s.Events {
				size += len(e.Payload) + 1
				delivered[e.ID]++
				order = append(order, e.ID)
			}
			if size > maxBytes {
				rt.Fatalf("batch of %d bytes, limit %d", size, maxBytes)
			}
		}
		// Every send of a key carried the same events.
		byKey := map[string]string{}
		for _, s := range rec.Sent() {
			sig := fmt.Sprint(len(s.Events), s.Events[0].ID)
			if prev, ok := byKey[s.Key]; ok && prev != sig {
				rt.Fatalf("key %s sent with different events", s.Key)
			}
			byKey[s.Key] = sig
		}
		for _, id := range accepted {
			d, f := delivered[id], failedIDs[id]
			if d+f != 1 {
				rt.Fatalf("event %s delivered %d times and failed %d times", id, d, f)
			}
		}
		if len(delivered)+len(failedIDs) != len(accepted) {
			rt.Fatalf("%d delivered + %d failed != %d accepted", len(delivered), len(failedIDs), len(accepted))
		}
		if mode == "ordered" {
			i := 0
			for _, id := range accepted {
				if delivered[id] == 1 {
					if order[i] != id {
						rt.Fatalf("ordered mode delivered %s where %s was due", order[i], id)
					}
					i++
				}
			}
		}
		st := p.Stats()
		if reported > int(st.Failed) {
			rt.Fatalf("Flush and Shutdown reported %d failed events, Stats %d", reported, st.Failed)
		}
		if st.Pending != 0 || st.Added != uint64(len(accepted)) || st.Delivered != uint64(len(delivered)) || st.Failed != uint64(len(failedIDs)) {
			rt.Fatalf("final stats %+v, model: %d accepted %d delivered %d failed", st, len(accepted), len(delivered), len(failedIDs))
		}
	})
}
