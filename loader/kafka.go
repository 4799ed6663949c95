package loader

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultKafkaGroup is the default of [KafkaConfig.Group].
const DefaultKafkaGroup = "batchloader"

// Record headers of package kafkasink, which the consumer reads (the test
// checks they are kafkasink's).
const (
	headerBatchKey = "batchproc-batch-key"
	headerIndex    = "batchproc-index"
)

// Consumer tuning: records stored per poll (rebalances wait while a poll is
// being stored, so it is kept short), and the backoff between attempts to
// store a batch while the store fails.
const (
	kafkaMaxPollRecords = 100
	kafkaMinBackoff     = 100 * time.Millisecond
	kafkaMaxBackoff     = 5 * time.Second
	kafkaCommitTimeout  = 30 * time.Second
)

// KafkaConfig makes a [Server] also consume a Kafka topic, as a member of a
// consumer group: loaders of one group share the topic's partitions, so
// ingest scales past one machine. See [Server.ServeKafka].
type KafkaConfig struct {
	// Brokers are seed brokers, "host:port". Required.
	Brokers []string
	// Topic is the topic to consume: records as package kafkasink
	// produces them. Required.
	Topic string
	// Group is the consumer group. Default "batchloader".
	Group string
	// ClientOptions are added to the kgo client's options, after the
	// loader's own: TLS (kgo.DialTLSConfig), SASL (kgo.SASL), timeouts...
	// They must leave offset handling alone: the consumer commits offsets
	// itself, after the store did (kgo.DisableAutoCommit), and holds
	// rebalances off while it stores a poll (kgo.BlockRebalanceOnPoll).
	ClientOptions []kgo.Opt
}

// withDefaults validates k and returns a copy with its defaults filled in.
func (k KafkaConfig) withDefaults() (KafkaConfig, []error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("loader: "+format, a...)) }
	if len(k.Brokers) == 0 {
		bad("Config.Kafka.Brokers is empty")
	}
	for i, b := range k.Brokers {
		if b == "" || strings.ContainsAny(b, " \t\r\n,") {
			bad("Config.Kafka.Brokers[%d] = %q is empty or contains a space or comma", i, b)
		}
	}
	if !validTopic(k.Topic) {
		bad("Config.Kafka.Topic = %q is not a Kafka topic name (1..249 of [a-zA-Z0-9._-])", k.Topic)
	}
	if k.Group == "" {
		k.Group = DefaultKafkaGroup
	}
	k.Brokers = append([]string(nil), k.Brokers...)
	k.ClientOptions = append([]kgo.Opt(nil), k.ClientOptions...)
	return k, errs
}

func validTopic(t string) bool {
	if t == "" || len(t) > 249 || t == "." || t == ".." {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// kafkaRun is the consumer ServeKafka runs, as Shutdown sees it.
type kafkaRun struct {
	hard context.CancelFunc // Shutdown's ctx ended: cancel Store and commit calls
	done chan struct{}      // closed once the consumer has left the group and closed its client
}

// ServeKafka consumes Config.Kafka's topic until [Server.Shutdown], storing
// each record's batch in the store under its idempotency key and committing
// the record's offset only after the store committed it. [Run] calls it
// when Config.Kafka is set; a program serving [Server.Handler] itself calls
// it in a goroutine of its own. Like [Server.Serve], it returns
// http.ErrServerClosed after Shutdown, at once if Shutdown has begun; it
// returns another error if Config.Kafka is nil, if it was called before, or
// if the kgo client cannot be made.
//
// # Records
//
// A record with the batchproc-index header is one event (the
// kafkasink.PerEvent layout); it is stored alone, as a batch keyed
// "<batch key>:<index>", so that the events of a batch, spread over
// partitions and possibly produced twice by a retry, are each stored once.
// That costs a store transaction per event: PerBatch is the layout to
// produce for the loader. Any other record is one batch (the default
// kafkasink.PerBatch layout): its value is decoded as the NDJSON body of a
// batch request (same validation and limits), and stored all-or-nothing
// under its batchproc-batch-key header, or, for a record without one
// (another producer's), under a key naming the record's topic, partition
// and offset. A record that cannot be stored (invalid JSON, over a limit, a
// bad key) is logged at error level and skipped: a retry would fail the
// same way, and would hold up its partition forever.
//
// # Delivery
//
// A group new to the topic starts at its oldest record. Records are stored
// in partition order, one batch at a time. A store failure is retried with
// backoff (100 ms to 5 s) until it succeeds or Shutdown begins; the
// consumer never moves past a record it has not stored. Offsets are committed after each poll's batches are stored, and
// rebalances wait meanwhile, so a partition moves to another loader at a
// committed offset. A crash between store and commit redelivers batches
// already stored: their keys make them duplicates, stored once. Delivery
// into the store is thus at least once, and exactly once per key.
//
// # Shutdown
//
// When Shutdown begins, the consumer finishes the Store call under way,
// commits what it stored, leaves the group (so its partitions move at once)
// and closes its client; records polled but not stored are left to the
// next owner of their partition. If Shutdown's ctx ends first, Store and
// commit calls are cancelled and the group is left without waiting.
func (s *Server) ServeKafka() error {
	if s.cfg.Kafka == nil {
		return errors.New("loader: ServeKafka: Config.Kafka is nil")
	}
	kc := s.cfg.Kafka
	hardCtx, hard := context.WithCancel(context.Background())
	run := &kafkaRun{hard: hard, done: make(chan struct{})}
	s.mu.Lock()
	switch {
	case s.draining:
		s.mu.Unlock()
		hard()
		return http.ErrServerClosed
	case s.kafka != nil:
		s.mu.Unlock()
		hard()
		return errors.New("loader: ServeKafka called twice")
	}
	s.kafka = run
	s.mu.Unlock()
	defer close(run.done)
	defer hard()

	opts := append([]kgo.Opt{
		kgo.SeedBrokers(kc.Brokers...),
		kgo.ConsumerGroup(kc.Group),
		kgo.ConsumeTopics(kc.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.WithLogger(kgoLogger{s.log}),
	}, kc.ClientOptions...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("loader: Kafka client: %w", err)
	}
	s.log.Info("consuming", "topic", kc.Topic, "group", kc.Group, "brokers", strings.Join(kc.Brokers, ","))
	s.consume(hardCtx, cl)
	return http.ErrServerClosed
}

// stopKafka waits for the consumer ServeKafka runs, if any, to stop; it
// has seen drainCh close. If ctx ends first, it cancels the consumer's
// Store and commit calls and its group leave, waits for it to return, and
// returns ctx's error.
func (s *Server) stopKafka(ctx context.Context) error {
	s.mu.Lock()
	run := s.kafka
	s.mu.Unlock()
	if run == nil {
		return nil
	}
	select {
	case <-run.done: // stopped already: ctx's state does not matter
		return nil
	default:
	}
	select {
	case <-run.done:
		return nil
	case <-ctx.Done():
		run.hard()
		<-run.done
		return ctx.Err()
	}
}

// consume polls, stores and commits until Shutdown begins (drainCh) or
// hard ends; then it leaves the group and closes cl.
func (s *Server) consume(hard context.Context, cl *kgo.Client) {
	// soft ends when Shutdown begins: no new poll, no new store attempt.
	soft, stop := context.WithCancel(hard)
	defer stop()
	go func() {
		select {
		case <-s.drainCh:
			stop()
		case <-soft.Done():
		}
	}()
	defer func() {
		cl.AllowRebalance()
		// With hard done (Shutdown's ctx ended), the leave does not wait
		// for the coordinator, and Close is immediate.
		_ = cl.LeaveGroupContext(hard)
		cl.Close()
		s.log.Info("stopped consuming")
	}()

	wk := s.works.Get().(*work)
	defer s.putWork(wk)
	backoff := kafkaMinBackoff
	for {
		fs := cl.PollRecords(soft, kafkaMaxPollRecords)
		if soft.Err() != nil || fs.IsClientClosed() {
			return
		}
		var fetchErr bool
		fs.EachError(func(topic string, p int32, err error) {
			fetchErr = true
			s.log.Warn("kafka fetch failed", "topic", topic, "partition", p, "err", err)
		})
		var last []*kgo.Record // per partition, the last record stored or skipped
		s.storePoll(soft, hard, fs, wk, &last)
		if len(last) > 0 {
			ctx, cancel := context.WithTimeout(hard, kafkaCommitTimeout)
			if err := cl.CommitRecords(ctx, last...); err != nil {
				// The batches are stored: the next owner of the
				// partitions gets them again, as duplicates.
				s.log.Warn("kafka offset commit failed", "err", err)
			}
			cancel()
		}
		cl.AllowRebalance()
		if fetchErr && fs.NumRecords() == 0 {
			// Do not spin on a failing fetch (an authorization error, a
			// deleted topic): kgo reports it again at once.
			if !waitBackoff(soft, backoff) {
				return
			}
			backoff = min(2*backoff, kafkaMaxBackoff)
		} else {
			backoff = kafkaMinBackoff
		}
	}
}

// storePoll stores fs's records in partition order and appends the last
// record of each partition it got through to last. It stops at the first
// record it could not store, which only happens once soft is done.
func (s *Server) storePoll(soft, hard context.Context, fs kgo.Fetches, wk *work, last *[]*kgo.Record) {
	for _, f := range fs {
		for _, t := range f.Topics {
			for _, p := range t.Partitions {
				var done *kgo.Record
				for _, r := range p.Records {
					if !s.storeRecord(soft, hard, r, wk) {
						break
					}
					done = r
				}
				if done != nil {
					*last = append(*last, done)
				}
				if soft.Err() != nil {
					return
				}
			}
		}
	}
}

// storeRecord stores r's batch, retrying while the store fails. It returns
// false only when it gave up because soft is done; a record that can never
// be stored is logged, skipped, and reported true.
func (s *Server) storeRecord(soft, hard context.Context, r *kgo.Record, wk *work) bool {
	wk.dec.reset()
	wk.batch = store.Batch{}
	fail := func(msg string, attrs ...slog.Attr) bool {
		attrs = append(attrs, slog.String("topic", r.Topic), slog.Int("partition", int(r.Partition)),
			slog.Int64("offset", r.Offset), slog.String("err", msg))
		s.log.LogAttrs(hard, slog.LevelError, "kafka record rejected", attrs...)
		s.m.kafkaRejects.Inc()
		return true
	}
	key, perEvent, msg := recordKey(r)
	if msg != "" {
		return fail(msg)
	}
	if int64(len(r.Value)) > s.cfg.MaxDecodedBody {
		return fail(fmt.Sprintf("value of %d bytes over the limit of %d", len(r.Value), s.cfg.MaxDecodedBody), slog.String("key", key))
	}
	d := &wk.dec
	if derr := d.decodeNDJSON(r.Value); derr != nil {
		return fail(derr.msg, slog.String("key", key), slog.Int("line", derr.line))
	}
	if perEvent && len(d.events) != 1 {
		return fail(fmt.Sprintf("a %s record holds %d events, want 1", headerIndex, len(d.events)), slog.String("key", key))
	}
	wk.batch.Namespace = store.NamespaceKafka // no HTTP request reaches these keys
	wk.batch.Key = key
	wk.batch.Events = d.events
	n := len(d.events)

	backoff := kafkaMinBackoff
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(hard, s.cfg.StoreTimeout)
		t0 := time.Now()
		dup, err := s.cfg.Store.Store(ctx, &wk.batch)
		elapsed := time.Since(t0)
		cancel()
		s.m.storeSeconds.Observe(elapsed.Seconds())
		switch {
		case errors.Is(err, store.ErrKeyReused):
			return fail("idempotency key already used for a batch with other content", slog.String("key", key))
		case err == nil && dup:
			s.m.duplicates.Inc()
			s.log.LogAttrs(hard, slog.LevelInfo, "duplicate batch",
				slog.String("key", key), slog.Int("events", n), slog.String("source", "kafka"))
			return true
		case err == nil:
			s.m.batches.Inc()
			s.m.events.Add(float64(n))
			s.log.LogAttrs(hard, slog.LevelInfo, "batch stored",
				slog.Int("count", n), slog.String("key", key), slog.Int("bytes", len(r.Value)),
				slog.Duration("store", elapsed), slog.String("source", "kafka"),
				slog.Int("partition", int(r.Partition)), slog.Int64("offset", r.Offset))
			return true
		}
		s.log.LogAttrs(hard, slog.LevelWarn, "store failed, will retry",
			slog.String("key", key), slog.Int("events", n), slog.Int("attempt", attempt),
			slog.String("err", err.Error()), slog.String("source", "kafka"))
		if !waitBackoff(soft, backoff) {
			return false
		}
		backoff = min(2*backoff, kafkaMaxBackoff)
	}
}

// recordKey returns the idempotency key of r's batch, whether r is a
// per-event record, or why r cannot be stored.
func recordKey(r *kgo.Record) (key string, perEvent bool, msg string) {
	var batchKey, index string
	var hasKey, hasIndex bool
	for _, h := range r.Headers {
		switch h.Key {
		case headerBatchKey:
			batchKey, hasKey = string(h.Value), true
		case headerIndex:
			index, hasIndex = string(h.Value), true
		}
	}
	switch {
	case hasIndex:
		if _, err := strconv.ParseUint(index, 10, 31); err != nil {
			return "", true, fmt.Sprintf("header %s = %q is not an event index", headerIndex, index)
		}
		key = batchKey + ":" + index
		if !hasKey || !validKey(key) {
			return "", true, fmt.Sprintf("header %s = %q with %s = %q is no idempotency key (1..128 of [A-Za-z0-9._:-])", headerBatchKey, batchKey, headerIndex, index)
		}
		return key, true, ""
	case hasKey:
		if !validKey(batchKey) {
			return "", false, fmt.Sprintf("header %s = %q is no idempotency key (1..128 of [A-Za-z0-9._:-])", headerBatchKey, batchKey)
		}
		return batchKey, false, ""
	}
	return positionKey(r.Topic, r.Partition, r.Offset), false, ""
}

// positionKey names a record by its place in the log, which redelivery does
// not change: "kafka:<topic>:<partition>:<offset>", with a hash standing
// for a topic too long for a 128-byte key.
func positionKey(topic string, partition int32, offset int64) string {
	key := "kafka:" + topic + ":" + strconv.Itoa(int(partition)) + ":" + strconv.FormatInt(offset, 10)
	if len(key) > 128 {
		sum := sha256.Sum256([]byte(topic))
		key = "kafka:" + hex.EncodeToString(sum[:12]) + ":" + strconv.Itoa(int(partition)) + ":" + strconv.FormatInt(offset, 10)
	}
	return key
}

// waitBackoff waits d, or less if ctx ends first; it reports whether the
// whole wait elapsed.
func waitBackoff(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// kgoLogger sends kgo's warnings and errors to the server's logger.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelWarn
	if level == kgo.LogLevelError {
		lvl = slog.LevelError
	}
	k.l.Log(context.Background(), lvl, "kafka: "+msg, keyvals...)
}
