#!/usr/bin/env bash
# Sanity test of the benchmark echo servers, run by scripts/run-tests.sh:
# each server is started, one 64-byte echo and one 1 MiB echo (which goes
# through the partial-write path) are checked byte for byte, and the server
# is stopped. The TLS servers (echo_tls_*) get the same two echoes over TLS
# (loadgen check --tls), with a certificate made here by the openssl
# command. A server whose library is not installed (not built, or no Ruby
# EventMachine; for echo_tls_libem, no em_start_tls yet) is reported as
# skipped, neither passed nor failed.
#
#   bench/sanity.sh [BUILD_DIR]     (default: build)
#
# Last line: "N passed, N failed", as every test executable prints.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

build=${1:-build}
bin=$build/bench
pass=0
fail=0
skip=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/libem-sanity.XXXXXX")
pid=""
cleanup() {
    [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

if [[ ! -x "$bin/loadgen" ]]; then
    echo "FAIL loadgen: $bin/loadgen not built"
    echo "0 passed, 1 failed"
    exit 1
fi

# What check adds after the port on the server's command line, and to
# loadgen check's (set for the TLS servers).
after_port=()
check_flags=()

check() { # name command...
    local name=$1 port i ok=0
    shift
    port=$("$bin/loadgen" freeport)
    "$@" "$port" ${after_port[@]+"${after_port[@]}"} >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    for ((i = 0; i < 200; i++)); do
        grep -q "^ready .*port=$port\b" "$tmp/$name.out" 2>/dev/null && {
            ok=1
            break
        }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    local why=""
    if ((!ok)); then
        why="did not start: $(tail -n 2 "$tmp/$name.err" | tr '\n' ' ')"
    elif ! "$bin/loadgen" check ${check_flags[@]+"${check_flags[@]}"} --port "$port" --size 64 \
        >/dev/null 2>"$tmp/check.err" ||
        ! "$bin/loadgen" check ${check_flags[@]+"${check_flags[@]}"} --port "$port" --size 1048576 \
            >/dev/null 2>>"$tmp/check.err"; then
        why=$(tr '\n' ' ' <"$tmp/check.err")
    elif ! kill -0 "$pid" 2>/dev/null; then
        why="exited during the echo: $(tail -n 2 "$tmp/$name.err" | tr '\n' ' ')"
    fi
    kill "$pid" 2>/dev/null
    for ((i = 0; i < 40; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=""
    if [[ -z "$why" ]]; then
        echo "PASS echo_$name"
        pass=$((pass + 1))
    else
        echo "FAIL echo_$name: $why"
        fail=$((fail + 1))
    fi
}

for name in epoll libem libuv libevent libev; do
    if [[ -x "$bin/echo_$name" ]]; then
        check "$name" "$bin/echo_$name"
    elif [[ "$name" == epoll || "$name" == libem ]]; then
        echo "FAIL echo_$name: $bin/echo_$name not built"
        fail=$((fail + 1))
    else
        echo "SKIP echo_$name: not built (library not installed)"
        skip=$((skip + 1))
    fi
done
if command -v ruby >/dev/null 2>&1 && ruby -e 'require "eventmachine"' >/dev/null 2>&1; then
    check em ruby bench/servers/echo_em.rb
else
    echo "SKIP echo_em: ruby or the eventmachine gem not installed"
    skip=$((skip + 1))
fi

# TLS: one certificate for all, as in bench/run.sh.
tls_servers="openssl libevent libem"
if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 2 -subj /CN=localhost >/dev/null 2>&1; then
    for name in $tls_servers; do
        echo "SKIP echo_tls_$name: the openssl command could not make a certificate"
        skip=$((skip + 1))
    done
    tls_servers=""
fi
after_port=("$tmp/cert.pem" "$tmp/key.pem")
check_flags=(--tls)
for name in $tls_servers; do
    if [[ -x "$bin/echo_tls_$name" ]]; then
        check "tls_$name" "$bin/echo_tls_$name"
    elif [[ "$name" == libem ]]; then
        echo "SKIP echo_tls_libem: not built (no em_start_tls in include/em.h yet, or no OpenSSL)"
        skip=$((skip + 1))
    else
        echo "SKIP echo_tls_$name: not built (OpenSSL or libevent_openssl not installed)"
        skip=$((skip + 1))
    fi
done

echo "$skip skipped"
echo "$pass passed, $fail failed"
((fail == 0))
