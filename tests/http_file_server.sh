#!/usr/bin/env bash
# End-to-end test of examples/http_file_server, run by scripts/run-tests.sh
# for each build directory and backend (EM_BACKEND): the server is started
# on a tree made here, on 127.0.0.1, and curl and raw requests (bash's
# /dev/tcp) check its answers: byte-exact downloads (0 B to 256 MiB),
# HEAD, keep-alive, pipelining, the error statuses, every way out of the
# root it must refuse, clients that abort a download, and downloads over
# TLS (certificates from tests/tls/make-certs.sh). At the end each server
# must still be running and must exit with 0 on SIGTERM (under ASan: no
# leak).
#
#   tests/http_file_server.sh [BUILD_DIR]     (default: build)
#
# Last line: "N passed, N failed", as every test executable prints.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
export LC_ALL=C
trap '' PIPE # a write to a connection the server closed fails, not the script

build=${1:-build}
server=$build/examples/http_file_server
pass=0
fail=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/libem-http.XXXXXX")
pid=""
cleanup() {
    [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    chmod -R u+rwx "$tmp" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

result() { # name why: passes when why is empty
    if [[ -z "$2" ]]; then
        echo "PASS $1"
        pass=$((pass + 1))
    else
        echo "FAIL $1: $2"
        fail=$((fail + 1))
    fi
}

if [[ ! -x "$server" ]] || ! command -v curl >/dev/null; then
    echo "FAIL setup: $server not built, or no curl (make deps installs it)"
    echo "0 passed, 1 failed"
    exit 1
fi

# ------------------------------------------------------------- the tree
root=$tmp/root
mkdir -p "$root/sub" "$root/site" "$tmp/outside"
: >"$root/empty"
printf x >"$root/one"
head -c 5000 /dev/urandom >"$root/five_k"
head -c 3000000 /dev/urandom >"$root/three_m"
# 256 MiB: sparse, with random data at the start, the middle and the end,
# so that an offset error shows
truncate -s 256M "$root/big"
for mib in 0 128 255; do
    head -c 1048576 /dev/urandom | dd of="$root/big" bs=1M seek=$mib conv=notrunc status=none
done
printf 'alpha\n' >"$root/a.txt"
printf 'bravo\n' >"$root/b.txt"
seq 1 30000 >"$root/mid.txt"
head -c 32M /dev/zero | tr '\0' '\n' >"$root/newlines"
printf '<p>index</p>\n' >"$root/site/index.html"
printf 'secret\n' >"$tmp/outside/secret"
ln -s ../outside/secret "$root/escape"
ln -s ../outside "$root/escapedir"
ln -s a.txt "$root/inside-link"
mkfifo "$root/fifo"
printf 'locked\n' >"$root/locked"
chmod 000 "$root/locked"

# ------------------------------------------------------------ the server
# start NAME ARGS...: starts the server; sets pid and port
start() {
    local name=$1 i
    shift
    port=""
    # SIGPIPE as a program starts with it, not ignored as here
    (
        trap - PIPE
        exec "$server" --port 0 --root "$root" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
    ) &
    pid=$!
    for ((i = 0; i < 200; i++)); do
        port=$(sed -n 's/^ready port=\([0-9][0-9]*\)$/\1/p' "$tmp/$name.out" 2>/dev/null)
        [[ -n "$port" ]] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    return 1
}

# how STATUS: an exit status in words
how() { if (($1 > 128)); then echo "killed by SIG$(kill -l $(($1 - 128)))"; else echo "status $1"; fi; }

# stop NAME: SIGTERM; the server must exit with 0 within 5 s
stop() {
    local name=$1 i rc why=""
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        why="died during the tests, $(how $?): $(tail -n 3 "$tmp/$name.err" | tr '\n' ' ')"
    else
        kill -TERM "$pid"
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null && why="still running 5 s after SIGTERM"
        wait "$pid"
        rc=$?
        [[ -z "$why" ]] && ((rc != 0)) &&
            why="$(how $rc) at exit: $(tail -n 5 "$tmp/$name.err" | tr '\n' ' ')"
    fi
    pid=""
    result "${name}_alive_and_clean_exit" "$why"
}

# ------------------------------------------------------------- clients
curl_() { curl -sS -g --noproxy '*' --max-time 60 "$@"; }

# code URL [curl args...]: the status of the answer
code() { curl_ -o /dev/null -w '%{http_code}' "$@" 2>/dev/null; }

# raw REQUEST: sends REQUEST (printf %b escapes: \r\n) on a new connection
# and prints what comes back until the server closes; fails when it has
# not closed within 5 s
raw() {
    local fd rc
    exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 1
    # a server that answers and closes before reading all may make the
    # write fail (EPIPE) or the read end in a reset: the answer tells
    printf '%b' "$1" 2>/dev/null 1>&"$fd"
    timeout 5 cat <&"$fd" 2>/dev/null
    rc=$?
    exec {fd}>&-
    return $rc
}

# expect_code NAME WANT URL [curl args...]
expect_code() {
    local name=$1 want=$2 got
    shift 2
    got=$(code "$@")
    result "$name" "$([[ "$got" == "$want" ]] || echo "status $got, expected $want")"
}

# expect_raw NAME WANT_STATUS_LINE REQUEST: the first line of the answer,
# which must be followed by the server's close
expect_raw() {
    local name=$1 want=$2 out why=""
    if ! out=$(raw "$3" | tr -d '\r'); then
        why="the server did not close the connection"
    elif [[ "$(head -n 1 <<<"$out")" != "$want" ]]; then
        why="answer '$(head -n 1 <<<"$out")', expected '$want'"
    fi
    result "$name" "$why"
}

# download NAME URL FILE [curl args...]: byte-exact, status 2xx
download() {
    local name=$1 url=$2 file=$3 why=""
    shift 3
    if ! curl_ -f "$@" "$url" 2>"$tmp/curl.err" | cmp -s - "$file"; then
        why="curl failed or the bytes differ from $file: $(head -c 200 "$tmp/curl.err")"
    fi
    result "$name" "$why"
}

statuses() { tr -d '\r' | grep -a '^HTTP/1.1 ' | cut -d' ' -f2 | tr '\n' ' '; }

# ---------------------------------------------------------------- plain
if ! start plain; then
    result plain_start "no 'ready port=' line: $(tail -n 3 "$tmp/plain.err" | tr '\n' ' ')"
    echo "$pass passed, $fail failed"
    exit 1
fi
base=http://127.0.0.1:$port

for f in empty one five_k three_m big; do
    download "get_$f" "$base/$f" "$root/$f"
done

# several clients at once, each byte-exact
why=""
clients=()
for i in 1 2 3 4 5 6; do
    curl_ -f -o "$tmp/par$i" "$base/three_m" &
    clients+=($!)
done
for i in 1 2 3 4 5 6; do
    wait "${clients[i - 1]}" || why="curl $i failed"
    cmp -s "$tmp/par$i" "$root/three_m" || why="download $i differs"
done
result parallel_downloads "$why"
rm -f "$tmp"/par*

# HEAD: the head of a GET, no body
head_out=$(curl_ -I "$base/five_k" | tr -d '\r')
why=""
grep -q '^HTTP/1.1 200 ' <<<"$head_out" || why="status: $(head -n 1 <<<"$head_out")"
grep -qi '^content-length: 5000$' <<<"$head_out" || why="$why no Content-Length: 5000"
result head_five_k "$why"
head_out=$(curl_ -I "$base/big" | tr -d '\r')
result head_big "$(grep -qi '^content-length: 268435456$' <<<"$head_out" ||
    echo "no Content-Length: 268435456")"
# head_only NAME STATUS_LINE PATH: HEAD's answer is its head alone
head_only() {
    local out
    out=$(raw "HEAD $3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" && echo .)
    out=${out%.} # $(...) would drop the blank line's LF
    result "$1" "$([[ "$out" == "$2"$'\r\n'* && "${out%%$'\r\n\r\n'*}"$'\r\n\r\n' == "$out" ]] ||
        echo "answer: $(tr '\r\n' '  ' <<<"$out" | head -c 300)")"
}
head_only head_no_body 'HTTP/1.1 200 OK' /five_k
head_only head_404_no_body 'HTTP/1.1 404 Not Found' /missing

# keep-alive
out=$(curl_ -v -o /dev/null -o /dev/null "$base/a.txt" "$base/five_k" 2>&1)
result keep_alive_reused "$(grep -q 'Re-using existing connection' <<<"$out" ||
    echo "curl did not reuse the connection")"
out=$(curl_ -v -H 'Connection: close' -o /dev/null -o /dev/null "$base/a.txt" "$base/b.txt" 2>&1)
result connection_close_honoured "$(! grep -q 'Re-using existing connection' <<<"$out" ||
    echo "the connection was kept")"
out=$(raw 'GET /a.txt HTTP/1.0\r\n\r\nGET /b.txt HTTP/1.0\r\n\r\n' | statuses)
result http10_closes "$([[ "$out" == '200 ' ]] || echo "statuses: $out")"
out=$(raw 'GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b.txt HTTP/1.0\r\n\r\n' |
    statuses)
result http10_keep_alive "$([[ "$out" == '200 200 ' ]] || echo "statuses: $out")"

# pipelining: five requests in one write, answered in order
out=$(raw 'GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /mid.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /missing HTTP/1.1\r\nHost: t\r\n\r\nHEAD /b.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' |
    tr -d '\r' | grep -av '^[A-Za-z-]*: ')
expected=$(
    printf 'HTTP/1.1 200 OK\n\nalpha\nHTTP/1.1 200 OK\n\n'
    seq 1 30000
    printf 'HTTP/1.1 404 Not Found\n\n404 Not Found\nHTTP/1.1 200 OK\n\n'
    printf 'HTTP/1.1 200 OK\n\nbravo\n'
)
result pipelined_in_order "$([[ "$out" == "$expected" ]] ||
    echo "answers differ: $(diff <(echo "$expected") <(echo "$out") 2>/dev/null | head -n 5 |
        tr '\n' ' ')")"

# More pipelined requests than the input buffer holds, behind a body too
# big for the socket buffers, so that all of them arrive while it streams:
# the ones that fitted are answered in order, then the connection ends
# (an HTTP client retries the rest).
many='GET /newlines HTTP/1.1\r\nHost: t\r\n\r\n'
for ((i = 0; i < 600; i++)); do many+='GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n'; done
out=$(raw "$many" | statuses)
rc=${PIPESTATUS[0]}
n=$(wc -w <<<"$out")
result pipeline_overflow "$( ((rc == 0 && n >= 2 && n < 601)) && [[ "${out//200 /}" == "" ]] ||
    echo "$n answers (${out:0:40}...), the connection ended with status $rc")"

# what is not there, and ways out of the root
expect_code not_found 404 "$base/missing"
expect_code not_found_under_file 404 "$base/one/x"
expect_code dotdot 403 --path-as-is "$base/../outside/secret"
expect_code dotdot_inside 403 --path-as-is "$base/sub/../a.txt"
expect_code encoded_dotdot 403 "$base/%2e%2e/outside/secret"
expect_code encoded_dotdot_mixed 403 "$base/sub/.%2E/%2e./outside/secret"
expect_code encoded_slash 403 "$base/..%2foutside%2fsecret"
expect_code encoded_slash_in_name 403 "$base/sub%2f..%2fa.txt"
expect_code encoded_nul 403 "$base/a.txt%00.html"
expect_code symlink_out 403 "$base/escape"
expect_code symlink_dir_out 403 "$base/escapedir/secret"
download symlink_inside "$base/inside-link" "$root/a.txt"
expect_code directory_without_index 403 "$base/sub/"
download directory_index "$base/site/" "$root/site/index.html"
expect_code fifo 403 "$base/fifo"
if (($(id -u) != 0)); then
    expect_code unreadable 403 "$base/locked"
else
    echo "SKIP unreadable: root reads any file"
fi
expect_code absolute_form 200 --request-target "http://127.0.0.1:$port/a.txt" "$base/"

# methods and bodies
out=$(curl_ -s -o /dev/null -D - -X POST -d x "$base/a.txt" | tr -d '\r')
why=""
grep -q '^HTTP/1.1 405 ' <<<"$out" || why="status: $(head -n 1 <<<"$out")"
grep -qi '^allow: GET, HEAD$' <<<"$out" || why="$why no Allow: GET, HEAD"
result post_405 "$why"
expect_code delete_405 405 -X DELETE "$base/a.txt"
expect_raw transfer_encoding_501 'HTTP/1.1 501 Not Implemented' \
    'GET /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'
expect_raw get_with_body_413 'HTTP/1.1 413 Content Too Large' \
    'GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello'

# malformed requests: 400, and the connection ends
expect_raw garbage_400 'HTTP/1.1 400 Bad Request' 'GARBAGE\r\n\r\n'
expect_raw no_version_400 'HTTP/1.1 400 Bad Request' 'GET /a.txt\r\n\r\n'
expect_raw no_host_400 'HTTP/1.1 400 Bad Request' 'GET /a.txt HTTP/1.1\r\n\r\n'
expect_raw two_hosts_400 'HTTP/1.1 400 Bad Request' \
    'GET /a.txt HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n'
expect_raw bare_lf_400 'HTTP/1.1 400 Bad Request' 'GET /a.txt HTTP/1.1\nHost: t\n\n'
expect_raw space_before_colon_400 'HTTP/1.1 400 Bad Request' \
    'GET /a.txt HTTP/1.1\r\nHost : t\r\n\r\n'
expect_raw no_colon_400 'HTTP/1.1 400 Bad Request' 'GET /a.txt HTTP/1.1\r\nHost: t\r\nBad\r\n\r\n'
expect_raw folded_field_400 'HTTP/1.1 400 Bad Request' \
    'GET /a.txt HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n'
expect_raw bad_escape_400 'HTTP/1.1 400 Bad Request' 'GET /a%zz HTTP/1.1\r\nHost: t\r\n\r\n'
expect_raw version_505 'HTTP/1.1 505 HTTP Version Not Supported' 'GET /a.txt HTTP/2.0\r\n\r\n'

# too long: 431 / 414, and the server goes on
long=$(head -c 10000 /dev/zero | tr '\0' a)
expect_code header_too_long_431 431 -H "X-Long: $long" "$base/a.txt"
expect_code target_too_long_414 414 "$base/$long"
expect_raw endless_line_414 'HTTP/1.1 414 URI Too Long' "GET /$long$long"
download alive_after_errors "$base/five_k" "$root/five_k"

stop plain

# abort_downloads BASE [curl args...]: clients that go away in the middle
# of a body, some after half-closing (the server then sees a reset on a
# connection it reads no more from)
abort_downloads() {
    local base=$1 i
    shift
    clients=()
    for ((i = 0; i < 20; i++)); do
        curl_ -o /dev/null --max-time 0.1 "$@" "$base/big" 2>/dev/null &
        clients+=($!)
    done
    for i in "${clients[@]}"; do wait "$i"; done
    sleep 0.3
}

# ------------------------------------------------------- aborted bodies
# Fails while libem's sendfile(2) can raise SIGPIPE: a reset that comes
# after the client's FIN makes the socket's error EPIPE, and sendfile has
# no MSG_NOSIGNAL.
if start aborted; then
    abort_downloads "http://127.0.0.1:$port"
    stop aborted
else
    result aborted_start "no 'ready port=' line: $(tail -n 3 "$tmp/aborted.err" | tr '\n' ' ')"
fi

# ------------------------------------------------------------------ TLS
certs=$tmp/certs
mkdir -p "$certs"
if ! sh tests/tls/make-certs.sh "$certs" >/dev/null 2>&1; then
    echo "SKIP tls: the openssl command could not make the certificates"
elif ! start tls --tls "$certs/server.pem" "$certs/server.key"; then
    result tls_start "no 'ready port=' line: $(tail -n 3 "$tmp/tls.err" | tr '\n' ' ')"
else
    tbase=https://127.0.0.1:$port
    if ! curl_ -f --cacert "$certs/ca.pem" -o /dev/null "$tbase/a.txt" 2>/dev/null &&
        grep -q 'not supported' "$tmp/tls.err"; then
        echo "SKIP tls: libem was built without OpenSSL"
    else
        download tls_get_three_m "$tbase/three_m" "$root/three_m" --cacert "$certs/ca.pem"
        download tls_get_empty "$tbase/empty" "$root/empty" --cacert "$certs/ca.pem"
        out=$(curl_ -v --cacert "$certs/ca.pem" -o /dev/null -o /dev/null "$tbase/a.txt" \
            "$tbase/missing" 2>&1)
        result tls_keep_alive "$(grep -q 'Re-using existing connection' <<<"$out" ||
            echo "curl did not reuse the connection")"
        # no certificate curl trusts: no answer at all
        expect_code tls_unverified_refused 000 "$tbase/a.txt"
        abort_downloads "$tbase" --cacert "$certs/ca.pem"
        download tls_alive_after_aborted_downloads "$tbase/five_k" "$root/five_k" \
            --cacert "$certs/ca.pem"
    fi
    stop tls
fi

echo "$pass passed, $fail failed"
((fail == 0))
