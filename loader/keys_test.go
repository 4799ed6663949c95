package loader

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/sqlite"
)

func openSQLite(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestKeyReused422: a retry of a batch is a duplicate however it is
// compressed or framed; other content under a stored key is answered 422
// and stored nowhere.
func TestKeyReused422(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "keys.db"))
	ts := startServer(t, Config{Store: st})
	body := ndjson(3)
	lines := bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n"))
	array := append(append([]byte("["), bytes.Join(lines, []byte(",\n  "))...), ']')
	crlf := bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n"))

	if resp := ts.post(body, "Idempotency-Key", "k"); resp.code != 200 || string(resp.body) != `{"accepted":3,"duplicate":false}` {
		t.Fatalf("first post: %d %s", resp.code, resp.body)
	}
	for _, retry := range []struct {
		name string
		body []byte
		hdr  []string
	}{
		{"identity", body, nil},
		{"gzip", gzipBytes(t, body), []string{"Content-Encoding", "gzip"}},
		{"zstd", zstdBytes(t, body), []string{"Content-Encoding", "zstd"}},
		{"CRLF lines", crlf, nil},
		{"JSON array", array, []string{"Content-Type", "application/json"}},
	} {
		resp := ts.post(retry.body, append(retry.hdr, "Idempotency-Key", "k")...)
		if resp.code != 200 || string(resp.body) != `{"accepted":3,"duplicate":true}` {
			t.Errorf("retry as %s: %d %s, want 200 duplicate", retry.name, resp.code, resp.body)
		}
	}
	changed := bytes.Replace(body, []byte(`"n":[1,2`), []byte(`"n":[1,3`), 1)
	for _, other := range []struct {
		name string
		body []byte
	}{
		{"more events", ndjson(4)},
		{"fewer events", ndjson(2)},
		{"one value changed", changed},
	} {
		resp := ts.post(other.body, "Idempotency-Key", "k")
		if resp.code != 422 {
			t.Errorf("%s under a stored key: %d %s, want 422", other.name, resp.code, resp.body)
			continue
		}
		if msg, _ := resp.json(t)["error"].(string); !strings.Contains(msg, "Idempotency-Key") {
			t.Errorf("422 body %s does not name the key", resp.body)
		}
	}
	if got, want := ts.Stats(), (Stats{Events: 3, Batches: 1, Duplicates: 5, Rejected: 3}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if n := strings.Count(ts.logs.String(), "count="); n != 1 {
		t.Errorf("%d count= lines, want 1", n)
	}
}

// TestKeysPerToken: each bearer token has its own key namespace, so two
// clients choosing the same key do not swallow each other's batches.
func TestKeysPerToken(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "tenants.db"))
	ts := startServer(t, Config{Store: st, Tokens: []string{"token-a", "token-b"}})
	a, b := ndjson(2), ndjson(5)
	post := func(body []byte, token string) response {
		return ts.post(body, "Idempotency-Key", "same-key", "Authorization", "Bearer "+token)
	}
	if r := post(a, "token-a"); r.code != 200 || string(r.body) != `{"accepted":2,"duplicate":false}` {
		t.Fatalf("token-a: %d %s", r.code, r.body)
	}
	if r := post(b, "token-b"); r.code != 200 || string(r.body) != `{"accepted":5,"duplicate":false}` {
		t.Fatalf("token-b, same key, other batch: %d %s, want stored", r.code, r.body)
	}
	if r := post(a, "token-a"); r.code != 200 || string(r.body) != `{"accepted":2,"duplicate":true}` {
		t.Errorf("token-a retry: %d %s, want a duplicate", r.code, r.body)
	}
	if r := post(a, "token-b"); r.code != 422 {
		t.Errorf("token-b sending token-a's batch under its own stored key: %d %s, want 422", r.code, r.body)
	}
	got, err := st.Batches(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	na, nb := store.TokenNamespace(sha256.Sum256([]byte("token-a"))), store.TokenNamespace(sha256.Sum256([]byte("token-b")))
	if len(got) != 2 || got[0].Namespace != na || len(got[0].Events) != 2 || got[1].Namespace != nb || len(got[1].Events) != 5 {
		t.Fatalf("stored %+v, want token-a's 2 events in %q and token-b's 5 in %q", got, na, nb)
	}
	if strings.Contains(na+nb, "token") || len(na) != 16 {
		t.Errorf("namespaces %q, %q: want 16 hex digits, no token", na, nb)
	}
}

// TestHTTPCannotTakeKafkaKeys: an HTTP client posting under a Kafka
// position key does not make the consumer drop the record at that position:
// the consumer's keys are in a namespace of their own.
func TestHTTPCannotTakeKafkaKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	ts := startServer(t, Config{Store: openSQLite(t, path)})
	if r := ts.post([]byte(`{"evil":true}`+"\n"), "Idempotency-Key", "kafka:events:0:0"); r.code != 200 {
		t.Fatalf("HTTP post: %d %s", r.code, r.body)
	}

	c := newKafka(t, 1)
	kst := openSQLite(t, path)
	ns := newNotifyStore(kst)
	ks := startKafkaServer(t, c, "g", ns)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// No headers: stored under its position, kafka:events:0:0.
	if err := cl.ProduceSync(t.Context(), &kgo.Record{Value: []byte(`{"real":true}` + "\n")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := ns.waitOutcomes(t, 1)
	ks.stop(t)
	if got[0] != (outcome{"kafka:events:0:0", 1, false, nil}) {
		t.Fatalf("consumer's Store: %+v, want the record stored, not a duplicate", got[0])
	}
	batches, err := openSQLite(t, path).Batches(t.Context()) // Shutdown closed kst
	if err != nil {
		t.Fatal(err)
	}
	if len(batches) != 2 || batches[0].Namespace != "" || batches[1].Namespace != store.NamespaceKafka ||
		string(batches[1].Events[0].Payload) != `{"real":true}` {
		t.Fatalf("stored %+v, want the HTTP batch and the Kafka record in their namespaces", batches)
	}
}

// TestStatsSurviveRestart: /v1/stats counts what is in the store, so a
// loader restarted on the same database reports what it reported before.
func TestStatsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stats.db")
	ts := startServer(t, Config{Store: openSQLite(t, path)})
	ts.post(ndjson(3), "Idempotency-Key", "a")
	ts.post(ndjson(4))
	ts.post(ndjson(3), "Idempotency-Key", "a")
	before := ts.Stats()
	if before != (Stats{Events: 7, Batches: 2, Duplicates: 1}) {
		t.Fatalf("Stats = %+v", before)
	}
	ts.client.CloseIdleConnections()
	if err := ts.Shutdown(t.Context()); err != nil { // closes the store
		t.Fatal(err)
	}

	ts2 := startServer(t, Config{Store: openSQLite(t, path)})
	resp := ts2.do("GET", "/v1/stats", nil)
	m := resp.json(t)
	if m["events"] != 7.0 || m["batches"] != 2.0 || m["duplicates"] != 0.0 || m["rejected"] != 0.0 {
		t.Errorf("/v1/stats after restart = %s, want 7 events and 2 batches in the store, 0 duplicates and 0 rejected since start", resp.body)
	}
}

// TestEscapedNULInID: "\u0000" in an id decodes to NUL, which the store
// keeps as U+FFFD (the rule both stores share); the payload keeps the
// escape as sent.
func TestEscapedNULInID(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "nul.db"))
	ts := startServer(t, Config{Store: st})
	line := `{"id":"a\u0000b","type":"\u0000","ts":"0001-01-01T00:00:00Z"}`
	if r := ts.post([]byte(line + "\n")); r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	got, err := st.Batches(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	e := got[0].Events[0]
	if e.ID != "a\uFFFDb" || e.Type != "\uFFFD" || !e.TS.IsZero() || string(e.Payload) != line {
		t.Errorf("stored %+q %+q %v %s; want \"a\\uFFFDb\", \"\\uFFFD\", no ts, the line verbatim", e.ID, e.Type, e.TS, e.Payload)
	}
}

// TestKafkaKeyReused: a record whose batch key was stored before with other
// content is logged, counted as rejected and skipped; the consumer goes on
// with the next record instead of retrying it forever.
func TestKafkaKeyReused(t *testing.T) {
	c := newKafka(t, 1)
	ns := newNotifyStore(openSQLite(t, filepath.Join(t.TempDir(), "kafka.db")))
	ks := startKafkaServer(t, c, "g", ns)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	hdr := func(k string) []kgo.RecordHeader { return []kgo.RecordHeader{{Key: headerBatchKey, Value: []byte(k)}} }
	recs := []*kgo.Record{
		{Value: []byte(`{"a":1}` + "\n"), Headers: hdr("k")}, // offset 0: stored
		{Value: []byte(`{"a":2}` + "\n"), Headers: hdr("k")}, // 1: same key, other batch
		{Value: []byte(`{"a":1}` + "\n"), Headers: hdr("k")}, // 2: a true redelivery
		{Value: []byte(`{"b":1}` + "\n"), Headers: hdr("next")},
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := ns.waitOutcomes(t, 4)
	ks.stop(t)
	if got[0] != (outcome{"k", 1, false, nil}) || !errors.Is(got[1].err, store.ErrKeyReused) ||
		got[2] != (outcome{"k", 1, true, nil}) || got[3] != (outcome{"next", 1, false, nil}) {
		t.Errorf("store saw %v, want k stored, k refused as reused, k a duplicate, next stored", got)
	}
	if logs := ks.logs.String(); !strings.Contains(logs, "kafka record rejected") || !strings.Contains(logs, "offset=1") {
		t.Errorf("no rejection logged for offset 1:\n%s", logs)
	}
}
