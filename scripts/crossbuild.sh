#!/usr/bin/env bash
# crossbuild.sh checks that everything builds wherever a Go service runs:
# for each platform it builds every package and links both binaries
# (go build -o DIR/ ./...), and type-checks every package with its tests
# (go vet ./..., which also catches test files that do not compile there).
# Then it runs the library's tests as a 32-bit program (linux/386), which a
# linux/amd64 machine executes: that catches misaligned 64-bit atomics.
#
#   scripts/crossbuild.sh                      # every platform below, then linux/386 tests
#   PLATFORMS="windows/amd64" scripts/crossbuild.sh
#   TEST386=0 scripts/crossbuild.sh            # builds only
#
# It keeps going after a failure, prints which packages failed where, and
# exits 1 if anything failed. Run by `make cross` and CI (.ci/run).
set -uo pipefail
cd "$(dirname "$0")/.."

PLATFORMS=${PLATFORMS:-"linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64"}
TEST386=${TEST386:-1}
GO=${GO:-go}

host=$("$GO" env GOHOSTOS)/$("$GO" env GOHOSTARCH)
case "$TEST386:$host" in
1:linux/amd64 | 1:linux/386) ;;
1:*)
	echo "crossbuild: $host cannot run linux/386 tests: set TEST386=0" >&2
	exit 1
	;;
esac
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=()

for p in $PLATFORMS; do
	os=${p%/*} arch=${p#*/}
	echo "crossbuild: $os/$arch"
	log="$out/$os-$arch.log"
	ok=1
	mkdir -p "$out/bin/$os-$arch"
	# No C toolchain for other platforms: cgo off there (nothing here needs
	# it; SQLite is modernc.org's pure Go). The host keeps its default, so
	# its build shares the cache with the tests.
	cgo=0
	[ "$p" = "$host" ] && cgo=$("$GO" env CGO_ENABLED)
	CGO_ENABLED=$cgo GOOS=$os GOARCH=$arch "$GO" build -o "$out/bin/$os-$arch/" github.com/batchproc/batchproc/... >"$log" 2>&1 || ok=0
	CGO_ENABLED=$cgo GOOS=$os GOARCH=$arch "$GO" vet github.com/batchproc/batchproc/... >>"$log" 2>&1 || ok=0
	if [ "$ok" = 0 ]; then
		# go build and vet head each failing package's errors with "# pkg"
		# (vet also with "# [pkg]"). Packages importing a failed one are not
		# compiled, so not checked, until it is fixed.
		pkgs=$(sed -n 's/^# \[\{0,1\}\([^] ]*\).*/\1/p' "$log" | sort -u | tr '\n' ' ')
		failed+=("$os/$arch: ${pkgs:-see log}")
		sed 's/^/    /' "$log"
	else
		for bin in batchloader batchbench; do
			exe=$bin
			[ "$os" = windows ] && exe=$bin.exe
			if [ ! -s "$out/bin/$os-$arch/$exe" ]; then
				failed+=("$os/$arch: binary $exe not linked")
			fi
		done
	fi
done

if [ "$TEST386" = 1 ]; then
	# The library and the packages a service imports with it; no -race on 386.
	echo "crossbuild: go test linux/386 . ./httpsink ./batchproctest"
	if ! CGO_ENABLED=0 GOOS=linux GOARCH=386 "$GO" test -count=1 . ./httpsink ./batchproctest; then
		failed+=("linux/386: go test . ./httpsink ./batchproctest")
	fi
fi

if [ ${#failed[@]} -gt 0 ]; then
	echo "crossbuild: FAILED"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
[ "$TEST386" = 1 ] && PLATFORMS="$PLATFORMS; tests on linux/386"
echo "crossbuild: ok ($PLATFORMS)"
