SHELL := /bin/bash
# explodefs. `make run` starts the daemon on a generated demo image;
# `make test` runs every test; `make bench` prints the performance figures.
# Each target installs what it needs first (Debian 12, as root).

export PATH := /usr/local/go/bin:$(PATH)
export CGO_ENABLED := 1

DEMO_DIR    ?= $(CURDIR)/.demo
MOUNTPOINT  ?= /mnt/explodefs
LISTEN      ?= 127.0.0.1:9797
FUZZTIME    ?= 20s
BIN         := bin/explodefs

.PHONY: all deps build run test unit fuzz e2e container bench vet clean test-infra

all: build

deps:
	@hack/install-deps.sh

build: deps
	go build -o $(BIN) ./cmd/explodefs

# The demo layout is regenerated every time; the index in the state
# directory is kept, so a second run serves at once.
run: build
	go run ./test/imagegen/cmd/imagegen demo $(DEMO_DIR)/images
	@echo "mounting at $(MOUNTPOINT); try: ls -l $(MOUNTPOINT)/demo/hello/  (Ctrl-C unmounts)"
	$(BIN) serve --source oci-dir:$(DEMO_DIR)/images --mountpoint $(MOUNTPOINT) \
		--state-dir $(DEMO_DIR)/state --listen $(LISTEN)

# Tools are pinned and installed into bin/, so a run never depends on what
# else the machine has.
STATICCHECK := bin/staticcheck
$(STATICCHECK): | deps
	GOBIN=$(CURDIR)/bin go install honnef.co/go/tools/cmd/staticcheck@v0.6.1

# The Go files are found with find, not git: a tarball of the tree tests
# the same as a clone. An empty list fails instead of passing vacuously.
GO_FILES = $(shell find . -name '*.go' -not -path './.git/*' -not -path './.demo/*')

vet: deps $(STATICCHECK)
	@test -n "$(GO_FILES)" || { echo "no Go files found"; exit 1; }
	go vet ./...
	@out=$$(gofmt -l $(GO_FILES)); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(STATICCHECK) ./...

# The real API server of test/cluster (etcd and apiextensions-apiserver,
# built from the Go module proxy at pinned versions, cached in
# /var/cache/explodefs-test/bin or $EXPLODEFS_TEST_BIN_DIR). Tests build it
# themselves when it is missing; building it here first keeps a cold build
# (~4 min) out of their timeouts. A warm run returns at once.
test-infra: deps
	hack/apiserver/build.sh

# The unit tests run under the race detector.
unit: deps test-infra
	go test -race -count=1 $$(go list ./... | grep -v -e /test/e2e -e /test/container)

# Short coverage-guided runs of the fuzz targets of the layer pass and of
# the zlib checkpointer; `make fuzz FUZZTIME=10m` for a longer hunt.
fuzz: deps
	go test -run='^$$' -fuzz='^FuzzLayerPass$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./index/
	go test -run='^$$' -fuzz='^FuzzIndexer$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./index/zran/

e2e: deps
	go test -count=1 -timeout 40m -v ./test/e2e/ 2>&1 | tee e2e.out | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; test $${PIPESTATUS[0]} -eq 0

# The container image built from the Dockerfile with podman (the base
# image is made first with debootstrap), run as a privileged container on
# the demo image: the host must see and read its FUSE tree, and lose it
# when the container stops.
container: deps
	go test -count=1 -timeout 30m -v ./test/container/

test: vet unit fuzz e2e container

# The openshift figures need the real API server and registry of the
# tests, whose helpers take a testing.TB, so they are a test that skips
# unless EXPLODEFS_BENCH_BIN is set; CI=true makes a missing piece fail
# instead of skipping.
bench: build test-infra
	go run ./test/bench -bin $(BIN)
	CI=true EXPLODEFS_BENCH_BIN=$(CURDIR)/$(BIN) go test -count=1 -v -timeout 30m \
		-run '^TestOpenShiftBench$$' ./test/bench/openshift/

clean:
	rm -rf bin $(DEMO_DIR) e2e.out
