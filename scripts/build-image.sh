#!/usr/bin/env bash
# build-image.sh checks that the Batch Loader's container image builds: it
# builds the static binary as the Dockerfile expects it (CGO_ENABLED=0) and
# runs `podman build` (FROM scratch: nothing is pulled), then checks the
# image's user and entrypoint. CI runs it; containers cannot run on the CI
# machines, so the binary itself is tested by TestStaticBinary.
#
#   scripts/build-image.sh
#
# The image goes to a throwaway podman store (vfs storage driver, which
# works without overlayfs or fuse), removed at exit: to keep an image, run
# the README's `podman build` lines. Installs Debian's podman when it is
# missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v podman >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "build-image: installing podman" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman >/dev/null
	else
		echo "build-image: podman is missing (apt-get install podman)" >&2
		exit 1
	fi
fi

store=$(mktemp -d "${TMPDIR:-/tmp}/batchproc-podman.XXXXXX")
cleanup() {
	rm -f batchloader
	# vfs layers are plain directories, some read-only.
	chmod -R u+w "$store" 2>/dev/null || true
	rm -rf "$store"
}
trap cleanup EXIT
podman() {
	command podman --root "$store/root" --runroot "$store/run" --storage-driver vfs \
		--cgroup-manager cgroupfs --events-backend file "$@"
}

CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o batchloader ./cmd/batchloader
tag=localhost/batchloader:ci
podman build --format docker -t "$tag" .
got=$(podman image inspect "$tag" --format '{{.Config.User}} {{index .Config.Entrypoint 0}}')
if [ "$got" != "65532:65532 /batchloader" ]; then
	echo "build-image: image user and entrypoint are \"$got\", want \"65532:65532 /batchloader\"" >&2
	exit 1
fi
echo "build-image: $tag built: $(podman image inspect "$tag" --format '{{.Size}}') bytes, user 65532, FROM scratch"
