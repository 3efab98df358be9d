# Thin driver around CMake. See README.md.
#
#   make                 build build/libem.a, build/libem.so, tests and examples
#   make asan            the same in build-asan/ with ASan + UBSan
#   make tsan            the tests of threads (pool, em_schedule, reactors on
#                        several threads) in build-tsan/ with TSan
#   make test            install missing packages, build all three, run every
#                        test, the TSan runs and the syscall fault injection
#   make demo            build and run the chat server (PORT=8023)
#   make ruby            build/ruby/rubyeventmachine.so: EventMachine's Ruby
#                        extension on libem (ruby/README.md)
#   make ruby-asan       the same against build-asan's libem, with ASan + UBSan
#   make ruby-demo       run ruby/examples/echo.rb on it (PORT=8023)
#   make bench           run the benchmark suite (bench/README.md; BENCH_QUICK=1: ~1 min)
#   make fuzz            build the libFuzzer targets in build-fuzz/ (clang) and run
#                        each FUZZ_SECONDS (60): fuzz_reactor on fuzz/corpus,
#                        fuzz_tls on generated TLS seeds, fuzz_http on
#                        fuzz/corpus-http, fuzz_linetext on
#                        fuzz/corpus-linetext (fuzz/run.sh)
#   make stress          15,000-connection scale run and 500 more integrity seeds
#                        (scripts/stress.sh; STRESS_DURATION=60, INTEGRITY_SEEDS=500)
#   make docs            man pages from include/em.h (scripts/gen-man.py) in
#                        build/docs/man, rendered to HTML in build/docs/html
#   make install PREFIX=/some/dir
#   make uninstall PREFIX=/some/dir   removes what the last install there put
#                        (build/install_manifest.txt)
#   make clean
#
# CC=clang make builds with clang: a build directory configured with another
# compiler is wiped and configured again. Without CC, make keeps the compiler
# the directory was configured with (cc, the first time).

CMAKE   ?= cmake
JOBS    ?= 2
PREFIX  ?= /usr/local
PORT    ?= 8023
FUZZ_SECONDS ?= 60
BUILD   := build
ASAN    := build-asan
TSAN    := build-tsan
# The project's own builds (and so make test and CI) fail on a warning;
# CMake's default for people building the library does not.
WERROR  := -DEM_WERROR=ON
# The test executables scripts/tsan-tests.sh runs.
TSAN_TESTS := test_timers test_reactor test_connect test_signal

MAKEFLAGS += --no-print-directory
# The compiler asked for explicitly (environment or command line), if any.
CC_ASKED := $(if $(filter default,$(origin CC)),,$(CC))

.PHONY: all asan tsan test demo bench fuzz install uninstall deps clean stress docs ruby ruby-asan ruby-demo

all:
	@$(call configure,$(BUILD),$(WERROR))
	$(CMAKE) --build $(BUILD) --parallel $(JOBS)

asan:
	@$(call configure,$(ASAN),$(WERROR) -DEM_SANITIZE=ON)
	$(CMAKE) --build $(ASAN) --parallel $(JOBS)

tsan:
	@$(call configure,$(TSAN),$(WERROR) -DEM_SANITIZE=thread)
	$(CMAKE) --build $(TSAN) --parallel $(JOBS) --target $(TSAN_TESTS)

deps:
	bash scripts/install-deps.sh

test: deps
	@$(MAKE) all
	@$(MAKE) asan
	@$(MAKE) tsan
	@$(MAKE) ruby
	@$(MAKE) ruby-asan
	bash scripts/run-tests.sh

demo: deps
	@$(MAKE) all
	./$(BUILD)/examples/chat_server $(PORT)

ruby: all
	bash ruby/build.sh $(BUILD)

ruby-asan: asan
	bash ruby/build.sh $(ASAN) -fsanitize=address,undefined -fno-omit-frame-pointer

ruby-demo: ruby
	ruby -I $(BUILD)/ruby ruby/examples/echo.rb $(PORT)

bench: deps
	bash bench/run.sh

fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

stress: deps
	@$(MAKE) all
	bash scripts/stress.sh

# The pages must lint clean: mandoc's warnings are what readers would see as
# misrendered text. index.html is the overview page, libem(7), which links
# every other page.
docs:
	python3 scripts/gen-man.py include/em.h $(BUILD)/docs/man
	cd $(BUILD)/docs/man && out=$$(mandoc -T lint -W warning man3/*.3 man7/*.7 2>&1); \
		if [ -n "$$out" ]; then echo "$$out"; exit 1; fi
	rm -rf $(BUILD)/docs/html && mkdir -p $(BUILD)/docs/html
	cd $(BUILD)/docs/man && for f in man3/*.3 man7/*.7; do \
		mandoc -T html -O man=%N.%S.html $$f > ../html/$${f#*/}.html || exit 1; \
	done
	cp $(BUILD)/docs/html/libem.7.html $(BUILD)/docs/html/index.html

install: all
	DESTDIR="$(DESTDIR)" $(CMAKE) --install $(BUILD) --prefix "$(PREFIX)"

# The manifest names only the last install's files (under PREFIX; CMake
# leaves DESTDIR out of it): it is refused when that install went to another
# PREFIX, rather than removing those. DESTDIR must be the install's.
uninstall:
	@set -e; manifest=$(BUILD)/install_manifest.txt; \
	root='$(PREFIX)'; root=$${root%/}; \
	if [ ! -f "$$manifest" ]; then echo "uninstall: no $$manifest (nothing installed from $(BUILD))" >&2; exit 1; fi; \
	while IFS= read -r f || [ -n "$$f" ]; do \
		case "$$f" in "$$root"/*) ;; *) echo "uninstall: $$f is not under $$root; the last install went elsewhere" >&2; exit 1 ;; esac; \
	done < "$$manifest"; \
	while IFS= read -r f || [ -n "$$f" ]; do \
		f='$(DESTDIR)'"$$f"; \
		if [ -e "$$f" ] || [ -L "$$f" ]; then echo "-- Removing $$f"; rm -f "$$f"; fi; \
	done < "$$manifest"; \
	libdir=$$(sed -n 's/^CMAKE_INSTALL_LIBDIR:[A-Z]*=//p' $(BUILD)/CMakeCache.txt); \
	rmdir '$(DESTDIR)'"$$root/$$libdir/cmake/libem" 2>/dev/null || true; \
	rm -f "$$manifest"

clean:
	rm -rf $(BUILD) $(ASAN) $(TSAN) build-fuzz

# $(call configure,DIR,EXTRA_CMAKE_ARGS): configure DIR unless it is already
# configured with the same arguments and, if one was asked for, compiler.
define configure
set -e; \
cc='$(CC_ASKED)'; args='$(2)'; \
if [ -f $(1)/CMakeCache.txt ]; then \
	old_cc=$$(sed -n 1p $(1)/.em-configured 2>/dev/null); \
	old_args=$$(sed -n 2p $(1)/.em-configured 2>/dev/null); \
	cached=$$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' $(1)/CMakeCache.txt); \
	if [ "$$args" != "$$old_args" ] || { [ -n "$$cc" ] && [ "$$cc" != "$$old_cc" ] && \
			[ "$$(command -v "$$cc" || true)" != "$$cached" ]; }; then \
		echo "== $(1): reconfiguring (compiler '$$cc', options '$$args')"; \
		rm -rf $(1); \
	fi; \
fi; \
if [ ! -f $(1)/CMakeCache.txt ]; then \
	$(if $(CC_ASKED),CC='$(CC_ASKED)') $(CMAKE) -S . -B $(1) $(2); \
	printf '%s\n%s\n' "$$cc" "$$args" > $(1)/.em-configured; \
fi
endef
