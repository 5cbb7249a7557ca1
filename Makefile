# netalias — two commands matter:
#   make demo   set up everything, run the centos-1/centos-2 demo, clean up
#               (make demo-cluster: the same across three hosts)
#   make test   vet, lint, unit tests with -race, integration tests as root
# Both install what is missing (Debian packages, Go modules) first.

SHELL     := /bin/bash
GO        ?= go
BIN       := bin
GOFLAGS_BUILD := -trimpath -ldflags "-s -w"
STATICCHECK_VERSION := v0.8.2
# Debian packages the demo and the tests use (the kernel tools, a resolver
# client, the reference systems the tests and benchmarks compare against).
APT_PACKAGES := iproute2 nftables iptables dnsutils iputils-ping jq \
	podman netavark aardvark-dns runc busybox-static dnsperf \
	containernetworking-plugins
INTEGRATION_TIMEOUT ?= 50m

.PHONY: all build etcd deps apt-deps go-deps demo demo-cluster test vet lint unit integration image bench clean

all: build

build: $(BIN)/netalias $(BIN)/netalias-full $(BIN)/coredns

# netalias is the light build (tag netalias_lite): connect, disconnect,
# run and the CNI plugin start in half the time without the etcd and
# Docker clients. For cluster mode (--etcd) and docker-plugin it runs
# netalias-full, the same command with everything linked in, from beside
# itself: install both in one directory.
LITE := -tags netalias_lite

$(BIN)/netalias: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) $(LITE) -o $@ ./cmd/netalias

$(BIN)/netalias-full: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/netalias

$(BIN)/coredns: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/coredns

# The etcd member for the cluster demo and tests (go.etcd.io/etcd/server/v3
# embed): its own binary, never linked into netalias or coredns, and not
# part of `build` (from an empty build cache it takes about 90 s here).
etcd: $(BIN)/netalias-etcd

$(BIN)/netalias-etcd: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/netalias-etcd

FORCE:

deps: apt-deps go-deps

# Installs only what is missing, so a prepared machine pays nothing.
apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "==> installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

go-deps:
	$(GO) mod download

demo: deps build
	./test/demo.sh $(BIN)

# Three hosts (namespaces) with etcd members, agents and CoreDNS; a name
# and a ping across hosts over VXLAN; a host dies and its name goes.
demo-cluster: deps build etcd
	./test/demo-cluster.sh $(BIN)

# The light build's own files (*_lite.go) are checked too.
vet:
	$(GO) vet ./...
	$(GO) vet $(LITE) ./agent/... ./cmd/netalias/

lint: vet
	GOFLAGS= $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	GOFLAGS= $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(LITE) ./agent/... ./cmd/netalias/

# Unit tests everywhere but test/ (which holds the end-to-end tests), and
# the agent as the light build has it (cmd/netalias's binary tests build
# both).
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/test$$')
	$(GO) test -race -count=1 $(LITE) ./agent/

# End-to-end tests: real binaries, namespaces, CoreDNS, Docker/Podman.
integration:
	$(GO) test -count=1 -timeout $(INTEGRATION_TIMEOUT) ./test/

test: deps lint unit integration

# The sidecar image: binaries built here, copied into a FROM scratch image,
# so no registry is needed.
image: build
	docker build -t netalias/sidecar:latest .

bench:
	./bench/agent.sh
	./bench/dns.sh
	./bench/cni.sh
	./bench/docker-driver.sh

clean:
	rm -rf $(BIN)
