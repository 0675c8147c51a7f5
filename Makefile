# acme_smime build, tests and CI plumbing (GNU make).
#
#   make          build the library with gcc and clang, and the POSIX examples
#   make deps     install the Debian packages needed (tests/install_deps.sh)
#   make test     deps + strict builds + unit tests (gcc, clang ASan/UBSan)
#                 + a short deterministic libFuzzer run of every fuzz target
#   make fuzz-build   build the libFuzzer targets tests/fuzz/fuzz_*.c
#   make fuzz-smoke   run each target FUZZ_SECONDS (default 10) from its seeds
#   make fuzz         the same, FUZZ_SECONDS default 300
#   make fuzz-long    the same, FUZZ_SECONDS default 3600, keeping each
#                     target's corpus in build/fuzz/work/ from run to run
#   make demo     deps + build + one RFC 8823 enrollment against the local
#                 test CA and mail servers, printing the certificate
#   make size     Cortex-M4 size of acme_smime.o and of a firmware image
#   make ram, make cpu    RAM/stack/heap, instructions of an RFC 8823 enrollment
#   make bench-pebble     our CLI vs uacme and lego on Pebble
#   make bench    all of the above in one table (tests/measure/README.md)
#   make clean    remove build/

GCC   ?= gcc
CLANG ?= clang

BUILD := build
LIBS  := -lbearssl

# The library (and the examples) compile with the full strict set.
STRICT_CFLAGS := -std=c99 -Wall -Wextra -Wpedantic -Werror -Wshadow \
	-Wstrict-prototypes -Wmissing-prototypes -Wcast-qual -Wpointer-arith \
	-Wundef -Wformat=2 -O2 -g

# Unit tests: each tests/unit/test_X.c includes acme_smime.c itself and is
# built alone (not linked with acme_smime.o). Relaxed warnings for cmocka.
# -std=c99 hides POSIX names: a test that needs them defines
# _POSIX_C_SOURCE at its top, before any #include.
TEST_CFLAGS  := -std=c99 -Wall -Wextra -Werror -O1 -g -I.
TEST_LIBS    := $(LIBS) -lcmocka
ASAN_FLAGS   := -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer

LIB_SRC  := acme_smime.c
LIB_DEPS := acme_smime.c acme_smime.h

EXAMPLE_SRCS := $(wildcard examples/posix/*.c)
EXAMPLES     := $(patsubst examples/posix/%.c,$(BUILD)/%,$(EXAMPLE_SRCS))

TEST_SRCS  := $(wildcard tests/unit/test_*.c)
TEST_HDRS  := $(wildcard tests/unit/*.h)
TEST_NAMES := $(patsubst tests/unit/%.c,%,$(TEST_SRCS))
TESTS_GCC  := $(addprefix $(BUILD)/test-gcc/,$(TEST_NAMES))
TESTS_ASAN := $(addprefix $(BUILD)/test-asan/,$(TEST_NAMES))

# libFuzzer targets: each tests/fuzz/fuzz_X.c includes acme_smime.c itself
# (to reach the static parsers) and is built alone. Seeds are in
# tests/fuzz/corpus/fuzz_X/, crash reproducers kept as seeds in
# tests/fuzz/regressions/fuzz_X/; tests/fuzz/run_fuzz.sh runs them on a
# copy under build/fuzz/work/. FUZZ_TARGETS picks a subset.
FUZZ_CC      ?= $(shell command -v clang-14 >/dev/null 2>&1 && echo clang-14 || echo clang)
# Uninitialised locals get a fixed non-zero pattern: a read of one gives
# the same wrong value every run, so an invariant catches it reliably.
FUZZ_CFLAGS  := -std=c99 -g -O1 -I. -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=all -ftrivial-auto-var-init=pattern
FUZZ_SECONDS ?= 10
FUZZ_SRCS    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_HDRS    := $(wildcard tests/fuzz/*.h)
FUZZ_TARGETS ?= $(patsubst tests/fuzz/%.c,%,$(FUZZ_SRCS))
FUZZ_BINS    := $(addprefix $(BUILD)/fuzz/,$(FUZZ_TARGETS))
# make fuzz: 300 s per target unless FUZZ_SECONDS is given explicitly;
# make fuzz-long: 3600 s.
FUZZ_LONG_SECONDS := $(if $(filter command line environment,$(origin FUZZ_SECONDS)),$(FUZZ_SECONDS),300)
FUZZ_HOUR_SECONDS := $(if $(filter command line environment,$(origin FUZZ_SECONDS)),$(FUZZ_SECONDS),3600)

.PHONY: all deps test test-bins fuzz-build fuzz-smoke fuzz fuzz-long clean demo test-lwip

all: $(BUILD)/gcc/acme_smime.o $(BUILD)/clang/acme_smime.o $(EXAMPLES) \
	$(BUILD)/acme-smime-lwip $(BUILD)/clang/acme_smime_lwip.o \
	$(BUILD)/clang/http01.o $(BUILD)/clang/cli.o \
	$(BUILD)/clang/acme_smime_nomail.o $(BUILD)/acme-smime-enroll-nomail \
	$(BUILD)/maildir_list

deps:
	sh tests/install_deps.sh

# deps first, then build, then run: sequenced even under make -j.
test: deps
	$(MAKE) --no-print-directory all test-bins fuzz-build
	bash tests/run_tests.sh

test-bins: $(TESTS_GCC) $(TESTS_ASAN)

$(BUILD)/gcc/acme_smime.o: $(LIB_DEPS)
	@mkdir -p $(@D)
	$(GCC) $(STRICT_CFLAGS) -c $(LIB_SRC) -o $@

$(BUILD)/clang/acme_smime.o: $(LIB_DEPS)
	@mkdir -p $(@D)
	$(CLANG) $(STRICT_CFLAGS) -c $(LIB_SRC) -o $@

$(BUILD)/%: examples/posix/%.c $(BUILD)/gcc/acme_smime.o acme_smime.h
	$(GCC) $(STRICT_CFLAGS) -I. $< $(BUILD)/gcc/acme_smime.o $(LIBS) -o $@

# What both ports' http-01 responders share: the published key
# authorizations and the answer to a request line.
COMMON_PORT := port/common/http01.c
COMMON_HDRS := port/common/http01.h

# The enrollment CLI runs on the POSIX port (sockets, clock, entropy,
# http-01 responder) and the file-backed NOR flash.
POSIX_PORT := port/posix/acme_smime_posix.c port/posix/flash_file.c port/posix/dns_txt.c \
		port/posix/maildir.c $(COMMON_PORT)
# What the two enrollment programs (POSIX and lwIP) share.
CLI_SRCS := examples/common/cli.c
CLI_HDRS := examples/common/cli.h

$(BUILD)/acme-smime-enroll: examples/posix/acme-smime-enroll.c $(CLI_SRCS) $(POSIX_PORT) \
		$(CLI_HDRS) $(wildcard port/posix/*.h) $(COMMON_HDRS) \
		$(BUILD)/gcc/acme_smime.o acme_smime.h
	$(GCC) $(STRICT_CFLAGS) -I. -Iexamples/common -Iport/posix -Iport/common $< \
		$(CLI_SRCS) $(POSIX_PORT) $(BUILD)/gcc/acme_smime.o $(LIBS) -o $@

# The library without its POP3 and SMTP clients (email identifiers go
# through the mailbox hooks), and the CLI on it: tests/e2e/mailbox_test.sh.
NOMAIL := -DACME_SMIME_NO_MAIL_CLIENTS

$(BUILD)/clang/acme_smime_nomail.o: $(LIB_DEPS)
	@mkdir -p $(@D)
	$(CLANG) $(STRICT_CFLAGS) $(NOMAIL) -c $(LIB_SRC) -o $@

$(BUILD)/acme-smime-enroll-nomail: examples/posix/acme-smime-enroll.c $(CLI_SRCS) \
		$(POSIX_PORT) $(CLI_HDRS) $(wildcard port/posix/*.h) $(COMMON_HDRS) $(LIB_DEPS)
	$(GCC) $(STRICT_CFLAGS) $(NOMAIL) -I. -Iexamples/common -Iport/posix -Iport/common $< \
		$(CLI_SRCS) $(POSIX_PORT) $(LIB_SRC) $(LIBS) -o $@

$(BUILD)/maildir_list: tests/tools/maildir_list.c port/posix/maildir.c port/posix/maildir.h \
		acme_smime.h
	$(GCC) $(STRICT_CFLAGS) -I. -Iport/posix $< port/posix/maildir.c -o $@

$(BUILD)/clang/http01.o: $(COMMON_PORT) $(COMMON_HDRS) acme_smime.h
	@mkdir -p $(@D)
	$(CLANG) $(STRICT_CFLAGS) -I. -Iport/common -c $< -o $@

$(BUILD)/clang/cli.o: $(CLI_SRCS) $(CLI_HDRS) port/posix/flash_file.h acme_smime.h
	@mkdir -p $(@D)
	$(CLANG) $(STRICT_CFLAGS) -I. -Iport/posix -c $< -o $@

$(BUILD)/test-gcc/%: tests/unit/%.c $(LIB_DEPS) $(TEST_HDRS)
	@mkdir -p $(@D)
	$(GCC) $(TEST_CFLAGS) $< $(TEST_LIBS) -o $@

$(BUILD)/test-asan/%: tests/unit/%.c $(LIB_DEPS) $(TEST_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(TEST_CFLAGS) $(ASAN_FLAGS) $< $(TEST_LIBS) -o $@

$(BUILD)/fuzz/%: tests/fuzz/%.c $(LIB_DEPS) $(FUZZ_HDRS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(LIBS) -o $@

comma := ,
# fuzz_engine as a plain program: replays inputs, --expect-done checks
# that the complete seeds still end in ACME_SMIME_DONE (make test).
$(BUILD)/fuzz/fuzz_engine_replay: tests/fuzz/fuzz_engine.c $(LIB_DEPS) $(FUZZ_HDRS) \
		port/posix/flash_file.c port/posix/flash_file.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(subst fuzzer$(comma),,$(FUZZ_CFLAGS)) -DFUZZ_ENGINE_MAIN $< $(LIBS) -o $@

fuzz-build: $(FUZZ_BINS) $(BUILD)/fuzz/fuzz_engine_replay

fuzz-smoke: fuzz-build
	bash tests/fuzz/run_fuzz.sh -t $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz: fuzz-build
	bash tests/fuzz/run_fuzz.sh -t $(FUZZ_LONG_SECONDS) $(FUZZ_TARGETS)

fuzz-long: fuzz-build
	FUZZ_KEEP=1 bash tests/fuzz/run_fuzz.sh -t $(FUZZ_HOUR_SECONDS) $(FUZZ_TARGETS)

# The lwIP example: the library on Debian's lwIP over a tap device in a
# network namespace (tests/lwip/lwip_test.sh, root).
LWIP_CFLAGS := $(shell pkg-config --cflags lwip 2>/dev/null)
LWIP_LIBS   := $(shell pkg-config --libs lwip 2>/dev/null) -lpthread
# The host stands in for the board: its clocks and entropy are the POSIX
# port's hooks, its flash the file-backed one.
LWIP_SRCS   := examples/lwip/acme-smime-lwip.c examples/lwip/tapdev.c \
	examples/lwip/host_task.c $(CLI_SRCS) port/lwip/acme_smime_lwip.c \
	$(COMMON_PORT) port/posix/acme_smime_posix.c port/posix/flash_file.c
$(BUILD)/acme-smime-lwip: $(LWIP_SRCS) $(wildcard examples/lwip/*.h) $(CLI_HDRS) \
		$(wildcard port/lwip/*.h) $(COMMON_HDRS) port/posix/acme_smime_posix.h \
		port/posix/flash_file.h $(BUILD)/gcc/acme_smime.o acme_smime.h
	$(GCC) $(STRICT_CFLAGS) -I. -Iport/lwip -Iport/common -Iport/posix \
		-Iexamples/lwip -Iexamples/common $(LWIP_CFLAGS) $(LWIP_SRCS) \
		$(BUILD)/gcc/acme_smime.o $(LIBS) $(LWIP_LIBS) -o $@
$(BUILD)/clang/acme_smime_lwip.o: port/lwip/acme_smime_lwip.c \
		port/lwip/acme_smime_lwip.h $(COMMON_HDRS) acme_smime.h
	@mkdir -p $(@D)
	$(CLANG) $(STRICT_CFLAGS) -I. -Iport/lwip -Iport/common $(LWIP_CFLAGS) -c $< -o $@

test-lwip: deps
	$(MAKE) --no-print-directory $(BUILD)/acme-smime-lwip
	bash tests/lwip/lwip_test.sh

# The main job: an RFC 8823 enrollment against the local test CA and
# real mail servers, printing the certificate.
demo: deps
	$(MAKE) --no-print-directory all
	bash tests/demo.sh

# Footprint and performance (tests/measure/README.md): Cortex-M4 size,
# RAM/stack/heap and instructions of an RFC 8823 enrollment, our CLI
# against uacme and lego on Pebble, and all of it in one table.
.PHONY: size ram cpu bench-pebble bench
size:
	bash tests/measure/size.sh
ram:
	bash tests/measure/enroll_measure.sh ram
cpu:
	bash tests/measure/enroll_measure.sh cpu
bench-pebble: $(BUILD)/acme-smime-enroll
	bash tests/measure/bench_pebble.sh
bench: $(BUILD)/acme-smime-enroll
	bash tests/measure/bench.sh

clean:
	rm -rf $(BUILD)
