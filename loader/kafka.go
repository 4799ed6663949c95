package loader

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batchproc/batchproc/loader/store"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Defaults of [KafkaConfig]. The group settings fail over fast: a loader
// that dies without leaving its group (SIGKILL, a lost machine) holds its
// partitions until the coordinator has missed its heartbeats for
// DefaultKafkaSessionTimeout, and the others notice a rebalance within a
// heartbeat. Kafka's own defaults (45 s, 3 s) would stall a dead loader's
// partitions for 45 s. 10 s was Kafka's default before 3.0 (KIP-735), and is
// well above what a loader needs: kgo heartbeats from a goroutine of its
// own, so a slow Store call does not miss heartbeats.
const (
	DefaultKafkaGroup             = "batchloader"
	DefaultKafkaSessionTimeout    = 10 * time.Second
	DefaultKafkaHeartbeatInterval = 1 * time.Second
	DefaultKafkaBalancer          = "cooperative-sticky"
)

// kafkaBalancers are the values of [KafkaConfig.Balancer].
var kafkaBalancers = map[string]func() kgo.GroupBalancer{
	"cooperative-sticky": kgo.CooperativeStickyBalancer,
	"sticky":             kgo.StickyBalancer,
	"range":              kgo.RangeBalancer,
	"roundrobin":         kgo.RoundRobinBalancer,
}

// Record headers of package kafkasink, which the consumer reads (the test
// checks they are kafkasink's).
const (
	headerBatchKey = "batchproc-batch-key"
	headerIndex    = "batchproc-index"
)

// Consumer tuning: records stored per poll (rebalances wait while a poll is
// being stored, so it is kept short), the backoff between attempts to
// store a batch while the store fails, how often stored offsets are
// committed in the background, and how long a blocking commit (partitions
// revoked, shutdown) may take.
const (
	kafkaMaxPollRecords = 100
	kafkaMinBackoff     = 100 * time.Millisecond
	kafkaMaxBackoff     = 5 * time.Second
	kafkaCommitInterval = time.Second
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
	// SessionTimeout is how long the group coordinator waits for a
	// member's heartbeat before it declares the member dead and moves its
	// partitions to the others: how long the partitions of a loader that
	// died without leaving the group (SIGKILL, a lost machine) go
	// unconsumed. Default [DefaultKafkaSessionTimeout] (10 s). The broker
	// accepts group.min.session.timeout.ms to group.max.session.timeout.ms
	// (6 s to 30 min by default).
	SessionTimeout time.Duration
	// HeartbeatInterval is how often the member heartbeats; a member
	// notices that the group is rebalancing at its next heartbeat, so it
	// bounds how long a rebalance waits for live members. Default
	// [DefaultKafkaHeartbeatInterval] (1 s); at most a third of
	// SessionTimeout is advised, and it must be less.
	HeartbeatInterval time.Duration
	// InstanceID, when set, makes the loader a static member of the group
	// (KIP-345; Kafka 2.3+): a loader restarted with the same ID gets its
	// partitions back at once, without a rebalance, and a replacement with
	// the ID of a dead loader takes its partitions without waiting for its
	// session to time out. The ID must be unique in the group (a second
	// member with the same ID fences the first). A static member does not
	// leave the group on shutdown: its partitions wait SessionTimeout for
	// it to come back. 1..249 of [a-zA-Z0-9._-]. Default "": dynamic.
	InstanceID string
	// Balancer is the group's partition assignor: "cooperative-sticky"
	// (the default, [DefaultKafkaBalancer]), "sticky", "range" or
	// "roundrobin". With cooperative-sticky a rebalance moves only the
	// partitions that change owner, and the others are consumed
	// throughout; the eager ones revoke every partition of every member
	// for the whole rebalance. All members of a group must agree: a group
	// with one eager member rebalances eagerly.
	Balancer string
	// ClientOptions are added to the kgo client's options, after the
	// loader's own: TLS (kgo.DialTLSConfig), SASL (kgo.SASL), timeouts...
	// They must leave offset handling alone: the consumer marks the
	// offsets the store committed and kgo commits the marked offsets in
	// the background (kgo.AutoCommitMarks) and when partitions are revoked
	// (kgo.OnPartitionsRevoked); rebalances wait while a poll is stored
	// (kgo.BlockRebalanceOnPoll).
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
	if k.SessionTimeout == 0 {
		k.SessionTimeout = DefaultKafkaSessionTimeout
	}
	if k.HeartbeatInterval == 0 {
		k.HeartbeatInterval = DefaultKafkaHeartbeatInterval
	}
	switch {
	case k.SessionTimeout < 0 || k.SessionTimeout%time.Millisecond != 0 || k.SessionTimeout > math.MaxInt32*time.Millisecond:
		bad("Config.Kafka.SessionTimeout = %v is not a positive whole number of milliseconds", k.SessionTimeout)
	case k.HeartbeatInterval < 0 || k.HeartbeatInterval%time.Millisecond != 0:
		bad("Config.Kafka.HeartbeatInterval = %v is not a positive whole number of milliseconds", k.HeartbeatInterval)
	case k.HeartbeatInterval >= k.SessionTimeout:
		bad("Config.Kafka.HeartbeatInterval = %v is not less than SessionTimeout = %v (a third of it at most is advised)", k.HeartbeatInterval, k.SessionTimeout)
	}
	if k.InstanceID != "" && !validTopic(k.InstanceID) {
		bad("Config.Kafka.InstanceID = %q is not a group instance ID (1..249 of [a-zA-Z0-9._-])", k.InstanceID)
	}
	if k.Balancer == "" {
		k.Balancer = DefaultKafkaBalancer
	}
	if kafkaBalancers[k.Balancer] == nil {
		bad("Config.Kafka.Balancer = %q: want cooperative-sticky, sticky, range or roundrobin", k.Balancer)
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
// consumer never moves past a record it has not stored. The offsets of
// stored records are committed in the background, every second, and
// before a rebalance takes partitions away (rebalances wait while a poll
// is being stored), so a partition moves to another loader at the offset
// after its last stored record. Commits never hold up storing: while the
// group rebalances (a loader joins, or one died and the group waits for
// its session to time out), the partitions this loader keeps are stored
// throughout. A crash redelivers the batches stored since the last commit
// (about a second's worth): their keys make them duplicates, stored once.
// Delivery into the store is thus at least once, and exactly once per key.
//
// # Failover
//
// A loader that shuts down leaves the group, and its partitions move at
// once. One that dies without leaving (SIGKILL, a lost machine) holds its
// partitions until the coordinator has missed its heartbeats for
// [KafkaConfig.SessionTimeout] (10 s by default), or, with
// [KafkaConfig.InstanceID], until a loader with the same instance ID
// starts. See docs/kafka.md.
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

	opts := append(s.kafkaOpts(kc), kc.ClientOptions...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("loader: Kafka client: %w", err)
	}
	s.log.Info("consuming", "topic", kc.Topic, "group", kc.Group, "brokers", strings.Join(kc.Brokers, ","),
		"balancer", kc.Balancer, "session_timeout", kc.SessionTimeout, "heartbeat_interval", kc.HeartbeatInterval,
		"instance_id", kc.InstanceID)
	s.consume(hardCtx, cl)
	return http.ErrServerClosed
}

// kafkaOpts returns the kgo options of the consumer for kc.
//
// Offsets are never committed from the poll loop: a commit waits while the
// group is joining and syncing, and a join waits for every member, up to
// a dead one's session timeout, so a commit after each poll would stall
// the partitions this loader keeps for that long. Instead the loop marks
// what the store committed (MarkCommitRecords) and kgo commits the marks
// from a goroutine of its own every kafkaCommitInterval; partitions being
// revoked get a blocking commit of their marks first, which
// BlockRebalanceOnPoll runs only between polls, once every record polled
// was stored.
func (s *Server) kafkaOpts(kc *KafkaConfig) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(kc.Brokers...),
		kgo.ConsumerGroup(kc.Group),
		kgo.ConsumeTopics(kc.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.Balancers(kafkaBalancers[kc.Balancer]()),
		kgo.SessionTimeout(kc.SessionTimeout),
		kgo.HeartbeatInterval(kc.HeartbeatInterval),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(kafkaCommitInterval),
		kgo.AutoCommitCallback(func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err == nil {
				err = commitErr(resp)
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				// The batches are stored: if the partition moves
				// before a commit succeeds, its next owner gets them
				// again, as duplicates.
				s.log.Warn("kafka offset commit failed", "err", err)
			}
		}),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			s.log.Info("kafka partitions assigned", "partitions", partitionList(m))
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			// Commit what was stored, so that the next owner starts
			// after it. ctx is the client's: Close cancels it.
			ctx, cancel := context.WithTimeout(ctx, kafkaCommitTimeout)
			defer cancel()
			if err := cl.CommitMarkedOffsets(ctx); err != nil {
				s.log.Warn("kafka offset commit failed", "err", err, "revoking", partitionList(m))
			}
			if len(m) > 0 {
				s.log.Info("kafka partitions revoked", "partitions", partitionList(m))
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			s.log.Warn("kafka partitions lost", "partitions", partitionList(m))
		}),
		kgo.WithLogger(kgoLogger{s.log}),
	}
	if kc.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(kc.InstanceID))
	}
	return opts
}

// commitErr returns the first partition error of an offset commit.
func commitErr(resp *kmsg.OffsetCommitResponse) error {
	if resp == nil {
		return nil
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("topic %s partition %d: %w", t.Topic, p.Partition, err)
			}
		}
	}
	return nil
}

// partitionList formats a rebalance callback's partitions for a log line:
// "events:0,1,2".
func partitionList(m map[string][]int32) string {
	var b strings.Builder
	for _, t := range slices.Sorted(maps.Keys(m)) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		ps := slices.Sorted(slices.Values(m[t]))
		b.WriteString(t)
		b.WriteByte(':')
		for i, p := range ps {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(int(p)))
		}
	}
	return b.String()
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
		// Commit what was stored, then leave, so that the partitions move
		// at once to a member that starts after it. With hard done
		// (Shutdown's ctx ended), neither waits for the coordinator, and
		// Close is immediate.
		ctx, cancel := context.WithTimeout(hard, kafkaCommitTimeout)
		if err := cl.CommitMarkedOffsets(ctx); err != nil && hard.Err() == nil {
			s.log.Warn("kafka offset commit failed", "err", err)
		}
		cancel()
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
		// Committed in the background, and before the partitions are
		// revoked: never wait here for a rebalance (see kafkaOpts).
		cl.MarkCommitRecords(last...)
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
