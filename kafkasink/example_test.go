package kafkasink_test

import (
	"context"
	"fmt"
	"log"

	"github.com/batchproc/batchproc"
	"github.com/batchproc/batchproc/kafkasink"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func Example() {
	// An in-process Kafka cluster, a stand-in for the real one.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	sink, err := kafkasink.New(cluster.ListenAddrs(), "events")
	if err != nil {
		log.Fatal(err)
	}
	defer sink.Close() // after Shutdown, which sends what is buffered

	p, err := batchproc.New(sink)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		e := batchproc.Event{ID: fmt.Sprint(i), Payload: fmt.Appendf(nil, `{"id":"%d","type":"signup"}`, i)}
		if err := p.Add(ctx, e); err != nil {
			log.Fatal(err)
		}
	}
	if err := p.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered:", p.Stats().Delivered)

	// Read the topic back: one record, the batch as NDJSON.
	consumer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("events"))
	if err != nil {
		log.Fatal(err)
	}
	defer consumer.Close()
	rec := consumer.PollRecords(ctx, 1).Records()[0]
	fmt.Printf("record key is the batch key: %v\n", string(rec.Key) != "" && string(rec.Key) == string(rec.Headers[0].Value))
	fmt.Print(string(rec.Value))
	// Output:
	// delivered: 3
	// record key is the batch key: true
	// {"id":"0","type":"signup"}
	// {"id":"1","type":"signup"}
	// {"id":"2","type":"signup"}
}
