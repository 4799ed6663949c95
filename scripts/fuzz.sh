#!/usr/bin/env bash
# fuzz.sh runs every fuzz target of every module briefly, one at a time
# (go test -fuzz takes one target per run):
#
#   scripts/fuzz.sh [FUZZTIME]      # default 15s a target
#
# A target that fails with a failing input fails the script. go test -fuzz
# also fails, now and then, with a bare "context deadline exceeded" and no
# failing input, when -fuzztime runs out while a worker is still
# minimising a new input (a race in the toolchain's fuzz coordinator, not a
# finding): such a run is repeated once.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
fuzztime=${1:-15s}
for pkg in $("$GO" list github.com/batchproc/batchproc/...); do
	for t in $("$GO" test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz $pkg $t"
		for try in 1 2; do
			if out=$("$GO" test -run '^$' -fuzz "^$t\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
				echo "$out" | tail -n 2
				break
			fi
			echo "$out"
			if [ "$try" = 1 ] && ! grep -q 'Failing input written to' <<<"$out" && grep -q 'context deadline exceeded' <<<"$out"; then
				echo "fuzz: $t ended on the fuzz coordinator's deadline race, with no failing input: running it once more"
				continue
			fi
			exit 1
		done
	done
done
