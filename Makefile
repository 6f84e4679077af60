# forksafe - a uWSGI plugin that delivers fork lifecycle events to handlers.
#
#   make          build forksafe_plugin.so against the installed uWSGI
#   make run      serve the example app with forksafe on 127.0.0.1:8080
#   make run-gunicorn  the same app and production.ini under gunicorn
#   make run-celery    the same app and production.ini under a Celery worker
#   make check    every test suite; ends with "N passed, N failed"
#   make install  plugin, header, forksafe.pc, libforksafe (PREFIX, DESTDIR, PLUGINDIR, ...)
#   make deb      Debian packages in build/deb/ (dpkg-buildpackage on a copy of the tree)
#   make embedded a monolithic uWSGI with python and forksafe built in
#   make fuzz     each libFuzzer harness for FUZZ_SECONDS (tests/fuzz)
#   make check-stress  the suites that start servers, STRESS_ROUNDS times under load
#   make check-matrix  the server suites on Debian 13's and sid's uWSGI and Python

PYTHON   ?= /usr/bin/python3
UWSGI    ?= uwsgi
CC       ?= gcc
BUILD    := build

WARNINGS := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
# CPPFLAGS/CFLAGS/LDFLAGS from the environment come last, so a package build's
# hardening flags (dpkg-buildflags) apply.
BASE_CFLAGS := -std=gnu11 -g -O2 -fPIC $(WARNINGS) -Iinclude -Ilib $(CPPFLAGS) $(CFLAGS)
JANSSON_CFLAGS = $(shell pkg-config --cflags jansson 2>/dev/null)
JANSSON_LIBS   = $(shell pkg-config --libs jansson 2>/dev/null || echo -ljansson)
CHECK_LIBS     = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck)
SANITIZE := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

LIB_SRC   := $(sort $(wildcard lib/*.c))
LIB_HDR   := include/forksafe.h include/forksafe_host.h $(wildcard lib/*.h)
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
ASAN_OBJ  := $(LIB_SRC:%.c=$(BUILD)/asan/%.o)
UNIT_SRC  := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
ASAN_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/asan/tests/%)
TOOL_SRC  := $(sort $(wildcard tests/tools/*.c))
TOOL_BIN  := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
EXAMPLE_SO := $(patsubst examples/native_handler/%.c,$(BUILD)/examples/%.so,$(wildcard examples/native_handler/*.c))
FIXTURE_SRC := $(sort $(wildcard tests/fixtures/*.c))
FIXTURE_SO  := $(FIXTURE_SRC:tests/fixtures/%.c=$(BUILD)/fixtures/%.so)

# uWSGI's header and flags come from the installed binary, so the plugin is
# always built for exactly the uWSGI that will load it.
UWSGI_H  := $(BUILD)/uwsgi/uwsgi.h
PLUGIN   := forksafe_plugin.so

.PHONY: bench all deps run run-gunicorn run-celery check unit asan valgrind integration differential python fixtures tools clean format-check
.PHONY: install uninstall deb package fresh structure
.PHONY: embedded embedded-check fuzz fuzz-smoke fuzz-replay check-stress check-matrix compat-table

all: deps
	@$(MAKE) --no-print-directory $(PLUGIN) $(LIBFORKSAFE) $(EXAMPLE_SO)

deps:
	@PYTHON=$(PYTHON) scripts/deps.sh

$(UWSGI_H):
	@mkdir -p $(dir $@)
	$(UWSGI) --dot-h > $@.tmp && mv $@.tmp $@

$(BUILD)/uwsgi/cflags:
	@mkdir -p $(dir $@)
	$(UWSGI) --cflags | sed 's/-Wformat //; s/-O2//g' > $@.tmp && mv $@.tmp $@

$(BUILD)/%.o: %.c $(LIB_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(JANSSON_CFLAGS) -fvisibility=hidden -c $< -o $@

$(BUILD)/asan/%.o: %.c $(LIB_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(JANSSON_CFLAGS) $(SANITIZE) -O1 -c $< -o $@

# The uWSGI glue (uwsgi/) is compiled with uWSGI's own flags, which its
# header needs; uwsgi.h itself is not clean under our warnings.
GLUE_SRC := $(sort $(wildcard uwsgi/*.c))
GLUE_HDR := uwsgi/glue.h
GLUE_OBJ := $(GLUE_SRC:%.c=$(BUILD)/plugin/%.o)
GLUE_CFLAGS = $(BASE_CFLAGS) -Iuwsgi -Wno-strict-prototypes -Wno-unused-parameter -Wno-shadow \
	$(JANSSON_CFLAGS) -fvisibility=hidden

$(BUILD)/plugin/uwsgi/%.o: uwsgi/%.c $(GLUE_HDR) $(LIB_HDR) $(UWSGI_H) $(BUILD)/uwsgi/cflags
	@mkdir -p $(dir $@)
	$(CC) $$(cat $(BUILD)/uwsgi/cflags) -I$(BUILD)/uwsgi $(GLUE_CFLAGS) -c $< -o $@

$(PLUGIN): $(GLUE_OBJ) $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(JANSSON_LIBS) -ldl

# The core alone, for other servers' adapters (ctypes) and native tools:
# exports only what include/forksafe.h and forksafe_host.h declare.
LIBFORKSAFE := $(BUILD)/libforksafe.so
$(LIBFORKSAFE): $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,libforksafe.so.0 -o $@ $^ $(JANSSON_LIBS) -ldl

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJ) tests/unit/unit.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(JANSSON_CFLAGS) -Wno-missing-prototypes -rdynamic $< $(LIB_OBJ) \
	    -o $@ $(CHECK_LIBS) $(JANSSON_LIBS) -ldl -lm

$(BUILD)/asan/tests/%: tests/unit/%.c $(ASAN_OBJ) tests/unit/unit.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(JANSSON_CFLAGS) $(SANITIZE) -O1 -Wno-missing-prototypes -rdynamic $< \
	    $(ASAN_OBJ) -o $@ $(CHECK_LIBS) $(JANSSON_LIBS) -ldl -lm

$(BUILD)/fixtures/%.so: tests/fixtures/%.c include/forksafe.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -shared -o $@ $<

# The example's own Makefile, as a handler author would use it: the header
# comes from `pkg-config --cflags forksafe`, here the uninstalled forksafe.pc
# (first on PKG_CONFIG_PATH, so an installed forksafe never shadows the tree).
$(BUILD)/examples/%.so: examples/native_handler/%.c examples/native_handler/Makefile \
		include/forksafe.h $(BUILD)/pkgconfig/forksafe.pc
	@mkdir -p $(dir $@)
	PKG_CONFIG_PATH=$(CURDIR)/$(BUILD)/pkgconfig$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH)) \
	    $(MAKE) --no-print-directory -C examples/native_handler OUT=$(CURDIR)/$(BUILD)/examples \
	    CC="$(CC)" CFLAGS="-std=gnu11 -g -O2 $(WARNINGS) $(CPPFLAGS) $(CFLAGS)" $(CURDIR)/$@

# forksafe.pc: prefix, includedir, plugindir and version filled in.
FORKSAFE_VERSION := $(shell sed -n 's/^\#define FORKSAFE_VERSION "\(.*\)"$$/\1/p' include/forksafe.h)
forksafe_pc = sed -e 's|@prefix@|$(1)|' -e 's|@includedir@|$(2)|' -e 's|@plugindir@|$(3)|' \
	-e 's|@version@|$(FORKSAFE_VERSION)|' -e '/^\#/d' forksafe.pc.in

# Uninstalled: in-tree builds use pkg-config too (PKG_CONFIG_PATH=build/pkgconfig).
$(BUILD)/pkgconfig/forksafe.pc: forksafe.pc.in include/forksafe.h
	@mkdir -p $(dir $@)
	$(call forksafe_pc,$(CURDIR),$(CURDIR)/include,$(CURDIR)) >$@.tmp && mv $@.tmp $@

# The plugin built for this uWSGI's version but without its UWSGI_SSL option:
# a layout that is not the running uWSGI's (tests/integration/test_mismatch.py).
OTHER_LAYOUT := $(BUILD)/fixtures/other-layout/forksafe_plugin.so
OTHER_LAYOUT_OBJ := $(GLUE_SRC:uwsgi/%.c=$(BUILD)/fixtures/other-layout/%.o)
$(BUILD)/fixtures/other-layout/%.o: uwsgi/%.c $(GLUE_HDR) $(LIB_HDR) $(UWSGI_H) $(BUILD)/uwsgi/cflags
	@mkdir -p $(dir $@)
	$(CC) $$(sed 's/-DUWSGI_SSL\b//' $(BUILD)/uwsgi/cflags) -I$(BUILD)/uwsgi $(GLUE_CFLAGS) -c $< -o $@
$(OTHER_LAYOUT): $(OTHER_LAYOUT_OBJ) $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(JANSSON_LIBS) -ldl

# A uWSGI plugin that crashes every mule before forksafe's post_fork runs.
CRASHER := $(BUILD)/fixtures/uwsgi/crasher_plugin.so
$(CRASHER): tests/fixtures/uwsgi/crasher_plugin.c $(UWSGI_H) $(BUILD)/uwsgi/cflags
	@mkdir -p $(dir $@)
	$(CC) $$(cat $(BUILD)/uwsgi/cflags) -I$(BUILD)/uwsgi $(BASE_CFLAGS) -Wno-unused-parameter \
	    -Wno-strict-prototypes -shared -o $@ $<

fixtures: $(FIXTURE_SO) $(EXAMPLE_SO) $(OTHER_LAYOUT) $(CRASHER)

# Small programs the Python-driven tests call (e.g. the settings dumper that
# the PasteDeploy differential test compares against).
$(BUILD)/tools/%: tests/tools/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(JANSSON_CFLAGS) -Wno-missing-prototypes -rdynamic $< $(LIB_OBJ) \
	    -o $@ $(JANSSON_LIBS) -ldl -lm

tools: $(TOOL_BIN)

# -rdynamic: dispatch_bench subscribes its own handlers as symbol:NAME.
BENCH_C := $(patsubst bench/%.c,$(BUILD)/bench/%,$(sort $(wildcard bench/*.c)))
$(BUILD)/bench/%: bench/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(JANSSON_CFLAGS) -Wno-missing-prototypes -rdynamic $< $(LIB_OBJ) \
	    -o $@ $(JANSSON_LIBS) -ldl -lm

# The spawn benchmark's native handler (bench/apps/note_pid.c).
BENCH_SO := $(BUILD)/bench/note_pid.so
$(BUILD)/bench/%.so: bench/apps/%.c include/forksafe.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -fPIC -shared -Iinclude $< -o $@

# Benchmarks print ratios against a baseline measured in the same run.
# dispatch_bench runs itself under callgrind; no_parse_per_fork.py traces a
# real uWSGI with strace.
bench: deps $(BENCH_C) $(PLUGIN) $(EXAMPLE_SO)
	@for b in $(BENCH_C); do echo "== $$b"; $$b || exit 1; echo; done
	@echo "== bench/no_parse_per_fork.py"; UWSGI=$(UWSGI) $(PYTHON) bench/no_parse_per_fork.py

# Against a real uWSGI, every variant in one run (bench/*.py): throughput
# (wrk), spawn -> ready latency and respawn rate, memory, worker memory
# with recipe:gc-freeze vs without.  Each prints its table;
# build/bench/results.md holds the latest ones.
BENCH_PY := throughput spawn memory crash_loop gc_freeze fast_respawn
.PHONY: bench-py
bench: bench-py
bench-py: deps $(PLUGIN) $(EXAMPLE_SO) $(BENCH_SO) $(CRASHER)
	@for b in $(BENCH_PY); do $(PYTHON) bench/$$b.py || exit 1; done

# libFuzzer harnesses: lib/ compiled again with clang, instrumented for
# coverage and sanitizers, apart from the gcc build.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS  := -std=gnu11 -g -O1 $(WARNINGS) -Iinclude -Ilib -fno-omit-frame-pointer \
	-fno-sanitize-recover=all
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_OBJ := $(LIB_SRC:lib/%.c=$(BUILD)/fuzz/lib/%.o)

$(FUZZ_OBJ): $(BUILD)/fuzz/lib/%.o: lib/%.c $(LIB_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(JANSSON_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined \
	    -c $< -o $@

$(FUZZ_BIN): $(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(JANSSON_CFLAGS) -fsanitize=fuzzer,address,undefined $< \
	    $(FUZZ_OBJ) -o $@ $(JANSSON_LIBS) -ldl -lm

# New inputs worth keeping are merged into build/fuzz/corpus, never into git.
fuzz: deps $(FUZZ_BIN)
	@FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh long $(FUZZ_BIN)

# What make fuzz kept, loaded by PasteDeploy too: any disagreement fails.
fuzz-replay: deps tools
	$(PYTHON) tests/fuzz/replay_pastedeploy.py

# The short round `make check` runs: regressions replayed, seeds mutated.
fuzz-smoke: deps $(FUZZ_BIN)
	@PYTHON=$(PYTHON) tests/run_suite.sh fuzz $(FUZZ_BIN)

PREFIX       ?= /usr/local
INCLUDEDIR   ?= $(PREFIX)/include
LIBDIR       ?= $(PREFIX)/lib
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
# `plugins = forksafe` (no plugin-dir) looks only in the directory compiled
# into uWSGI, so that is the default whatever PREFIX is.
PLUGINDIR    ?= $(or $(shell $(UWSGI) --cflags 2>/dev/null | grep -o 'UWSGI_PLUGIN_DIR=[^ ]*' \
	| tr -d '"\\' | cut -d= -f2),/usr/lib/uwsgi/plugins)

# No deps here: debian/rules reuses this (dh_auto_install) with the tools
# from Build-Depends, as a user who is not root.
install: $(PLUGIN) $(LIBFORKSAFE)
	install -d $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) \
	    $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0644 $(PLUGIN) $(DESTDIR)$(PLUGINDIR)/$(PLUGIN)
	install -m 0644 include/forksafe.h $(DESTDIR)$(INCLUDEDIR)/forksafe.h
	install -m 0644 include/forksafe_host.h $(DESTDIR)$(INCLUDEDIR)/forksafe_host.h
	install -m 0644 $(LIBFORKSAFE) $(DESTDIR)$(LIBDIR)/libforksafe.so.$(FORKSAFE_VERSION)
	ln -sf libforksafe.so.$(FORKSAFE_VERSION) $(DESTDIR)$(LIBDIR)/libforksafe.so.0
	$(call forksafe_pc,$(PREFIX),$(INCLUDEDIR),$(PLUGINDIR)) \
	    >$(DESTDIR)$(PKGCONFIGDIR)/forksafe.pc

uninstall:
	rm -f $(DESTDIR)$(PLUGINDIR)/$(PLUGIN) $(DESTDIR)$(INCLUDEDIR)/forksafe.h \
	    $(DESTDIR)$(INCLUDEDIR)/forksafe_host.h \
	    $(DESTDIR)$(LIBDIR)/libforksafe.so.$(FORKSAFE_VERSION) $(DESTDIR)$(LIBDIR)/libforksafe.so.0 \
	    $(DESTDIR)$(PKGCONFIGDIR)/forksafe.pc

# Builds from a copy of the working tree's files (tracked and untracked, not
# ignored; outside git, everything but build/) in build/deb/src, so dpkg-buildpackage writes its .debs into
# build/deb/ and never into the repository's parent directory.
DEB_DIR := $(BUILD)/deb
deb: deps
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/src
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	    git ls-files -z --cached --others --exclude-standard; \
	else \
	    find . \( -path ./build -o -path ./.git \) -prune -o \( -type f -o -type l \) -print0; \
	fi | tar -c --null --ignore-failed-read -T - -f - | tar -x -C $(DEB_DIR)/src
	# Debian's python3.X builds the Python packages (pybuild runs `python3.X -m
	# build`), not one a version manager put first on PATH.
	cd $(DEB_DIR)/src && PATH=/usr/sbin:/usr/bin:/sbin:/bin:$$PATH dpkg-buildpackage -us -uc -b
	@if command -v lintian >/dev/null; then echo "lintian:"; lintian $(DEB_DIR)/*.changes; fi
	@echo "built:"; ls -1 $(DEB_DIR)/*.deb

package:
	@PYTHON=$(PYTHON) tests/run_suite.sh package tests/package

# Everything the example's production.ini loads: the plugin and the
# event_log native handler its [forksafe] section subscribes.
# The port is checked first: a newcomer learns it is taken before a build.
run: deps
	@$(MAKE) --no-print-directory -C examples/pyramid_sqlalchemy port-free PYTHON=$(PYTHON)
	@$(MAKE) --no-print-directory $(PLUGIN) $(EXAMPLE_SO)
	@$(MAKE) --no-print-directory -C examples/pyramid_sqlalchemy run PYTHON=$(PYTHON) UWSGI=$(UWSGI)

# The same example and production.ini under gunicorn (gunicorn.conf.py):
# the adapters drive build/libforksafe.so.
run-gunicorn: deps
	@$(MAKE) --no-print-directory -C examples/pyramid_sqlalchemy port-free PYTHON=$(PYTHON)
	@$(MAKE) --no-print-directory $(LIBFORKSAFE) $(EXAMPLE_SO)
	@$(MAKE) --no-print-directory -C examples/pyramid_sqlalchemy run-gunicorn PYTHON=$(PYTHON)

# The same example and production.ini under a Celery worker, with a
# private redis-server broker, and 8 tasks asked of it (run-celery.sh).
run-celery: deps
	@$(MAKE) --no-print-directory $(LIBFORKSAFE) $(EXAMPLE_SO)
	@$(MAKE) --no-print-directory -C examples/pyramid_sqlalchemy run-celery PYTHON=$(PYTHON)

unit: $(UNIT_BIN) fixtures
	@PYTHON=$(PYTHON) tests/run_suite.sh unit $(UNIT_BIN)

asan: $(ASAN_BIN) fixtures
	@PYTHON=$(PYTHON) tests/run_suite.sh asan $(ASAN_BIN)

python:
	@PYTHON=$(PYTHON) tests/run_suite.sh python python/tests

differential: tools
	@PYTHON=$(PYTHON) tests/run_suite.sh differential tests/differential

valgrind: $(UNIT_BIN) fixtures
	@PYTHON=$(PYTHON) tests/run_suite.sh valgrind $(UNIT_BIN)

integration: $(PLUGIN) $(LIBFORKSAFE) fixtures
	@PYTHON=$(PYTHON) tests/run_suite.sh integration tests/integration

# The README's `make run` on a clone of the committed HEAD (tests/fresh).
fresh: deps
	@PYTHON=$(PYTHON) tests/run_suite.sh fresh tests/fresh

# build/embedded/uwsgi from Debian's uWSGI source package, rebuilt only when
# forksafe changed (scripts/embedded.sh; profile buildconf/forksafe-embedded.ini).
embedded: deps
	@PYTHON=$(PYTHON) CC=$(CC) scripts/embedded.sh

# The lifecycle tests and symbol: handlers against that binary.
embedded-check: embedded fixtures
	@PYTHON=$(PYTHON) tests/run_suite.sh embedded tests/embedded

check: deps
	@$(MAKE) --no-print-directory all fixtures tools $(UNIT_BIN) $(ASAN_BIN)
	@$(MAKE) --no-print-directory $(FUZZ_BIN) || echo "the fuzz harnesses failed to build"
	@rm -f $(BUILD)/results.txt $(BUILD)/failures.txt
	@PYTHON=$(PYTHON) tests/run_suite.sh unit $(UNIT_BIN) || true
	@PYTHON=$(PYTHON) tests/run_suite.sh asan $(ASAN_BIN) || true
	@PYTHON=$(PYTHON) tests/run_suite.sh fuzz $(FUZZ_BIN) || true
	@PYTHON=$(PYTHON) tests/run_suite.sh valgrind $(UNIT_BIN) || true
	@PYTHON=$(PYTHON) tests/run_suite.sh differential tests/differential || true
	@PYTHON=$(PYTHON) tests/run_suite.sh python python/tests || true
	@PYTHON=$(PYTHON) tests/run_suite.sh integration tests/integration || true
	@PYTHON=$(PYTHON) tests/run_suite.sh fresh tests/fresh || true
	@PYTHON=$(PYTHON) tests/run_suite.sh docs tests/docs || true
	@PYTHON=$(PYTHON) tests/run_suite.sh structure tests/structure || true
	@$(MAKE) --no-print-directory deb >$(BUILD)/deb.log 2>&1 || echo "make deb failed: see $(BUILD)/deb.log"
	@PYTHON=$(PYTHON) tests/run_suite.sh package tests/package || true
	@PYTHON=$(PYTHON) CC=$(CC) scripts/embedded.sh || true
	@PYTHON=$(PYTHON) tests/run_suite.sh embedded tests/embedded || true
	@PYTHON=$(PYTHON) $(PYTHON) tests/matrix/matrix.py || true
	@tests/format_check.sh || true
	@tests/summarize.sh $(BUILD)/results.txt

# Proof that the suites hold on a busy machine (tests/stress/): the suites
# that start servers, STRESS_ROUNDS times back to back, while a bounded load
# generator keeps every core busy; each failure named with its round.
# STRESS_FULL=1: each round is a whole `make check`; STRESS_IDLE=1: no load.
STRESS_ROUNDS ?= 3
STRESS_SUITES ?= integration python embedded
check-stress: deps
	@$(MAKE) --no-print-directory all fixtures tools
	@$(if $(or $(STRESS_FULL),$(filter embedded,$(STRESS_SUITES))),PYTHON=$(PYTHON) CC=$(CC) scripts/embedded.sh)
	@PYTHON=$(PYTHON) STRESS_SUITES="$(STRESS_SUITES)" $(PYTHON) tests/stress/run.py \
	    --rounds $(STRESS_ROUNDS) $(if $(STRESS_FULL),--full) $(if $(STRESS_IDLE),--idle)

# The version matrix (tests/matrix/matrix.py): Debian 13's and sid's own
# uWSGI and Python in debootstrap roots under build/matrix, kept between
# runs; MATRIX_ROWS=debian13 (or sid) runs one.  Part of `make check`.
MATRIX_ROWS ?= debian13,sid
check-matrix: deps
	@$(MAKE) --no-print-directory $(PLUGIN) $(LIBFORKSAFE) fixtures
	@rm -f $(BUILD)/results.txt $(BUILD)/failures.txt
	@PYTHON=$(PYTHON) $(PYTHON) tests/matrix/matrix.py --rows $(MATRIX_ROWS)
	@tests/summarize.sh $(BUILD)/results.txt

# docs/compatibility.md from the matrix's last results (build/matrix).
compat-table:
	@$(PYTHON) tests/matrix/compat_table.py --write

# The tree's shape: no call circle between C files, an opening comment in
# every source, no file outgrowing a room (tests/structure).
structure: all
	@PYTHON=$(PYTHON) tests/run_suite.sh structure tests/structure

format-check:
	@rm -f $(BUILD)/results.txt
	@tests/format_check.sh

clean:
	rm -rf $(BUILD) $(PLUGIN)
