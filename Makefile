# xdpswitch. Every target that needs system packages installs them first
# (scripts/deps.sh, idempotent), so a fresh Debian machine needs only Go.

GO          ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.6.1
# Each fuzz target runs for a number of executions, about 10 s of them on
# these machines. A count, not a duration: with a -fuzztime duration, Go
# 1.26's fuzz coordinator can report its own deadline as a failure
# ("context deadline exceeded", golang/go#75804) with no failing input.
# `make fuzz FUZZTIME=60s` runs each target for a time instead.
FUZZTIME    ?=
# Go minimizes every input that finds new coverage for up to 60 s by
# default, reporting no executions meanwhile: in a 10 s run that is most of
# the time. A failing input is still saved; this only bounds how far it is
# shrunk first.
FUZZMINIMIZE ?= 2s
FUZZ_TARGETS := ./dataplane:FuzzValidate:200000 ./config:FuzzParse:100000 \
	./dhcpd:FuzzHandleBytes:200000 ./dataplane/vxlan:FuzzDecap:300000 \
	./dataplane/vxlan:FuzzEncapDecap:300000 ./bpf:FuzzParseUplinkMeta:300000 \
	./dataplane/frag:FuzzParse:600000 ./dataplane/frag:FuzzReassembler:50000 \
	./dataplane/frag:FuzzTracker:40000 ./policy:FuzzMatch:40000 \
	./policy:FuzzPacketFromFrame:500000

.PHONY: all deps generate build test unit fuzz lint demo demo-netns clean

all: build

# System packages, and the Debian kernel the test and demo guests boot
# (cached in build/guest; fetched here, outside any test's namespace).
deps:
	@scripts/deps.sh
	@scripts/guest-kernel.sh build/guest/kernel

# Rebuild the BPF objects and their Go bindings (committed, so that a
# plain build needs no clang).
generate: deps
	$(GO) generate ./bpf/

build:
	$(GO) build -o bin/ ./cmd/...

# The tests build their own namespaces, devices and guests, so they run as
# root. One package at a time: the VM tests want both cores.
test: deps lint unit fuzz

unit:
	$(GO) test -race -count=1 -p 1 -timeout 40m ./...

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; n=$${rest#*:}; \
		budget=$${n}x; [ -z "$(FUZZTIME)" ] || budget=$(FUZZTIME); \
		echo "fuzz $$pkg $$fn for $$budget"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $$budget -fuzzminimizetime $(FUZZMINIMIZE) $$pkg || exit 1; \
	done

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Two QEMU guests attached to the switch with vmctl while they run.
demo: deps build
	$(GO) run ./internal/demo

# The same story with network namespaces instead of guests: seconds, not
# minutes.
demo-netns: deps build
	scripts/demo.sh

clean:
	rm -rf bin build

# Throughput against the Linux bridge, an XDP devmap redirect and Open
# vSwitch (afxdp ports), in namespaces of its own: about 25 minutes, results
# in bench/results/. bench-quick is the seconds-long sanity pass.
.PHONY: bench bench-quick
bench:
	@scripts/deps.sh
	@dpkg-query -W -f='$${Status}' openvswitch-switch 2>/dev/null | grep -q "ok installed" || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openvswitch-switch >/dev/null)
	nice -n -15 $(GO) run ./bench/cmd/xsbench -out bench/results

bench-quick:
	@scripts/deps.sh
	nice -n -15 $(GO) run ./bench/cmd/xsbench -quick -out bench/results/quick
