// Command batchloader runs the Batch Loader: the HTTP server of
// docs/protocol.md in front of a SQLite, PostgreSQL or discarding store.
//
//	batchloader [-addr :8080] [-store sqlite|postgres|discard] [-dsn batchloader.db]
//	            [-token T]... [-max-body N] [-max-decoded-body N] [-max-events N]
//	            [-max-line N] [-max-concurrent N] [-latency D] [-shutdown-timeout D]
//	            [-pprof] [-log-format text|json] [-healthcheck]
//	            [-kafka-brokers host:port,... -kafka-topic T [-kafka-group batchloader]
//	             [-kafka-session-timeout 10s] [-kafka-heartbeat-interval 1s]
//	             [-kafka-instance-id ID] [-kafka-balancer cooperative-sticky]]
//	batchloader -version
//
// With -kafka-brokers and -kafka-topic it also consumes batches from that
// Kafka topic (as package kafkasink produces them), as a member of the
// consumer group -kafka-group: run several loaders in one group to share
// the topic's partitions. A loader that dies without leaving the group
// holds its partitions for -kafka-session-timeout (10 s), or until a loader
// with its -kafka-instance-id starts; the others go on consuming meanwhile.
//
// It logs "listening addr=..." once ready and one line with count=N per
// stored batch, to standard output. SIGINT or SIGTERM drains it: requests
// in flight finish, new ones get 503, the Kafka consumer finishes the batch
// it is storing, commits and leaves its group, then the store is closed and
// the process exits 0. Bad flags exit 2; other failures exit 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/batchproc/batchproc/internal/buildinfo"
	"github.com/batchproc/batchproc/loader"
	"github.com/batchproc/batchproc/loader/store"
	"github.com/batchproc/batchproc/loader/store/postgres"
	"github.com/batchproc/batchproc/loader/store/sqlite"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a bad command line: exit status 2. printed is set when
// the flag package has already reported it.
type usageError struct {
	err     error
	printed bool
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitCode reports err on w and returns the process's exit status.
func exitCode(err error, w io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		if !ue.printed {
			fmt.Fprintln(w, "batchloader:", err)
		}
		return 2
	default:
		fmt.Fprintln(w, "batchloader:", err)
		return 1
	}
}

// run is the whole command: flags → loader.Run. Logs go to stdout, usage
// and flag errors to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("batchloader", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg          loader.Config
		storeKind    string
		dsn          string
		logFormat    string
		kafkaBrokers string
		kafka        loader.KafkaConfig
		sqliteSync   string
	)
	fs.StringVar(&cfg.Addr, "addr", loader.DefaultAddr, "TCP `address` to listen on")
	fs.StringVar(&storeKind, "store", "sqlite", "store: sqlite, postgres or discard (validate, count, store nothing)")
	fs.StringVar(&dsn, "dsn", "batchloader.db", "SQLite file `path`, or PostgreSQL URL")
	fs.StringVar(&sqliteSync, "sqlite-synchronous", string(sqlite.SyncFull), "SQLite WAL sync `mode`: FULL (a 200 survives power loss; commits of concurrent batches share one fsync) or NORMAL (faster; the last commits before a power loss can be lost)")
	fs.Func("token", "accepted bearer `token` (repeatable); when given, batch requests need one", func(s string) error {
		cfg.Tokens = append(cfg.Tokens, s)
		return nil
	})
	fs.Int64Var(&cfg.MaxBody, "max-body", loader.DefaultMaxBody, "request body limit as sent, in `bytes`")
	fs.Int64Var(&cfg.MaxDecodedBody, "max-decoded-body", loader.DefaultMaxDecodedBody, "request body limit after decompression, in `bytes`")
	fs.IntVar(&cfg.MaxEvents, "max-events", loader.DefaultMaxEvents, "events per batch limit")
	fs.IntVar(&cfg.MaxLine, "max-line", loader.DefaultMaxLine, "one event's limit, in `bytes`")
	fs.IntVar(&cfg.MaxConcurrent, "max-concurrent", loader.DefaultMaxConcurrent(), "batch requests decoded and stored at once; more get 429")
	fs.DurationVar(&cfg.Latency, "latency", 0, "artificial latency added to each batch request, to model a remote loader")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", loader.DefaultShutdownTimeout, "longest drain on SIGINT/SIGTERM")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof/")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&kafkaBrokers, "kafka-brokers", "", "comma-separated Kafka seed `brokers` (host:port); with -kafka-topic, also consume batches from Kafka")
	fs.StringVar(&kafka.Topic, "kafka-topic", "", "Kafka `topic` to consume batches from (as kafkasink produces them)")
	fs.StringVar(&kafka.Group, "kafka-group", loader.DefaultKafkaGroup, "Kafka consumer `group`; loaders of one group share the topic's partitions")
	fs.DurationVar(&kafka.SessionTimeout, "kafka-session-timeout", loader.DefaultKafkaSessionTimeout, "how long the Kafka group waits for a silent member (a crashed loader) before it moves that member's partitions to the others; within the broker's group.min/max.session.timeout.ms (6s..30m by default)")
	fs.DurationVar(&kafka.HeartbeatInterval, "kafka-heartbeat-interval", loader.DefaultKafkaHeartbeatInterval, "how often the Kafka group member heartbeats, and so notices a rebalance; less than -kafka-session-timeout (a third of it at most is advised)")
	fs.StringVar(&kafka.InstanceID, "kafka-instance-id", "", "static Kafka group membership `id`, unique per loader and kept across its restarts (e.g. a StatefulSet pod name): a restart or a replacement takes the partitions back at once, without a rebalance; a static member does not leave the group on shutdown")
	fs.StringVar(&kafka.Balancer, "kafka-balancer", loader.DefaultKafkaBalancer, "Kafka partition `balancer`: cooperative-sticky (partitions that stay are consumed through a rebalance), sticky, range or roundrobin (eager: every partition stops for the rebalance); all loaders of a group must agree")
	healthcheckMode := fs.Bool("healthcheck", false, "probe mode for images without a shell: GET /healthz of the loader at -addr (unspecified host: loopback), exit 0 on 200, else 1")
	version := fs.Bool("version", false, "print the version (module, VCS revision, Go) and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err: err, printed: true} // with the usage
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.String("batchloader"))
		return nil
	}
	if fs.NArg() > 0 {
		return usageError{err: fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	if *healthcheckMode {
		return healthcheck(ctx, cfg.Addr)
	}
	switch logFormat {
	case "text":
		cfg.Logger = slog.New(slog.NewTextHandler(stdout, nil))
	case "json":
		cfg.Logger = slog.New(slog.NewJSONHandler(stdout, nil))
	default:
		return usageError{err: fmt.Errorf("-log-format %q: want text or json", logFormat)}
	}
	switch {
	case kafkaBrokers != "" && kafka.Topic != "":
		for b := range strings.SplitSeq(kafkaBrokers, ",") {
			kafka.Brokers = append(kafka.Brokers, strings.TrimSpace(b))
		}
		cfg.Kafka = &kafka
	case kafkaBrokers != "" || kafka.Topic != "":
		return usageError{err: errors.New("-kafka-brokers and -kafka-topic go together")}
	}
	if sqliteSync = strings.ToUpper(sqliteSync); sqliteSync != string(sqlite.SyncFull) && sqliteSync != string(sqlite.SyncNormal) {
		return usageError{err: fmt.Errorf("-sqlite-synchronous %q: want FULL or NORMAL", sqliteSync)}
	}
	switch storeKind {
	case "sqlite", "postgres", "discard":
	default:
		return usageError{err: fmt.Errorf("-store %q: want sqlite, postgres or discard", storeKind)}
	}
	// Validate the limits before opening (and maybe creating) a database:
	// New has no side effects and the probe Server is dropped.
	probe := cfg
	probe.Store = store.NewDiscard()
	if _, err := loader.New(probe); err != nil {
		return usageError{err: err}
	}

	st, err := openStore(ctx, storeKind, dsn, sqlite.WithSynchronous(sqlite.Sync(sqliteSync)))
	if err != nil {
		return err
	}
	cfg.Store = st
	if storeKind == "discard" {
		cfg.Logger.Info("store open", "store", storeKind)
	} else {
		cfg.Logger.Info("store open", "store", storeKind, "dsn", redact(storeKind, dsn))
	}
	return loader.Run(ctx, cfg) // closes st
}

func openStore(ctx context.Context, kind, dsn string, sqliteOpts ...sqlite.Option) (store.Store, error) {
	switch kind {
	case "discard":
		return store.NewDiscard(), nil
	case "sqlite":
		st, err := sqlite.Open(dsn, sqliteOpts...)
		if err != nil {
			return nil, fmt.Errorf("opening SQLite store %s: %w", dsn, err)
		}
		return st, nil
	case "postgres":
		st, err := postgres.Open(ctx, dsn)
		if err != nil {
			return nil, fmt.Errorf("opening PostgreSQL store %s: %w", redact(kind, dsn), err)
		}
		return st, nil
	}
	return nil, fmt.Errorf("unknown store %q", kind)
}

// redact hides a PostgreSQL URL's password in logs.
func redact(kind, dsn string) string {
	if kind != "postgres" {
		return dsn
	}
	if at := strings.LastIndexByte(dsn, '@'); at >= 0 {
		if c := strings.Index(dsn, "://"); c >= 0 && c+3 < at {
			if p := strings.IndexByte(dsn[c+3:at], ':'); p >= 0 {
				return dsn[:c+3+p+1] + "xxxxx" + dsn[at:]
			}
		}
	}
	return dsn
}
