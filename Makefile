# crius: the two set-up commands on a fresh Debian machine, as root.
#   make run   installs run-time deps if missing, builds release binaries, starts crius
#   make test  installs every test dependency and runs the whole suite
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local

RUN_PKGS  := runc containernetworking-plugins protobuf-compiler iproute2
TEST_PKGS := $(RUN_PKGS) crun containerd busybox-static docker-registry apache2-utils openssl \
             libseccomp-dev pkg-config iptables util-linux procps psmisc

.PHONY: run test build release deps-run deps-test youki lint unit integration bench bench-images install

# Install the Debian packages in $(1) that are missing; `apt-get update` only when needed.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps-run:
	$(call apt_install,$(RUN_PKGS))

# youki 0.7 has no default features: without them it builds without cgroup support.
youki:
	@command -v youki >/dev/null || $(CARGO) install --locked youki --features v1,v2,systemd,seccomp

deps-test:
	$(call apt_install,$(TEST_PKGS))
	@$(MAKE) --no-print-directory youki

release: deps-run
	$(CARGO) build --release --bins

run: release
	exec ./target/release/crius $(if $(CONFIG),--config $(CONFIG))

build:
	$(CARGO) build --workspace --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Unit and integration tests (integration tests start real runc, crun, youki, containerd).
test: deps-test build lint
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=2

# Benchmarks: release builds, not part of `make test`'s pass/fail.
bench: deps-test
	$(CARGO) build --release --workspace --bins
	./target/release/shim-bench

# Cold image pulls over CRI, crius vs containerd 1.6, from a local docker-registry.
bench-images: deps-test
	$(CARGO) build --release --workspace --bins
	./target/release/image-bench

install: release
	install -m 0755 target/release/crius target/release/containerd-shim-crius-v2 $(PREFIX)/bin/
