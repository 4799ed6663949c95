package loader

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

	"github.com/batchproc/batchproc/internal/testutil"
	"github.com/batchproc/batchproc/internal/testutil/pgtest"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/kafkasink"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/postgres"
	"github.com/batchproc/batchproc/loader/store/sqlite"
)

// storeWait bounds how long a test waits for the consumer to store what it
// expects; only a broken consumer gets near it.
const storeWait = 30 * time.Second

func TestKafkaHeadersAreKafkasinks(t *testing.T) {
	if headerBatchKey != kafkasink.HeaderBatchKey || headerIndex != kafkasink.HeaderIndex {
		t.Fatalf("loader reads headers %q, %q; kafkasink writes %q, %q",
			headerBatchKey, headerIndex, kafkasink.HeaderBatchKey, kafkasink.HeaderIndex)
	}
}

// newKafka starts an in-process Kafka cluster with the topic "events" of
// the given number of partitions.
func newKafka(t *testing.T, partitions int32) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// outcome is one Store call as a notifyStore saw it.
type outcome struct {
	key    string
	events int
	dup    bool
	err    error
}

// wrapStore passes every call on to inner; embedders override Store.
type wrapStore struct{ inner store.Store }

func (w wrapStore) Ping(ctx context.Context) error { return w.inner.Ping(ctx) }
func (w wrapStore) Counts() store.Counts           { return w.inner.Counts() }
func (w wrapStore) Close() error                   { return w.inner.Close() }

// notifyStore reports every Store outcome on ch, so that tests wait for the
// consumer without polling.
type notifyStore struct {
	wrapStore
	ch chan outcome
}

func newNotifyStore(st store.Store) *notifyStore {
	return &notifyStore{wrapStore: wrapStore{st}, ch: make(chan outcome, 10_000)}
}

func (n *notifyStore) Store(ctx context.Context, b *store.Batch) (bool, error) {
	dup, err := n.inner.Store(ctx, b)
	n.ch <- outcome{b.Key, len(b.Events), dup, err}
	return dup, err
}

// waitEvents receives outcomes until want new events were stored, and
// returns them.
func (n *notifyStore) waitEvents(t *testing.T, want int) []outcome {
	t.Helper()
	timeout := time.NewTimer(storeWait)
	defer timeout.Stop()
	var got []outcome
	stored := 0
	for stored < want {
		select {
		case o := <-n.ch:
			got = append(got, o)
			if o.err == nil && !o.dup {
				stored += o.events
			}
		case <-timeout.C:
			t.Fatalf("%d of %d events stored after %v; outcomes %v", stored, want, storeWait, got)
		}
	}
	return got
}

// waitOutcomes receives n outcomes.
func (n *notifyStore) waitOutcomes(t *testing.T, count int) []outcome {
	t.Helper()
	timeout := time.NewTimer(storeWait)
	defer timeout.Stop()
	var got []outcome
	for len(got) < count {
		select {
		case o := <-n.ch:
			got = append(got, o)
		case <-timeout.C:
			t.Fatalf("%d of %d Store calls after %v: %v", len(got), count, storeWait, got)
		}
	}
	return got
}

// kafkaServer is a Server consuming Kafka (no HTTP listener).
type kafkaServer struct {
	*Server
	logs   *testutil.SyncBuffer
	served chan error
}

// startKafkaServer makes a Server for st consuming the cluster's "events"
// topic as a member of group, and shuts it down at the end of the test.
func startKafkaServer(t *testing.T, c *kfake.Cluster, group string, st store.Store) *kafkaServer {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	s, err := New(Config{
		Store:  st,
		Kafka:  &KafkaConfig{Brokers: c.ListenAddrs(), Topic: "events", Group: group},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ks := &kafkaServer{Server: s, logs: logs, served: make(chan error, 1)}
	go func() { ks.served <- s.ServeKafka() }()
	t.Cleanup(func() { ks.stop(t) })
	return ks
}

// stop shuts the server down (again, when the test did) and checks that
// ServeKafka returned as it should.
func (ks *kafkaServer) stop(t *testing.T) {
	t.Helper()
	already := ks.isDraining()
	if err := ks.Shutdown(context.Background()); err != nil && !already {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-ks.served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("ServeKafka returned %v, want http.ErrServerClosed", err)
	}
	ks.served <- http.ErrServerClosed // for a later stop
}

// kafkaEvents makes n events with payloads distinct across prefixes; every
// fifth has no ID.
func kafkaEvents(prefix string, n int) []batchproc.Event {
	es := make([]batchproc.Event, n)
	for i := range es {
		if i%5 != 0 {
			es[i].ID = fmt.Sprintf("%s-%d", prefix, i)
		}
		es[i].Payload = fmt.Appendf(nil, `{"id":%q,"type":"test","n":"%s-%d"}`, es[i].ID, prefix, i)
	}
	return es
}

// produce sends es through a processor (batches of 7, 4 in flight) over a
// kafkasink to the cluster's "events" topic.
func produce(t *testing.T, c *kfake.Cluster, es []batchproc.Event, opts ...kafkasink.Option) batchproc.Stats {
	t.Helper()
	sink, err := kafkasink.New(c.ListenAddrs(), "events", opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	p, err := batchproc.New(sink, batchproc.WithMaxBatchEvents(7), batchproc.WithMaxInFlight(4))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if err := p.Add(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Delivered != uint64(len(es)) {
		t.Fatalf("processor stats %+v, want %d delivered", st, len(es))
	}
	return st
}

// checkOnce checks that the batches hold every event of es exactly once
// and nothing else, and that no key is stored twice.
func checkOnce(t *testing.T, batches []store.Batch, es ...[]batchproc.Event) {
	t.Helper()
	seen := make(map[string]int)
	keys := make(map[string]bool)
	for _, b := range batches {
		if b.Key == "" || keys[b.Key] {
			t.Errorf("batch key %q empty or stored twice", b.Key)
		}
		keys[b.Key] = true
		for _, e := range b.Events {
			seen[string(e.Payload)]++
		}
	}
	n := 0
	for _, es := range es {
		for _, e := range es {
			n++
			if seen[string(e.Payload)] != 1 {
				t.Errorf("event %s stored %d times, want once", e.Payload, seen[string(e.Payload)])
			}
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct events stored, want %d", len(seen), n)
	}
}

// TestKafkaEndToEnd: processor → kafkasink → Kafka → the loader's
// consumer → store, in both record layouts: every event stored once.
func TestKafkaEndToEnd(t *testing.T) {
	for _, layout := range []kafkasink.Layout{kafkasink.PerBatch, kafkasink.PerEvent} {
		t.Run(layout.String(), func(t *testing.T) {
			c := newKafka(t, 3)
			ms := newMemStore()
			ns := newNotifyStore(ms)
			ks := startKafkaServer(t, c, "g", ns)
			es := kafkaEvents("e2e", 150)
			pst := produce(t, c, es, kafkasink.WithLayout(layout))
			ns.waitEvents(t, len(es))
			ks.stop(t)

			batches := ms.stored()
			checkOnce(t, batches, es)
			switch layout {
			case kafkasink.PerBatch:
				if uint64(len(batches)) != pst.Batches {
					t.Errorf("%d batches stored, want the %d the processor sent", len(batches), pst.Batches)
				}
			case kafkasink.PerEvent:
				for _, b := range batches {
					if len(b.Events) != 1 || strings.Count(b.Key, ":") < 1 {
						t.Errorf("per-event record stored as %d events under key %q, want 1 under <batch>:<index>", len(b.Events), b.Key)
					}
				}
			}
			for _, b := range batches {
				for _, e := range b.Events {
					if e.Type != "test" || !strings.Contains(string(e.Payload), `"id":"`+e.ID+`"`) {
						t.Errorf("event %s decoded as id %q type %q", e.Payload, e.ID, e.Type)
					}
				}
			}
			if logs := ks.logs.String(); !strings.Contains(logs, "count=") || !strings.Contains(logs, "source=kafka") {
				t.Errorf("no count=N line for Kafka batches:\n%s", logs)
			}
		})
	}
}

// TestKafkaRedeliveredBatch: a batch in the topic twice (a processor retry
// after an acknowledgement was lost) is stored once.
func TestKafkaRedeliveredBatch(t *testing.T) {
	c := newKafka(t, 1)
	ms := newMemStore()
	ns := newNotifyStore(ms)
	startKafkaServer(t, c, "g", ns)

	sink, err := kafkasink.New(c.ListenAddrs(), "events")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	es := kafkaEvents("dup", 5)
	b, _ := batchproc.NewBatch("the-batch", es...)
	other := kafkaEvents("other", 2)
	b2, _ := batchproc.NewBatch("other-batch", other...)
	for _, b := range []*batchproc.Batch{b, b, b2} {
		if err := sink.Send(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	got := ns.waitOutcomes(t, 3)
	if got[0] != (outcome{"the-batch", 5, false, nil}) || got[1] != (outcome{"the-batch", 5, true, nil}) || got[2] != (outcome{"other-batch", 2, false, nil}) {
		t.Errorf("store saw %v, want the-batch stored, then a duplicate, then other-batch", got)
	}
	checkOnce(t, ms.stored(), es, other)
	if c := ms.Counts(); c.Duplicates != 1 || c.Batches != 2 {
		t.Errorf("counts %+v, want 2 batches and 1 duplicate", c)
	}
}

// TestKafkaSQLiteRestart: into SQLite, across consumer restarts. A new
// group reads the topic from the start, as a consumer that crashed before
// committing would: every batch is a duplicate. The first group restarted
// reads only what came after its commits.
func TestKafkaSQLiteRestart(t *testing.T) {
	c := newKafka(t, 1) // one partition: the consumer sees records in produce order
	path := filepath.Join(t.TempDir(), "loader.db")
	open := func() *sqlite.Store {
		st, err := sqlite.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	first := kafkaEvents("first", 60)
	ns := newNotifyStore(open())
	ks := startKafkaServer(t, c, "g1", ns)
	pst := produce(t, c, first)
	ns.waitEvents(t, len(first))
	ks.stop(t)

	ns = newNotifyStore(open())
	ks = startKafkaServer(t, c, "g2", ns)
	for _, o := range ns.waitOutcomes(t, int(pst.Batches)) {
		if !o.dup || o.err != nil {
			t.Errorf("redelivered batch %s: dup %v, err %v; want a duplicate", o.key, o.dup, o.err)
		}
	}
	ks.stop(t)

	ns = newNotifyStore(open())
	ks = startKafkaServer(t, c, "g1", ns)
	later := kafkaEvents("later", 3)
	produce(t, c, later)
	for _, o := range ns.waitEvents(t, len(later)) {
		if o.dup {
			t.Errorf("group g1 got batch %s again after committing it", o.key)
		}
	}
	ks.stop(t)

	st := open()
	defer st.Close()
	batches, err := st.Batches(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	checkOnce(t, batches, first, later)
}

// flakyStore fails its first n Store calls.
type flakyStore struct {
	wrapStore
	mu sync.Mutex
	n  int
}

func (f *flakyStore) Store(ctx context.Context, b *store.Batch) (bool, error) {
	f.mu.Lock()
	fail := f.n > 0
	f.n--
	f.mu.Unlock()
	if fail {
		return false, errors.New("disk on fire")
	}
	return f.inner.Store(ctx, b)
}

// TestKafkaStoreFailureRetried: the consumer does not move past a batch
// the store failed; it retries until the store takes it.
func TestKafkaStoreFailureRetried(t *testing.T) {
	c := newKafka(t, 1)
	ms := newMemStore()
	ns := newNotifyStore(&flakyStore{wrapStore: wrapStore{ms}, n: 2})
	ks := startKafkaServer(t, c, "g", ns)
	es := kafkaEvents("flaky", 10)
	produce(t, c, es)
	got := ns.waitEvents(t, len(es))
	if got[0].err == nil || got[1].err == nil {
		t.Errorf("outcomes %v, want two failures first", got)
	}
	ks.stop(t)
	checkOnce(t, ms.stored(), es)
	if n := strings.Count(ks.logs.String(), "store failed, will retry"); n != 2 {
		t.Errorf("%d retry lines, want 2:\n%s", n, ks.logs)
	}
}

// TestKafkaRecordKinds: a record that is no valid batch is logged and
// skipped; another producer's record (no batchproc header) is stored under
// a key naming its place in the log.
func TestKafkaRecordKinds(t *testing.T) {
	c := newKafka(t, 1)
	ms := newMemStore()
	ns := newNotifyStore(ms)
	ks := startKafkaServer(t, c, "g", ns)

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	hdr := func(k string) []kgo.RecordHeader { return []kgo.RecordHeader{{Key: headerBatchKey, Value: []byte(k)}} }
	recs := []*kgo.Record{
		{Value: []byte("not json\n"), Headers: hdr("bad-json")},                                                  // offset 0
		{Value: []byte("{}\n"), Headers: hdr("bad key!")},                                                        // 1
		{Value: []byte("{}"), Headers: append(hdr("k"), kgo.RecordHeader{Key: headerIndex, Value: []byte("x")})}, // 2
		{Value: []byte(`{"from":"elsewhere"}`)},                                                                  // 3
		{Value: []byte("{\"a\":1}\n{\"a\":2}\n"), Headers: hdr("good")},                                          // 4
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := ns.waitEvents(t, 3)
	ks.stop(t)
	want := []outcome{{"kafka:events:0:3", 1, false, nil}, {"good", 2, false, nil}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("stored %v, want %v", got, want)
	}
	logs := ks.logs.String()
	for _, off := range []string{"offset=0", "offset=1", "offset=2"} {
		if !strings.Contains(logs, "kafka record rejected") || !strings.Contains(logs, off) {
			t.Errorf("no rejection logged for %s:\n%s", off, logs)
		}
	}
	rec := httptest.NewRecorder()
	ks.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := "batchloader_kafka_records_rejected_total 3\n"; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("/metrics has no %q", want)
	}
}

// TestKafkaShutdownWaitsForStore: Shutdown lets the batch being stored
// finish before it closes the store.
func TestKafkaShutdownWaitsForStore(t *testing.T) {
	c := newKafka(t, 1)
	ms := newMemStore()
	ms.entered = make(chan string, 1)
	ms.release = make(chan struct{})
	ks := startKafkaServer(t, c, "g", ms)
	es := kafkaEvents("slow", 3)
	produce(t, c, es)
	<-ms.entered

	shut := make(chan error, 1)
	go func() { shut <- ks.Shutdown(context.Background()) }()
	close(ms.release)
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !ms.isClosed() {
		t.Error("store not closed by Shutdown")
	}
	checkOnce(t, ms.stored(), es)
}

// TestKafkaShutdownDeadline: when Shutdown's ctx ends while the store
// hangs, the Store call is cancelled, the consumer returns, the store is
// closed, and Shutdown returns ctx's error.
func TestKafkaShutdownDeadline(t *testing.T) {
	c := newKafka(t, 1)
	ms := newMemStore()
	ms.entered = make(chan string, 10)
	ms.release = make(chan struct{}) // never closed
	ks := startKafkaServer(t, c, "g", ms)
	produce(t, c, kafkaEvents("stuck", 3))
	<-ms.entered

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ks.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v, want context.Canceled", err)
	}
	if !ms.isClosed() || len(ms.stored()) != 0 {
		t.Errorf("store closed %v, %d batches stored; want closed, none", ms.isClosed(), len(ms.stored()))
	}
	if err := <-ks.served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("ServeKafka: %v", err)
	}
	ks.served <- http.ErrServerClosed
}

func TestServeKafkaMisuse(t *testing.T) {
	s, err := New(Config{Store: newMemStore(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServeKafka(); err == nil || !strings.Contains(err.Error(), "Config.Kafka is nil") {
		t.Errorf("ServeKafka without Config.Kafka: %v", err)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}

	c := newKafka(t, 1)
	s, err = New(Config{Store: newMemStore(), Logger: slog.New(slog.DiscardHandler),
		Kafka: &KafkaConfig{Brokers: c.ListenAddrs(), Topic: "events"}})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- s.ServeKafka() }()
	}
	if err := <-errs; err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("one of two ServeKafka calls: %v, want an error saying twice", err)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("ServeKafka after Shutdown: %v", err)
	}
	if err := s.ServeKafka(); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("ServeKafka called after Shutdown: %v", err)
	}
}

func TestKafkaConfigInvalid(t *testing.T) {
	for _, tc := range []struct {
		k    KafkaConfig
		want string
	}{
		{KafkaConfig{Topic: "t"}, "Brokers is empty"},
		{KafkaConfig{Brokers: []string{"a:1,b:2"}, Topic: "t"}, "space or comma"},
		{KafkaConfig{Brokers: []string{""}, Topic: "t"}, "Brokers[0]"},
		{KafkaConfig{Brokers: []string{"a:1"}}, "Topic"},
		{KafkaConfig{Brokers: []string{"a:1"}, Topic: "a/b"}, "not a Kafka topic name"},
		{KafkaConfig{Brokers: []string{"a:1"}, Topic: "t", SessionTimeout: -time.Second}, "SessionTimeout = -1s"},
		{KafkaConfig{Brokers: []string{"a:1"}, Topic: "t", SessionTimeout: 1500 * time.Microsecond}, "whole number of milliseconds"},
		{KafkaConfig{Brokers: []string{"a:1"}, Topic: "t", SessionTimeout: 6 * time.Second, HeartbeatInterval: 6 * time.Second}, "not less than SessionTimeout"},
		{KafkaConfig{Brokers: []string{"a:1"}, Topic: "t", HeartbeatInterval: 20 * time.Second}, "not less than SessionTimeout = 10s"},
		{KafkaConfig{Brokers: []string{"a:1"}, Topic: "t", InstanceID: "pod 0"}, "not a group instance ID"},
		{KafkaConfig{Brokers: []string{"a:1"}, Topic: "t", Balancer: "eager"}, "want cooperative-sticky, sticky, range or roundrobin"},
	} {
		k := tc.k
		_, err := New(Config{Store: newMemStore(), Kafka: &k, Logger: slog.New(slog.DiscardHandler)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error containing %q", tc.k, err, tc.want)
		}
	}
	k := KafkaConfig{Brokers: []string{"a:1"}, Topic: "t"}
	s, err := New(Config{Store: newMemStore(), Kafka: &k, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Kafka.Group != DefaultKafkaGroup || k.Group != "" {
		t.Errorf("group %q (caller's %q), want the default %q without touching the caller's config", s.cfg.Kafka.Group, k.Group, DefaultKafkaGroup)
	}
	if got := *s.cfg.Kafka; got.SessionTimeout != 10*time.Second || got.HeartbeatInterval != time.Second ||
		got.Balancer != "cooperative-sticky" || got.InstanceID != "" {
		t.Errorf("defaults %+v, want a 10s session, 1s heartbeats, cooperative-sticky, dynamic membership", got)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestRunKafka: Run consumes besides serving HTTP, and drains both.
func TestRunKafka(t *testing.T) {
	c := newKafka(t, 2)
	ms := newMemStore()
	ns := newNotifyStore(ms)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Addr: "127.0.0.1:0", Store: ns, Logger: slog.New(slog.NewTextHandler(logs, nil)),
			Kafka: &KafkaConfig{Brokers: c.ListenAddrs(), Topic: "events"},
		})
	}()
	es := kafkaEvents("run", 20)
	produce(t, c, es)
	ns.waitEvents(t, len(es))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkOnce(t, ms.stored(), es)
	if !ms.isClosed() || !strings.Contains(logs.String(), "group=batchloader") || !strings.Contains(logs.String(), "stopped consuming") {
		t.Errorf("store closed %v; logs:\n%s", ms.isClosed(), logs)
	}

	// A Kafka client that cannot be made ends Run with its error.
	err := Run(t.Context(), Config{
		Addr: "127.0.0.1:0", Store: newMemStore(), Logger: slog.New(slog.DiscardHandler),
		Kafka: &KafkaConfig{Brokers: c.ListenAddrs(), Topic: "events",
			ClientOptions: []kgo.Opt{kgo.RequiredAcks(kgo.LeaderAck())}}, // idempotent writes need acks=all
	})
	if err == nil || !strings.Contains(err.Error(), "Kafka client") {
		t.Errorf("Run with a bad Kafka client: %v", err)
	}
}

// envKafkaChild, set to a JSON childSpec, makes the test binary a loader
// consuming Kafka into PostgreSQL (see init), for tests that kill one
// with SIGKILL.
const envKafkaChild = "BATCHPROC_TEST_KAFKA_CHILD"

// childSpec is the loader a child process runs.
type childSpec struct {
	DSN        string        `json:"dsn"`
	Brokers    []string      `json:"brokers"`
	Group      string        `json:"group"`
	InstanceID string        `json:"instance_id"`
	Session    time.Duration `json:"session"`
}

// init runs the loader of env BATCHPROC_TEST_KAFKA_CHILD, when set, in
// place of the tests: it logs to stdout and shuts down when stdin closes.
func init() {
	spec := os.Getenv(envKafkaChild)
	if spec == "" {
		return
	}
	var cs childSpec
	if err := json.Unmarshal([]byte(spec), &cs); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	st, err := postgres.Open(ctx, cs.DSN)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	s, err := New(Config{
		Store:  st,
		Logger: slog.New(slog.NewTextHandler(os.Stdout, nil)),
		Kafka: &KafkaConfig{Brokers: cs.Brokers, Topic: "events", Group: cs.Group,
			InstanceID: cs.InstanceID, SessionTimeout: cs.Session},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	served := make(chan error, 1)
	go func() { served <- s.ServeKafka() }()
	_, _ = io.Copy(io.Discard, os.Stdin)
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err = s.Shutdown(sctx)
	cancel()
	<-served
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: Shutdown:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// loaderEvent is a line a loader logged, as a failover test sees it.
type loaderEvent struct {
	who    string
	at     time.Time
	kind   string // "stored", "dup" or "assigned"
	key    string // stored, dup
	events int    // stored
	parts  string // assigned
}

var (
	storedLine   = regexp.MustCompile(`msg="batch stored" count=(\d+) key=(\S+)`)
	dupLine      = regexp.MustCompile(`msg="duplicate batch" key=(\S+)`)
	assignedLine = regexp.MustCompile(`msg="kafka partitions assigned" partitions=("[^"]*"|\S*)`)
)

// scanLoaderLog sends the lines of r that a failover test watches to ch,
// stamped with the time they were read, and the other lines to other.
func scanLoaderLog(who string, r io.Reader, ch chan<- loaderEvent, other *testutil.SyncBuffer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		ev := loaderEvent{who: who, at: time.Now()}
		if m := storedLine.FindStringSubmatch(line); m != nil {
			ev.kind, ev.key = "stored", m[2]
			ev.events, _ = strconv.Atoi(m[1])
		} else if m := dupLine.FindStringSubmatch(line); m != nil {
			ev.kind, ev.key = "dup", m[1]
		} else if m := assignedLine.FindStringSubmatch(line); m != nil {
			ev.kind, ev.parts = "assigned", strings.Trim(m[1], `"`)
		} else {
			fmt.Fprintf(other, "%s: %s\n", who, line)
			continue
		}
		ch <- ev
	}
}

// childLoader is a loader running in a child process.
type childLoader struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed once its stdout is read to the end
}

// startChild runs the loader of cs in a child process, its log lines going
// to ch, and stops it gracefully at the end of the test unless killed.
func startChild(t *testing.T, who string, cs childSpec, ch chan<- loaderEvent, other *testutil.SyncBuffer) *childLoader {
	t.Helper()
	spec, _ := json.Marshal(cs)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envKafkaChild+"="+string(spec))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = other
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childLoader{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		scanLoaderLog(who, stdout, ch, other)
	}()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// kill ends the child with SIGKILL: no commit, no leave, no goodbye.
func (c *childLoader) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.done
	_ = c.cmd.Wait()
}

// stop closes the child's stdin, which shuts it down, and waits for it;
// it does nothing to a child already waited for.
func (c *childLoader) stop(t *testing.T) {
	t.Helper()
	if c.cmd.ProcessState != nil {
		return
	}
	c.stdin.Close()
	<-c.done
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("child loader: %v", err)
	}
}

// TestKafkaFailover: loaders A (in this process), B and B' and C (child
// processes) in one group share a topic of 6 partitions and one PostgreSQL
// store while batches are produced throughout. B is killed with SIGKILL,
// B' starts in its place, C joins. Every event is stored exactly once,
// each within 15 s of being produced, and the survivor A goes on storing
// its partitions throughout: a rebalance waiting for the dead B's session
// to time out does not stall it. Dynamic members wait for B's session
// timeout (the loader's default, 10 s) to take its partitions; a static
// B' (same InstanceID as B) takes them at once.
func TestKafkaFailover(t *testing.T) {
	for _, tc := range []struct {
		name       string
		instanceID string // of B and B'
		maxLatency time.Duration
	}{
		// B's partitions wait for its session timeout (10 s by
		// default; Kafka's default 45 s would fail this).
		{"dynamic", "", 15 * time.Second},
		// B' replaces B as soon as it starts.
		{"static", "loader-b", 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testKafkaFailover(t, tc.instanceID, tc.maxLatency)
		})
	}
}

func testKafkaFailover(t *testing.T, instanceID string, maxLatency time.Duration) {
	const (
		partitions  = 6
		batchEvents = 10
		rate        = 20 * time.Millisecond // between batches produced
		deadline    = 90 * time.Second      // for the whole test
		maxStall    = 3 * time.Second       // longest pause of the survivor
	)
	c := newKafka(t, partitions)
	dsn := pgtest.DSN(t)
	st, err := postgres.Open(t.Context(), dsn) // creates the tables before any child opens them
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan loaderEvent, 100_000)
	other := &testutil.SyncBuffer{}
	defer func() {
		if t.Failed() {
			t.Logf("other log lines:\n%s", other)
		}
	}()
	timeout := time.NewTimer(deadline)
	defer timeout.Stop()

	// The event loop's state: what each loader stored, when.
	type storedAt struct {
		who string
		at  time.Time
	}
	var (
		firstStored = map[string]storedAt{} // by batch key
		lastBy      = map[string]time.Time{}
		dups        int
		dupsBy      = map[string]int{}
		assigned    = map[string]string{}
	)
	var survivorGaps []time.Duration // A's pauses, while the group changes
	watchA := false
	handle := func(ev loaderEvent) {
		switch ev.kind {
		case "stored":
			if prev, ok := firstStored[ev.key]; ok {
				t.Errorf("batch %s stored by %s at %v and again by %s", ev.key, prev.who, prev.at, ev.who)
			} else {
				firstStored[ev.key] = storedAt{ev.who, ev.at}
			}
		case "dup":
			dups++
			dupsBy[ev.who]++
		case "assigned":
			assigned[ev.who] = ev.parts
			return
		}
		if ev.who == "A" && watchA {
			survivorGaps = append(survivorGaps, ev.at.Sub(lastBy["A"]))
		}
		lastBy[ev.who] = ev.at
	}
	// await handles events until cond holds.
	await := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case ev := <-events:
				handle(ev)
			case <-timeout.C:
				t.Fatalf("after %v, still waiting for %s; assigned %v", deadline, what, assigned)
			}
		}
	}
	hasPartitions := func(who string) func() bool {
		return func() bool { return assigned[who] != "" && assigned[who] != "events:" }
	}

	// A, in this process.
	aLog, aw := io.Pipe()
	aDone := make(chan struct{})
	go func() { defer close(aDone); scanLoaderLog("A", aLog, events, other) }()
	a, err := New(Config{Store: st, Logger: slog.New(slog.NewTextHandler(aw, nil)),
		Kafka: &KafkaConfig{Brokers: c.ListenAddrs(), Topic: "events", Group: "g"}})
	if err != nil {
		t.Fatal(err)
	}
	aServed := make(chan error, 1)
	go func() { aServed <- a.ServeKafka() }()
	defer func() {
		if err := a.Shutdown(context.Background()); err != nil {
			t.Errorf("A: Shutdown: %v", err)
		}
		<-aServed
		aw.Close()
		<-aDone
	}()
	await("A assigned", hasPartitions("A"))

	spec := childSpec{DSN: dsn, Brokers: c.ListenAddrs(), Group: "g", InstanceID: instanceID}
	b := startChild(t, "B", spec, events, other)
	await("B assigned", hasPartitions("B"))

	// Produce throughout, one batch per tick.
	sink, err := kafkasink.New(c.ListenAddrs(), "events")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	var (
		mu       sync.Mutex
		produced = map[string]time.Time{} // batch key → when Send returned
		all      [][]batchproc.Event
		lastSent time.Time
	)
	stopProducing := make(chan struct{})
	producerDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(rate)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopProducing:
				producerDone <- nil
				return
			case <-tick.C:
			}
			key := fmt.Sprintf("fo-%d", i)
			es := kafkaEvents(key, batchEvents)
			bt, err := batchproc.NewBatch(key, es...)
			if err == nil {
				err = sink.Send(t.Context(), bt)
			}
			if err != nil {
				producerDone <- err
				return
			}
			mu.Lock()
			produced[key], lastSent = time.Now(), time.Now()
			all = append(all, es)
			mu.Unlock()
		}
	}()
	storedBy := func(who string, n int) func() bool {
		count := 0
		since := lastBy[who]
		return func() bool {
			if lastBy[who] != since {
				count++
				since = lastBy[who]
			}
			return count >= n
		}
	}
	await("A and B storing", func() bool { return !lastBy["A"].IsZero() && !lastBy["B"].IsZero() })
	await("B storing more", storedBy("B", 10))

	b.kill(t)
	killed := time.Now()
	watchA = true
	startChild(t, "B'", spec, events, other)
	await("B' assigned", hasPartitions("B'"))
	failover := time.Since(killed)
	// B' gets through what B had stored but not committed (its first
	// polls) before C can take a partition from it.
	await("B' storing", storedBy("B'", 10))
	cs := spec
	cs.InstanceID = ""
	startChild(t, "C", cs, events, other)
	await("C assigned", hasPartitions("C"))
	await("A storing after C joined", storedBy("A", 20))
	close(stopProducing)
	if err := <-producerDone; err != nil {
		t.Fatalf("producing: %v", err)
	}
	watchA = false
	mu.Lock()
	n := len(produced)
	mu.Unlock()
	await("every batch stored", func() bool { return len(firstStored) >= n })
	tail := time.Since(lastSent)

	var latency time.Duration
	for key, at := range produced {
		s, ok := firstStored[key]
		if !ok {
			t.Errorf("batch %s produced but not stored", key)
			continue
		}
		latency = max(latency, s.at.Sub(at))
	}
	stall := time.Duration(0)
	for _, g := range survivorGaps {
		stall = max(stall, g)
	}
	t.Logf("%d batches (%d events) produced; %d redelivered batches stored once (duplicates); "+
		"B' assigned %v after the SIGKILL; survivor A's longest pause %v; "+
		"longest produce→store %v; all stored %v after the last was produced",
		n, n*batchEvents, dups, failover.Round(time.Millisecond), stall.Round(time.Millisecond),
		latency.Round(time.Millisecond), tail.Round(time.Millisecond))
	if stall > maxStall {
		t.Errorf("survivor A paused %v while the group changed, want under %v", stall, maxStall)
	}
	if tail > maxLatency {
		t.Errorf("every event stored %v after the last was produced, want under %v", tail, maxLatency)
	}
	if latency > maxLatency {
		t.Errorf("a batch took %v from produced to stored, want under %v", latency, maxLatency)
	}
	// Redelivered batches are those B stored but had not committed when
	// it was killed; they go to B'. C's partitions come from A and B',
	// which commit what they stored before giving them up.
	if dupsBy["C"] > 0 || dupsBy["A"] > 0 {
		t.Errorf("redelivered batches: %v; want them all at B', none at A or C (partitions revoked from a live loader are committed first)", dupsBy)
	}

	batches, err := st.Batches(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(batches) != n {
		t.Errorf("%d batches in the store, want %d", len(batches), n)
	}
	checkOnce(t, batches, all...)
}
