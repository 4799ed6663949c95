#!/usr/bin/env bash
# pg-start.sh starts a throwaway PostgreSQL 15 cluster for the store tests and
# prints, on stdout, the lines a caller evals:
#
#   eval "$(scripts/pg-start.sh)"
#   go test -race ./loader/store/...
#   scripts/pg-stop.sh            # uses $BATCHPROC_TEST_POSTGRES_DIR
#
# The cluster lives in a fresh temp dir, listens on 127.0.0.1 on a free port
# (and a Unix socket inside the dir), trusts every local connection and runs
# with fsync=off: it is for tests only and loses data on a machine crash.
#
#   scripts/pg-start.sh --durable
#
# keeps PostgreSQL's durable defaults instead (fsync=on, full_page_writes=on,
# synchronous_commit=on: each commit waits for its WAL flush to disk), with
# the same buffer sizing, to benchmark the loader as production runs it.
# Run as root (initdb and pg_ctl are run as the postgres OS user) or as an
# unprivileged user who can run them directly.
set -euo pipefail

durable=
case "${1:-}" in
--durable) durable=1 ;;
"") ;;
*) echo "usage: pg-start.sh [--durable]" >&2; exit 2 ;;
esac

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -x "$PGBIN/initdb" ] || { echo "pg-start: no initdb in $PGBIN (set PGBIN)" >&2; exit 1; }

# as_pg runs a command as the postgres OS user when we are root.
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/batchproc-pg.XXXXXX")
touch "$dir/.batchproc-pg" # marks the dir as ours for pg-stop.sh
if [ "$(id -u)" = 0 ]; then chown postgres: "$dir" "$dir/.batchproc-pg"; fi
data="$dir/data"

as_pg "$PGBIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 ||
	{ cat "$dir/initdb.log" >&2; exit 1; }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Test settings: no fsync (a crash of the machine loses the cluster, which
# is throwaway); buffers and WAL sized for ingest benchmarks, so backends do
# not write out dirty pages themselves and checkpoints stay rare (PostgreSQL's
# defaults, 128MB and 1GB, are sized for small machines).
if [ -n "$durable" ]; then
	# The server's defaults, stated so a config file cannot change them.
	conf="-c fsync=on -c full_page_writes=on -c synchronous_commit=on -c max_connections=200"
else
	conf="-c fsync=off -c full_page_writes=off -c max_connections=200"
fi
conf="$conf -c shared_buffers=512MB -c wal_buffers=16MB -c max_wal_size=4GB"

# A port found free can be taken before postgres binds it: retry a few times.
started=
for _ in 1 2 3 4 5; do
	port=$(free_port)
	if as_pg "$PGBIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir $conf" \
		start >/dev/null 2>&1; then
		started=1
		break
	fi
done
if [ -z "$started" ]; then
	echo "pg-start: postgres did not start; log: $dir/postgres.log" >&2
	cat "$dir/postgres.log" >&2 || true
	exit 1
fi

# pg_ctl -w already waited; pg_isready confirms TCP accepts connections.
for _ in $(seq 1 100); do
	if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then break; fi
	sleep 0.1
done
"$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" || { echo "pg-start: not ready; log: $dir/postgres.log" >&2; exit 1; }

echo "export BATCHPROC_TEST_POSTGRES='postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable'"
echo "export BATCHPROC_TEST_POSTGRES_DIR='$dir'"
echo "# stop with: scripts/pg-stop.sh $dir" >&2
