#!/usr/bin/env bash
# Sanity test of the benchmark echo servers, run by scripts/run-tests.sh:
# each server is started, one 64-byte echo and one 1 MiB echo (which goes
# through the partial-write path) are checked byte for byte, and the server
# is stopped; echo_uring (the io_uring floor) also gets 32 MiB written
# before any is read, so that its sends complete short and data waits
# behind them. The TLS servers (echo_tls_*) get the same two echoes over TLS
# (loadgen check --tls), with a certificate made here by the openssl
# command. A server whose library is not installed (not built, or no Ruby
# EventMachine; for echo_tls_libem, no em_start_tls yet) is reported as
# skipped, neither passed nor failed. echo_libem_mt runs with 2 reactor
# threads; echo_em also runs on libem's Ruby extension when BUILD_DIR/ruby
# has it (echo_em_libem). The floors of the file-serving and
# proxy workloads are checked too: two pipelined GETs (64 bytes kept alive,
# then 1 MiB with "Connection: close") through http_sendfile_epoll, whose
# answer must be the two responses byte for byte, and the two echoes through
# each floor proxy (proxy_splice_epoll, proxy_copy_epoll with a 16 KiB
# buffer) in front of echo_epoll.
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
sink_pid=""
cleanup() {
    local p
    for p in $pid $sink_pid; do
        kill -KILL "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

if [[ ! -x "$bin/loadgen" ]]; then
    echo "FAIL loadgen: $bin/loadgen not built"
    echo "0 passed, 1 failed"
    exit 1
fi

# What check adds after the port on the server's command line, and to
# loadgen check's (set for the TLS servers and the proxies); what the
# report puts before a server's name.
after_port=()
check_flags=()
prefix=echo_
slow_echo=0 # 1: check also echoes 32 MiB written before any is read

# launch NAME COMMAND...: runs COMMAND PORT AFTER_PORT... in the background
# on a free port and waits for its ready line; sets pid and port, or fails
# with the reason in not_started.
launch() {
    local name=$1 i
    shift
    port=$("$bin/loadgen" freeport)
    "$@" "$port" ${after_port[@]+"${after_port[@]}"} >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    for ((i = 0; i < 200; i++)); do
        grep -q "^ready .*port=$port\b" "$tmp/$name.out" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    not_started="did not start: $(tail -n 2 "$tmp/$name.err" | tr '\n' ' ')"
    return 1
}

halt() { # pid
    local i
    kill "$1" 2>/dev/null
    for ((i = 0; i < 40; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

verdict() { # name why
    if [[ -z "$2" ]]; then
        echo "PASS $prefix$1"
        pass=$((pass + 1))
    else
        echo "FAIL $prefix$1: $2"
        fail=$((fail + 1))
    fi
}

check() { # name command...
    local name=$1 why=""
    shift
    if ! launch "$name" "$@"; then
        why=$not_started
    elif ! "$bin/loadgen" check ${check_flags[@]+"${check_flags[@]}"} --port "$port" --size 64 \
        >/dev/null 2>"$tmp/check.err" ||
        ! "$bin/loadgen" check ${check_flags[@]+"${check_flags[@]}"} --port "$port" --size 1048576 \
            >/dev/null 2>>"$tmp/check.err"; then
        why=$(tr '\n' ' ' <"$tmp/check.err")
    elif ((slow_echo)) && ! echo_unread "$port"; then
        why="32 MiB written before reading did not come back whole"
    elif ! kill -0 "$pid" 2>/dev/null; then
        why="exited during the echo: $(tail -n 2 "$tmp/$name.err" | tr '\n' ' ')"
    fi
    halt "$pid"
    pid=""
    verdict "$name" "$why"
}

# 32 MiB written before a byte is read back: every socket on the way fills,
# so a proxy meets writes the next hop takes only in part (loadgen check
# reads while it writes, and seldom gets there).
echo_unread() { # port
    [[ -f "$tmp/32m" ]] || head -c 33554432 /dev/urandom >"$tmp/32m"
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        cat "$tmp/32m" >&3 &
        writer=$!
        sleep 0.5
        timeout 10 head -c 33554432 <&3
        kill "$writer" 2>/dev/null # blocked for good when the proxy stalled
        wait
    ) >"$tmp/32m.got" 2>/dev/null
    cmp -s "$tmp/32m" "$tmp/32m.got"
}

# A kernel without io_uring, or with it disabled (io_uring_disabled, a
# seccomp filter), makes echo_uring exit at once saying so: a skip, as a
# missing library is. Sets uring_why.
uring_works() {
    if launch uring_probe "$bin/echo_uring"; then
        halt "$pid"
        pid=""
        return 0
    fi
    halt "$pid"
    pid=""
    grep -q 'io_uring set-up' "$tmp/uring_probe.err" || return 0 # check will say why
    uring_why=$(tail -n 1 "$tmp/uring_probe.err")
    return 1
}

for name in epoll uring libem libuv libevent libev; do
    if [[ "$name" == uring && -x "$bin/echo_uring" ]] && ! uring_works; then
        echo "SKIP echo_uring: this kernel refuses its io_uring set-up ($uring_why)"
        skip=$((skip + 1))
    elif [[ "$name" == uring && -x "$bin/echo_uring" ]]; then
        slow_echo=1
        check uring "$bin/echo_uring"
        slow_echo=0
    elif [[ -x "$bin/echo_$name" ]]; then
        check "$name" "$bin/echo_$name"
    elif [[ "$name" == epoll || "$name" == libem ]]; then
        echo "FAIL echo_$name: $bin/echo_$name not built"
        fail=$((fail + 1))
    elif [[ "$name" == uring ]]; then
        echo "SKIP echo_uring: not built (liburing not installed)"
        skip=$((skip + 1))
    else
        echo "SKIP echo_$name: not built (library not installed)"
        skip=$((skip + 1))
    fi
done
# libem on 2 reactor threads sharing the port (libem-2t in bench/run.sh):
# each echo's connection lands on either thread.
if [[ -x "$bin/echo_libem_mt" ]]; then
    after_port=(2)
    check libem_mt "$bin/echo_libem_mt"
    after_port=()
else
    echo "FAIL echo_libem_mt: $bin/echo_libem_mt not built"
    fail=$((fail + 1))
fi
if command -v ruby >/dev/null 2>&1 && ruby -e 'require "eventmachine"' >/dev/null 2>&1; then
    check em ruby bench/servers/echo_em.rb
    # the same program on libem's extension (em-libem in bench/run.sh),
    # which make test builds (make ruby, make ruby-asan)
    if [[ -f "$build/ruby/rubyeventmachine.so" ]]; then
        # a sanitizer build's extension needs its runtimes loaded first
        preload=()
        if grep -Eq '^EM_SANITIZE:[A-Z]*=ON$' "$build/CMakeCache.txt" 2>/dev/null; then
            preload=(env "LD_PRELOAD=$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
                     ASAN_OPTIONS=detect_leaks=0:use_sigaltstack=0)
        fi
        check em_libem ${preload[@]+"${preload[@]}"} ruby -I "$build/ruby" bench/servers/echo_em.rb
    else
        echo "SKIP echo_em_libem: no $build/ruby/rubyeventmachine.so (make ruby)"
        skip=$((skip + 1))
    fi
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

# The file-serving floor: two GETs in one write, so that the second waits
# behind the first (pipelining) and goes out in pieces (1 MiB: a partial
# sendfile); the answer is compared whole with the two responses it must be.
check_http_floor() {
    local why="" www="$tmp/www"
    mkdir -p "$www"
    head -c 64 /dev/urandom >"$www/small"
    head -c 1048576 /dev/urandom >"$www/big"
    {
        printf 'HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n'
        cat "$www/small"
        printf 'HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n'
        cat "$www/big"
    } >"$tmp/http.expected"
    after_port=("$www")
    if ! launch http_sendfile_epoll "$bin/http_sendfile_epoll"; then
        why=$not_started
    else
        (
            exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
            printf 'GET /small HTTP/1.1\r\nHost: localhost\r\n\r\nGET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
            timeout 10 cat <&3
        ) >"$tmp/http.got" 2>"$tmp/check.err"
        cmp -s "$tmp/http.expected" "$tmp/http.got" ||
            why="answer differs from the two responses ($(wc -c <"$tmp/http.got") bytes of $(wc -c <"$tmp/http.expected")) $(tr '\n' ' ' <"$tmp/check.err")"
    fi
    halt "$pid"
    pid=""
    verdict http_sendfile_epoll "$why"
}

# The proxy floors, each in front of echo_epoll (the sink).
check_proxy_floors() {
    local name
    after_port=()
    if ! launch sink "$bin/echo_epoll"; then
        for name in proxy_splice_epoll proxy_copy_epoll; do verdict "$name" "the echo sink $not_started"; done
        halt "$pid"
        pid=""
        return
    fi
    sink_pid=$pid
    pid=""
    after_port=("$port")
    slow_echo=1
    check proxy_splice_epoll "$bin/proxy_splice_epoll"
    after_port+=(16384)
    check proxy_copy_epoll "$bin/proxy_copy_epoll"
    slow_echo=0
    halt "$sink_pid"
    sink_pid=""
}

prefix=""
check_flags=()
for name in http_sendfile_epoll proxy_splice_epoll proxy_copy_epoll; do
    [[ -x "$bin/$name" ]] || verdict "$name" "$bin/$name not built"
done
[[ -x "$bin/http_sendfile_epoll" ]] && check_http_floor
[[ -x "$bin/proxy_splice_epoll" && -x "$bin/proxy_copy_epoll" ]] && check_proxy_floors

echo "$skip skipped"
echo "$pass passed, $fail failed"
((fail == 0))
