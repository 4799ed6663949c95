package httpsink_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync/atomic"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/httpsink"
)

func Example() {
	// A stand-in for the Batch Loader: it counts the NDJSON lines it is sent
	// and acknowledges them as protocol.md says.
	var stored atomic.Int64
	loader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n := bytes.Count(body, []byte("\n"))
		stored.Add(int64(n))
		fmt.Fprintf(w, `{"accepted":%d,"duplicate":false}`, n)
	}))
	defer loader.Close()

	sink, err := httpsink.New(loader.URL, httpsink.WithToken("s3cret"))
	if err != nil {
		log.Fatal(err)
	}
	defer sink.Close()

	p, err := batchproc.New(sink)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		e := batchproc.Event{Payload: fmt.Appendf(nil, `{"id":"%d","type":"signup"}`, i)}
		if err := p.Add(ctx, e); err != nil {
			log.Fatal(err)
		}
	}
	if err := p.Shutdown(ctx); err != nil { // sends what is buffered, waits
		log.Fatal(err)
	}
	fmt.Println("delivered:", p.Stats().Delivered)
	fmt.Println("stored by the loader:", stored.Load())
	// Output:
	// delivered: 3
	// stored by the loader: 3
}
