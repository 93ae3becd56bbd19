# Shoal build, test and benchmark targets. Every target installs what it
# needs (Debian packages with apt-get, Go tools with `go tool`), idempotently.
SHELL       := /bin/bash
GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
BIN         := bin/shoal
export CGO_ENABLED := 0

# Debian packages the tests and benchmarks use. Installed once; `deps`
# is a no-op when they are all present. (sysctl is in procps; chromium runs
# the web page test; keepalived is the failover peer.)
DEB_PKGS := iproute2 nftables keepalived iputils-ping tcpdump procps chromium curl
DEB_GEN_PKGS := clang llvm libbpf-dev

# apt_ensure installs the Debian packages $(1) that are missing (idempotent);
# $(2) are extra apt-get install options.
define apt_ensure
	@missing=""; for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) $$missing >/dev/null; fi
endef

.PHONY: all build test test-go test-unit lint bench deps generate demo demo-multi clean fuzz

all: build

## build: static binary into bin/
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/shoal

## deps: install the Debian packages the tests need (idempotent)
deps:
	$(call apt_ensure,$(DEB_PKGS))

## test: every test: Go tests (unit, netns end-to-end, XDP, browser, chaos), then the appliance image boot test (~10 min, root)
test: test-go
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) image-test; else echo "SKIPPED image-test: building and booting the appliance image needs root (run: sudo make test)"; fi

## test-go: the Go tests alone, including the root-only network-namespace, XDP, browser and chaos tests (~5 min)
test-go: deps build
	@[ "$$(id -u)" = 0 ] || echo "WARNING: not root: the network-namespace and XDP tests will SKIP (run: sudo make test)"
	SHOAL_BIN=$(CURDIR)/$(BIN) SHOAL_E2E_BIN=$(CURDIR)/$(BIN) SHOAL_REQUIRE_BROWSER=1 \
		$(GO) test -count=1 -timeout 12m ./...

## test-unit: tests that need no root
test-unit:
	$(GO) test -count=1 ./...

## lint: gofmt, go vet, golangci-lint (pinned as a Go tool, depguard rules in .golangci.yaml)
lint:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool golangci-lint run ./...

## generate: rebuild the XDP object and its Go bindings (needs clang, libbpf-dev)
generate:
	$(call apt_ensure,$(DEB_GEN_PKGS))
	$(GO) generate ./bpf/...

## bench: every benchmark, one after the other (root; ~20 min)
bench: bench-allocate bench-xdp bench-detect bench-failover bench-config bench-config-netns

## bench-allocate: allocation time, 8 members x 256 IPs
bench-allocate:
	$(GO) test -run '^$$' -bench . -benchmem ./allocate/

clean:
	rm -rf bin/

# --- packaging ---
# make deb: the .deb (nfpm, pinned as a Go tool) with man page, completion and
# lintian; make image: the appliance disk (raw, qcow2, vmdk, ova) under
# out/image; make image-test: boot it under qemu (TCG) by BIOS, UEFI and as
# VMware hardware until the service reports ready. All outputs under out/.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 1700000000)
DEB_VERSION ?= $(shell packaging/deb/version.sh '$(VERSION)' '$(SOURCE_DATE_EPOCH)')
DEB_STAGE   := out/deb
DEB_FILE    := out/shoal_$(DEB_VERSION)_amd64.deb
PKG_DEB_PKGS   := lintian
IMAGE_DEB_PKGS := mmdebstrap gdisk dosfstools mtools e2fsprogs grub-pc-bin systemd-boot-efi binutils qemu-utils
IMAGE_TEST_PKGS := qemu-system-x86 ovmf seabios

.PHONY: deb image image-base image-test test-packaging

## deb: out/shoal_<version>_amd64.deb, checked by lintian (no errors allowed)
deb: build
	$(call apt_ensure,$(PKG_DEB_PKGS),--no-install-recommends)
	@mkdir -p $(DEB_STAGE)
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(BIN) man | gzip -9n > $(DEB_STAGE)/shoal.1.gz
	$(BIN) completion bash > $(DEB_STAGE)/shoal.bash
	@printf 'shoal (%s) unstable; urgency=medium\n\n  * Build of %s.\n\n -- Shoal project <shoal@example.org>  %s\n' \
		'$(DEB_VERSION)' '$(VERSION)' "$$(date -u -R -d @$(SOURCE_DATE_EPOCH))" | gzip -9n > $(DEB_STAGE)/changelog.gz
	@touch -d @$(SOURCE_DATE_EPOCH) $(DEB_STAGE)/*
	rm -f out/shoal_*_amd64.deb
	DEB_VERSION='$(DEB_VERSION)' DEB_STAGE=$(DEB_STAGE) SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
		$(GO) tool nfpm package --config packaging/nfpm.yaml --packager deb --target $(DEB_FILE)
	lintian --fail-on error --suppress-tags statically-linked-binary $(DEB_FILE)
	@echo "deb: $(DEB_FILE)"

## image: the appliance disk images under out/image (base rootfs cached)
image: deb
	$(call apt_ensure,$(IMAGE_DEB_PKGS),--no-install-recommends)
	VERSION='$(VERSION)' DEB=$(DEB_FILE) SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) packaging/image/build.sh all

## image-base: only the cached base root file system tarball
image-base:
	$(call apt_ensure,$(IMAGE_DEB_PKGS),--no-install-recommends)
	packaging/image/build.sh base

## image-test: boot raw (BIOS), qcow2 (UEFI) and vmdk (pvscsi+vmxnet3) to "shoal ready"
image-test: image
	$(call apt_ensure,$(IMAGE_TEST_PKGS),--no-install-recommends)
	packaging/image/boottest.sh all

## test-packaging: unit tests of the packaging tools and first-boot setup
test-packaging:
	$(GO) test -count=1 ./packaging/... ./appliance/firstboot/...

# --- xdp ---
.PHONY: bench-xdp test-xdp
## test-xdp: XDP program and multi-hosted IP tests (root: verifier, netns)
test-xdp:
	$(GO) test -count=1 ./bpf/ ./dataplane/multihost/

## bench-xdp: XDP per-packet cost vs a bare program, and netns throughput vs nftables (bridge; live XDP frames)
bench-xdp: deps
	SHOAL_BENCH=1 $(GO) test -count=1 -run '^TestXDPCost$$' -v ./bpf/
	SHOAL_BENCH=1 $(GO) test -count=1 -timeout 5m -run '^TestBench(Throughput|LiveFrames)$$' -v ./dataplane/multihost/

# --- harness ---
.PHONY: test-harness bench-failover
## test-harness: netns harness and keepalived peer self-tests (root for the netns parts)
test-harness: deps
	$(GO) test -count=1 -timeout 5m ./test/harness/... ./test/keepalived/

## bench-failover: failover/failback gaps, keepalived vs Shoal (root; ~6 min at the default 20 trials each; BENCH_FAILOVER_FLAGS=-trials 5 to shorten)
bench-failover: deps build
	$(GO) run ./test/cmd/benchfailover -shoal $(BIN) $(BENCH_FAILOVER_FLAGS)

# --- confsync ---
.PHONY: test-confsync bench-config
## test-confsync: versioned, signed, replicated config (in-process multi-node, TLS on 127.0.0.1, crash safety)
test-confsync:
	$(GO) test -count=1 ./confsync/

## bench-config: time from Propose on one node to applied on all 64 in-process nodes, p50/p99 (goal p99 <= 2 s)
bench-config:
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkConfigReplication64$$' -benchtime 1x ./confsync/

# --- dataplane ---
.PHONY: test-dataplane
## test-dataplane: reconcile loop on a fake kernel, ARP/NDP frames, and (root) real netlink + announcements in dpt-* namespaces
test-dataplane: deps
	$(GO) test -count=1 -race ./dataplane/

# --- gossip ---
.PHONY: test-gossip fuzz-gossip bench-gossip
## test-gossip: gossip unit, in-memory cluster and (as root) netns tests
test-gossip: deps
	$(GO) test -count=1 -timeout 5m ./gossip/...
## fuzz-gossip: fuzz the heartbeat decoder (seeds in gossip/wire/testdata)
fuzz-gossip:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./gossip/wire/
## bench-gossip: failure detection time at the 500 ms interval (p50/p99 ms)
bench-gossip:
	$(GO) test -run '^$$' -bench Detection -benchtime 40x ./gossip/

# --- e2e ---
.PHONY: test-e2e bench-detect e2e-deps e2e-root
# Tools the namespace harness calls besides iproute2 and nftables (sysctl is
# in procps, which minimal Debian installs lack).
E2E_DEB_PKGS := procps
e2e-deps: deps
	$(call apt_ensure,$(E2E_DEB_PKGS))

e2e-root:
	@[ "$$(id -u)" = 0 ] || { echo "needs root (it creates network namespaces): sudo make $(MAKECMDGOALS)"; exit 1; }

## demo: 3 nodes + a client in network namespaces: crash the owner of a traffic IP, watch it move and come back (root, < 1 min)
demo: e2e-root e2e-deps build
	$(GO) run ./test/cmd/demo -shoal $(BIN)

## demo-multi: the same LAN with one multi-hosted IP: connections spread over three nodes, a crash, the return without resetting the survivors' connections (root; < 1 min)
demo-multi: e2e-root e2e-deps build
	$(GO) run ./test/cmd/demo -multi -shoal $(BIN)

## test-e2e: end-to-end tests with real agents in network namespaces (root; builds its own binary; ~2 min)
test-e2e: e2e-root e2e-deps
	$(GO) test -count=1 -timeout 10m -v ./test/e2e/...

## bench-detect: failure detection time with 4 real agents (>= 20 crashes, p50/p99/max) and false removals under 5% loss (root, ~3 min)
bench-detect: e2e-root e2e-deps build
	$(GO) run ./test/cmd/benchdetect -shoal $(BIN) $(BENCH_DETECT_FLAGS)

# --- events ---
.PHONY: test-events fuzz-events
## test-events: event system tests: filters, serf env/stdin golden contracts, timeouts, concurrency, webhook, SMTP (< 1 min)
test-events:
	$(GO) test -count=1 -race ./appliance/events/
## fuzz-events: fuzz the serf handler parser, the event JSON and the query API decoder (seeds in appliance/events/testdata)
fuzz-events:
	$(GO) test -run '^$$' -fuzz FuzzParseSerfHandler -fuzztime 20s ./appliance/events/
	$(GO) test -run '^$$' -fuzz FuzzEventJSON -fuzztime 20s ./appliance/events/
	$(GO) test -run '^$$' -fuzz FuzzDecodeQueryRequest -fuzztime 20s ./appliance/events/

# --- config cli ---
.PHONY: test-config-cli bench-config-netns
## test-config-cli: shoal config show/apply/set/history/diff/rollback, init, discover, join (unit: fake admin socket, TLS join on 127.0.0.1) and, as root, the netns e2e with 3+1 agents
test-config-cli: deps build
	$(GO) test -count=1 ./appliance/clusterinit/
	$(GO) test -count=1 -run 'TestConfig|TestInitCommand|TestJoinCommand|TestDiscover' ./cmd/shoal/
	SHOAL_E2E_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 5m -run '^TestConfigCLI$$' ./test/e2e/

## bench-config-netns: time from a config POST on node0 to every one of 8 netns agents running it, p50/p99 over 25 edits (root; goal p99 <= 1 s)
bench-config-netns: deps build
	SHOAL_BENCH=1 SHOAL_E2E_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 10m -run '^TestBenchConfigNetns$$' -v ./test/e2e/

# --- chaos ---
# make chaos: the fault-injection run (root): 5 agents, random faults drawn
# from CHAOS_SEED (0 = random, printed) for CHAOS_DURATION; the report goes
# to stdout and out/chaos-report.txt; exit 1 on any invariant violation.
# make fuzz: every fuzz target in the repository, FUZZTIME each, in turn.
CHAOS_DURATION ?= 5m
CHAOS_SEED     ?= 0
FUZZTIME       ?= 60s
FUZZTIMEOUT    ?= 30m
.PHONY: chaos test-chaos test-hostile
## chaos: fault-injection run (root; CHAOS_DURATION=5m CHAOS_SEED=0 CHAOS_FLAGS=-faults crash,cut,...)
chaos: deps build
	@mkdir -p out
	$(GO) run ./test/cmd/chaos -shoal $(BIN) -duration $(CHAOS_DURATION) -seed $(CHAOS_SEED) -out out/chaos-report.txt $(CHAOS_FLAGS)

## test-chaos: oracle unit tests, the short fixed-seed chaos run and the crash-safety tests (root for the last two)
test-chaos: deps build
	SHOAL_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 10m -v ./test/chaos/...

## test-hostile: forged/replayed/foreign heartbeats, intruder agent, malformed ARP/NDP, refused admin API writes and restricted-node config pushes against real agents (root)
test-hostile: deps build
	SHOAL_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 5m -v ./test/hostile/

## fuzz: run every `func Fuzz` target of the repository for FUZZTIME each (default 60s; test timeout FUZZTIMEOUT, default 30m), then print a summary
fuzz:
	@set -o pipefail; pass=0; fail=0; summary=""; \
	for f in $$(grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . | grep -v -e '^./out/' -e '/testdata/' | sort); do \
		dir=$$(dirname $$f); \
		for fn in $$(grep -oE '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
			echo "=== fuzz $$dir $$fn ($(FUZZTIME))"; \
			start=$$(date +%s); \
			if $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -timeout $(FUZZTIMEOUT) $$dir/ 2>&1 | tail -n 20; then \
				pass=$$((pass+1)); res=ok; else fail=$$((fail+1)); res=FAIL; fi; \
			summary="$$summary\n  $$res $$dir $$fn ($$(( $$(date +%s) - start ))s)"; \
		done; \
	done; \
	printf "fuzz summary (FUZZTIME=$(FUZZTIME)): %d passed, %d failed$$summary\n" $$pass $$fail; \
	[ $$fail -eq 0 ]

# --- adminapi ---
.PHONY: test-adminapi
ADMINAPI_DEB_PKGS := chromium curl
## test-adminapi: HTTPS admin API (auth, node mTLS, cluster view, metrics, timelines), `shoal explain`, and the web page in headless Chromium (installed here)
test-adminapi:
	$(call apt_ensure,$(ADMINAPI_DEB_PKGS))
	SHOAL_REQUIRE_BROWSER=1 $(GO) test -count=1 ./appliance/adminapi/
	$(GO) test -count=1 -run '^TestExplainCommand$$' ./cmd/shoal/

# --- serf interop ---
.PHONY: test-serf-interop
## test-serf-interop: a stock serf agent (go install github.com/hashicorp/serf/cmd/serf@v0.11.0, cached in $(go env GOCACHE)/../shoal-serf) joins 3 netns Shoal agents as an [[observer]]: sees members, user events both ways, an unlisted agent refused (root; ~5 s after builds); plus the observer unit tests
test-serf-interop: e2e-deps build
	$(GO) test -count=1 -run 'Observer|SerfEncryptKey' ./gossip/ ./confsync/config/
	$(GO) test -count=1 -run '^TestKeysGossipKeyCommand$$' ./cmd/shoal/
	SHOAL_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 5m -v ./test/serfinterop/
