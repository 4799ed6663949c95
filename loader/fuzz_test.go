package loader

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/batchproc/batchproc/loader/store"
)

// FuzzNDJSON holds the NDJSON decoder to encoding/json: the same lines are
// valid, the first bad line is the same, and id/type/ts decode the same.
func FuzzNDJSON(f *testing.F) {
	for _, s := range ndjsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkNDJSON(t, body) })
}

// FuzzJSONArray holds the JSON array decoder to encoding/json.
func FuzzJSONArray(f *testing.F) {
	for _, s := range arraySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkJSONArray(t, body) })
}

// FuzzDecompress holds the compressed paths to the identity one: a body
// sent gzip- or zstd-compressed gets the same status and stores the same
// events as sent plain, under decode limits and a decode budget small
// enough that bodies take every path of decompress (one buffer, growth,
// counting then a second decode). Raw fuzz bytes as a compressed body are
// answered, never a 200 with events that do not decode back.
func FuzzDecompress(f *testing.F) {
	for _, s := range ndjsonSeeds {
		f.Add([]byte(s), uint8(1))
	}
	f.Add(bytes.Repeat([]byte(`{"id":"x"}`+"\n"), 3000), uint8(3))
	f.Fuzz(func(t *testing.T, body []byte, reps uint8) {
		body = bytes.Repeat(body, int(reps%8)+1) // compressible far beyond the hint
		post := func(s *Server, b []byte, enc string) (int, []store.Batch) {
			ms := s.cfg.Store.(*memStore)
			before := len(ms.stored())
			req := httptest.NewRequest("POST", "/v1/batches", bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/x-ndjson")
			if enc != "" {
				req.Header.Set("Content-Encoding", enc)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			return rec.Code, ms.stored()[before:]
		}
		cfg := Config{MaxBody: 64 << 10, MaxDecodedBody: 64 << 10, DecodeMemory: 64 << 10, MaxZstdWindow: 1 << 20, Logger: nopLogger()}
		newServer := func() *Server {
			c := cfg
			c.Store = newMemStore()
			s, err := New(c)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
			return s
		}
		plain := newServer()
		wantCode, want := post(plain, body, "")
		if len(body) > int(cfg.MaxBody) {
			wantCode = 413 // plain over MaxBody; compressed it may fit, but not decoded
			want = nil
		}
		for _, enc := range []string{"gzip", "zstd"} {
			var comp []byte
			if enc == "gzip" {
				comp = gzipBytes(t, body)
			} else {
				comp = zstdBytes(t, body)
			}
			if len(comp) > int(cfg.MaxBody) {
				continue
			}
			code, got := post(newServer(), comp, enc)
			if code != wantCode && !(wantCode == 413 && len(body) > int(cfg.MaxDecodedBody) && code == 413) {
				t.Fatalf("%s: status %d, plain %d", enc, code, wantCode)
			}
			if len(got) != len(want) || len(got) == 1 && !reflect.DeepEqual(got[0].Events, want[0].Events) {
				t.Fatalf("%s: stored %+v, plain %+v", enc, got, want)
			}
			// The fuzz bytes themselves as a compressed body.
			if code, got := post(newServer(), body, enc); code == 200 {
				for _, b := range got {
					for _, e := range b.Events {
						if !json.Valid(e.Payload) {
							t.Fatalf("%s of raw bytes: stored %q", enc, e.Payload)
						}
					}
				}
			}
		}
	})
}
