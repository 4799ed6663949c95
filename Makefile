# Developer tasks. CI runs .ci/run, which runs `make lint test fuzz`.
GO ?= go
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
FUZZTIME ?= 15s

.PHONY: all test race test-concurrent bench fuzz lint tools tidy cross

all: lint test

# The full suite with -race against real PostgreSQL (started and stopped by the script).
test:
	scripts/test.sh

race: test

# Concurrency tests re-run many times under the race detector.
test-concurrent:
	$(GO) test -race -run 'ConcurrentSafe|Model|InOrder' -count 50 .

# Benchmarks with their peers in the same run; compare with benchstat.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 . ./httpsink ./loader ./loader/store/... ./internal/e2e | tee bench.txt

# Every fuzz target, briefly (go test -fuzz takes one target per run).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

# Every package and both binaries for linux, darwin, windows x amd64, arm64
# (build + vet), then the library's tests on linux/386.
cross:
	GO=$(GO) scripts/crossbuild.sh

tools:
	$(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(GO) mod tidy -diff
