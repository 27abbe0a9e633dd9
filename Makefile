# carapace — one command to run the daemon, one to test it. Both install what they need first.
SHELL := /bin/bash
CARGO ?= cargo
CONFIG ?= /etc/carapace/config.toml
export PATH := $(HOME)/.cargo/bin:$(PATH)

# carapace is built as one static, position-dependent executable. Every container's monitor is a
# re-exec of it: without a dynamic loader, libc and friends, each monitor maps one file, dirties no
# relocation or GOT pages and needs fewer page tables, and the idle daemon maps 1.2 MiB less.
# Naming the target (even the host's own) keeps these flags off build scripts and proc macros,
# which cannot be static. A plain `cargo build` still works and gives a dynamic binary.
HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
HOST_VAR := $(shell echo '$(HOST)' | tr 'a-z.-' 'A-Z__')
ifneq ($(HOST),)
export CARGO_BUILD_TARGET := $(HOST)
export CARGO_TARGET_$(HOST_VAR)_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static
endif
BIN := target/$(HOST)/release/carapace
# The daemon the end-to-end tests start: the debug build of the same static binary.
export CARAPACE_BIN := $(CURDIR)/target/$(HOST)/debug/carapace

.PHONY: run check build deps test-deps test lint fuzz-build install clean

## run: install the runtime packages, build the release binary, report what this node will and
## will not run (carapace check: it does not stop the start) and serve the CRI in the foreground
run: deps build
	[ -n "$$(ls /etc/cni/net.d 2>/dev/null)" ] || install -D -m 0644 deploy/cni/10-carapace-bridge.conflist /etc/cni/net.d/10-carapace-bridge.conflist
	./$(BIN) check $(if $(wildcard $(CONFIG)),--config $(CONFIG),) || echo "carapace check found a FAIL above: pods may not run until it is fixed"
	exec ./$(BIN) serve $(if $(wildcard $(CONFIG)),--config $(CONFIG),)

## check: every fact of this node that decides whether pods will run, each with its fix
check: build
	./$(BIN) check $(if $(wildcard $(CONFIG)),--config $(CONFIG),)

# The functions start-up and a kubelet's first calls run are laid out together (the list comes from
# bench/link-order.sh): the kernel maps text 64 KiB around each fault, so an idle daemon's RSS
# follows how many windows start-up touched, not how much code it ran. Only the final link takes
# the flags, so dependencies are not rebuilt for them.
build:
	$(CARGO) rustc --release --bin carapace -- \
	  -C link-arg=-Wl,--symbol-ordering-file=$(CURDIR)/src/link-order.txt \
	  -C link-arg=-Wl,--no-warn-symbol-ordering

deps:
	bash deploy/install-deps.sh run

test-deps:
	bash deploy/install-deps.sh test

## test: what CI runs — formatting, lints, the fuzz targets compiled, unit tests and end-to-end tests
## against the real daemon
test: test-deps lint fuzz-build
	$(CARGO) build --bin carapace
	set -o pipefail; $(CARGO) test --workspace --no-fail-fast 2>&1 | tee target/test.log
	@awk '/^test result: / {p += $$4; f += $$6} END {printf "tests: %d passed, %d failed\n", p, f}' target/test.log

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## fuzz-build: compile the fuzz targets (fuzz/, outside the workspace) without running them; to run
## them, fuzz/run.sh (docs/fuzzing.md). A dynamic build of their own: libFuzzer is C++.
fuzz-build:
	env -u CARGO_BUILD_TARGET -u CARGO_TARGET_$(HOST_VAR)_RUSTFLAGS CARGO_TARGET_DIR=$(CURDIR)/target/fuzz \
	  $(CARGO) build --manifest-path fuzz/Cargo.toml --bins

## install: put carapace on this node as a systemd service (configuration files already there are kept)
install: deps build
	install -D -m 0755 $(BIN) /usr/local/bin/carapace
	install -D -m 0644 deploy/carapace.service /etc/systemd/system/carapace.service
	install -D -m 0644 README.md /usr/local/share/doc/carapace/README.md
	[ -e /etc/carapace/config.toml ] || install -D -m 0644 deploy/config.toml /etc/carapace/config.toml
	[ -e /etc/crictl.yaml ] || install -D -m 0644 deploy/crictl.yaml /etc/crictl.yaml
	[ -n "$$(ls /etc/cni/net.d 2>/dev/null)" ] || install -D -m 0644 deploy/cni/10-carapace-bridge.conflist /etc/cni/net.d/10-carapace-bridge.conflist
	! command -v systemctl >/dev/null || systemctl daemon-reload

clean:
	$(CARGO) clean
