package spool

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batchproc/batchproc"
)

const crashChildEnv = "SPOOL_CRASH_CHILD"

var soak = flag.Int("spool.soak", 0, "iterations of TestCrashKill per sync mode (0: 10, the CI count); e.g. -spool.soak=1000 for a long soak")

func crashOpts(mode string) []Option {
	m := SyncBatch
	if mode == "never" {
		m = SyncNever
	}
	return []Option{WithSync(m), WithSegmentSize(16 << 10), WithMaxBytes(64 << 20)}
}

// crashChild is the process TestCrashKill kills. It acks what it finds at
// Open, then appends batches (acking every third) until it is killed. It
// reports on stdout, one write per line: "a KEY" once Append(KEY)
// returned nil, "x KEY" before Ack(KEY), "k KEY" once it returned nil.
func crashChild() {
	dir, mode := os.Getenv(crashChildEnv), os.Getenv("SPOOL_CRASH_MODE")
	start, _ := strconv.Atoi(os.Getenv("SPOOL_CRASH_START"))
	say := func(format string, args ...any) { fmt.Fprintf(os.Stdout, format+"\n", args...) }
	die := func(err error) { say("E %v", err); os.Exit(2) }
	s, err := Open(dir, crashOpts(mode)...)
	if err != nil {
		die(err)
	}
	if mode == "hold" { // TestLockHeldByAnotherProcess
		say("ready")
		select {}
	}
	var found []string
	if err := s.Replay(func(b *batchproc.Batch) error { found = append(found, b.Key()); return nil }); err != nil {
		die(err)
	}
	for _, k := range found {
		say("x %s", k)
		if err := s.Ack(k); err != nil {
			die(err)
		}
		say("k %s", k)
	}
	deadline := time.Now().Add(30 * time.Second) // never outlive a lost parent by much
	for i := start; time.Now().Before(deadline); i++ {
		k := fmt.Sprintf("k%08d", i)
		if err := s.Append(testBatchNoT(k, eventsOf(k))); err != nil {
			die(err)
		}
		say("a %s", k)
		if i%3 == 0 {
			say("x %s", k)
			if err := s.Ack(k); err != nil {
				die(err)
			}
			say("k %s", k)
		}
	}
	os.Exit(3)
}

func testBatchNoT(key string, n int) *batchproc.Batch {
	b, err := batchproc.NewBatch(key, testEvents(key, n)...)
	if err != nil {
		panic(err)
	}
	return b
}

// A real child process appends through the spool and is killed with
// SIGKILL at a random point, again and again on the same directory; after
// each kill the directory is opened and replayed: every Append that
// returned nil (as the child reported over its pipe) and was not acked is
// replayed exactly once, with its content; no acked batch comes back; the
// order is kept.
func TestCrashKill(t *testing.T) {
	iters := 10
	if *soak > 0 {
		iters = *soak
	}
	for _, mode := range []string{"batch", "never"} {
		t.Run(mode, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 9))
			dir := t.TempDir()
			appended := map[string]bool{} // Append returned nil
			ackStarted := map[string]bool{}
			acked := map[string]bool{} // Ack returned nil
			next := 0
			var totalAppended, totalReplayed int
			for it := range iters {
				killAfter := 1 + rng.IntN(400)
				lines := runAndKill(t, dir, mode, next, killAfter, rng)
				for _, l := range lines {
					op, k, _ := strings.Cut(l, " ")
					switch op {
					case "a":
						appended[k] = true
						totalAppended++
					case "x":
						ackStarted[k] = true
					case "k":
						acked[k] = true
					case "E":
						t.Fatalf("iteration %d: child failed: %s", it, k)
					}
				}
				s, err := Open(dir, crashOpts(mode)...)
				if err != nil {
					t.Fatalf("iteration %d: Open after SIGKILL: %v", it, err)
				}
				got := replayKeys(t, s, eventsOf)
				st := s.Stats()
				s.Close()
				if st.LostBatches != 0 || st.CorruptFiles != 0 {
					t.Fatalf("iteration %d: recovery after SIGKILL found corruption: %+v", it, st)
				}
				in := map[string]bool{}
				for i, k := range got {
					if in[k] {
						t.Fatalf("iteration %d: %s replayed twice", it, k)
					}
					in[k] = true
					if i > 0 && got[i-1] >= k {
						t.Fatalf("iteration %d: %s replayed after %s", it, k, got[i-1])
					}
					if acked[k] {
						t.Fatalf("iteration %d: %s replayed, but its Ack had returned nil", it, k)
					}
					var idx int
					fmt.Sscanf(k, "k%d", &idx)
					next = max(next, idx+1)
				}
				for k := range appended {
					if !ackStarted[k] && !in[k] {
						t.Fatalf("iteration %d: lost %s: its Append returned nil, it was never acked", it, k)
					}
				}
				for _, l := range lines {
					if op, k, _ := strings.Cut(l, " "); op == "a" {
						var idx int
						fmt.Sscanf(k, "k%d", &idx)
						next = max(next, idx+1)
					}
				}
				next++ // a key whose Append was cut short is never reused
				// What the next child will find and ack: the replayed set.
				// Forget the rest, so that "appended" stays what is live.
				for k := range appended {
					if !in[k] {
						delete(appended, k)
					}
				}
				totalReplayed += len(got)
			}
			t.Logf("%d iterations: %d Appends reported, %d batches replayed after kills", iters, totalAppended, totalReplayed)
			if totalAppended == 0 {
				t.Fatal("the children appended nothing")
			}
		})
	}
}

// runAndKill starts the child and kills it with SIGKILL once it has
// reported killAfter lines (or after a random short time, whichever comes
// first), and returns every line it wrote.
func runAndKill(t *testing.T, dir, mode string, start, killAfter int, rng *rand.Rand) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, "SPOOL_CRASH_MODE="+mode, "SPOOL_CRASH_START="+strconv.Itoa(start))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill := func() { once.Do(func() { cmd.Process.Signal(syscall.SIGKILL) }) }
	timer := time.AfterFunc(time.Duration(50+rng.IntN(750))*time.Millisecond, kill)
	defer timer.Stop()
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) >= killAfter {
			kill() // the pipe keeps what the child wrote before it died
		}
	}
	timer.Stop()
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v; last lines %q", err, lines[max(0, len(lines)-3):])
	}
	// A line cut short by the kill is not a report.
	return slices.DeleteFunc(lines, func(l string) bool { return len(l) < 3 })
}

// Two processes never share a spool: while a child holds the directory,
// Open fails with ErrLocked; once the child is killed (SIGKILL: no cleanup
// ran), the lock is gone and Open succeeds.
func TestLockHeldByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, "SPOOL_CRASH_MODE=hold")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not open the spool: %q", sc.Text())
	}
	_, err = Open(dir)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open while another process holds the spool: %v, want ErrLocked", err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after the holder was killed: %v", err)
	}
	s.Close()
}
