package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/kafkasink"
)

func TestMain(m *testing.M) {
	if os.Getenv(execEnv) == "1" {
		// Re-executed by startProc: be batchloader, in a process of its own.
		main()
	}
	goleak.VerifyTestMain(m)
}

// started runs the command in-process and returns its base URL, a channel
// of its log lines (drained meanwhile, so logging never blocks) and its
// result.
func started(t *testing.T, ctx context.Context, args ...string) (url string, lines <-chan string, done <-chan error) {
	t.Helper()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := run(ctx, args, pw, io.Discard)
		pw.Close()
		errc <- err
	}()
	all := make(chan string, 1000)
	addr := make(chan string, 1)
	go func() {
		defer close(all)
		listening := regexp.MustCompile(`msg=listening addr=(\S+)`)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
			select {
			case all <- sc.Text():
			default:
			}
		}
	}()
	select {
	case a := <-addr:
		return "http://" + a, all, errc
	case err := <-errc:
		t.Fatalf("run returned before listening: %v", err)
	}
	return "", nil, nil
}

func postBatch(t *testing.T, url string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("POST", url+"/v1/batches", strings.NewReader("{\"id\":\"a\"}\n{\"id\":\"b\"}\n"))
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Idempotency-Key", "cmd-test")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"accepted":2,"duplicate":false}` {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
}

func TestRunDiscard(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url, lines, done := started(t, ctx, "-addr", "127.0.0.1:0", "-store", "discard")
	postBatch(t, url)
	cancel() // what SIGINT/SIGTERM do through signal.NotifyContext
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if code := exitCode(nil, io.Discard); code != 0 {
		t.Errorf("exit code %d", code)
	}
	var log []string
	for l := range lines {
		log = append(log, l)
	}
	joined := strings.Join(log, "\n")
	if !strings.Contains(joined, "count=2") || !strings.Contains(joined, "msg=stopped") {
		t.Errorf("log lacks count=2 or the drain:\n%s", joined)
	}
}

func TestRunSQLite(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := filepath.Join(t.TempDir(), "loader.db")
	url, lines, done := started(t, ctx, "-addr", "127.0.0.1:0", "-dsn", dsn)
	postBatch(t, url)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	for range lines {
	}
}

// TestRunKafka: with -kafka-brokers and -kafka-topic the command consumes
// batches from Kafka besides serving HTTP, and drains both on the signal.
func TestRunKafka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url, lines, done := started(t, ctx, "-addr", "127.0.0.1:0", "-store", "discard",
		"-kafka-brokers", strings.Join(c.ListenAddrs(), ","), "-kafka-topic", "events", "-kafka-group", "cmd-test")
	postBatch(t, url) // HTTP still works

	sink, err := kafkasink.New(c.ListenAddrs(), "events")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	b, _ := batchproc.NewBatch("from-kafka", batchproc.Event{Payload: []byte(`{"id":"k1"}`)},
		batchproc.Event{Payload: []byte(`{"id":"k2"}`)}, batchproc.Event{Payload: []byte(`{"id":"k3"}`)})
	if err := sink.Send(ctx, b); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(30 * time.Second)
	for stored := false; !stored; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("log ended before the Kafka batch was stored")
			}
			stored = strings.Contains(l, "count=3 key=from-kafka") && strings.Contains(l, "source=kafka")
		case <-timeout:
			t.Fatal("the Kafka batch was not stored within 30s")
		}
	}
	cancel() // what SIGINT/SIGTERM do through signal.NotifyContext
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if joined := strings.Join(rest, "\n"); !strings.Contains(joined, "msg=\"stopped consuming\"") || !strings.Contains(joined, "msg=stopped") {
		t.Errorf("log lacks the consumer's stop or the drain:\n%s", joined)
	}
}

func TestBadFlags(t *testing.T) {
	emptyFile := filepath.Join(t.TempDir(), "empty")
	spacedTokens := filepath.Join(t.TempDir(), "spaced")
	blankFile := filepath.Join(t.TempDir(), "blank")
	if err := os.WriteFile(blankFile, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(emptyFile, []byte("# only a comment\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spacedTokens, []byte("good\nnot good\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-nope"},
		{"-store", "mysql"},
		{"-max-body", "-1"},
		{"-max-body", "lots"},
		{"-max-events", "-3"},
		{"-log-format", "xml"},
		{"-max-body", "100", "-max-decoded-body", "10"},
		{"stray-arg"},
		{"-kafka-topic", "events"},
		{"-kafka-brokers", "127.0.0.1:9092"},
		{"-kafka-brokers", "127.0.0.1:9092", "-kafka-topic", "a/b"},
		{"-kafka-brokers", "127.0.0.1:9092,", "-kafka-topic", "events"},
		{"-sqlite-synchronous", "OFF"},
		{"-postgres-group-commit", "-1"},
		{"-dsn", "a.db", "-dsn-file", "dsn.txt"},
		{"-dsn-file", filepath.Join(t.TempDir(), "missing")},
		{"-dsn-file", blankFile},
		{"-token-file", filepath.Join(t.TempDir(), "missing")},
		{"-token-file", emptyFile},
		{"-token-file", spacedTokens},
		{"-decode-memory", "1000", "-max-decoded-body", "2000"},
		{"-body-memory", "1000", "-max-body", "2000", "-max-decoded-body", "2000"},
		{"-slot-wait", "-1s"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), args, io.Discard, &stderr)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: %v, want a usage error", args, err)
			continue
		}
		var msg bytes.Buffer
		if code := exitCode(err, &msg); code != 2 || msg.Len()+stderr.Len() == 0 {
			t.Errorf("%v: exit %d, no message", args, code)
		}
	}
	// A store that cannot open is no usage error: exit 1.
	err := run(context.Background(), []string{"-store", "sqlite", "-dsn", filepath.Join(t.TempDir(), "missing-dir", "x.db"), "-addr", "127.0.0.1:0"}, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("opening a SQLite file in a missing directory succeeded; this test needs a store that fails to open")
	}
	if code := exitCode(err, io.Discard); code != 1 {
		t.Errorf("store failure: exit %d (%v), want 1", code, err)
	}
}

func TestHelp(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"-h"}, io.Discard, &stderr)
	if code := exitCode(err, io.Discard); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	for _, f := range []string{"-addr", "-store", "-dsn", "-token", "-max-body", "-max-decoded-body", "-max-events", "-pprof", "-kafka-brokers", "-kafka-topic", "-kafka-group"} {
		if !strings.Contains(stderr.String(), f) {
			t.Errorf("usage lacks %s", f)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://user:secret@db:5432/x": "postgres://user:xxxxx@db:5432/x",
		"postgres://user@db/x":             "postgres://user@db/x",
		"postgres://db/x":                  "postgres://db/x",
	} {
		if got := redact("postgres", in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPostgresUnreachable: -store postgres is wired in; an unreachable
// server is a runtime failure (exit 1), not a usage error.
func TestPostgresUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := run(ctx, []string{"-store", "postgres", "-dsn", "postgres://u:p@127.0.0.1:1/db?connect_timeout=2", "-addr", "127.0.0.1:0"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL") || strings.Contains(err.Error(), ":p@") {
		t.Fatalf("run: %v", err)
	}
	if code := exitCode(err, io.Discard); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
}
