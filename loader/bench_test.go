package loader

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/batchproc/batchproc/internal/testutil/pgtest"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/postgres"
	"github.com/batchproc/batchproc/loader/store/sqlite"
)

const benchBatch = 1000 // events per request

// benchEvents returns n NDJSON events of exactly 200 bytes each, newline
// included, shaped like a service's events.
func benchEvents(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		head := fmt.Sprintf(`{"id":"%032x","type":"page_view","ts":"2026-01-02T03:04:05.%06dZ","user":"user-%05d","payload":"`, i*7919, i%1000000, i%100000)
		pad := 200 - len(head) - len(`"}`) - 1
		b.WriteString(head)
		b.WriteString(strings.Repeat("abcdefghij", pad/10+1)[:pad])
		b.WriteString("\"}\n")
	}
	return b.Bytes()
}

// BenchmarkIngestDiscard posts batches of 1,000 200-byte NDJSON events over
// loopback HTTP into store.Discard from parallel clients: the HTTP + decode
// ceiling.
func BenchmarkIngestDiscard(b *testing.B) { benchIngest(b, store.NewDiscard()) }

// BenchmarkIngestSQLite is BenchmarkIngestDiscard into a SQLite file, with
// the store's default synchronous=FULL (each commit fsynced) and with
// synchronous=NORMAL; FULL also without group commit (nogroup), to show
// what grouping concurrent batches into one commit buys. Each runs with
// GOMAXPROCS clients and with 8 per GOMAXPROCS (clients=16 on 2 cores).
func BenchmarkIngestSQLite(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []sqlite.Option
	}{
		{"sync=FULL", nil},
		{"sync=FULL-nogroup", []sqlite.Option{sqlite.WithGroupCommit(0)}},
		{"sync=NORMAL", []sqlite.Option{sqlite.WithSynchronous(sqlite.SyncNormal)}},
	} {
		for _, par := range []int{1, 8} {
			b.Run(c.name+"/clients="+strconv.Itoa(par*runtime.GOMAXPROCS(0)), func(b *testing.B) {
				st, err := sqlite.Open(filepath.Join(b.TempDir(), "ingest.db"), c.opts...)
				if err != nil {
					b.Fatal(err)
				}
				b.SetParallelism(par)
				benchIngest(b, st)
			})
		}
	}
}

// BenchmarkIngestPostgres is BenchmarkIngestDiscard into PostgreSQL (the
// server of BATCHPROC_TEST_POSTGRES, as scripts/test.sh starts it: fsync
// off; start one with scripts/pg-start.sh --durable for the server's
// durable defaults), with GOMAXPROCS clients and 8 per GOMAXPROCS, through
// pgxpool's default pool (4 connections here) and, with 16 clients, through
// 16 connections, so that more transactions wait for one WAL flush; and
// with 16 clients without the group commit (one transaction per batch).
func BenchmarkIngestPostgres(b *testing.B) {
	for _, c := range []struct {
		par, conns int
		nogroup    bool
	}{{1, 0, false}, {8, 0, false}, {8, 16, false}, {8, 0, true}} {
		name := "clients=" + strconv.Itoa(c.par*runtime.GOMAXPROCS(0))
		if c.conns > 0 {
			name += "/conns=" + strconv.Itoa(c.conns)
		}
		var opts []postgres.Option
		if c.nogroup {
			name += "/nogroup"
			opts = append(opts, postgres.WithGroupCommit(0))
		}
		b.Run(name, func(b *testing.B) {
			dsn := pgtest.DSN(b)
			if c.conns > 0 {
				dsn += "&pool_max_conns=" + strconv.Itoa(c.conns) // pgtest's DSN is a URL with a query
			}
			st, err := postgres.Open(context.Background(), dsn, opts...)
			if err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(c.par)
			benchIngest(b, st)
		})
	}
}

// benchIngest serves st (closed by the server's Shutdown) and posts to it.
func benchIngest(b *testing.B, st store.Store) {
	body := benchEvents(benchBatch)
	s, err := New(Config{Store: st, MaxConcurrent: 64, Logger: nopLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	defer func() {
		if err := s.Shutdown(context.Background()); err != nil {
			b.Error(err)
		}
		<-served
	}()
	url := "http://" + ln.Addr().String() + "/v1/batches"
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var seq atomic.Int64

	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header.Set("Content-Type", "application/x-ndjson")
			req.Header.Set("Idempotency-Key", "b-"+strconv.FormatInt(seq.Add(1), 10))
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "events/s")
	if got := s.Stats().Events; got != int64(b.N*benchBatch) {
		b.Errorf("%d events stored, want %d", got, b.N*benchBatch)
	}
}

// BenchmarkDecodeNDJSON is the decoder alone on the same batches.
func BenchmarkDecodeNDJSON(b *testing.B) {
	body := benchEvents(benchBatch)
	d := &decoder{maxLine: DefaultMaxLine, maxEvents: DefaultMaxEvents}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		d.reset()
		if err := d.decodeNDJSON(body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecodeJSONArray is the decoder alone on the same events framed
// as one JSON array.
func BenchmarkDecodeJSONArray(b *testing.B) {
	lines := bytes.Split(bytes.TrimSuffix(benchEvents(benchBatch), []byte("\n")), []byte("\n"))
	body := append(append([]byte("["), bytes.Join(lines, []byte(","))...), ']')
	d := &decoder{maxLine: DefaultMaxLine, maxEvents: DefaultMaxEvents}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		d.reset()
		if err := d.decodeJSONArray(body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "events/s")
}
