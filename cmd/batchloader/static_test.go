package main

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStaticBinary builds batchloader as the image's Dockerfile expects it
// (CGO_ENABLED=0, as .ci/run and the README build it), checks that it is
// statically linked (FROM scratch has no libc), runs it, and probes it with
// GET /healthz and with its own -healthcheck mode, which is what the
// image's HEALTHCHECK runs: exit 0 while it serves, 1 once it is gone.
// Containers cannot run on the CI machines; this runs the same binary.
func TestStaticBinary(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build the binary with: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "batchloader")
	build := exec.Command(goCmd, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a program interpreter: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v (%v); want none", libs, err)
	}
	f.Close()

	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-dsn", filepath.Join(dir, "loader.db"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		listening := regexp.MustCompile(`msg=listening addr=(\S+)`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-scanned:
		t.Fatalf("batchloader ended before listening: %v", cmd.Wait())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-scanned
		_ = cmd.Wait()
		t.Fatal("batchloader not listening within 30s")
	}

	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	client.CloseIdleConnections()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz: %s, want 200", resp.Status)
	}
	probe := func() error {
		out, err := exec.Command(bin, "-healthcheck", "-addr", addr).CombinedOutput()
		if err != nil {
			return errors.Join(err, errors.New(string(out)))
		}
		return nil
	}
	if err := probe(); err != nil {
		t.Errorf("-healthcheck of a serving loader: %v, want exit 0", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-scanned
	if err := cmd.Wait(); err != nil {
		t.Errorf("batchloader after SIGTERM: %v, want exit 0", err)
	}
	var ee *exec.ExitError
	if err := probe(); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("-healthcheck of a stopped loader: %v, want exit 1", err)
	}
}

// TestHealthcheckAddr: -healthcheck probes loopback for an -addr without a
// host, and fails clearly on a bad -addr.
func TestHealthcheckAddr(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url, _, done := started(t, ctx, "-addr", "127.0.0.1:0", "-store", "discard")
	port := url[strings.LastIndexByte(url, ':'):]
	for _, addr := range []string{port, "0.0.0.0" + port, "127.0.0.1" + port} {
		if err := run(ctx, []string{"-healthcheck", "-addr", addr}, io.Discard, io.Discard); err != nil {
			t.Errorf("-healthcheck -addr %s: %v", addr, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, addr := range []string{"127.0.0.1" + port, "no-port"} {
		err := run(context.Background(), []string{"-healthcheck", "-addr", addr}, io.Discard, io.Discard)
		if err == nil || exitCode(err, io.Discard) != 1 || !strings.Contains(err.Error(), "healthcheck") {
			t.Errorf("-healthcheck -addr %s of no loader: %v, want exit 1", addr, err)
		}
	}
}
