# Shoal build, test and benchmark targets. Every target installs what it
# needs (Debian packages with apt-get, Go tools with `go tool`), idempotently.
SHELL       := /bin/bash
GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
BIN         := bin/shoal
export CGO_ENABLED := 0

# Debian packages the tests and benchmarks use. Installed once; `deps`
# is a no-op when they are all present.
DEB_PKGS := iproute2 nftables keepalived iputils-ping tcpdump
DEB_GEN_PKGS := clang llvm libbpf-dev

.PHONY: all build test test-unit lint bench deps generate demo clean fuzz

all: build

## build: static binary into bin/
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/shoal

## deps: install the Debian packages the tests need (idempotent)
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

## test: every test, including the root-only network-namespace tests
test: deps build
	$(GO) test -count=1 -timeout 20m ./...

## test-unit: tests that need no root
test-unit:
	$(GO) test -count=1 ./...

## lint: gofmt, go vet, golangci-lint (pinned as a Go tool, depguard rules in .golangci.yaml)
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## generate: rebuild the XDP object and its Go bindings (needs clang, libbpf-dev)
generate:
	@missing=""; for p in $(DEB_GEN_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	$(GO) generate ./bpf/...

## bench: every benchmark
bench: bench-allocate

## bench-allocate: allocation time, 8 members x 256 IPs
bench-allocate:
	$(GO) test -run '^$$' -bench . -benchmem ./allocate/

clean:
	rm -rf bin/
