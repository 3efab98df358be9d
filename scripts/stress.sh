#!/usr/bin/env bash
# make stress: the load tests too slow for `make test` (issue 5).
#
#   1. scale: STRESS_CONNS (15000) concurrent loopback connections, each
#      echoing every STRESS_INTERVAL (1 s) for STRESS_DURATION (60 s), client
#      and server in two processes; zero errors and a stable server RSS.
#   2. integrity: INTEGRITY_SEEDS (500) more seeds of the stream integrity
#      test (16 MiB each, INTEGRITY_BYTES to change), seeds 1000 and up.
#
# Both on every backend of STRESS_BACKENDS ("epoll poll"), with the plain
# build in BUILD (build). Logs in BUILD/stress-logs/. Exit status non-zero if
# anything failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

build=${BUILD:-build}
backends=${STRESS_BACKENDS:-epoll poll}
export STRESS_CONNS=${STRESS_CONNS:-15000}
export STRESS_DURATION=${STRESS_DURATION:-60}
export STRESS_INTERVAL=${STRESS_INTERVAL:-1}
export INTEGRITY_SEEDS=${INTEGRITY_SEEDS:-500}

for exe in "$build/stress/scale" "$build/tests/test_integrity"; do
    if [[ ! -x "$exe" ]]; then
        echo "FAIL: $exe missing (run make first)"
        exit 1
    fi
done
logs="$build/stress-logs"
mkdir -p "$logs"
failed=0
results=()

run() { # name log command...
    local name=$1 log=$2 start=$SECONDS rc
    shift 2
    echo "== $name"
    "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    local status=PASS
    ((rc == 0)) || { status=FAIL; failed=1; }
    results+=("$status $name ($((SECONDS - start))s)")
}

for backend in $backends; do
    run "scale $backend: $STRESS_CONNS connections x ${STRESS_DURATION}s" \
        "$logs/scale-$backend.log" \
        env EM_BACKEND="$backend" "$build/stress/scale"
    run "integrity $backend: $INTEGRITY_SEEDS seeds" \
        "$logs/integrity-$backend.log" \
        env EM_BACKEND="$backend" "$build/tests/test_integrity" stress_seeds
done

echo "== summary"
printf '%s\n' "${results[@]}"
grep -h -E '^(client: [0-9]+ connections,|server RSS|server:)' "$logs"/scale-*.log
grep -h 'seeds 1000-' "$logs"/integrity-*.log
((failed == 0)) && echo "stress: PASS" || echo "stress: FAIL"
exit $failed
