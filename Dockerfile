# The Batch Loader image: the static, CGO-free batchloader binary and
# nothing else. The binary is built outside the image, as goreleaser images
# are, so the build pulls no base image:
#
#   CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o batchloader ./cmd/batchloader
#   podman build -t batchloader .        # or docker build
#
# .dockerignore sends only that binary and deploy/data as the build
# context. See the
# README's "Container" section for run lines (PostgreSQL, SQLite, probes).
FROM scratch

COPY --chmod=0555 batchloader /batchloader

# The loader writes nothing but the default SQLite store's file
# (-dsn batchloader.db, in the working directory): /data, owned by the
# loader's user, is that directory and a volume (a new volume starts as a
# copy of it, so it is writable by the loader too).
COPY --chown=65532:65532 deploy/data/ /data/
VOLUME /data
WORKDIR /data

# A numeric non-root user (distroless's "nonroot"): Kubernetes'
# runAsNonRoot can check a number, not a name, and scratch has no
# /etc/passwd to resolve one.
USER 65532:65532

EXPOSE 8080

# No shell, no curl: the binary probes itself. Kubernetes ignores
# HEALTHCHECK; use httpGet probes on /healthz (liveness) and /readyz
# (readiness) there. (podman keeps HEALTHCHECK only with --format docker.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/batchloader", "-healthcheck", "-addr", ":8080"]

# Arguments are added to these: -store postgres -dsn ..., -token-file...
# Without them the store is SQLite in /data/batchloader.db. The loader
# answers SIGTERM by draining, within -shutdown-timeout (30 s by default;
# keep the container runtime's stop timeout above it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/batchloader", "-addr", ":8080", "-log-format", "json"]
