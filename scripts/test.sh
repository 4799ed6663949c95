#!/usr/bin/env bash
# test.sh runs the whole test suite with the race detector, against real
# servers: it starts a throwaway PostgreSQL cluster on a loopback port (unless
# BATCHPROC_TEST_POSTGRES already names one), runs `go test -race` over every module's packages, and
# stops the cluster. Kafka needs nothing: the tests run franz-go's kfake.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh ./loader/...    # a subset; extra go test flags work too
#
# When PostgreSQL's server binaries are missing it installs them with apt-get
# (Debian package postgresql), as the CI machine image may lack them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BATCHPROC_TEST_POSTGRES:-}" ]; then
	if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
		echo "test.sh: installing PostgreSQL server binaries" >&2
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
	fi
	PGBIN=${PGBIN:-$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")}
	export PGBIN
	eval "$(scripts/pg-start.sh)"
	trap 'scripts/pg-stop.sh "$BATCHPROC_TEST_POSTGRES_DIR"' EXIT
fi

if [ $# -eq 0 ]; then
	# Every module of the workspace (go.work): ./... stops at nested go.mod files.
	set -- github.com/batchproc/batchproc/...
fi
go test -race -count=1 -timeout 30m "$@"
