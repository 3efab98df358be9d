#!/usr/bin/env bash
# Builds fuzz/fuzz_reactor.c with clang (libFuzzer + ASan + UBSan) in
# build-fuzz/ and runs it for FUZZ_SECONDS (default 60) on fuzz/corpus.
#
# New inputs go to build-fuzz/corpus; at the end those of at most 1 KiB that
# reach code edges fuzz/corpus does not are merged into it (commit them). A crash leaves its
# input in build-fuzz/artifacts/ and makes this script fail; reproduce with
#   build-fuzz/fuzz_reactor build-fuzz/artifacts/crash-...
#
# Environment: FUZZ_SECONDS, FUZZ_JOBS (parallel workers, default 1),
# FUZZ_MERGE (0: no merge into fuzz/corpus),
# FUZZ_ARGS (more libFuzzer flags), CLANG (default clang).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
clang=${CLANG:-clang}
out=build-fuzz
mkdir -p "$out/corpus" "$out/artifacts" fuzz/corpus

flags=(-std=c11 -O1 -g -D_GNU_SOURCE -Wall -Wextra -Werror -fno-omit-frame-pointer
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
srcs=(src/*.c fuzz/fuzz_reactor.c)
if [[ ! -x $out/fuzz_reactor ]] || [[ -n $(find "${srcs[@]}" include/em.h src/*.h \
        -newer "$out/fuzz_reactor" 2>/dev/null) ]]; then
    echo "fuzz: building $out/fuzz_reactor"
    "$clang" "${flags[@]}" -Iinclude -Isrc "${srcs[@]}" -lpthread -o "$out/fuzz_reactor"
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
log=$out/fuzz.log
echo "fuzz: running for ${secs}s (log: $log)"
rc=0
# shellcheck disable=SC2086
"$out/fuzz_reactor" -max_total_time="$secs" -timeout=10 -max_len=4096 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
    ${jobs:+$( ((jobs > 1)) && echo "-fork=$jobs")} ${FUZZ_ARGS:-} \
    "$out/corpus" fuzz/corpus >"$log" 2>&1 || rc=$?
grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' "$log" || true
if ((rc != 0)); then
    echo "fuzz: FAILED (status $rc); the end of $log:"
    tail -n 60 "$log"
    ls -l "$out/artifacts/"
    exit 1
fi
if [[ ${FUZZ_MERGE:-1} == 0 ]]; then # make test's short run leaves the tree alone
    echo "fuzz: no crash"
    exit 0
fi
# keep in the repository only what adds coverage, and only small inputs
before=$(find fuzz/corpus -type f | wc -l)
"$out/fuzz_reactor" -merge=1 -use_counters=0 -max_len=1024 fuzz/corpus "$out/corpus" >>"$log" 2>&1
after=$(find fuzz/corpus -type f | wc -l)
echo "fuzz: no crash; fuzz/corpus: $before -> $after inputs"
