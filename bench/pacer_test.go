package bench

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// slowClient is a design whose Add takes d (of the bubble's fake time).
type slowClient struct {
	d    time.Duration
	late atomic.Int64 // Adds that started at or after end
	end  time.Time
}

func (c *slowClient) Add(context.Context, string, []byte) error {
	if !time.Now().Before(c.end) {
		c.late.Add(1)
	}
	time.Sleep(c.d) // the design's latency, in fake time
	return nil
}
func (c *slowClient) Shutdown(context.Context) error { return nil }

// The pacer (one goroutine releasing the handlers' slots every tick) keeps
// the closed loop of a timer per handler: every slot is made when Add is
// quick, and when Add outlasts a handler's period each handler makes one
// late request at once and skips the rest, so both loops make the same
// requests (within 1%: the pacer starts a request up to a tick early);
// none starts after the end.
func TestPacedClosedLoopKeepsTheClosedLoop(t *testing.T) {
	for _, add := range []time.Duration{0, 120 * time.Millisecond} {
		counts := map[time.Duration]int64{}
		for _, tick := range []time.Duration{0, 10 * time.Millisecond} {
			synctest.Test(t, func(t *testing.T) {
				cfg := loadConfig{Kind: LoadClosed, Rate: 2000, Duration: time.Second, Handlers: 100,
					EventSize: 200, RunID: "t", PacerTick: tick}
				c := &slowClient{d: add, end: time.Now().Add(cfg.Duration)}
				var cnt loadCounters
				lr := runLoad(context.Background(), c, cfg, &cnt)
				counts[tick] = lr.Requests
				if n := c.late.Load(); n > 0 {
					t.Errorf("tick %v, Add %v: %d requests after the end", tick, add, n)
				}
			})
		}
		t.Logf("Add %v: %d requests with a timer per handler, %d with the pacer", add, counts[0], counts[10*time.Millisecond])
		if add == 0 && counts[10*time.Millisecond] != 2000 {
			t.Errorf("quick Add: the pacer made %d requests, want every slot (2000)", counts[10*time.Millisecond])
		}
		// A request starts up to one tick before its slot, so a chain of
		// blocked requests can fit one more before the end, now and then.
		if d := counts[10*time.Millisecond] - counts[0]; d < 0 || d > counts[0]/100 {
			t.Errorf("Add %v: %d requests with a timer per handler, %d with the pacer", add, counts[0], counts[10*time.Millisecond])
		}
	}
}
