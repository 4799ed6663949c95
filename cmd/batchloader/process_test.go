package main

import (
	"bufio"
	"bytes"
	"fmt"
	"github.com/batchproc/batchproc/internal/testutil"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// execEnv makes the test binary run main (see TestMain): a real batchloader
// process without a separate build.
const execEnv = "BATCHLOADER_TEST_EXEC"

// proc is a batchloader process started by startProc.
type proc struct {
	t        *testing.T
	cmd      *exec.Cmd
	url      string // ingest listener
	debugURL string // debug listener, with -pprof
	mu       sync.Mutex
	log      []string
	exited   chan struct{}
	waitErr  error
}

// startProc starts the test binary as batchloader with args and env added
// to the environment, and waits (at most 30 s) until it listens. It is
// stopped with SIGTERM at the end of the test.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startBinary(t, os.Args[0], append([]string{execEnv + "=1"}, env...), args...)
}

// buildBinary builds batchloader into a temporary directory, without the
// test's flags: under -race the test binary itself is instrumented, and
// its memory is no figure for the real command's.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "batchloader")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startBinary is startProc for the executable bin.
func startBinary(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		listening := regexp.MustCompile(`msg=listening addr=(\S+)`)
		debug := regexp.MustCompile(`msg="debug listening" addr=(\S+)`)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			p.mu.Lock()
			p.log = append(p.log, l)
			if m := debug.FindStringSubmatch(l); m != nil {
				p.debugURL = "http://" + m[1]
			}
			if m := listening.FindStringSubmatch(l); m != nil {
				p.url = "http://" + m[1]
				close(ready)
			}
			p.mu.Unlock()
		}
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop() })
	giveUp := time.NewTimer(30 * time.Second)
	defer giveUp.Stop()
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("batchloader exited before listening: %v\n%s", p.waitErr, p.logs())
	case <-giveUp.C:
		t.Fatalf("batchloader not listening after 30 s:\n%s", p.logs())
	}
	return p
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.log, "\n")
}

// stop sends SIGTERM and waits for a clean exit (SIGKILL after 30 s).
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	giveUp := time.NewTimer(30 * time.Second)
	defer giveUp.Stop()
	select {
	case <-p.exited:
		if p.waitErr != nil {
			p.t.Errorf("batchloader: %v\n%s", p.waitErr, p.logs())
		}
	case <-giveUp.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("batchloader did not stop on SIGTERM")
	}
}

// status reads a field of /proc/<pid>/status, in kB.
func (p *proc) statusKB(field string) int64 {
	p.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				p.t.Fatal(err)
			}
			return n
		}
	}
	p.t.Fatalf("no %s in /proc/%d/status", field, p.cmd.Process.Pid)
	return 0
}

type answer struct {
	code int
	body string
}

// post sends body to url's /v1/batches with the headers hdr (pairs).
func post(client *http.Client, url string, body []byte, hdr ...string) (answer, error) {
	req, err := http.NewRequest("POST", url+"/v1/batches", bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b)}, err
}

func get(client *http.Client, url string) (answer, error) {
	resp, err := client.Get(url)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b)}, err
}

// TestSecretsOffCommandLine runs real batchloader processes that take their
// tokens and DSN from files and from the environment: /proc/<pid>/cmdline
// holds none of them (what ps shows), every token is accepted at once, and
// neither the ingest port nor the debug listener's cmdline shows a secret.
func TestSecretsOffCommandLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name   string
		env    []string
		args   []string
		tokens []string
		dbPath string
	}{
		{
			name:   "files",
			args:   []string{"-token-file", write("tokens", "# rotation: old and new\ntok-file-old-4f1a\n\n  tok-file-new-9c2e  \n"), "-dsn-file", write("dsn", filepath.Join(dir, "secret-dsn-file-77.db")+"\n")},
			tokens: []string{"tok-file-old-4f1a", "tok-file-new-9c2e"},
			dbPath: filepath.Join(dir, "secret-dsn-file-77.db"),
		},
		{
			name:   "environment",
			env:    []string{envToken + "=tok-env-a-1b3d, tok-env-b-5e6f\ttok-env-c-0a0a", envDSN + "=" + filepath.Join(dir, "secret-dsn-env-88.db")},
			tokens: []string{"tok-env-a-1b3d", "tok-env-b-5e6f", "tok-env-c-0a0a"},
			dbPath: filepath.Join(dir, "secret-dsn-env-88.db"),
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"-addr", "127.0.0.1:0", "-store", "sqlite", "-pprof", "-debug-addr", "127.0.0.1:0"}, c.args...)
			p := startProc(t, c.env, args...)
			secrets := append([]string{"secret-dsn"}, c.tokens...)
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			for _, sec := range secrets {
				if bytes.Contains(cmdline, []byte(sec)) {
					t.Errorf("/proc/pid/cmdline shows %q: %q", sec, cmdline)
				}
			}
			if _, err := os.Stat(c.dbPath); err != nil {
				t.Errorf("the DSN given off the command line was not used: %v", err)
			}
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			for i, tok := range c.tokens {
				a, err := post(client, p.url, []byte(`{"id":"x"}`+"\n"), "Authorization", "Bearer "+tok, "Idempotency-Key", fmt.Sprintf("k%d", i))
				if err != nil || a.code != 200 {
					t.Errorf("token %d: %v %d %s", i, err, a.code, a.body)
				}
			}
			for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong"}} {
				if a, err := post(client, p.url, []byte(`{"id":"x"}`+"\n"), hdr...); err != nil || a.code != 401 {
					t.Errorf("%v: %v %d, want 401", hdr, err, a.code)
				}
			}
			// pprof is not on the ingest port, with a token or without.
			for _, path := range []string{"/debug/pprof/cmdline", "/debug/pprof/"} {
				req, _ := http.NewRequest("GET", p.url+path, nil)
				req.Header.Set("Authorization", "Bearer "+c.tokens[0])
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 404 {
					t.Errorf("ingest port %s: %d, want 404", path, resp.StatusCode)
				}
			}
			if p.debugURL == "" {
				t.Fatalf("no debug listener logged:\n%s", p.logs())
			}
			a, err := get(client, p.debugURL+"/debug/pprof/cmdline")
			if err != nil || a.code != 200 || !strings.Contains(a.body, "-pprof") {
				t.Fatalf("debug cmdline: %v %d %q", err, a.code, a.body)
			}
			for _, sec := range secrets {
				if strings.Contains(a.body, sec) {
					t.Errorf("debug cmdline shows %q", sec)
				}
			}
			for _, sec := range c.tokens {
				if strings.Contains(p.logs(), sec) {
					t.Errorf("the log shows token %q", sec)
				}
			}
		})
	}
}

// TestWarnsWithoutTokenBeyondLoopback: no token and a listener on every
// interface is logged as a warning; on loopback it is not.
func TestWarnsWithoutTokenBeyondLoopback(t *testing.T) {
	const warning = "no bearer token configured"
	for _, c := range []struct {
		addr string
		args []string
		want bool
	}{
		{"0.0.0.0:0", nil, true},
		{"127.0.0.1:0", nil, false},
		{"0.0.0.0:0", []string{"-token", "t0k"}, false},
	} {
		p := startProc(t, nil, append([]string{"-addr", c.addr, "-store", "discard"}, c.args...)...)
		p.stop()
		logs := p.logs()
		if got := strings.Contains(logs, warning) && strings.Contains(logs, "level=WARN"); got != c.want {
			t.Errorf("%s %v: warning %v, want %v:\n%s", c.addr, c.args, got, c.want, logs)
		}
	}
}

// gzipBomb returns about 1 MiB of gzip that expands to 1 GiB of '\n'-free
// JSON-looking bytes: one member of 8 MiB, repeated.
func gzipBomb(t *testing.T) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(bytes.Repeat([]byte(`{"a":0}`), 8<<20/7)); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return bytes.Repeat(buf.Bytes(), 128)
}

// TestBombsBoundedRSS: 16 concurrent gzip and zstd decompression bombs,
// twice over, against a real batchloader process (built with go build, so
// not race-instrumented) with its default memory
// budgets and 16 ingest slots (so all of them decode at once): every bomb
// is answered 413, nothing is stored, and the process's peak RSS (VmHWM)
// stays under 256 MiB. A legitimate compressed batch is stored afterwards.
func TestBombsBoundedRSS(t *testing.T) {
	const limitKB = 256 << 10
	args := []string{"-addr", "127.0.0.1:0", "-store", "sqlite", "-dsn", filepath.Join(t.TempDir(), "b.db"),
		"-max-concurrent", "16", "-slot-wait", "30s"}
	// BATCHLOADER_TEST_BOMB_ARGS adds flags, to see the test fail without
	// the budget: "-decode-memory 1073741824 -memory-limit -1".
	args = append(args, strings.Fields(os.Getenv("BATCHLOADER_TEST_BOMB_ARGS"))...)
	p := startBinary(t, buildBinary(t), nil, args...)
	startKB := p.statusKB("VmHWM")
	bombs := []struct {
		enc  string
		body []byte
	}{
		{"gzip", gzipBomb(t)},
		{"zstd", testutil.ZstdRLEFrame(20, 8192)},  // 32 KiB → 1 GiB, 1 MiB window
		{"zstd", testutil.ZstdRLEFrame(23, 16384)}, // 64 KiB → 2 GiB, 8 MiB window (the default limit)
	}
	for _, b := range bombs {
		t.Logf("%s bomb: %d KiB", b.enc, len(b.body)>>10)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	for round := range 2 {
		var wg sync.WaitGroup
		errs := make(chan string, 16)
		for i := range 16 {
			b := bombs[i%len(bombs)]
			wg.Go(func() {
				a, err := post(client, p.url, b.body, "Content-Encoding", b.enc)
				if err != nil || a.code != 413 {
					errs <- fmt.Sprintf("round %d, %s bomb %d: %v %d %s", round, b.enc, i, err, a.code, a.body)
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}
	peakKB := p.statusKB("VmHWM")
	t.Logf("batchloader VmHWM: %d MiB at start, %d MiB after 2 x 16 concurrent bombs", startKB>>10, peakKB>>10)
	if peakKB >= limitKB {
		t.Errorf("peak RSS %d MiB, want under %d MiB", peakKB>>10, limitKB>>10)
	}
	a, err := get(client, p.url+"/v1/stats")
	if err != nil || !strings.Contains(a.body, `"events":0,"batches":0`) {
		t.Errorf("stats after the bombs: %v %s", err, a.body)
	}
	// The budgets were given back: real compressed batches still decode.
	var ok bytes.Buffer
	for i := range 1000 {
		fmt.Fprintf(&ok, "{\"id\":\"e%d\",\"type\":\"t\"}\n", i)
	}
	zs, _ := zstd.NewWriter(nil)
	defer zs.Close()
	if a, err := post(client, p.url, zs.EncodeAll(ok.Bytes(), nil), "Content-Encoding", "zstd"); err != nil || a.code != 200 {
		t.Errorf("zstd batch after the bombs: %v %d %s", err, a.code, a.body)
	}
}
