package e2e

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/httpsink"
	"github.com/batchproc/batchproc/internal/testutil/faults"
	"github.com/batchproc/batchproc/spool"
)

var crashIterations = flag.Int("crash.iterations", 30, "TestCrashSpoolKill9: child processes killed with SIGKILL (1000 for a soak)")

// The child process of TestCrashSpoolKill9 runs when these are set.
const (
	crashEnvDir  = "BATCHPROC_CRASH_DIR"
	crashEnvURL  = "BATCHPROC_CRASH_URL"
	crashEnvIter = "BATCHPROC_CRASH_ITER"
	crashEnvSync = "BATCHPROC_CRASH_SYNC"
	crashEnvLast = "BATCHPROC_CRASH_LAST"
)

// Crash child settings. The spool keeps the batches being filled too
// (spool.WithOpenBatches), so a crash loses no event whose Add returned
// nil.
const (
	crashBatch = 50
	crashFlush = 20 * time.Millisecond
)

func crashSyncModes() []spool.SyncMode {
	return []spool.SyncMode{spool.SyncBatch, spool.SyncInterval(10 * time.Millisecond), spool.SyncNever}
}

// crashChild adds events through a spooled processor to the loader until it
// is killed, writing each event's id and the monotonic time since it
// started to stdout once its Add returned nil.
// With crashEnvLast it adds nothing: it replays what the spool holds,
// shuts down cleanly and exits 0.
func crashChild() {
	mode, _ := strconv.Atoi(os.Getenv(crashEnvSync))
	iter := os.Getenv(crashEnvIter)
	sink, err := httpsink.New(os.Getenv(crashEnvURL), httpsink.WithTimeout(5*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p, err := batchproc.New(sink,
		spool.WithSpool(os.Getenv(crashEnvDir), spool.WithSync(crashSyncModes()[mode]), spool.WithSegmentSize(1<<20), spool.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil)))),
		batchproc.WithMaxBatchEvents(crashBatch), batchproc.WithFlushInterval(crashFlush),
		batchproc.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))),
		batchproc.WithOnFailure(func(b *batchproc.Batch, err error) {
			fmt.Fprintf(os.Stderr, "batch %s failed: %v\n", b.Key(), err)
		}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if os.Getenv(crashEnvLast) != "" {
		// The last child replays what every child before it left (the
		// loader was down for half of them): under -race on a loaded
		// 2-core machine that took over a minute once. The bound is only
		// there so that a hang ends.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := p.Flush(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "flush:", err)
			os.Exit(3)
		}
		if err := p.Shutdown(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "shutdown:", err)
			os.Exit(3)
		}
		fmt.Fprintf(os.Stdout, "replayed %d\n", p.Stats().Replayed)
		os.Exit(0)
	}
	out := bufio.NewWriterSize(os.Stdout, 64)
	start := time.Now()
	tick := time.NewTicker(time.Millisecond) // 20 events a millisecond: the child lives long enough to journal most
	for i := 0; ; i++ {
		if i%20 == 0 {
			<-tick.C
		}
		id := iter + "-" + strconv.Itoa(i)
		payload := fmt.Sprintf(`{"id":%q,"type":"crash","ts":"2026-12-01T10:00:00Z","pad":"%0100d"}`, id, i)
		if err := p.Add(context.Background(), batchproc.Event{ID: id, Payload: []byte(payload)}); err != nil {
			fmt.Fprintln(os.Stderr, "add:", err)
			os.Exit(4)
		}
		out.WriteString(id)
		out.WriteByte(' ')
		out.WriteString(strconv.FormatInt(int64(time.Since(start)), 10))
		out.WriteByte('\n')
		out.Flush() // the parent counts the event as accepted once it reads the line
	}
}

// TestCrashSpoolKill9: a child process adds events through a spooled
// processor to a real loader (SQLite, over loopback) and is killed with
// SIGKILL after a random number of accepted events, then the next child
// starts on the same spool directory (replaying what the last one left),
// for -crash.iterations kills, the loader answering 503 during every
// other child's life, cycling through the sync modes. A last child
// replays what is left and shuts down. Then every event whose Add returned
// nil is in the store exactly once, the events of the batches being
// filled at the kill included (the spool kept them in its memory-mapped
// regions). Nothing is stored twice.
func TestCrashSpoolKill9(t *testing.T) {
	// The loader is down (503) during every other child's life: its batches
	// wait in the spool, retrying, when the kill comes.
	var down atomic.Bool
	fh := &faults.Handler{Plan: onlyBatches(func(int) faults.Fault {
		if down.Load() {
			return faults.Unavailable
		}
		return faults.None
	})}
	url, dbPath, stop := inProcessLoader(t, fh)
	dir := t.TempDir()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	type acceptedEvent struct {
		id string
		at time.Duration // since the child started
	}
	var order [][]acceptedEvent // per child, in acceptance order
	run := func(iter int, last bool) (ids []acceptedEvent) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashSpoolKill9$")
		cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvURL+"="+url,
			crashEnvIter+"="+strconv.Itoa(iter), crashEnvSync+"="+strconv.Itoa(iter%3))
		if last {
			cmd.Env = append(cmd.Env, crashEnvLast+"=1")
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		if last {
			for sc.Scan() {
				t.Logf("last child: %s", sc.Text())
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("last child: %v: %s", err, stderr.String())
			}
			if stderr.Len() > 0 {
				t.Logf("last child stderr: %s", stderr.String())
			}
			return nil
		}
		killAt := 1 + rng.IntN(20000) // a random point: after this many accepted events (up to 1 s)
		// A child that stops accepting events is a hang: dump its
		// goroutines (SIGQUIT) and fail, rather than wait forever.
		progress := make(chan struct{}, 1)
		stuck := make(chan struct{})
		watchdogDone := make(chan struct{})
		defer close(watchdogDone)
		go func() {
			t := time.NewTimer(30 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-progress:
					t.Reset(30 * time.Second)
				case <-t.C:
					close(stuck)
					cmd.Process.Signal(syscall.SIGQUIT)
					return
				case <-watchdogDone:
					return
				}
			}
		}()
		parse := func(line string) acceptedEvent {
			id, at, ok := strings.Cut(line, " ")
			ns, err := strconv.ParseInt(at, 10, 64)
			if !ok || err != nil {
				t.Fatalf("child %d wrote %q", iter, line)
			}
			return acceptedEvent{id, time.Duration(ns)}
		}
		for sc.Scan() {
			ids = append(ids, parse(sc.Text()))
			select {
			case progress <- struct{}{}:
			default:
			}
			if len(ids) == killAt {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		for sc.Scan() { // lines written before the kill landed
			ids = append(ids, parse(sc.Text()))
		}
		err = cmd.Wait()
		select {
		case <-stuck:
			t.Fatalf("child %d (sync mode %v) accepted no event for 30 s after %d: %s", iter, crashSyncModes()[iter%3], len(ids), stderr.String())
		default:
		}
		if stderr.Len() > 0 {
			t.Logf("child %d stderr: %s", iter, stderr.String())
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("child %d: %v (want killed by SIGKILL after %d events): %s", iter, err, killAt, stderr.String())
		}
		return ids
	}
	limit := time.Duration(*crashIterations) * 3 * time.Second // a child lives 1 s at most
	deadline := time.Now().Add(limit)
	for iter := range *crashIterations {
		if time.Now().After(deadline) {
			t.Fatalf("only %d iterations in %v", iter, limit)
		}
		down.Store(iter%2 == 1)
		order = append(order, run(iter, false))
	}
	down.Store(false)
	run(*crashIterations, true)

	stop()
	batches := storedBatches(t, dbPath)
	stored := map[string]bool{}
	for _, b := range batches {
		for _, e := range b.Events {
			if stored[e.ID] {
				t.Fatalf("event %s stored twice", e.ID)
			}
			stored[e.ID] = true
		}
	}
	total, lost := 0, 0
	for iter, evs := range order {
		total += len(evs)
		if len(evs) == 0 {
			continue
		}
		// The kill came after the last line the parent read.
		kill := evs[len(evs)-1].at
		n := 0
		var first time.Duration
		for _, e := range evs {
			if !stored[e.id] {
				if n == 0 {
					first = kill - e.at
				}
				n++
			}
		}
		lost += n
		if n > 0 {
			t.Errorf("child %d (sync mode %v): %d of %d accepted events lost, the first accepted %v before the kill",
				iter, crashSyncModes()[iter%3], n, len(evs), first)
		}
	}
	t.Logf("%d kills, %d events accepted, %d stored, %d lost", len(order), total, len(stored), lost)
	if total == 0 {
		t.Fatal("no events accepted")
	}
}
