#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (libFuzzer + ASan + UBSan) in
# build-fuzz/ and runs each for FUZZ_SECONDS (default 60):
#
#   fuzz_reactor  fuzz/fuzz_reactor.c, libem without OpenSSL, on fuzz/corpus
#   fuzz_tls      fuzz/fuzz_tls.c, libem with OpenSSL: the input is what the
#                 peer of a TLS connection sends; seeds written at run time
#                 by `fuzz/gen_seeds.py --tls` into build-fuzz/seeds-tls
#                 (captured TLS flights: random values, never committed)
#   fuzz_http     fuzz/fuzz_http.c, the request parser of
#                 examples/http_file_server (no libem), on fuzz/corpus-http
#   fuzz_linetext fuzz/fuzz_linetext.c, em_linetext against a model of it
#                 (fuzz/linetext_model.h), on fuzz/corpus-linetext
#
# New inputs go to build-fuzz/corpus (build-fuzz/corpus-tls,
# build-fuzz/corpus-http, build-fuzz/corpus-linetext). At the end,
# fuzz_reactor's inputs of at most 1 KiB that reach code edges fuzz/corpus
# does not are merged into it (commit them); the other targets' stay in
# build-fuzz.
# A crash leaves its input in build-fuzz/artifacts/ and makes this script
# fail; reproduce with
#   build-fuzz/fuzz_reactor build-fuzz/artifacts/crash-...
#   build-fuzz/fuzz_tls build-fuzz/artifacts/tls/crash-...
#   build-fuzz/fuzz_http build-fuzz/artifacts/http/crash-...
#   build-fuzz/fuzz_linetext build-fuzz/artifacts/linetext/crash-...
#
# Environment: FUZZ_SECONDS (per target), FUZZ_TARGETS (default
# "reactor tls http linetext"), FUZZ_JOBS (parallel workers, default 1),
# FUZZ_MERGE (0: no merge into fuzz/corpus),
# FUZZ_ARGS (more libFuzzer flags), CLANG (default clang).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
clang=${CLANG:-clang}
targets=${FUZZ_TARGETS:-reactor tls http linetext}
out=build-fuzz
mkdir -p "$out/corpus" "$out/corpus-tls" "$out/corpus-http" "$out/artifacts/tls" \
    "$out/artifacts/http" fuzz/corpus "$out/corpus-linetext" "$out/artifacts/linetext"

flags=(-std=c11 -O1 -g -D_GNU_SOURCE -Wall -Wextra -Werror -fno-omit-frame-pointer
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)

# build NAME MAIN [extra flags...]: build-fuzz/NAME from MAIN and $with
# (default: libem, src/*.c)
build() {
    local name=$1 main=$2
    shift 2
    # shellcheck disable=SC2206 # $with: a glob or a list of files
    local srcs=(${with:-src/*.c} "$main")
    if [[ ! -x $out/$name ]] || [[ -n $(find "${srcs[@]}" include/em.h src/*.h examples/http/*.h \
            fuzz/*.h fuzz/run.sh -newer "$out/$name" 2>/dev/null) ]]; then
        echo "fuzz: building $out/$name"
        "$clang" "${flags[@]}" "$@" -Iinclude -Isrc "${srcs[@]}" -lpthread -o "$out/$name"
    fi
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# run NAME ARTIFACTS MAX_LEN CORPUS...: FUZZ_SECONDS of NAME; fails on a crash
run() {
    local name=$1 artifacts=$2 max_len=$3
    shift 3
    local log=$out/$name.log rc=0
    echo "fuzz: running $name for ${secs}s (log: $log)"
    # shellcheck disable=SC2086
    "$out/$name" -max_total_time="$secs" -timeout=10 -max_len="$max_len" -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" \
        ${jobs:+$( ((jobs > 1)) && echo "-fork=$jobs")} ${FUZZ_ARGS:-} \
        "$@" >"$log" 2>&1 || rc=$?
    grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' "$log" || true
    if ((rc != 0)); then
        echo "fuzz: $name FAILED (status $rc); the end of $log:"
        tail -n 60 "$log"
        ls -l "$artifacts/"
        return 1
    fi
}

failed=0
for target in $targets; do
    case $target in
    reactor)
        build fuzz_reactor fuzz/fuzz_reactor.c
        run fuzz_reactor "$out/artifacts" 4096 "$out/corpus" fuzz/corpus || failed=1
        ;;
    tls)
        build fuzz_tls fuzz/fuzz_tls.c -DEM_HAVE_OPENSSL=1 -lssl -lcrypto
        seeds=$out/seeds-tls
        if [[ ! -d $seeds ]] || [[ fuzz/gen_seeds.py -nt $seeds ]]; then
            rm -rf "$seeds"
            python3 fuzz/gen_seeds.py --tls "$seeds" ||
                echo "fuzz: no TLS seeds (python3 with ssl and the openssl command needed)"
            mkdir -p "$seeds"
        fi
        run fuzz_tls "$out/artifacts/tls" 8192 "$out/corpus-tls" "$seeds" || failed=1
        ;;
    http)
        with=examples/http/request.c build fuzz_http fuzz/fuzz_http.c -Iexamples
        # a little over the head limit, to reach the 414 and 431 answers
        run fuzz_http "$out/artifacts/http" 9000 "$out/corpus-http" fuzz/corpus-http || failed=1
        ;;
    linetext)
        build fuzz_linetext fuzz/fuzz_linetext.c
        run fuzz_linetext "$out/artifacts/linetext" 4096 "$out/corpus-linetext" \
            fuzz/corpus-linetext || failed=1
        ;;
    *)
        echo "fuzz: unknown target '$target' (reactor, tls, http, linetext)"
        failed=1
        ;;
    esac
done
((failed == 0)) || exit 1

if [[ ${FUZZ_MERGE:-1} == 0 || " $targets " != *" reactor "* ]]; then
    echo "fuzz: no crash" # make test's short run leaves the tree alone
    exit 0
fi
# keep in the repository only what adds coverage, and only small inputs
before=$(find fuzz/corpus -type f | wc -l)
"$out/fuzz_reactor" -merge=1 -use_counters=0 -max_len=1024 fuzz/corpus "$out/corpus" \
    >>"$out/fuzz_reactor.log" 2>&1
after=$(find fuzz/corpus -type f | wc -l)
echo "fuzz: no crash; fuzz/corpus: $before -> $after inputs"
