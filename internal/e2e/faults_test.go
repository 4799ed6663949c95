package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/httpsink"
	"github.com/batchproc/batchproc/internal/testutil/faults"
	"github.com/batchproc/batchproc/loader"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/sqlite"
	"github.com/batchproc/batchproc/loader/store/storetest"
	"github.com/batchproc/batchproc/spool"
)

// The fault suite (TestFaults) runs each scenario twice, with and without
// a spool, in parallel. The client side of each run is a child process
// (the test binary re-executed with faultEnvClient set to its
// faultClientConfig as JSON), so that its heap figure is its own: it adds
// events at faultRate through a processor and httpsink to the URL it is
// given, and writes a faultClientResult as its last stdout line. The
// parent runs the loader, the faults and the count of what was stored.
const faultEnvClient = "BATCHPROC_FAULT_CLIENT"

// Settings shared by every run.
const (
	faultRate      = 2000 // events/s, paced by a ticker
	faultTick      = 10 * time.Millisecond
	faultBacklog   = 250 * time.Millisecond // of events the client catches up after a delay
	faultSlowAddAt = 100 * time.Millisecond // an Add this long is logged
	// WithMemoryLimit: ~9 s of events at faultRate (~230 bytes each), so
	// a 60 s outage overflows it without the spool; with it, batches
	// waiting on disk keep 128 bytes each (TestSpoolOutageBudgetWithIDs).
	faultMemLimit    = 4 << 20
	faultSinkTimeout = 2 * time.Second // httpsink.WithTimeout
	faultHeapSlack   = 4 << 20         // the client's heap beside the processor's events
	faultAddTimeout  = time.Second     // each Add's ctx: a service handler's deadline
	faultDrain       = 2 * time.Minute // Shutdown's ctx
	faultPayloadPad  = 120             // payloads are about 200 bytes
)

type faultClientConfig struct {
	URL       string
	SpoolDir  string // "" runs without a spool
	Run       string // event id prefix
	Duration  time.Duration
	SyncNever bool // the spool's sync mode is SyncNever, not SyncBatch
}

// faultClientResult is what a client child reports.
type faultClientResult struct {
	Offered     int            // events that fell due: faultRate x Duration
	Skipped     int            // fell due while an Add blocked: not attempted
	Attempted   int            // Add calls
	AddedFor    time.Duration  // how long the client added
	Drain       time.Duration  // how long Shutdown took
	Slow        []faultSlowAdd // Adds of faultSlowAdd or more
	Accepted    [][2]int       // ranges [from, to) of event numbers whose Add returned nil
	Refused     int            // Adds that returned an error (their ctx ended: back-pressure)
	RefusedErr  string         // the first such error
	Failed      []int          // event numbers handed to OnFailure
	AddP50      time.Duration
	AddP99      time.Duration
	AddMax      time.Duration
	MaxBuffered int64  // Stats().BufferedBytes, sampled every 10 ms
	MaxHeapLive uint64 // runtime/metrics /gc/heap/live:bytes, sampled every 100 ms
	Stats       batchproc.Stats
	ShutdownErr string
	GOMAXPROCS  int
	Fsyncs      uint64 // the spool's
	FsyncP99    time.Duration
	FsyncMax    time.Duration
}

// faultSlowAdd is an Add that took faultSlowAddAt or more, with the
// processor's state as it returned.
type faultSlowAdd struct {
	At, Took      time.Duration // since the client started adding; the Add's duration
	InFlight      int
	InFlightLimit int
	BufferedBytes int64
	Pending       uint64
	Journaled     uint64
	Spooled       int           // batches in the spool
	FsyncMax      time.Duration // the spool's longest fsync so far
}

func (r *faultClientResult) accepted() int {
	n := 0
	for _, rg := range r.Accepted {
		n += rg[1] - rg[0]
	}
	return n
}

func faultEventID(run string, i int) string { return run + "-" + strconv.Itoa(i) }

// faultClient is the client child's main: it never returns.
func faultClient() {
	var cfg faultClientConfig
	if err := json.Unmarshal([]byte(os.Getenv(faultEnvClient)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "config:", err)
		os.Exit(2)
	}
	sink, err := httpsink.New(cfg.URL, httpsink.WithTimeout(faultSinkTimeout))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var failedMu sync.Mutex
	var failed []int
	opts := []batchproc.Option{
		batchproc.WithMemoryLimit(faultMemLimit),
		batchproc.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))),
		batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
			failedMu.Lock()
			defer failedMu.Unlock()
			for i := range b.Len() {
				id := b.Event(i).ID
				n, _ := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:])
				failed = append(failed, n)
			}
		}),
	}
	var sp *spool.Spool
	if cfg.SpoolDir != "" {
		// spool.WithSpool(dir, ...) with a handle kept for its Stats; the
		// defaults but for -faults.sync (SyncBatch, 1 GiB).
		mode := spool.SyncBatch
		if cfg.SyncNever {
			mode = spool.SyncNever
		}
		opts = append(opts, batchproc.WithJournal(func() (batchproc.Journal, error) {
			var err error
			sp, err = spool.Open(cfg.SpoolDir, spool.WithSync(mode))
			return sp, err
		}))
	}
	p, err := batchproc.New(sink, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}

	var res faultClientResult
	var maxBuffered atomic.Int64
	var maxHeap atomic.Uint64
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		heap := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for n := 0; ; n++ {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			if b := p.Stats().BufferedBytes; b > maxBuffered.Load() {
				maxBuffered.Store(b)
			}
			if n%10 == 0 {
				metrics.Read(heap)
				if v := heap[0].Value.Uint64(); v > maxHeap.Load() {
					maxHeap.Store(v)
				}
			}
		}
	})

	fmt.Println("ready")
	// The offered load is faultRate events/s of wall time for cfg.Duration:
	// events fall due at each tick. A backlog of up to faultBacklog (a
	// scheduling delay) is caught up; when an Add blocked for longer, the
	// events that fell due meanwhile beyond that are not attempted
	// (Skipped): a service whose handlers are blocked turns its callers
	// away.
	maxBehind := int(faultBacklog * faultRate / time.Second)
	lat := make([]time.Duration, 0, int(cfg.Duration/time.Second+1)*faultRate)
	tick := time.NewTicker(faultTick)
	pad := strings.Repeat("x", faultPayloadPad)
	start := time.Now()
	i := 0
	for elapsed := time.Duration(0); elapsed < cfg.Duration; elapsed = time.Since(start) {
		<-tick.C
		due := int(min(time.Since(start), cfg.Duration) * faultRate / time.Second)
		if due-i > maxBehind {
			res.Skipped += due - maxBehind - i
			i = due - maxBehind
		}
		for ; i < due; i++ {
			id := faultEventID(cfg.Run, i)
			payload := `{"id":"` + id + `","type":"fault","ts":"2026-12-01T10:00:00Z","pad":"` + pad + `"}`
			ctx, cancel := context.WithTimeout(context.Background(), faultAddTimeout)
			t0 := time.Now()
			err := p.Add(ctx, batchproc.Event{ID: id, Payload: []byte(payload)})
			d := time.Since(t0)
			lat = append(lat, d)
			if d >= faultSlowAddAt && len(res.Slow) < 100 {
				st := p.Stats()
				slow := faultSlowAdd{At: t0.Sub(start), Took: d, InFlight: st.InFlight, InFlightLimit: st.InFlightLimit,
					BufferedBytes: st.BufferedBytes, Pending: st.Pending, Journaled: st.Journaled}
				if sp != nil {
					ss := sp.Stats()
					slow.Spooled, slow.FsyncMax = ss.Batches, ss.FsyncLatency.Max
				}
				res.Slow = append(res.Slow, slow)
			}
			cancel()
			switch {
			case err != nil:
				if res.Refused == 0 {
					res.RefusedErr = err.Error()
				}
				res.Refused++
			case len(res.Accepted) > 0 && res.Accepted[len(res.Accepted)-1][1] == i:
				res.Accepted[len(res.Accepted)-1][1]++
			default:
				res.Accepted = append(res.Accepted, [2]int{i, i + 1})
			}
			res.Attempted++
		}
	}
	if due := int(cfg.Duration * faultRate / time.Second); i < due {
		res.Skipped += due - i // fell due during the last Add
		i = due
	}
	res.Offered = i
	res.AddedFor = time.Since(start)
	tick.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), faultDrain)
	if err := p.Shutdown(ctx); err != nil {
		res.ShutdownErr = err.Error()
	}
	cancel()
	res.Drain = time.Since(start) - res.AddedFor
	close(stopSampling)
	sampler.Wait()
	_ = sink.Close()

	slices.Sort(lat)
	if len(lat) > 0 {
		res.AddP50 = lat[len(lat)/2]
		res.AddP99 = lat[len(lat)*99/100]
		res.AddMax = lat[len(lat)-1]
	}
	res.GOMAXPROCS = runtime.GOMAXPROCS(0)
	res.MaxBuffered = maxBuffered.Load()
	res.MaxHeapLive = maxHeap.Load()
	res.Stats = p.Stats()
	if sp != nil {
		ss := sp.Stats()
		res.Fsyncs, res.FsyncP99, res.FsyncMax = ss.Fsyncs, ss.FsyncLatency.Quantile(0.99), ss.FsyncLatency.Max
	}
	failedMu.Lock()
	res.Failed = failed
	failedMu.Unlock()
	b, err := json.Marshal(res)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Printf("result %s\n", b)
	os.Exit(0)
}

// faultChild is a running client child.
type faultChild struct {
	ready  chan struct{} // closed once it adds
	done   chan struct{} // closed once it exited
	res    *faultClientResult
	err    error
	stderr strings.Builder
}

func startFaultClient(t *testing.T, cfg faultClientConfig) *faultChild {
	t.Helper()
	env, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFaults$")
	cmd.Env = append(os.Environ(), faultEnvClient+"="+string(env))
	c := &faultChild{ready: make(chan struct{}), done: make(chan struct{})}
	cmd.Stderr = &c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 64<<20)
		readyClosed := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "ready" && !readyClosed:
				close(c.ready)
				readyClosed = true
			case strings.HasPrefix(line, "result "):
				var r faultClientResult
				if err := json.Unmarshal([]byte(line[len("result "):]), &r); err != nil {
					c.err = err
				}
				c.res = &r
			}
		}
		if !readyClosed {
			close(c.ready)
		}
		if err := cmd.Wait(); err != nil && c.err == nil {
			c.err = err
		}
	}()
	t.Cleanup(func() { // a test that failed early leaves no child behind
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// wait waits for the child's result, at most its duration plus the drain
// and a minute.
func (c *faultChild) wait(t *testing.T, cfg faultClientConfig) *faultClientResult {
	t.Helper()
	bound := time.NewTimer(cfg.Duration + faultDrain + time.Minute)
	defer bound.Stop()
	select {
	case <-c.done:
	case <-bound.C:
		t.Fatalf("client %s did not finish", cfg.Run)
	}
	if c.err != nil || c.res == nil {
		t.Fatalf("client %s: %v (result %v): %s", cfg.Run, c.err, c.res != nil, c.stderr.String())
	}
	if c.stderr.Len() > 0 {
		t.Logf("client %s stderr:\n%s", cfg.Run, c.stderr.String())
	}
	return c.res
}

// faultRow is one line of the suite's table.
type faultRow struct {
	scenario string
	spool    bool
	res      *faultClientResult
	stored   int    // distinct accepted events in the store
	lost     int    // accepted, not stored
	silent   int    // lost and not handed to OnFailure
	dup      int    // rows in the store beyond the first of their event
	stranger int    // stored events whose Add did not return nil
	absorbed int64  // repeats of a stored key the loader answered as duplicates (-1: unknown)
	injected string // what the faults did
	elapsed  time.Duration
}

// count reads every event of run from the SQLite file at dbPath and
// fills the row's store figures.
func (row *faultRow) count(t *testing.T, dbPath, run string) {
	t.Helper()
	start := time.Now()
	defer func() {
		t.Logf("%s: added for %v, Shutdown drained in %v, store read back in %v",
			run, row.res.AddedFor.Round(time.Millisecond), row.res.Drain.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}()
	batches := storedBatches(t, dbPath)
	accepted := map[int]bool{}
	for _, rg := range row.res.Accepted {
		for i := rg[0]; i < rg[1]; i++ {
			accepted[i] = true
		}
	}
	seen := map[int]bool{}
	for _, b := range batches {
		for _, e := range b.Events {
			n, err := strconv.Atoi(strings.TrimPrefix(e.ID, run+"-"))
			switch {
			case err != nil || !strings.HasPrefix(e.ID, run+"-"):
				t.Errorf("%s: stored event id %q is none of the run's", run, e.ID)
			case seen[n]:
				row.dup++
			case !accepted[n]:
				row.stranger++
				seen[n] = true
			default:
				seen[n] = true
				row.stored++
			}
		}
	}
	failed := map[int]bool{}
	for _, n := range row.res.Failed {
		failed[n] = true
	}
	for n := range accepted {
		if !seen[n] {
			row.lost++
			if !failed[n] {
				row.silent++
			}
		}
	}
}

// inProcessLoader runs loader.New on a fresh SQLite file behind fh (whose
// Next it sets) on a loopback port. stop shuts it down and returns the
// loader's duplicate count.
func inProcessLoader(t *testing.T, fh *faults.Handler) (url, dbPath string, stop func() int64) {
	t.Helper()
	dbPath = filepath.Join(t.TempDir(), "faults.db")
	st, err := sqlite.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := loader.New(loader.Config{Store: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	fh.Next = srv.Handler()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: fh, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	stop = sync.OnceValue(func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		<-served
		dups := srv.Stats().Duplicates
		if err := srv.Shutdown(ctx); err != nil { // closes the store
			t.Error(err)
		}
		return dups
	})
	t.Cleanup(func() { stop() }) // after a test that failed early
	return "http://" + ln.Addr().String(), dbPath, stop
}

func onlyBatches(f func(n int) faults.Fault) func(n int, r *http.Request) faults.Fault {
	var batches atomic.Int64
	return func(_ int, r *http.Request) faults.Fault {
		if r.URL.Path != "/v1/batches" {
			return faults.None
		}
		return f(int(batches.Add(1)))
	}
}

// outage: the loader answers every batch 503 (Retry-After: 0, as a load
// balancer with no healthy backend does) for -faults.outage (60 s), from
// 5 s after the client starts; the client adds for 10 s more.
func faultOutage(t *testing.T, run, spoolDir string) faultRow {
	var down atomic.Bool
	fh := &faults.Handler{Plan: onlyBatches(func(int) faults.Fault {
		if down.Load() {
			return faults.Unavailable
		}
		return faults.None
	})}
	url, dbPath, stop := inProcessLoader(t, fh)
	cfg := faultClientConfig{URL: url, SpoolDir: spoolDir, Run: run, Duration: *faultOutageFor + 15*time.Second, SyncNever: *faultSyncNever}
	c := startFaultClient(t, cfg)
	<-c.ready
	schedule := []struct {
		at   time.Duration
		down bool
	}{{5 * time.Second, true}, {5*time.Second + *faultOutageFor, false}}
	start := time.Now()
	for _, s := range schedule {
		tm := time.NewTimer(s.at - time.Since(start))
		select {
		case <-tm.C:
		case <-c.done:
		}
		tm.Stop()
		down.Store(s.down)
	}
	res := c.wait(t, cfg)
	row := faultRow{scenario: fmt.Sprintf("loader down %v (503)", *faultOutageFor), res: res, elapsed: time.Since(start)}
	row.absorbed = stop()
	row.injected = fmt.Sprintf("%d x 503", fh.Injected(faults.Unavailable))
	row.count(t, dbPath, run)
	if fh.Injected(faults.Unavailable) == 0 {
		t.Errorf("%s: no 503 answered during the outage", run)
	}
	return row
}

// buildBatchloader builds cmd/batchloader (without -race: it is the real
// command, and SQLite under the race detector is many times slower).
func buildBatchloader(dir string) (string, error) {
	bin := filepath.Join(dir, "batchloader")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/batchproc/batchproc/cmd/batchloader")
	cmd.Dir = filepath.Join("..", "..") // the repository root: go.work has every module
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build batchloader: %v\n%s", err, out)
	}
	return bin, nil
}

// loaderProc is a batchloader child process.
type loaderProc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
}

var (
	faultOutageFor = flag.Duration("faults.outage", 60*time.Second, "TestFaults: how long the loader is down in the outage scenario")
	faultSyncNever = flag.Bool("faults.syncnever", false, "TestFaults: spools use SyncNever instead of the default SyncBatch")
)

var listeningRe = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startLoaderProc starts bin on dbPath and waits (at most 30 s) until it
// listens.
func startLoaderProc(t *testing.T, bin, dbPath string) *loaderProc {
	t.Helper()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-store", "sqlite", "-dsn", dbPath)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &loaderProc{cmd: cmd, exited: make(chan struct{})}
	t.Cleanup(func() { // a test that failed early leaves no loader behind
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listeningRe.FindStringSubmatch(sc.Text()); m != nil && p.addr == "" {
				p.addr = m[1]
				addr <- m[1]
			}
		}
		_ = cmd.Wait()
		close(p.exited)
	}()
	bound := time.NewTimer(30 * time.Second)
	defer bound.Stop()
	select {
	case <-addr:
	case <-p.exited:
		t.Fatalf("batchloader exited before listening: %v", cmd.ProcessState)
	case <-bound.C:
		_ = cmd.Process.Kill()
		<-p.exited
		t.Fatal("batchloader not listening after 30 s")
	}
	return p
}

// stop signals p and waits (at most 30 s) for it to exit.
func (p *loaderProc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	bound := time.NewTimer(30 * time.Second)
	defer bound.Stop()
	select {
	case <-p.exited:
	case <-bound.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("batchloader did not exit on %v within 30 s", sig)
	}
}

// faultKills: a real batchloader process on one SQLite file, behind a TCP
// proxy (so the client's URL stays valid), is killed with SIGKILL every
// 3.5 s, as the next request's bytes reach it, and restarted at once, 8
// times; the client adds for 30 s. While it is down the proxy resets new
// connections; connections open at the kill die with it.
func faultKills(t *testing.T, run, spoolDir, bin string) faultRow {
	const kills = 8
	dbPath := filepath.Join(t.TempDir(), "faults.db")
	lp := startLoaderProc(t, bin, dbPath)
	proxy, err := faults.NewProxy(lp.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() }) // a second Close only waits
	cfg := faultClientConfig{URL: "http://" + proxy.Addr(), SpoolDir: spoolDir, Run: run, Duration: 30 * time.Second, SyncNever: *faultSyncNever}
	c := startFaultClient(t, cfg)
	<-c.ready
	start := time.Now()
	var downFor time.Duration
	midRequest := 0
	for k := range kills {
		tm := time.NewTimer(time.Duration(k+1)*3500*time.Millisecond - time.Since(start))
		select {
		case <-tm.C:
		case <-c.done:
		}
		tm.Stop()
		// Kill as the next request's bytes reach the loader (waiting at
		// most 2 s for one): mid-request, or mid-commit.
		select {
		case <-proxy.Sending():
		default:
		}
		tm = time.NewTimer(2 * time.Second)
		select {
		case <-proxy.Sending():
			midRequest++
		case <-tm.C:
		case <-c.done:
		}
		tm.Stop()
		killed := time.Now()
		proxy.SetTarget("")
		lp.stop(t, syscall.SIGKILL)
		if ws, ok := lp.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("batchloader: %v, want killed by SIGKILL", lp.cmd.ProcessState)
		}
		lp = startLoaderProc(t, bin, dbPath)
		proxy.SetTarget(lp.addr)
		downFor += time.Since(killed)
	}
	res := c.wait(t, cfg)
	row := faultRow{scenario: fmt.Sprintf("loader kill -9 x%d", kills), res: res, elapsed: time.Since(start), absorbed: -1}
	lp.stop(t, syscall.SIGTERM)
	if err := proxy.Close(); err != nil {
		t.Error(err)
	}
	row.injected = fmt.Sprintf("%d kills (%d as a request arrived), down %v in all, %d conns reset", kills, midRequest, downFor.Round(time.Millisecond), proxy.Refused())
	if midRequest == 0 {
		t.Errorf("%s: no kill landed as a request arrived", run)
	}
	row.count(t, dbPath, run)
	return row
}

// faultProxy: in front of the loader, a proxy gives the batch requests
// faults in turn: of every 8, one is reset after 1 KiB of its body, one
// is committed by the loader with its response dropped, one is held until
// the sink's 2 s timeout ended it (then committed, unanswered), and one is
// answered 503 with Retry-After: 1. The client adds for 30 s.
func faultProxy(t *testing.T, run, spoolDir string) faultRow {
	plan := []faults.Fault{faults.ResetMidRequest, faults.None, faults.DropAfterServe, faults.None,
		faults.DelayPastTimeout, faults.None, faults.UnavailableRetryAfter, faults.None}
	fh := &faults.Handler{RetryAfter: time.Second, MaxDelay: 4 * faultSinkTimeout,
		Plan: onlyBatches(func(n int) faults.Fault { return plan[(n-1)%len(plan)] })}
	url, dbPath, stop := inProcessLoader(t, fh)
	cfg := faultClientConfig{URL: url, SpoolDir: spoolDir, Run: run, Duration: 30 * time.Second, SyncNever: *faultSyncNever}
	c := startFaultClient(t, cfg)
	start := time.Now()
	res := c.wait(t, cfg)
	row := faultRow{scenario: "proxy faults", res: res, elapsed: time.Since(start)}
	row.absorbed = stop()
	var parts []string
	for _, f := range []faults.Fault{faults.ResetMidRequest, faults.DropAfterServe, faults.DelayPastTimeout, faults.UnavailableRetryAfter} {
		parts = append(parts, fmt.Sprintf("%d %v", fh.Injected(f), f))
		if fh.Injected(f) == 0 {
			t.Errorf("%s: no %v injected", run, f)
		}
	}
	row.injected = strings.Join(parts, ", ")
	row.count(t, dbPath, run)
	// A committed batch whose answer was lost is sent again: the loader
	// must have answered some repeat as a duplicate.
	if row.absorbed == 0 {
		t.Errorf("%s: the loader saw no repeated key after %d dropped answers", run, fh.Injected(faults.DropAfterServe))
	}
	return row
}

// TestFaults is the fault-injection suite: each scenario, with and without
// a spool, over real loopback sockets to a real loader on SQLite, the
// client adding 2,000 events/s (each Add with a 1 s deadline) under a
// 4 MiB memory budget, SyncBatch (the default) for the spool:
//   - outage: the loader (in-process loader.New) answers 503 for
//     -faults.outage (60 s);
//   - kill: a batchloader process (cmd/batchloader, built with go build)
//     behind a TCP proxy is killed with SIGKILL as a request arrives and
//     restarted, 8 times;
//   - proxy: a proxy in front of the in-process loader resets, drops after
//     the commit, delays past the sink's timeout and answers 503 with
//     Retry-After, one request in 8 each.
//
// It asserts what the documentation promises:
//   - both ways: nothing stored twice, nothing stored that was not
//     accepted, nothing accepted lost (these faults are all within the
//     default retry policy's 5 minutes, and the processor itself does not
//     crash), Stats balance;
//   - without the spool, the memory budget holds (BufferedBytes <= the
//     limit), and an outage longer than the budget lasts pushes back: Adds
//     wait until their deadline;
//   - with the spool, an outage fills the spool, not memory: no Add is
//     refused, and BufferedBytes stays within twice the budget
//     (WithJournal: a batch read back for its send takes its budget even
//     past the limit).
//
// It logs a table of the figures (README, "Faults, with and without the
// spool").
func TestFaults(t *testing.T) {
	binDir := t.TempDir()
	// Built by the first kill run, while the other scenarios start.
	build := sync.OnceValues(func() (string, error) { return buildBatchloader(binDir) })
	type scenario struct {
		name string
		run  func(t *testing.T, run, spoolDir string) faultRow
	}
	scenarios := []scenario{
		{"outage", faultOutage},
		{"kill", func(t *testing.T, run, spoolDir string) faultRow {
			bin, err := build()
			if err != nil {
				t.Fatal(err)
			}
			return faultKills(t, run, spoolDir, bin)
		}},
		{"proxy", faultProxy},
	}
	var mu sync.Mutex
	var rows []faultRow
	// The runs mostly wait (for child processes, timers and the loader), so
	// all of them run at once: subtests started from goroutines of their
	// own, not t.Parallel, which -parallel (GOMAXPROCS by default) caps.
	var wg sync.WaitGroup
	for i, sc := range scenarios {
		for _, spooled := range []bool{false, true} {
			name := sc.name + "/nospool"
			if spooled {
				name = sc.name + "/spool"
			}
			wg.Go(func() {
				t.Run(name, func(t *testing.T) {
					dir := ""
					if spooled {
						dir = t.TempDir()
					}
					run := fmt.Sprintf("%s%d", sc.name, i)
					if spooled {
						run += "s"
					}
					row := sc.run(t, run, dir)
					row.spool = spooled
					checkFaultRow(t, row)
					mu.Lock()
					rows = append(rows, row)
					mu.Unlock()
				})
			})
		}
	}
	wg.Wait()
	slices.SortStableFunc(rows, func(a, b faultRow) int {
		if a.scenario != b.scenario {
			return strings.Compare(a.scenario, b.scenario)
		}
		if a.spool == b.spool {
			return 0
		}
		if a.spool {
			return 1
		}
		return -1
	})
	t.Log("\n" + faultTable(rows))
}

func checkFaultRow(t *testing.T, row faultRow) {
	t.Helper()
	r := row.res
	name := row.scenario
	if row.spool {
		name += " (spool)"
	}
	if len(r.Slow) > 0 {
		var b strings.Builder
		for _, s := range r.Slow[:min(len(r.Slow), 20)] {
			fmt.Fprintf(&b, "\n  %v at %v: in flight %d of %d, buffered %d, pending %d, journaled %d, spooled %d, fsync max %v",
				s.Took.Round(time.Millisecond), s.At.Round(time.Millisecond), s.InFlight, s.InFlightLimit, s.BufferedBytes,
				s.Pending, s.Journaled, s.Spooled, s.FsyncMax)
		}
		t.Logf("%s: Adds of %v or more (%d, the first 20 here):%s", name, faultSlowAddAt, len(r.Slow), b.String())
	}
	if row.spool {
		t.Logf("%s: %d fsyncs, p99 %v, max %v", name, r.Fsyncs, r.FsyncP99, r.FsyncMax)
	}
	if r.ShutdownErr != "" {
		t.Errorf("%s: Shutdown: %s", name, r.ShutdownErr)
	}
	if row.dup != 0 || row.stranger != 0 {
		t.Errorf("%s: %d events stored twice, %d stored though their Add failed", name, row.dup, row.stranger)
	}
	if row.lost != 0 || len(r.Failed) != 0 {
		t.Errorf("%s: %d accepted events lost (%d not handed to OnFailure), %d handed to OnFailure", name, row.lost, row.silent, len(r.Failed))
	}
	st := r.Stats
	if st.Added != uint64(r.accepted()) || st.Added+st.Replayed != st.Delivered+st.Failed+st.Pending || st.Pending != 0 {
		t.Errorf("%s: stats %+v for %d accepted", name, st, r.accepted())
	}
	if r.accepted()+r.Refused != r.Attempted || r.Attempted+r.Skipped != r.Offered || r.Attempted == 0 {
		t.Errorf("%s: %d accepted + %d refused of %d attempted, %d skipped of %d offered", name, r.accepted(), r.Refused, r.Attempted, r.Skipped, r.Offered)
	}
	// WithMemoryLimit: the heap held for events is at most 1.25 times
	// BufferedBytes plus one batch buffer per shard (2 x GOMAXPROCS with
	// async dispatch), a batch buffer being WithMaxBatchBytes plus 20
	// bytes per event of WithMaxBatchEvents. The rest of the client
	// process (its latency record of 8 bytes per Add, httpsink, the
	// runtime) gets faultHeapSlack.
	shards := 2 * r.GOMAXPROCS
	heapBound := uint64(1.25*float64(r.MaxBuffered)) + uint64(shards*(batchproc.DefaultMaxBatchBytes+20*batchproc.DefaultMaxBatchEvents)) + faultHeapSlack
	if r.MaxHeapLive > heapBound {
		t.Errorf("%s: live heap peaked at %d bytes, over the documented bound %d (1.25 x %d buffered + %d shards' batch buffers + %d)",
			name, r.MaxHeapLive, heapBound, r.MaxBuffered, shards, faultHeapSlack)
	}
	if row.spool {
		if r.MaxBuffered > 2*faultMemLimit {
			t.Errorf("%s: BufferedBytes peaked at %d, over twice the %d budget", name, r.MaxBuffered, faultMemLimit)
		}
		if st.Journaled == 0 {
			t.Errorf("%s: nothing journaled: %+v", name, st)
		}
		if strings.HasPrefix(row.scenario, "loader down") && r.Refused != 0 {
			t.Errorf("%s: %d Adds refused (first: %s): an outage must fill the spool, not the budget", name, r.Refused, r.RefusedErr)
		}
	} else {
		if r.MaxBuffered > faultMemLimit {
			t.Errorf("%s: BufferedBytes peaked at %d, over the %d budget", name, r.MaxBuffered, faultMemLimit)
		}
		if strings.HasPrefix(row.scenario, "loader down") && (r.Refused == 0 || !strings.Contains(r.RefusedErr, context.DeadlineExceeded.Error())) {
			t.Errorf("%s: %d Adds refused (first: %q): a 60 s outage at %d events/s overflows a %d-byte budget, so Adds must wait until their deadline",
				name, r.Refused, r.RefusedErr, faultRate, faultMemLimit)
		}
	}
}

func faultTable(rows []faultRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| scenario | spool | offered | accepted | refused (Add deadline) | skipped (Add blocked) | stored | lost | duplicated | OnFailure | Add p99 | Add max | BufferedBytes peak | heap live peak | loader repeats absorbed | faults |\n")
	fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rows {
		sp := "no"
		if r.spool {
			sp = "yes"
		}
		absorbed := "n/a"
		if r.absorbed >= 0 {
			absorbed = strconv.FormatInt(r.absorbed, 10)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d | %d | %d | %v | %v | %.1f MiB | %.1f MiB | %s | %s |\n",
			r.scenario, sp, r.res.Offered, r.res.accepted(), r.res.Refused, r.res.Skipped, r.stored, r.lost, r.dup, len(r.res.Failed),
			r.res.AddP99.Round(time.Microsecond), r.res.AddMax.Round(time.Millisecond),
			float64(r.res.MaxBuffered)/(1<<20), float64(r.res.MaxHeapLive)/(1<<20), absorbed, r.injected)
	}
	return b.String()
}

// storedBatches reads back every batch of the SQLite file at dbPath (a
// loader that used it has shut down).
func storedBatches(t *testing.T, dbPath string) []store.Batch {
	t.Helper()
	st, err := sqlite.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	batches, err := storetest.Reader(st).Batches(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return batches
}
