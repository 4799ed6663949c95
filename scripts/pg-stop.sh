#!/usr/bin/env bash
# pg-stop.sh stops a cluster started by pg-start.sh and removes its temp dir.
#
#   scripts/pg-stop.sh [DIR]     # DIR defaults to $BATCHPROC_TEST_POSTGRES_DIR
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
dir=${1:-${BATCHPROC_TEST_POSTGRES_DIR:-}}
[ -n "$dir" ] || { echo "usage: pg-stop.sh DIR (or set BATCHPROC_TEST_POSTGRES_DIR)" >&2; exit 2; }
# Refuse anything pg-start.sh did not create: this script ends with rm -rf.
[ -f "$dir/.batchproc-pg" ] || { echo "pg-stop: $dir was not made by pg-start.sh" >&2; exit 1; }

if [ -f "$dir/data/postmaster.pid" ]; then
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
	else
		"$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
	fi
fi
rm -rf -- "$dir"
