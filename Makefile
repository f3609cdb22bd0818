# Thin wrapper around the meson build; the real logic lives in scripts/ and
# meson.build. Targets:
#   make check   host setup, fetch sources, build everything, run all tests
#   make demo    host setup, build, then the guest demo (tests/guest/demo.sh)
#   make bench   host setup, build, run the benchmark suite
#   make soak    build, then the guest soak test for SOAK_SECONDS (default 1200)
#   make build   setup + fetch + compile only
#   make clean   remove $(BUILD) (downloads and ccache in the cache dir stay)
# Variables: BUILD (build dir, default build), MESON, MESON_SETUP_ARGS.

BUILD ?= build
# Debian's meson (>= 1.5 from bookworm-backports) run by Debian's python,
# never a pyenv/venv python that may come first on PATH.
MESON ?= /usr/bin/python3 /usr/bin/meson
MESON_SETUP_ARGS ?=
SHELL := /bin/bash

.PHONY: all setup fetch configure build check demo bench soak clean

all: build

setup:
	scripts/setup-host.sh

# Every scripts/fetch-*.sh takes no arguments, downloads into the cache dir
# only what is missing, and prints its result dir on stdout.
fetch: setup
	@set -e; for f in scripts/fetch-*.sh; do "$$f" >/dev/null; done

configure: fetch
	@if [ ! -f "$(BUILD)/build.ninja" ]; then \
	    $(MESON) setup $(if $(wildcard $(BUILD)/meson-private/coredata.dat),--reconfigure) \
	        $(MESON_SETUP_ARGS) "$(BUILD)"; \
	fi

build: configure
	$(MESON) compile -C "$(BUILD)"

check: build
	$(MESON) test -C "$(BUILD)" --print-errorlogs

demo: build
	@if [ -x tests/guest/demo.sh ]; then \
	    tests/guest/demo.sh "$(BUILD)"; \
	else \
	    echo "make demo: tests/guest/demo.sh does not exist yet (the guest demo is not written)." >&2; \
	    exit 1; \
	fi

# A build dir configured before bench/meson.build existed does not know it
# (the top-level meson.build tests fs.exists): reconfigure once.  The
# engine benchmark rewrites its section of docs/performance.md; then
# bench/vms.py (TCG guests, about half an hour) the VM section and the
# plots in docs/perf/.  It boots guests: on a shared machine run it as
# `flock /tmp/vmmbib-guest.lock make bench`.
bench: build
	@if [ -f bench/meson.build ] && \
	    ! $(MESON) test -C "$(BUILD)" --benchmark --list 2>/dev/null | grep -q .; then \
	    echo "make bench: $(BUILD) predates bench/meson.build; reconfiguring" >&2; \
	    $(MESON) setup --reconfigure $(MESON_SETUP_ARGS) "$(BUILD)"; \
	fi
	@if $(MESON) test -C "$(BUILD)" --benchmark --list 2>/dev/null | grep -q .; then \
	    $(MESON) test -C "$(BUILD)" --benchmark --print-errorlogs; \
	else \
	    echo "make bench: no benchmarks are defined yet (meson benchmark() in bench/)." >&2; \
	fi

# tests/guest/soak.sh for longer than make check's minute (docs/security.md).
# It boots a guest: on a shared machine run it as
# `flock /tmp/vmmbib-guest.lock make soak`.  The guest's console log, the
# script's output (results.log) and QEMU's log stay in SOAK_LOG_DIR, pass
# or fail; the script reports its progress there every minute.  SOAK_VMS=N
# (2 to 4): N guests whose devices join one vmmbibd, each running the soak
# and traffic to every other VM (tests/guest/run-two-vms.py).
SOAK_SECONDS ?= 1200
SOAK_LOG_DIR ?= $(BUILD)/soak-log
SOAK_VMS ?= 1
SOAK_ARGS = --qemu "$(BUILD)/qemu/qemu-system-x86_64" --log-dir "$(SOAK_LOG_DIR)" \
	    --kernel "$(BUILD)/guest/vmlinuz" --initrd "$(BUILD)/guest/initramfs.cpio.zst" \
	    --script tests/guest/soak.sh \
	    --file vmmbib-integrity="$(BUILD)/guest-driver/provider/vmmbib-integrity" \
	    --env VMMBIB_SOAK_SECONDS=$(SOAK_SECONDS) --timeout $$(($(SOAK_SECONDS) + 600)) \
	    --expect-stat 'error_completions == bad_doorbells == 0'
soak: build
	@echo "make soak: $(SOAK_SECONDS) s, $(SOAK_VMS) VM(s); logs in $(SOAK_LOG_DIR)"
	@if [ "$(SOAK_VMS)" -gt 1 ]; then \
	    set -x; tests/guest/run-two-vms.py --vms $(SOAK_VMS) \
	        --vmmbibd "$(BUILD)/host-lib/daemon/vmmbibd" $(SOAK_ARGS); \
	else \
	    set -x; tests/guest/run-guest-test.py $(SOAK_ARGS); \
	fi

clean:
	rm -rf "$(BUILD)"
