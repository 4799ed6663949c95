# Developer tasks. CI runs .ci/run, which runs `make lint test fuzz`.
GO ?= go
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
FUZZTIME ?= 15s
# Every package of every module of the workspace (go.work): ./... would
# stop at the nested modules' go.mod files.
PKGS ?= github.com/batchproc/batchproc/...

SHELL := /bin/bash

.PHONY: all test race test-concurrent bench fuzz lint tools tidy cross

all: lint test

# The full suite with -race against real PostgreSQL (started and stopped by the script).
test:
	scripts/test.sh

race: test

# Concurrency tests re-run many times under the race detector.
test-concurrent:
	$(GO) test -race -run 'ConcurrentSafe|Model|InOrder' -count 50 . ./internal/coretest

# Benchmarks with their peers in the same run; compare with benchstat.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 . ./internal/coretest ./httpsink ./loader ./loader/store/... ./internal/e2e | tee bench.txt

# Every fuzz target, briefly (go test -fuzz takes one target per run).
fuzz:
	GO=$(GO) scripts/fuzz.sh $(FUZZTIME)

# Every package and both binaries for linux, darwin, windows x amd64, arm64
# (build + vet), then the library's tests on linux/386.
cross:
	GO=$(GO) scripts/crossbuild.sh

tools:
	$(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)
	@# Each module tidy on its own (go mod tidy ignores go.work), and go.work
	@# naming every module in the tree.
	@set -e; for d in $$($(GO) list -m -f '{{.Dir}}'); do (cd $$d && GOWORK=off $(GO) mod tidy -diff); done
	@want=$$(git ls-files '*go.mod' | sort); have=$$($(GO) list -m -f '{{.Dir}}/go.mod' | sed "s|^$$(pwd)/||" | sort); \
		if [ "$$want" != "$$have" ]; then echo "go.work does not use every module:"; diff <(echo "$$want") <(echo "$$have"); exit 1; fi
