#!/usr/bin/env bash
# The tests that use threads, under ThreadSanitizer (issue 5, item 12): the
# thread pool (em_defer, name resolution), em_schedule from other threads,
# em_stop from another thread and reactors on several threads, on every
# backend, from build-tsan/ (make tsan: -DEM_SANITIZE=thread).
#
# One line per (backend, executable, case filter), in run-tests.sh's format;
# the last line is "N passed, N failed", counting test cases. A TSan report
# fails its case (halt_on_error=1: the case's process exits 66) and is kept
# in BUILD/test-logs/tsan/BACKEND-EXE-FILTER.err.
#
# Environment: TSAN_BUILD=build-tsan, BACKENDS="epoll poll",
# TEST_TIMEOUT=300 (seconds per run).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

build=${TSAN_BUILD:-build-tsan}
backends=${BACKENDS:-epoll poll}
limit=${TEST_TIMEOUT:-300}
logdir="$build/test-logs/tsan"

# "executable filter": argv[1] of the harness, a case-name substring.
runs=(
    "test_timers schedule" # schedule_from_other_threads, schedule_wakes_poller
    "test_timers defer"    # defer_runs_on_pool_done_on_reactor
    "test_reactor thread"  # stop_from_other_thread, two_reactors_two_threads
    "test_reactor defer_from_done" # done callbacks run by em_reactor_free
    "test_connect connect_localhost_name"    # names resolved on the pool
    "test_connect connect_unresolvable_name"
    "test_signal signal_"  # handlers run on any thread; forks with threads busy
)

# shellcheck source=scripts/results.sh
. scripts/results.sh

passed=0
failed=0
mkdir -p "$logdir"

for backend in $backends; do
    for run in "${runs[@]}"; do
        read -r exe filter <<<"$run"
        label="$exe:$filter"
        if [[ ! -x "$build/tests/$exe" ]]; then
            printf 'FAIL %-10s %-5s %-40s -- no %s (make tsan)\n' "$build" "$backend" \
                "$label" "$build/tests/$exe"
            failed=$((failed + 1))
            continue
        fi
        out="$logdir/$backend-$exe-$filter.out"
        err="$logdir/$backend-$exe-$filter.err"
        start=$SECONDS
        EM_BACKEND=$backend TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
            timeout --kill-after=10 "$limit" "$build/tests/$exe" "$filter" \
            </dev/null >"$out" 2>"$err"
        rc=$?
        secs=$((SECONDS - start))
        problem=""
        closing_counts "$out" || add_problem "no closing line"
        add_problem "$(exit_problem "$rc" "$secs" "$limit")"
        ((pass + fail > 0)) || add_problem "no case matched"
        grep -q 'WARNING: ThreadSanitizer' "$err" && add_problem "ThreadSanitizer report"
        [[ -n "$problem" ]] && ((fail == 0)) && fail=1
        passed=$((passed + pass))
        failed=$((failed + fail))
        status=PASS
        ((fail == 0)) || status=FAIL
        printf '%s %-10s %-5s %-40s %d passed, %d failed (%ds)%s\n' \
            "$status" "$build" "$backend" "$label" "$pass" "$fail" "$secs" \
            "${problem:+ -- $problem}"
        if [[ "$status" == FAIL ]]; then
            show_tails 30 "$out"
            echo "---- $err (first 60 lines: the report's start)"
            head -n 60 "$err"
            echo "----"
        fi
    done
done

echo "$passed passed, $failed failed"
((failed == 0))
