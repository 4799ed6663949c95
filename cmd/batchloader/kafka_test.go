package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// TestKafkaGroupFlags: the group flags reach the consumer, and bad values
// are usage errors.
func TestKafkaGroupFlags(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := strings.Join(c.ListenAddrs(), ",")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, lines, done := started(t, ctx, "-addr", "127.0.0.1:0", "-store", "discard",
		"-kafka-brokers", brokers, "-kafka-topic", "events",
		"-kafka-session-timeout", "7s", "-kafka-heartbeat-interval", "500ms",
		"-kafka-instance-id", "pod-0", "-kafka-balancer", "range")
	want := []string{"balancer=range", "session_timeout=7s", "heartbeat_interval=500ms", "instance_id=pod-0"}
	timeout := time.After(30 * time.Second)
	for found := false; !found; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("log ended before the consumer started")
			}
			if strings.Contains(l, "msg=consuming") {
				found = true
				for _, w := range want {
					if !strings.Contains(l, w) {
						t.Errorf("consumer started with %q, want %s", l, w)
					}
				}
			}
		case <-timeout:
			t.Fatal("no consuming line within 30s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	for range lines {
	}

	for _, args := range [][]string{
		{"-kafka-balancer", "eager"},
		{"-kafka-session-timeout", "-1s"},
		{"-kafka-session-timeout", "5s", "-kafka-heartbeat-interval", "5s"},
		{"-kafka-heartbeat-interval", "1.5ms"},
		{"-kafka-instance-id", "pod 0"},
	} {
		args = append([]string{"-store", "discard", "-kafka-brokers", brokers, "-kafka-topic", "events"}, args...)
		err := run(context.Background(), args, io.Discard, io.Discard)
		var ue usageError
		var msg bytes.Buffer
		if !errors.As(err, &ue) || exitCode(err, &msg) != 2 || !strings.Contains(msg.String(), "Config.Kafka.") {
			t.Errorf("%v: %v, want a usage error naming the setting", args, err)
		}
	}
}
