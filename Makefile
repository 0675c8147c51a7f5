# acme_smime build, tests and CI plumbing (GNU make).
#
#   make          build the library with gcc and clang, and the POSIX examples
#   make deps     install the Debian packages needed (tests/install_deps.sh)
#   make test     deps + strict builds + unit tests (gcc, clang ASan/UBSan)
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

.PHONY: all deps test test-bins clean

all: $(BUILD)/gcc/acme_smime.o $(BUILD)/clang/acme_smime.o $(EXAMPLES)

deps:
	sh tests/install_deps.sh

# deps first, then build, then run: sequenced even under make -j.
test: deps
	$(MAKE) --no-print-directory all test-bins
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

$(BUILD)/test-gcc/%: tests/unit/%.c $(LIB_DEPS) $(TEST_HDRS)
	@mkdir -p $(@D)
	$(GCC) $(TEST_CFLAGS) $< $(TEST_LIBS) -o $@

$(BUILD)/test-asan/%: tests/unit/%.c $(LIB_DEPS) $(TEST_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(TEST_CFLAGS) $(ASAN_FLAGS) $< $(TEST_LIBS) -o $@

clean:
	rm -rf $(BUILD)
