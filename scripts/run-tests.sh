#!/usr/bin/env bash
# Runs every test executable of every build directory under every backend.
#
# Each test executable prints its own closing line, "N passed, N failed", last.
# One summary line is printed per (build, backend, executable), then
# "TOTAL: N passed, N failed". The exit status is non-zero if any test failed,
# timed out, crashed, exited non-zero or printed no closing line (each of
# those counts as one failure when the executable reported none itself).
#
# Environment:
#   BUILDS="build build-asan"   build directories to use
#   BACKENDS="epoll poll io_uring"  values of EM_BACKEND; one this machine
#                               cannot run (a kernel without io_uring, a
#                               build without liburing) is reported SKIP,
#                               at the start and again before the total
#   ASAN_BACKENDS="epoll io_uring"  the backends of the sanitizer build (poll,
#                               the portable fallback, runs in the plain
#                               build only unless named here or in BACKENDS)
#   TESTS="timers conn*"        only these executables (test_ prefix optional,
#                               shell patterns allowed; bench_sanity is the
#                               one echo through each benchmark server;
#                               http_file_server the example program end
#                               to end; consumer a program built against
#                               the installed library (tests/consumer.sh);
#                               guide_snippets the C blocks of
#                               docs/guide.md compiled against build/;
#                               scale_short the short stress run,
#                               fuzz_short the short fuzz run; docs the
#                               man pages (tests/docs.sh); tsan and
#                               faults are the suites below; ruby the
#                               EventMachine extension's Ruby suite)
#   TEST_TIMEOUT=300            seconds per executable
# Output of each run is kept in BUILD/test-logs/BACKEND/NAME.{out,err}.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

builds=${BUILDS:-build build-asan}
backends=${BACKENDS:-epoll poll io_uring}
filter=${TESTS:-}
limit=${TEST_TIMEOUT:-300}

# shellcheck source=scripts/results.sh
. scripts/results.sh

# A backend runs only if a reactor on it can be made here (tests/
# backend_probe.c says why not).
skipped_backends=()
probe=build/tests/backend_probe
if [[ -x $probe ]]; then
    runnable=""
    for backend in $backends; do
        if why=$("$probe" "$backend" 2>&1); then
            runnable+=" $backend"
        else
            skipped_backends+=("SKIP backend $why: the suite does not run on it here")
            echo "${skipped_backends[-1]}"
        fi
    done
    backends=${runnable# }
fi

total_pass=0
total_fail=0
runs=0

# The sanitizer build runs on fewer backends: the matrix must fit the time
# CI gives it. BACKENDS given explicitly applies to every build.
asan_backends=${ASAN_BACKENDS:-${BACKENDS:+$backends}}
asan_backends=${asan_backends:-epoll io_uring}
backends_of() { # asan(0|1): the runnable backends of such a build
    local b out=""
    if (($1 == 0)); then
        echo "$backends"
        return
    fi
    for b in $asan_backends; do
        [[ " $backends " == *" $b "* ]] && out+=" $b"
    done
    echo "${out# }"
}

# Executables that choose their backends themselves, or whose subject no
# backend touches (a parser; children reaped without pidfds, where only
# the timer and the signal path differ): run under one backend per build.
one_backend_tests="test_uring test_uring_recv test_uring_accept test_uring_send test_uring_lend test_tokenizer test_linetext test_popen_fallback"

selected() { # name
    [[ -z "$filter" ]] && return 0
    local pat
    for pat in $filter; do
        # shellcheck disable=SC2254
        case "$1" in $pat | test_$pat) return 0 ;; esac
    done
    return 1
}

# report BUILD BACKEND NAME RC SECS TAILS OUT [ERR]: one line for a run,
# added to the totals. The closing line comes from OUT, else ERR; TAILS=1
# shows the end of OUT and ERR when the run failed (0: its output was shown).
report() {
    local build=$1 backend=$2 name=$3 rc=$4 secs=$5 tails=$6 skips status
    shift 6
    problem=""
    closing_counts "$@" || add_problem "no closing line"
    add_problem "$(exit_problem "$rc" "$secs" "$limit")"
    [[ -n "$problem" ]] && ((fail == 0)) && fail=1
    # bench/sanity.sh skips servers whose library is missing: said, not failed
    skips=$(sed -n 's/^\([0-9][0-9]*\) skipped$/\1/p' "$1")
    ((${skips:-0} > 0)) && add_problem "$skips skipped"
    total_pass=$((total_pass + pass))
    total_fail=$((total_fail + fail))
    status=PASS
    ((fail == 0)) || status=FAIL
    printf '%s %-10s %-5s %-28s %d passed, %d failed (%ds)%s\n' \
        "$status" "$build" "$backend" "$name" "$pass" "$fail" "$secs" "${problem:+ -- $problem}"
    [[ "$status" == PASS ]] || ((!tails)) || show_tails 30 "$@"
}

for build in $builds; do
    if [[ ! -d "$build/tests" ]]; then
        echo "FAIL $build: no $build/tests directory (build it first)"
        total_fail=$((total_fail + 1))
        continue
    fi
    asan=0
    if grep -q '^EM_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
        asan=1
    fi
    first=""
    for backend in $(backends_of "$asan"); do
        logdir="$build/test-logs/$backend"
        mkdir -p "$logdir"
        for exe in "$build"/tests/test_*; do
            [[ -f "$exe" && -x "$exe" ]] || continue
            name=$(basename "$exe")
            selected "$name" || continue
            if [[ " $one_backend_tests " == *" $name "* && -n "$first" && "$first" != "$backend" ]]; then
                continue
            fi
            runs=$((runs + 1))
            out="$logdir/$name.out"
            err="$logdir/$name.err"
            start=$SECONDS
            if ((asan)); then
                EM_BACKEND=$backend \
                    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
                    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
                    timeout --kill-after=10 "$limit" "$exe" </dev/null >"$out" 2>"$err"
            else
                EM_BACKEND=$backend \
                    timeout --kill-after=10 "$limit" "$exe" </dev/null >"$out" 2>"$err"
            fi
            rc=$?
            report "$build" "$backend" "$name" "$rc" $((SECONDS - start)) 1 "$out" "$err"
        done
        first=${first:-$backend}
    done
done

# The benchmark echo servers: one echo through each (bench/sanity.sh), once
# per build directory. Servers whose library is not installed are skipped.
if [[ -f bench/sanity.sh ]] && selected bench_sanity; then
    for build in $builds; do
        [[ -d "$build/bench" ]] || continue
        runs=$((runs + 1))
        mkdir -p "$build/test-logs"
        out="$build/test-logs/bench_sanity.out"
        start=$SECONDS
        timeout --kill-after=10 "$limit" bash bench/sanity.sh "$build" </dev/null >"$out" 2>&1
        report "$build" - bench_sanity $? $((SECONDS - start)) 1 "$out"
    done
fi

# examples/http_file_server end to end (tests/http_file_server.sh: curl and
# raw requests against the program), for each build directory and backend;
# under ASan the server's own exit reports leaks and errors.
if selected http_file_server; then
    for build in $builds; do
        [[ -d "$build/examples" ]] || continue
        for backend in $backends; do
            runs=$((runs + 1))
            mkdir -p "$build/test-logs/$backend"
            out="$build/test-logs/$backend/http_file_server.out"
            start=$SECONDS
            EM_BACKEND=$backend \
                ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
                timeout --kill-after=10 "$limit" bash tests/http_file_server.sh "$build" \
                </dev/null >"$out" 2>&1
            report "$build" "$backend" http_file_server $? $((SECONDS - start)) 1 "$out"
        done
    done
fi

# A program outside the tree built against each build installed into a
# temporary prefix, with pkg-config and find_package, shared and static
# (tests/consumer.sh). Sanitizer builds are left out: their archive needs
# the sanitizer runtime in the consumer's link.
if selected consumer; then
    for build in $builds; do
        [[ -f "$build/CMakeCache.txt" ]] || continue
        grep -Eq '^EM_SANITIZE:[A-Z]*=(ON|thread)$' "$build/CMakeCache.txt" && continue
        runs=$((runs + 1))
        mkdir -p "$build/test-logs"
        out="$build/test-logs/consumer.out"
        start=$SECONDS
        timeout --kill-after=10 "$limit" bash tests/consumer.sh "$build" </dev/null >"$out" 2>&1
        report "$build" - consumer $? $((SECONDS - start)) 1 "$out"
    done
fi

# The Ruby extension (make ruby, make ruby-asan): EventMachine's Ruby layer
# (Debian's ruby-eventmachine) on BUILD/ruby/rubyeventmachine.so, driven by
# ruby/test/run.rb, once per build (the extension always uses epoll). Under
# ASan, ruby itself is not instrumented: the sanitizer runtimes are
# preloaded, leaks are not checked (the interpreter leaks at exit) and
# Ruby's own alternate signal stacks are left to Ruby.
if selected ruby; then
    for build in $builds; do
        [[ -f "$build/CMakeCache.txt" ]] || continue
        grep -Eq '^EM_SANITIZE:[A-Z]*=thread$' "$build/CMakeCache.txt" && continue
        runs=$((runs + 1))
        mkdir -p "$build/test-logs"
        out="$build/test-logs/ruby.out"
        start=$SECONDS
        if [[ ! -f "$build/ruby/rubyeventmachine.so" ]]; then
            echo "no $build/ruby/rubyeventmachine.so (make ruby / make ruby-asan)" >"$out"
            report "$build" - ruby 1 0 1 "$out"
            continue
        fi
        preload=()
        if grep -Eq '^EM_SANITIZE:[A-Z]*=ON$' "$build/CMakeCache.txt"; then
            preload=(LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
                     ASAN_OPTIONS=detect_leaks=0:use_sigaltstack=0
                     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
        fi
        env ${preload[@]+"${preload[@]}"} timeout --kill-after=10 "$limit" \
            ruby -I "$build/ruby" ruby/test/run.rb </dev/null >"$out" 2>&1
        report "$build" - ruby $? $((SECONDS - start)) 1 "$out"
    done
fi

# docs/guide.md's C blocks, each compiled and linked as a program of its own
# against build/libem.a (tests/guide_snippets.sh), once: they do not depend
# on the backend or on a sanitizer.
if selected guide_snippets && [[ " $builds " == *" build "* && -f build/libem.a ]]; then
    runs=$((runs + 1))
    mkdir -p build/test-logs
    out=build/test-logs/guide_snippets.out
    start=$SECONDS
    timeout --kill-after=10 "$limit" bash tests/guide_snippets.sh build </dev/null >"$out" 2>&1
    report build - guide_snippets $? $((SECONDS - start)) 1 "$out"
fi

# The short form of `make stress`: stress/scale with STRESS_SHORT_CONNS
# (3000) connections echoing for STRESS_SHORT_SECONDS (5) on each backend,
# from the plain build (the accept policy and the poller at scale, which
# the unit tests do not reach).
if selected scale_short && [[ " $builds " == *" build "* && -x build/stress/scale ]]; then
    for backend in $backends; do
        runs=$((runs + 1))
        mkdir -p build/test-logs/"$backend"
        out="build/test-logs/$backend/scale_short.out"
        start=$SECONDS
        EM_BACKEND=$backend STRESS_CONNS=${STRESS_SHORT_CONNS:-3000} \
            STRESS_DURATION=${STRESS_SHORT_SECONDS:-5} \
            timeout --kill-after=10 "$limit" build/stress/scale </dev/null >"$out" 2>&1
        rc=$?
        # scale prints no harness line: one pass, or one failure with its log
        if ((rc == 0)); then echo "1 passed, 0 failed" >>"$out"; else echo "0 passed, 1 failed" >>"$out"; fi
        report build "$backend" scale_short "$rc" $((SECONDS - start)) 1 "$out"
    done
fi

# The short form of `make fuzz`: FUZZ_SHORT_SECONDS (6) of fuzz/run.sh for
# each target (fuzz_reactor on fuzz/corpus, fuzz_tls on its generated seeds,
# fuzz_http on fuzz/corpus-http, fuzz_linetext on fuzz/corpus-linetext),
# nothing merged into fuzz/corpus (needs clang, which make deps installs).
if selected fuzz_short && [[ " $builds " == *" build "* ]] && command -v clang >/dev/null; then
    runs=$((runs + 1))
    mkdir -p build/test-logs
    out=build/test-logs/fuzz_short.out
    start=$SECONDS
    FUZZ_SECONDS=${FUZZ_SHORT_SECONDS:-6} FUZZ_MERGE=0 \
        timeout --kill-after=10 "$limit" bash fuzz/run.sh </dev/null >"$out" 2>&1
    rc=$?
    if ((rc == 0)); then echo "1 passed, 0 failed" >>"$out"; else echo "0 passed, 1 failed" >>"$out"; fi
    report build - fuzz_short "$rc" $((SECONDS - start)) 1 "$out"
fi

# The man pages made from include/em.h (tests/docs.sh: a page per function,
# mandoc lint clean), once, with the plain build: they do not depend on how
# the library was compiled.
if selected docs && [[ " $builds " == *" build "* ]]; then
    runs=$((runs + 1))
    mkdir -p build/test-logs
    out=build/test-logs/docs.out
    start=$SECONDS
    timeout --kill-after=10 "$limit" bash tests/docs.sh </dev/null >"$out" 2>&1
    report build - docs $? $((SECONDS - start)) 1 "$out"
fi

# Suites with a runner of their own (issue 5), selected by name like the
# executables: tsan (scripts/tsan-tests.sh: the thread tests under TSan, from
# build-tsan/, made by `make tsan`) and faults (scripts/fault-inject.sh:
# syscall faults injected with strace into build/'s echo tests). Each prints
# its own lines and closes with "N passed, N failed", added to the total.
for suite in tsan:build-tsan:scripts/tsan-tests.sh faults:build:scripts/fault-inject.sh; do
    IFS=: read -r name dir script <<<"$suite"
    if [[ ! -f "$script" ]] || ! selected "$name"; then
        continue
    fi
    if [[ ! -d "$dir/tests" ]]; then
        echo "SKIP $name: no $dir/tests directory (make test builds it)"
        continue
    fi
    runs=$((runs + 1))
    mkdir -p "$dir/test-logs"
    out="$dir/test-logs/$name.out"
    start=$SECONDS
    BACKENDS="$backends" bash "$script" </dev/null 2>&1 | tee "$out"
    report "$dir" - "$name" "${PIPESTATUS[0]}" $((SECONDS - start)) 0 "$out"
done

if ((runs == 0)); then
    echo "FAIL no test executable ran (BUILDS='$builds' TESTS='$filter')"
    total_fail=$((total_fail + 1))
fi

for line in "${skipped_backends[@]}"; do
    echo "$line"
done
echo "TOTAL: $total_pass passed, $total_fail failed"
((total_fail == 0))
