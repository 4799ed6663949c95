package bench

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lossyClient is a design with known faults: it posts each event alone and
// at once, except that it silently drops every dropEvery-th event and holds
// the last hold events until Shutdown, which sends them.
type lossyClient struct {
	env       designEnv
	dropEvery int64
	hold      int

	n       atomic.Int64
	mu      sync.Mutex
	held    [][]byte
	dropped atomic.Int64
}

func (c *lossyClient) Add(ctx context.Context, _ string, payload []byte) error {
	if c.n.Add(1)%c.dropEvery == 0 {
		c.dropped.Add(1)
		return nil
	}
	c.mu.Lock()
	c.held = append(c.held, payload)
	var send []byte
	if len(c.held) > c.hold {
		send = c.held[0]
		c.held = c.held[1:]
	}
	c.mu.Unlock()
	if send != nil {
		return c.post(ctx, [][]byte{send})
	}
	return nil
}

func (c *lossyClient) post(ctx context.Context, events [][]byte) error {
	var body []byte
	for _, e := range events {
		body = append(append(body, e...), '\n')
	}
	if err := c.env.poster.post(ctx, body, ""); err != nil {
		return err
	}
	c.env.logger.Info("sent", "count", len(events))
	return nil
}

func (c *lossyClient) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	held := c.held
	c.held = nil
	c.mu.Unlock()
	if len(held) == 0 {
		return nil
	}
	return c.post(ctx, held)
}

func registerTestDesign(t *testing.T, name string, newClient func(designEnv) (Client, error)) {
	t.Helper()
	designSpecs[name] = designSpec{name: name, newClient: newClient}
	t.Cleanup(func() { delete(designSpecs, name) })
}

func testConfig(t *testing.T, designs ...string) Config {
	cfg := Config{Mode: ModeFixed, Duration: 400 * time.Millisecond, Rate: 1000, Designs: designs, Handlers: 10,
		Loader: LoaderNull, LoaderLatencySet: true, Out: t.TempDir(), Progress: io.Discard,
		InProcess: true} // the test designs are registered in this process only
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The harness's accounting: offered = delivered + lost, the count=N lines
// agree with the receiver, and what a design held when the load stopped is
// in flight at stop.
func TestAccounting(t *testing.T) {
	var client *lossyClient
	registerTestDesign(t, "test-lossy", func(env designEnv) (Client, error) {
		client = &lossyClient{env: env, dropEvery: 10, hold: 7}
		return client, nil
	})
	cfg := testConfig(t, "test-lossy")
	res := runDesign(context.Background(), cfg, runSpec{design: "test-lossy", load: LoadClosed, rate: cfg.Rate}, newProgress(io.Discard), "[test]")
	if res.Error != "" {
		t.Fatal(res.Error)
	}
	t.Logf("%+v", res)
	dropped := client.dropped.Load()
	if res.Offered == 0 || res.Offered != res.Requests {
		t.Fatalf("offered %d of %d requests", res.Offered, res.Requests)
	}
	if res.Offered != res.Delivered+res.Lost {
		t.Errorf("offered %d != delivered %d + lost %d", res.Offered, res.Delivered, res.Lost)
	}
	if res.Lost != dropped {
		t.Errorf("lost %d, but the design dropped %d", res.Lost, dropped)
	}
	if res.InFlightAtStop != dropped+7 {
		t.Errorf("in flight at stop %d, want %d dropped + 7 held", res.InFlightAtStop, dropped)
	}
	if res.DeliveredFromLogs != res.Delivered {
		t.Errorf("count= lines sum to %d, receiver counted %d", res.DeliveredFromLogs, res.Delivered)
	}
	if res.Target != 400 {
		t.Errorf("target %d, want 1000/s x 0.4s", res.Target)
	}
	if res.AddLatencyNs.P50 <= 0 || res.AddLatencyNs.Max < res.AddLatencyNs.P99 || res.E2ELatencyMs.P99 <= 0 {
		t.Errorf("latencies not measured: %+v %+v", res.AddLatencyNs, res.E2ELatencyMs)
	}
}

// fastClient accepts every event at once and delivers nothing.
type fastClient struct{ n atomic.Int64 }

func (c *fastClient) Add(context.Context, string, []byte) error { c.n.Add(1); return nil }
func (c *fastClient) Shutdown(context.Context) error            { return nil }

// blockedClient's Add waits for its context.
type blockedClient struct{}

func (blockedClient) Add(ctx context.Context, _ string, _ []byte) error {
	<-ctx.Done()
	return ctx.Err()
}
func (blockedClient) Shutdown(context.Context) error { return nil }

func TestClosedLoopPacing(t *testing.T) {
	var cnt loadCounters
	c := &fastClient{}
	r := runLoad(context.Background(), c, loadConfig{Kind: LoadClosed, Rate: 2000, Duration: 500 * time.Millisecond,
		Handlers: 20, EventSize: 200, RunID: "t"}, &cnt)
	// The slots before the end are exactly rate x duration; a busy machine
	// may make a handler skip some, never add any.
	if r.Requests > 1000 || r.Requests < 700 {
		t.Fatalf("%d requests in 0.5 s at 2,000/s", r.Requests)
	}
	if r.Offered != r.Requests || c.n.Load() != r.Requests || r.AddLatency.TotalCount() != r.Requests {
		t.Fatalf("result %+v, client saw %d", r, c.n.Load())
	}
}

// A closed loop slows down when Add blocks; an open loop does not, and
// counts what it could not offer. The blocked Adds hold their slots for a
// second past the end (Grace): with 1 ms, a loaded CI machine let the
// open loop's last tick arrive after the Adds gave up, and offer more.
func TestOpenLoopKeepsTheRate(t *testing.T) {
	var cnt loadCounters
	r := runLoad(context.Background(), blockedClient{}, loadConfig{Kind: LoadOpen, Rate: 1000, Duration: 300 * time.Millisecond,
		MaxOutstanding: 50, EventSize: 200, RunID: "t", Grace: time.Second}, &cnt)
	if r.Requests != 50 || r.Requests+r.NotOffered != 300 {
		t.Fatalf("requests %d + not offered %d, want 50 + 250", r.Requests, r.NotOffered)
	}
	if r.Offered != 0 || r.Rejected != 50 {
		t.Fatalf("offered %d rejected %d", r.Offered, r.Rejected)
	}
	cnt = loadCounters{}
	r = runLoad(context.Background(), blockedClient{}, loadConfig{Kind: LoadClosed, Rate: 1000, Duration: 300 * time.Millisecond,
		Handlers: 5, EventSize: 200, RunID: "t", Grace: time.Millisecond}, &cnt)
	if r.Requests != 5 {
		t.Fatalf("closed loop with blocked Add made %d requests, want one per handler", r.Requests)
	}
}

func TestEventBuilder(t *testing.T) {
	b := &eventBuilder{prefix: "run", size: 200}
	before := time.Now().UnixNano()
	id, p := b.next()
	if len(p) != 200 || id != "run-1" || !strings.HasPrefix(string(p), `{"id":"run-1","type":"bench","ts":"`) || !strings.HasSuffix(string(p), `"}`) {
		t.Fatalf("event %q (%d bytes), id %q", p, len(p), id)
	}
	t0, ok := extractT0(p)
	if !ok || t0 < before || t0 > time.Now().UnixNano() {
		t.Fatalf("t0 %d ok=%v", t0, ok)
	}
}

func TestCountLog(t *testing.T) {
	l := newCountLog(nil)
	log := slog.New(slog.NewTextHandler(l, nil))
	log.Info("sent", "count", 1000)
	log.Info("batch delivered", "count", 20, "key", "k.1")
	log.Warn("send failed, retrying", "count", 500) // not a delivery
	log.Error("batch failed", "count_failed", 7)
	log.Info("other", "recount", 3, "count_x", 4)
	// A line split across writes.
	io.WriteString(l, "time=x level=INFO msg=sent cou")
	io.WriteString(l, "nt=5\n")
	if got := l.Sum(); got != 1025 {
		t.Fatalf("Sum = %d, want 1025", got)
	}
}

func TestParseDesigns(t *testing.T) {
	all, err := ParseDesigns("")
	if err != nil || len(all) != len(AllDesigns) || !slices.Contains(all, BatchprocSpool) {
		t.Fatalf("all designs: %v %v", all, err)
	}
	got, err := ParseDesigns("batchproc, seed-pool-10,batchproc")
	if err != nil || strings.Join(got, ",") != "batchproc,seed-pool-10" {
		t.Fatalf("got %v %v", got, err)
	}
	if _, err := ParseDesigns("batchproc,nope"); err == nil {
		t.Fatal("unknown design accepted")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{Mode: "fast"}, {Load: "half"}, {Loader: "postgres"}, {Sink: "carrier-pigeon"}, {Rate: -1},
		{Mode: ModeSweep, Target: "http://x"}, {Designs: []string{"nope"}},
		{Sink: SinkKafka, Loader: LoaderNull}, {Sink: SinkKafka, Target: "http://x"}, {Sink: SinkKafka, Mode: ModeSweep},
	} {
		if err := c.defaults(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	c := Config{Sink: SinkKafka, LoaderLatency: time.Second, LoaderLatencySet: true}
	if err := c.defaults(); err != nil || c.LoaderLatency != 0 {
		t.Errorf("-sink kafka: latency %v, %v", c.LoaderLatency, err)
	}
	c = Config{}
	if err := c.defaults(); err != nil || c.LoaderLatency != 400*time.Millisecond || c.Rate != 2000 || c.Duration != time.Minute || c.Handlers != 100 {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

// -target: deliveries are the growth of an external loader's /v1/stats.
func TestExternalTarget(t *testing.T) {
	ext, err := startNullEndpoint(0)
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close(context.Background())
	cfg := testConfig(t, Batchproc)
	cfg.Target = ext.URL()
	// Events already there are not this run's.
	ext.rec.events.Add(1234)
	res := runDesign(context.Background(), cfg, runSpec{design: Batchproc, load: LoadClosed, rate: cfg.Rate}, newProgress(io.Discard), "[test]")
	if res.Error != "" {
		t.Fatal(res.Error)
	}
	if res.Offered == 0 || res.Delivered != res.Offered || res.DeliveredFromLogs != res.Delivered || res.Lost != 0 {
		t.Fatalf("offered %d delivered %d from logs %d lost %d", res.Offered, res.Delivered, res.DeliveredFromLogs, res.Lost)
	}
	if res.Receiver != ext.URL() || res.E2ELatencyMs.P99 != 0 {
		t.Fatalf("receiver %q, e2e %+v", res.Receiver, res.E2ELatencyMs)
	}
}
