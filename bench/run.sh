#!/usr/bin/env bash
# libem's benchmark suite (what `make bench` runs). See bench/README.md.
#
# Installs the Debian packages it needs when some are missing, builds, then
# runs every workload against every echo server. For each repetition and
# each of the timed workloads (ping-pong C=1 and C=100, stream, connect) all
# the servers are started together and one loadgen run loads them in turns
# of 0.25 s slices (loadgen --targets; the order rotates between
# repetitions), so that every server sees the same machine even when its
# speed drifts; then they are all stopped. The server CPU per idle connection
# set up (workload "setup") is measured the same way: all the servers
# together, one loadgen idle --targets run that sets up their N connections
# in turns of 1000. The idle memory (workload "idle": VmRSS growth with N
# connections held) takes one server at a time. Then it counts the system
# calls per echoed message of each server and runs the timer benchmark.
# The TLS echo servers (tls-*) get the TLS workloads the same way, all of
# them started together for each: ping-pong C=100 and stream over
# established TLS connections, full and resumed handshakes per second, with
# the OpenSSL + raw epoll server (tls-openssl) as their reference; then the
# idle memory per TLS connection, one server at a time. They share one
# P-256 certificate made with the openssl command in the temporary
# directory for the run.
# File serving (http-*): the HTTP file servers, started together, get wrk
# keep-alive load for a 1 KiB and a 1 MiB file in turns of 1 s each (the
# order rotates), then 1 GiB downloads with curl in turns; the server's CPU
# is read around every turn. Proxying (proxy-*): the TCP proxies, started
# together in front of one raw epoll echo server (the sink), get a stream
# and a ping-pong C=100 run through them, interleaved by loadgen --targets
# as the echo servers are. Their references are the raw epoll floors
# (http-floor, proxy-splice-floor), with nginx and HAProxy beside them.
# Multi-core (libem-Nt): libem's echo on N reactor threads sharing the port
# through reuse_port (bench/servers/echo_libem_mt.c), libem-1t and libem-2t
# by default, started together and loaded in turns with ping-pong C=100;
# their reference is libem-1t.
# Servers run on the last CPU and the load generator on the first when
# taskset exists and there are 2 CPUs or more. Prints a table at the end and
# writes it to bench/results/LATEST.md.
#
# Environment:
#   BENCH_QUICK=1        smoke run (~1 minute): 1 repetition, short runs
#   BENCH_REPS=N         repetitions (default 5; 1 when quick)
#   BENCH_SECONDS=T      seconds of load per server in each ping-pong, stream
#                        and connect run (default 2; 0.5 when quick)
#   BENCH_SERVERS="..."  subset of: epoll uring libem libuv libevent libev em
#                        em-libem tls-openssl tls-libem tls-libevent
#                        http-floor http-libem http-nginx
#                        proxy-splice-floor proxy-copy-floor-64k
#                        proxy-copy-floor-16k proxy-libem proxy-libem-copy
#                        proxy-haproxy proxy-haproxy-splice
#                        libem-1t libem-2t (any libem-Nt, N up to 64)
#                        (epoll is required with any of the first eight,
#                        tls-openssl with any TLS one, http-floor with any
#                        http-*, proxy-splice-floor with any proxy-*)
#   BENCH_SKIP_DEPS=1    do not check or install packages (EM_SKIP_DEPS too)
#   BENCH_OUT=FILE       where to write the table (bench/results/LATEST.md)
#   BENCH_BUILD=DIR      build directory (default build, made by `make all`;
#                        another one is configured with CMake directly)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

quick=${BENCH_QUICK:-0}
if [[ "$quick" == 1 ]]; then
    reps=${BENCH_REPS:-1}
    secs=${BENCH_SECONDS:-0.5}
    sys_secs=1
    timer_reps=1
    tls_idle_n=2000
    downloads=1
else
    reps=${BENCH_REPS:-5}
    secs=${BENCH_SECONDS:-2}
    sys_secs=2
    timer_reps=3
    tls_idle_n=5000
    downloads=3
fi
all_servers="epoll uring libem libem-uring libuv libevent libev em em-libem libem-1t libem-2t
    tls-openssl tls-libem tls-libevent
    http-floor http-libem http-nginx
    proxy-splice-floor proxy-copy-floor-64k proxy-copy-floor-16k proxy-libem proxy-libem-copy
    proxy-haproxy proxy-haproxy-splice"
want_servers=${BENCH_SERVERS:-$all_servers}
out_md=${BENCH_OUT:-bench/results/LATEST.md}
build_dir=${BENCH_BUILD:-build}
bin=$build_dir/bench
results=bench/results
mkdir -p "$results"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/libem-bench.XXXXXX")
raw="$tmp/raw.txt"
: >"$raw"
t_start=$SECONDS

log() { printf '%s\n' "$*" >&2; }

# ------------------------------------------------------------ cleanup
srv_pid=()
aux_pid=""
sink_pid=""
cleanup() {
    local p
    # Every server, nginx and HAProxy included, is one process (no master
    # with workers), so a SIGKILL to it leaves nothing behind.
    for p in $aux_pid $sink_pid ${srv_pid[@]+"${srv_pid[@]}"}; do
        [[ -n "$p" ]] && kill -KILL "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'log "bench: interrupted"; exit 130' INT TERM

# ------------------------------------------------------------ packages
install_deps() {
    [[ "${BENCH_SKIP_DEPS:-${EM_SKIP_DEPS:-0}}" == 1 ]] && return 0
    bash scripts/install-deps.sh || return 1
    command -v dpkg >/dev/null 2>&1 || {
        log "bench: no dpkg; install libuv, liburing, libevent, libev, ruby-eventmachine, nginx, haproxy, wrk, curl yourself"
        return 0
    }
    local p missing=()
    # libevent-dev has libevent_openssl too (the TLS libevent server).
    # nginx's and HAProxy's packages may start their system services; the
    # suite runs its own instances on ports of its own and leaves those be.
    # liburing-dev: the io_uring floor (echo_uring).
    for p in libuv1-dev liburing-dev libevent-dev libev-dev ruby-eventmachine strace \
        nginx haproxy wrk curl; do
        dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        if ! command -v sudo >/dev/null 2>&1; then
            log "bench: missing ${missing[*]} and no sudo: those servers are skipped"
            return 0
        fi
        sudo=(sudo)
    fi
    log "bench: installing ${missing[*]}"
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
        ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q "${missing[@]}" >&2 ||
        log "bench: apt-get failed; servers whose library is missing are skipped"
}

install_deps || exit 1
# Configure again: a configuration made before the libraries were installed
# did not find them (CMake looks again for what it did not find).
log "bench: building in $build_dir"
if [[ "$build_dir" == build ]]; then
    if [[ -f build/CMakeCache.txt ]]; then
        cmake -S . -B build >"$tmp/build.log" 2>&1 || cat "$tmp/build.log" >&2
    fi
    ${MAKE:-make} --no-print-directory all >>"$tmp/build.log" 2>&1
else
    cmake -S . -B "$build_dir" >"$tmp/build.log" 2>&1 &&
        cmake --build "$build_dir" --parallel 2 >>"$tmp/build.log" 2>&1
fi || {
    cat "$tmp/build.log" >&2
    log "bench: build failed"
    exit 1
}

# ------------------------------------------------------------ servers
have_eventmachine() {
    command -v ruby >/dev/null 2>&1 && ruby -e 'require "eventmachine"' >/dev/null 2>&1
}

# The certificate and key of the TLS servers, made for this run: a P-256
# key (its signature is cheap, so a handshake's cost is more the server's
# own than the certificate's).
cert="$tmp/cert.pem"
key="$tmp/key.pem"
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$key" -out "$cert" -days 2 -subj /CN=localhost >"$tmp/cert.log" 2>&1
}

# echo_NAME, with the dash of tls-NAME as an underscore.
server_bin() { echo "$bin/echo_${1//-/_}"; }

# A system program by name; root's sbin directories are not on every PATH.
find_prog() {
    local d
    command -v "$1" 2>/dev/null && return 0
    for d in /usr/sbin /sbin /usr/local/sbin; do
        [[ -x "$d/$1" ]] && echo "$d/$1" && return 0
    done
    return 1
}
nginx_bin=$(find_prog nginx)
haproxy_bin=$(find_prog haproxy)
wrk_bin=$(find_prog wrk)
curl_bin=$(find_prog curl)
http_file_server=$build_dir/examples/http_file_server
tcp_proxy=$build_dir/examples/tcp_proxy

# Why the file server or proxy NAME cannot run here; nothing when it can.
peer_missing() {
    case $1 in
    http-*) [[ -n "$wrk_bin" ]] || {
        echo "wrk not installed"
        return
    } ;;
    esac
    case $1 in
    http-floor) [[ -x "$bin/http_sendfile_epoll" ]] || echo "not built" ;;
    http-libem) [[ -x "$http_file_server" ]] || echo "not built: no examples/http_file_server on this branch yet" ;;
    http-nginx) [[ -n "$nginx_bin" ]] || echo "nginx not installed" ;;
    proxy-splice-floor) [[ -x "$bin/proxy_splice_epoll" ]] || echo "not built" ;;
    proxy-copy-floor-*) [[ -x "$bin/proxy_copy_epoll" ]] || echo "not built" ;;
    proxy-libem) [[ -x "$tcp_proxy" ]] || echo "not built: no examples/tcp_proxy" ;;
    proxy-libem-copy)
        # Without the switch the row would measure proxy-libem again.
        if [[ ! -x "$tcp_proxy" ]]; then
            echo "not built: no examples/tcp_proxy"
        elif ! grep -qa EM_SPLICE "$tcp_proxy"; then
            echo "this libem reads no EM_SPLICE yet, so its copy path cannot be chosen"
        fi
        ;;
    proxy-haproxy*) [[ -n "$haproxy_bin" ]] || echo "haproxy not installed" ;;
    *) echo "unknown server" ;;
    esac
}

servers=()  # the plain ones
tservers=() # the TLS ones
hservers=() # the HTTP file servers
pservers=() # the TCP proxies
mservers=() # libem on N reactor threads
skipped=()
tls_ok=""
for s in $want_servers; do
    if [[ "$s" == tls-* && -z "$tls_ok" ]]; then
        if make_cert; then tls_ok=1; else tls_ok=0; fi
    fi
    if [[ "$s" == http-* || "$s" == proxy-* ]]; then
        why=$(peer_missing "$s")
        if [[ -n "$why" ]]; then
            skipped+=("$s ($why)")
        elif [[ "$s" == http-* ]]; then
            hservers+=("$s")
        else
            pservers+=("$s")
        fi
    elif [[ "$s" =~ ^libem-([0-9]+)t$ ]]; then
        if [[ ! -x "$bin/echo_libem_mt" ]]; then
            skipped+=("$s (not built)")
        elif ((BASH_REMATCH[1] < 1 || BASH_REMATCH[1] > 64)); then
            skipped+=("$s (1 to 64 threads)")
        else
            mservers+=("$s")
        fi
    elif [[ "$s" == libem-uring ]]; then
        # echo_libem on libem's io_uring backend (EM_BACKEND=io_uring)
        if [[ ! -x "$bin/echo_libem" ]]; then
            skipped+=("$s (not built)")
        elif ! why=$("$build_dir/tests/backend_probe" io_uring 2>&1); then
            skipped+=("$s (${why:-no tests/backend_probe in $build_dir})")
        else
            servers+=("$s")
        fi
    elif [[ "$s" == em ]]; then
        if have_eventmachine; then servers+=(em); else skipped+=("em (ruby or eventmachine missing)"); fi
    elif [[ "$s" == em-libem ]]; then
        # the same Ruby program on libem's extension (ruby/README.md)
        if ! have_eventmachine; then
            skipped+=("em-libem (ruby or eventmachine missing)")
        elif ! bash ruby/build.sh "$build_dir" >>"$tmp/build.log" 2>&1; then
            skipped+=("em-libem (ruby/build.sh failed: ruby-dev missing?)")
        else
            servers+=(em-libem)
        fi
    elif [[ "$s" == tls-* && "$tls_ok" == 0 ]]; then
        skipped+=("$s (the openssl command could not make a certificate)")
    elif [[ ! -x "$(server_bin "$s")" ]]; then
        case $s in
        tls-libem) skipped+=("$s (not built: no em_start_tls in include/em.h yet, or no OpenSSL)") ;;
        tls-*) skipped+=("$s (not built: OpenSSL or libevent_openssl missing)") ;;
        uring) skipped+=("$s (not built: liburing missing)") ;;
        *) skipped+=("$s (not built: library missing)") ;;
        esac
    elif [[ "$s" == tls-* ]]; then
        tservers+=("$s")
    else
        servers+=("$s")
    fi
done
[[ -x "$bin/loadgen" ]] || {
    log "bench: $bin/loadgen was not built"
    exit 1
}
if ((${#servers[@]})) && [[ " ${servers[*]} " != *" epoll "* ]]; then
    log "bench: the raw epoll server is the reference and must be in BENCH_SERVERS"
    exit 1
fi
if ((${#tservers[@]})) && [[ " ${tservers[*]} " != *" tls-openssl "* ]]; then
    log "bench: tls-openssl is the reference of the TLS servers and must run with them"
    exit 1
fi
if ((${#hservers[@]})) && [[ " ${hservers[*]} " != *" http-floor "* ]]; then
    log "bench: http-floor is the reference of the file servers and must run with them"
    exit 1
fi
if ((${#pservers[@]})) && [[ " ${pservers[*]} " != *" proxy-splice-floor "* ]]; then
    log "bench: proxy-splice-floor is the reference of the proxies and must run with them"
    exit 1
fi
if ((${#hservers[@]})) && [[ -z "$curl_bin" ]]; then
    skipped+=("the 1 GiB downloads (curl not installed)")
fi
if ((${#servers[@]} + ${#tservers[@]} + ${#hservers[@]} + ${#pservers[@]} + ${#mservers[@]} == 0)); then
    log "bench: no server to run (skipped: ${skipped[*]:-none})"
    exit 1
fi

# Descriptors: the idle and setup workloads hold N connections on each side
# (setup: each server N, each of loadgen's helper processes N).
ulimit -n "$(ulimit -Hn)" 2>/dev/null
nofile=$(ulimit -n)
idle_n=10000
if [[ "$nofile" != unlimited ]] && ((nofile < idle_n + 64)); then
    idle_n=$((nofile - 64))
    log "bench: descriptor limit $nofile: idle and setup use $idle_n connections"
fi
if [[ "$nofile" != unlimited ]] && ((nofile < tls_idle_n + 64)); then
    tls_idle_n=$((nofile - 64))
fi

# The files the HTTP servers serve, made for this run: 1 KiB and 1 MiB of
# random bytes, and a sparse 1 GiB file. The big one is read once here so
# that every server finds it in the page cache, not only those after the
# first.
http_root="$tmp/www"
make_http_root() {
    mkdir -p "$http_root" &&
        head -c 1024 /dev/urandom >"$http_root/1k" &&
        head -c 1048576 /dev/urandom >"$http_root/1m" &&
        truncate -s 1G "$http_root/1g" &&
        cat "$http_root/1g" >/dev/null
}

# nginx as the file-serving peer: one process (no master: the process
# measured is the one serving, and a SIGKILL leaves no orphan worker; its
# request path is a worker's), sendfile with tcp_nopush, no access log,
# keep-alive that outlasts the run, as the floor's (nginx would otherwise
# close a connection after 1000 requests), and every path it writes in the
# run's directory, so that it needs neither root nor port 80.
nginx_cmd() { # port
    local d="$tmp/nginx.$1"
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
lock_file $d/nginx.lock;
error_log $d/error.log warn;
events {
    worker_connections 1024;
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 600s;
    keepalive_requests 1000000000;
    types { }
    default_type application/octet-stream;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    server {
        listen 127.0.0.1:$1;
        root $http_root;
    }
}
EOF
    echo "$nginx_bin -p $d/ -c $d/nginx.conf -e $d/error.log"
}

# HAProxy as the proxy peer: mode tcp, one thread, no logging, in the
# foreground as one process (-db); timeouts longer than any run. With
# splice=1, splicing forced both ways ("whenever possible", where
# splice-auto would guess), with a pipe for every connection it may want.
haproxy_cmd() { # port splice
    local d="$tmp/haproxy.$1" opt=""
    mkdir -p "$d"
    [[ "$2" == 1 ]] && opt=$'    option splice-request\n    option splice-response'
    cat >"$d/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 1024
    maxpipes 1024
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
$opt
listen proxy
    bind 127.0.0.1:$1
    server sink 127.0.0.1:$sink_port
EOF
    echo "$haproxy_bin -db -f $d/haproxy.cfg"
}

server_cmd() { # name port
    case $1 in
    em) echo "ruby bench/servers/echo_em.rb $2" ;;
    em-libem) echo "ruby -I $build_dir/ruby bench/servers/echo_em.rb $2" ;;
    libem-uring) echo "env EM_BACKEND=io_uring $bin/echo_libem $2" ;;
    tls-*) echo "$(server_bin "$1") $2 $cert $key" ;;
    http-floor) echo "$bin/http_sendfile_epoll $2 $http_root" ;;
    http-libem) echo "$http_file_server --port $2 --root $http_root" ;;
    http-nginx) nginx_cmd "$2" ;;
    proxy-splice-floor) echo "$bin/proxy_splice_epoll $2 $sink_port" ;;
    proxy-copy-floor-64k) echo "$bin/proxy_copy_epoll $2 $sink_port 65536" ;;
    proxy-copy-floor-16k) echo "$bin/proxy_copy_epoll $2 $sink_port 16384" ;;
    proxy-libem) echo "$tcp_proxy $2 $sink_port" ;;
    proxy-libem-copy) echo "env EM_SPLICE=0 $tcp_proxy $2 $sink_port" ;;
    proxy-haproxy) haproxy_cmd "$2" 0 ;;
    proxy-haproxy-splice) haproxy_cmd "$2" 1 ;;
    libem-*t)
        local n=${1#libem-}
        echo "$bin/echo_libem_mt $2 ${n%t}"
        ;;
    *) echo "$(server_bin "$1") $2" ;;
    esac
}

# Whether NAME prints a "ready" line; the others are ready once their port
# takes a connection.
prints_ready() {
    case $1 in
    http-nginx | proxy-libem | proxy-libem-copy | proxy-haproxy*) return 1 ;;
    esac
    return 0
}

port_open() { # port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Pinning: every server on the last CPU this script may use, the load
# generator on the first, so that the loaded server has a CPU of its own and
# the scheduler does not move either around. Without taskset or with one CPU,
# nothing is pinned.
pin_server=()
pin_load=()
if command -v taskset >/dev/null 2>&1; then
    cpus=$(taskset -pc $$ 2>/dev/null | sed 's/.*: *//' | awk -v RS=, '
        { n = split($0, r, "-"); if (n == 2) for (i = r[1]; i <= r[2]; i++) print i; else print r[1] + 0 }')
    if (($(wc -w <<<"$cpus") >= 2)); then
        pin_load=(taskset -c "$(head -n 1 <<<"$cpus")")
        pin_server=(taskset -c "$(tail -n 1 <<<"$cpus")")
    fi
fi
# The multi-reactor servers need more than the one server CPU: every CPU
# but the load generator's when that leaves them two or more, else every
# CPU, the load generator's included (then 2 threads compete with it, and
# the report says so).
pin_mt=()
mt_pin_note="not pinned"
if ((${#pin_server[@]})); then
    if (($(wc -w <<<"$cpus") >= 3)); then
        pin_mt=(taskset -c "$(tail -n +2 <<<"$cpus" | paste -sd, -)")
        mt_pin_note="pinned with \`${pin_mt[*]}\`, the load generator with \`${pin_load[*]}\`"
    else
        mt_pin_note="not pinned: on any of the $(wc -w <<<"$cpus") CPUs, the load generator's (\`${pin_load[*]}\`) included"
    fi
fi

# start_servers NAME...: starts them all at once (a Ruby interpreter takes a
# second or so to boot), each on a port of its own, and waits up to 20 s for
# every "ready" line. Sets srv_name[i], srv_pid[i] and srv_port[i]; srv_port[i]
# is empty for a server that did not start (the reason is logged).
nstarts=0
start_servers() {
    local i j n=$# port out pin
    srv_name=("$@")
    srv_pid=()
    srv_port=()
    srv_out=()
    local state=() # "" waiting, 1 ready, 0 gone
    for ((i = 0; i < n; i++)); do
        for ((j = 0; j < 5; j++)); do # freeport twice in a row may agree
            port=$("$bin/loadgen" freeport) || port=""
            [[ " ${srv_port[*]} " == *" $port "* ]] || break
        done
        nstarts=$((nstarts + 1))
        out="$tmp/server.$nstarts"
        pin=(${pin_server[@]+"${pin_server[@]}"})
        [[ "${srv_name[i]}" == libem-*t ]] && pin=(${pin_mt[@]+"${pin_mt[@]}"})
        # shellcheck disable=SC2046
        ${pin[@]+"${pin[@]}"} $(server_cmd "${srv_name[i]}" "$port") \
            >"$out.out" 2>"$out.err" &
        srv_pid[i]=$!
        srv_port[i]=$port
        state[i]=""
        srv_out[i]=$out
    done
    local waiting=$n tries
    for ((tries = 0; tries < 400 && waiting > 0; tries++)); do
        waiting=0
        for ((i = 0; i < n; i++)); do
            [[ -z "${state[i]}" ]] || continue
            if grep -q "^ready .*port=${srv_port[i]}\b" "${srv_out[i]}.out" 2>/dev/null; then
                state[i]=1
            elif ! prints_ready "${srv_name[i]}" && kill -0 "${srv_pid[i]}" 2>/dev/null &&
                port_open "${srv_port[i]}"; then
                state[i]=1
            elif ! kill -0 "${srv_pid[i]}" 2>/dev/null; then
                state[i]=0
            else
                waiting=$((waiting + 1))
            fi
        done
        ((waiting == 0)) || sleep 0.05
    done
    for ((i = 0; i < n; i++)); do
        [[ "${state[i]}" == 1 ]] && continue
        log "bench: server ${srv_name[i]} did not start: $(tail -n 3 "${srv_out[i]}.err")"
        stop_pid "${srv_pid[i]}"
        srv_pid[i]=""
        srv_port[i]=""
    done
}

# stop_pid PID...: SIGTERM, then SIGKILL to those still there 2 s later (a
# Ruby interpreter can miss a SIGTERM that arrives while it boots).
stop_pid() {
    local p i alive
    kill "$@" 2>/dev/null
    for ((i = 0; i < 40; i++)); do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.05
    done
    for p in "$@"; do
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
}

stop_servers() {
    local p live=()
    for p in ${srv_pid[@]+"${srv_pid[@]}"}; do [[ -n "$p" ]] && live+=("$p"); done
    ((${#live[@]} == 0)) || stop_pid "${live[@]}"
    srv_pid=()
}

# ------------------------------------------------------------ workloads
loadgen_args() { # workload
    case $1 in
    pp1) echo "pingpong --conns 1 --size 64 --seconds $secs" ;;
    pp100 | mt_pp100) echo "pingpong --conns 100 --size 64 --seconds $secs" ;;
    stream) echo "stream --conns 10 --size 16384 --seconds $secs" ;;
    connect) echo "connect --conns 50 --seconds $secs" ;;
    setup) echo "idle --conns $idle_n --chunk 1000" ;;
    idle) echo "idle --conns $idle_n --seconds 0.5" ;;
    tls_pp100) echo "pingpong --conns 100 --size 64 --seconds $secs --tls" ;;
    tls_stream) echo "stream --conns 10 --size 16384 --seconds $secs --tls" ;;
    tls_hs) echo "connect --conns 50 --seconds $secs --tls" ;;
    tls_hs_resumed) echo "connect --conns 50 --seconds $secs --tls --resume" ;;
    tls_idle) echo "idle --conns $tls_idle_n --seconds 0.5 --tls" ;;
    proxy_stream) echo "stream --conns 10 --size 16384 --seconds $secs" ;;
    proxy_pp100) echo "pingpong --conns 100 --size 64 --seconds $secs" ;;
    esac
}

field() { # line key
    sed -n "s/.*[[:space:]]$2=\([^[:space:]]*\).*/\1/p" <<<" $1"
}

summary() { # workload line
    case $1 in
    pp* | tls_pp* | mt_pp*) echo "$(field "$2" ops_per_s) rt/s, p50 $(field "$2" p50_us) us, p99 $(field "$2" p99_us) us, cpu $(field "$2" server_cpu_us_per_op) us/op" ;;
    stream | tls_stream) echo "$(field "$2" mb_per_s) MB/s, cpu $(field "$2" server_cpu_us_per_op) us/op" ;;
    connect) echo "$(field "$2" ops_per_s) conn/s, cpu $(field "$2" server_cpu_us_per_op) us/conn, errors $(field "$2" errors)" ;;
    setup) echo "$(field "$2" ops_per_s) conn/s, cpu $(field "$2" server_cpu_us_per_op) us/conn" ;;
    tls_hs*) echo "$(field "$2" ops_per_s) hs/s, cpu $(field "$2" server_cpu_us_per_op) us/hs, errors $(field "$2" errors), resumed $(field "$2" resumed)" ;;
    idle | tls_idle) echo "$(field "$2" bytes_per_conn) B/conn" ;;
    proxy_stream) echo "$(field "$2" mb_per_s) MB/s, cpu $(field "$2" server_cpu_us_per_op) us/msg" ;;
    proxy_pp100) echo "$(field "$2" ops_per_s) rt/s, p50 $(field "$2" p50_us) us, p99 $(field "$2" p99_us) us, cpu $(field "$2" server_cpu_us_per_op) us/rt" ;;
    http_1k | http_1m) echo "$(field "$2" ops_per_s) req/s, cpu $(field "$2" server_cpu_us_per_op) us/req, p99 $(field "$2" p99_us) us, errors $(field "$2" errors)" ;;
    http_1g) echo "$(field "$2" mb_per_s) MB/s, cpu $(field "$2" server_cpu_us_per_mb) us/MB" ;;
    esac
}

# run_timed REP WORKLOAD NAME...: the servers started together, one loadgen
# run with all of them as targets in the order given, a raw line per server.
run_timed() {
    local rep=$1 w=$2 i k s line why targets="" names=()
    shift 2
    start_servers "$@"
    for ((i = 0; i < ${#srv_name[@]}; i++)); do
        s=${srv_name[i]}
        if [[ -z "${srv_port[i]}" ]]; then
            echo "rep=$rep server=$s workload=$w failed=1" >>"$raw"
            continue
        fi
        targets+="${targets:+,}${srv_port[i]}:${srv_pid[i]}"
        names+=("$s")
    done
    if ((${#names[@]} == 0)); then
        stop_servers
        return
    fi
    # shellcheck disable=SC2046
    ${pin_load[@]+"${pin_load[@]}"} "$bin/loadgen" $(loadgen_args "$w") --targets "$targets" \
        >"$tmp/loadgen.out" 2>"$tmp/loadgen.err"
    stop_servers
    for ((k = 1; k <= ${#names[@]}; k++)); do
        s=${names[k - 1]}
        line=$(grep "^target=$k " "$tmp/loadgen.out")
        line=${line#* } # drop "target=K"
        line=${line#* } # and "port=P"
        if [[ -z "$line" || " $line " == *" failed=1 "* ]]; then
            why=$(grep "^loadgen: target $k " "$tmp/loadgen.err" | tail -n 1)
            log "  rep $rep $(printf '%-14s %-12s' "$w" "$s") FAILED ${why:-$(tail -n 1 "$tmp/loadgen.err")}"
            echo "rep=$rep server=$s workload=$w failed=1" >>"$raw"
            continue
        fi
        echo "rep=$rep server=$s workload=$w $line" >>"$raw"
        log "  rep $rep $(printf '%-14s %-12s' "$w" "$s") $(summary "$w" "$line")"
    done
}

# run_idle REP NAME [WORKLOAD]: one server started, loaded with idle
# connections (workload idle, or tls_idle), stopped (for the memory; the CPU
# per connection set up comes from workload setup).
run_idle() {
    local rep=$1 s=$2 w=${3:-idle} line rc
    start_servers "$s"
    if [[ -z "${srv_port[0]}" ]]; then
        echo "rep=$rep server=$s workload=$w failed=1" >>"$raw"
        return
    fi
    # shellcheck disable=SC2046
    line=$(${pin_load[@]+"${pin_load[@]}"} "$bin/loadgen" $(loadgen_args "$w") \
        --port "${srv_port[0]}" --pid "${srv_pid[0]}" 2>"$tmp/loadgen.err")
    rc=$?
    stop_servers
    if ((rc != 0)) || [[ -z "$line" ]]; then
        log "  rep $rep $(printf '%-14s %-12s' "$w" "$s") FAILED $(tail -n 1 "$tmp/loadgen.err")"
        echo "rep=$rep server=$s workload=$w failed=1" >>"$raw"
        return
    fi
    echo "rep=$rep server=$s workload=$w $line" >>"$raw"
    log "  rep $rep $(printf '%-14s %-12s' "$w" "$s") $(summary "$w" "$line")"
}

# ------------------------------------------------------------ file serving
# wrk and curl load one server at a time, so the file servers take turns
# (as loadgen --targets gives its targets slices): all started together, then
# rounds in which each in turn gets 1 s of wrk (wrk's shortest run), the
# server that goes first moving by one every round; its CPU time is read
# right before its turn and 0.1 s after it (what it does once wrk closes its
# connections counts). Rounds go on until each has had BENCH_SECONDS
# (rounded up to whole seconds). The 1 GiB downloads take turns the same way.
http_rounds=$(awk -v s="$secs" 'BEGIN { n = int(s); if (n < s) n++; print n < 1 ? 1 : n }')
clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)

# A process's CPU time in ns, as loadgen reads it: the sum over its threads
# of /proc/PID/task/*/schedstat (ns on a CPU); utime + stime from
# /proc/PID/stat (clock ticks) where schedstat is missing. Nothing when the
# process is gone.
cpu_ns() { # pid
    local v
    v=$(cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { if (NR) printf "%.0f", s }')
    [[ -n "$v" ]] || v=$(sed 's/.*) //' /proc/"$1"/stat 2>/dev/null |
        awk -v t="$clk_tck" '{ printf "%.0f", ($12 + $13) * 1e9 / t }')
    echo "$v"
}

# wrk --latency's report as key=value: requests, seconds, p50_us, p99_us,
# errors (socket errors of any kind) and bad (non-2xx or 3xx responses).
parse_wrk() {
    awk '
        function us(v) {
            sub(/,$/, "", v)
            if (v ~ /us$/) return v + 0
            if (v ~ /ms$/) return v * 1e3
            if (v ~ /s$/) return v * 1e6
            if (v ~ /m$/) return v * 60e6
            if (v ~ /h$/) return v * 3600e6
            return v + 0
        }
        / requests in / { req = $1; sec = us($4) / 1e6 }
        $1 == "50%" { p50 = us($2) }
        $1 == "99%" { p99 = us($2) }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        /Socket errors:/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
        END {
            printf "requests=%d seconds=%.3f p50_us=%.1f p99_us=%.1f errors=%d bad=%d\n",
                req, sec, p50, p99, err, bad
        }'
}

# http_turn W I: server I's turn of workload W (http_1k, http_1m: 1 s of
# wrk, 50 keep-alive connections; http_1g: one download with curl). Appends
# its numbers to "$tmp/turns.W.I"; fails, saying why, when it went wrong.
http_turn() {
    local w=$1 i=$2 pid=${srv_pid[$2]} port=${srv_port[$2]} c0 c1 line why=""
    c0=$(cpu_ns "$pid")
    if [[ "$w" == http_1g ]]; then
        line=$(${pin_load[@]+"${pin_load[@]}"} "$curl_bin" -s -o /dev/null --max-time 120 \
            -w '%{http_code} %{size_download} %{time_total}' "http://127.0.0.1:$port/1g" 2>&1 |
            awk '{ printf "code=%s bytes=%s seconds=%s", $1, $2, $3 }')
        [[ " $line " == *" code=200 bytes=1073741824 "* ]] || why="download failed: $line"
    else
        line=$(${pin_load[@]+"${pin_load[@]}"} "$wrk_bin" -t1 -c50 -d1s --latency \
            "http://127.0.0.1:$port/${w#http_}" 2>&1 | parse_wrk)
        if [[ " $line " == *" requests=0 "* ]]; then
            why="no request completed"
        elif [[ " $line " != *" bad=0 "* ]]; then
            why="responses other than 2xx: $line"
        fi
    fi
    sleep 0.1
    c1=$(cpu_ns "$pid")
    [[ -n "$c0" && -n "$c1" ]] || why="the server is gone"
    if [[ -n "$why" ]]; then
        log "  $(printf '%-14s %-20s' "$w" "${srv_name[i]}") FAILED $why"
        return 1
    fi
    echo "$line cpu_ns=$((c1 - c0))" >>"$tmp/turns.$w.$i"
}

# http_record REP W I OK: server I's raw line for workload W, its turns
# added up (latencies: the mean of its turns').
http_record() {
    local rep=$1 w=$2 i=$3 s=${srv_name[$3]} line
    if [[ "$4" != 1 || ! -s "$tmp/turns.$w.$i" ]]; then
        echo "rep=$rep server=$s workload=$w failed=1" >>"$raw"
        return
    fi
    line=$(awk -v w="$w" '
        {
            for (f = 1; f <= NF; f++) { split($f, kv, "="); v[kv[1]] += kv[2] }
            n++
        }
        END {
            cpu = v["cpu_ns"] / 1e9
            if (w == "http_1g") {
                mb = v["bytes"] / 1e6
                printf "downloads=%d bytes=%.0f seconds=%.3f mb_per_s=%.1f server_cpu_s=%.3f server_cpu_us_per_mb=%.2f mb_per_cpu_s=%.0f",
                    n, v["bytes"], v["seconds"], mb / v["seconds"], cpu, cpu * 1e6 / mb, (cpu > 0 ? mb / cpu : 0)
            } else {
                printf "turns=%d requests=%d seconds=%.3f ops_per_s=%.1f server_cpu_s=%.3f server_cpu_us_per_op=%.3f p50_us=%.1f p99_us=%.1f errors=%d",
                    n, v["requests"], v["seconds"], v["requests"] / v["seconds"], cpu,
                    cpu * 1e6 / v["requests"], v["p50_us"] / n, v["p99_us"] / n, v["errors"]
            }
        }' "$tmp/turns.$w.$i")
    echo "rep=$rep server=$s workload=$w $line" >>"$raw"
    log "  rep $rep $(printf '%-14s %-20s' "$w" "$s") $(summary "$w" "$line")"
}

# run_http REP NAME...: the file servers started together; the 1 KiB and
# 1 MiB wrk runs, then the 1 GiB downloads, each in turns; stopped.
run_http() {
    local rep=$1 w i k n round rounds ok=()
    shift
    start_servers "$@"
    n=${#srv_name[@]}
    for w in http_1k http_1m http_1g; do
        rounds=$http_rounds
        if [[ "$w" == http_1g ]]; then
            [[ -n "$curl_bin" ]] || continue
            rounds=$downloads
        fi
        rm -f "$tmp"/turns.*
        for ((i = 0; i < n; i++)); do
            ok[i]=0
            [[ -n "${srv_port[i]}" ]] && ok[i]=1
        done
        for ((round = 0; round < rounds; round++)); do
            for ((k = 0; k < n; k++)); do
                i=$(((k + round) % n))
                ((ok[i])) || continue
                http_turn "$w" "$i" || ok[i]=0
            done
        done
        for ((i = 0; i < n; i++)); do
            http_record "$rep" "$w" "$i" "${ok[i]}"
        done
    done
    stop_servers
}

# ------------------------------------------------------------ proxying
# The proxies all forward to one raw epoll echo server (the sink), on the
# servers' CPU; loadgen --targets loads them in turns, so the sink serves
# one proxy at a time.
sink_port=""
start_sink() {
    local i out="$tmp/sink"
    sink_port=$("$bin/loadgen" freeport) || return 1
    ${pin_server[@]+"${pin_server[@]}"} "$bin/echo_epoll" "$sink_port" >"$out.out" 2>"$out.err" &
    sink_pid=$!
    for ((i = 0; i < 200; i++)); do
        grep -q "^ready .*port=$sink_port\b" "$out.out" 2>/dev/null && return 0
        kill -0 "$sink_pid" 2>/dev/null || break
        sleep 0.05
    done
    log "bench: the echo sink did not start: $(tail -n 3 "$out.err")"
    stop_sink
    return 1
}

stop_sink() {
    [[ -n "$sink_pid" ]] && stop_pid "$sink_pid"
    sink_pid=""
}

# run_proxies REP NAME...: stream and ping-pong C=100 through every proxy.
run_proxies() {
    local rep=$1 w s
    shift
    for w in proxy_stream proxy_pp100; do
        if start_sink; then
            run_timed "$rep" "$w" "$@"
        else
            for s in "$@"; do echo "rep=$rep server=$s workload=$w failed=1" >>"$raw"; done
        fi
        stop_sink
    done
}

nserv=${#servers[@]}
ntserv=${#tservers[@]}
nhserv=${#hservers[@]}
npserv=${#pservers[@]}
nmserv=${#mservers[@]}
if ((nhserv)) && ! make_http_root; then
    log "bench: could not make the files to serve in $http_root"
    exit 1
fi
running=(${servers[@]+"${servers[@]}"} ${tservers[@]+"${tservers[@]}"}
    ${hservers[@]+"${hservers[@]}"} ${pservers[@]+"${pservers[@]}"} ${mservers[@]+"${mservers[@]}"})
log "bench: servers: ${running[*]}${skipped[*]:+; skipped: ${skipped[*]}}"
log "bench: $reps repetition(s), ${secs}s of load per server and workload, idle N=$idle_n, TLS idle N=$tls_idle_n"
if ((${#pin_server[@]})); then
    log "bench: servers pinned with '${pin_server[*]}', the load generator with '${pin_load[*]}'"
else
    log "bench: nothing pinned (no taskset, or a single CPU)"
fi
((nmserv)) && log "bench: multi-reactor servers $mt_pin_note"
for ((rep = 1; rep <= reps; rep++)); do
    order=()
    for ((k = 0; k < nserv; k++)); do
        order+=("${servers[$(((k + rep - 1) % nserv))]}")
    done
    torder=()
    for ((k = 0; k < ntserv; k++)); do
        torder+=("${tservers[$(((k + rep - 1) % ntserv))]}")
    done
    horder=()
    for ((k = 0; k < nhserv; k++)); do
        horder+=("${hservers[$(((k + rep - 1) % nhserv))]}")
    done
    porder=()
    for ((k = 0; k < npserv; k++)); do
        porder+=("${pservers[$(((k + rep - 1) % npserv))]}")
    done
    morder=()
    for ((k = 0; k < nmserv; k++)); do
        morder+=("${mservers[$(((k + rep - 1) % nmserv))]}")
    done
    if ((nserv)); then
        for w in pp1 pp100 stream connect setup; do
            run_timed "$rep" "$w" "${order[@]}"
        done
    fi
    if ((ntserv)); then
        for w in tls_pp100 tls_stream tls_hs tls_hs_resumed; do
            run_timed "$rep" "$w" "${torder[@]}"
        done
    fi
    ((nhserv)) && run_http "$rep" "${horder[@]}"
    ((npserv)) && run_proxies "$rep" "${porder[@]}"
    ((nmserv)) && run_timed "$rep" mt_pp100 "${morder[@]}"
    for s in ${order[@]+"${order[@]}"}; do
        run_idle "$rep" "$s"
    done
    for s in ${torder[@]+"${torder[@]}"}; do
        run_idle "$rep" "$s" tls_idle
    done
done

# ------------------------------------------------------------ system calls
# Counted while a ping-pong C=1 run goes through the server (per echoed
# message), then a C=100 one (where a turn serves many connections), then
# a connect run (per connection): perf counts
# raw_syscalls:sys_enter (little disturbance); strace -c -f gives the
# breakdown by name. Either alone is used when the other is missing.
have_perf=0
if command -v perf >/dev/null 2>&1 && perf stat -e raw_syscalls:sys_enter -x, -o /dev/null true >/dev/null 2>&1; then
    have_perf=1
fi
have_strace=0
if command -v strace >/dev/null 2>&1 && strace -c -o /dev/null true >/dev/null 2>&1; then
    have_strace=1
fi

sys_load_args() { # pp1|pp100|connect
    if [[ "$1" == connect ]]; then
        echo "connect --conns 50 --seconds $sys_secs"
    elif [[ "$1" == pp100 ]]; then
        echo "pingpong --conns 100 --size 64 --seconds $sys_secs"
    else
        echo "pingpong --conns 1 --size 64 --seconds $sys_secs"
    fi
}

count_syscalls() { # server tool pp1|pp100|connect
    local s=$1 tool=$2 of=$3 line rc calls ops
    start_servers "$s"
    [[ -n "${srv_port[0]}" ]] || return 1
    if [[ "$tool" == perf ]]; then
        perf stat -e raw_syscalls:sys_enter -x, -o "$tmp/sys.out" -p "${srv_pid[0]}" 2>/dev/null &
    else
        strace -c -f -o "$tmp/sys.out" -p "${srv_pid[0]}" 2>/dev/null &
    fi
    aux_pid=$!
    sleep 0.3 # attach before the first message
    # shellcheck disable=SC2046
    line=$(${pin_load[@]+"${pin_load[@]}"} "$bin/loadgen" $(sys_load_args "$of") \
        --port "${srv_port[0]}" 2>/dev/null)
    rc=$?
    kill -INT "$aux_pid" 2>/dev/null
    wait "$aux_pid" 2>/dev/null
    aux_pid=""
    stop_servers
    ((rc == 0)) || return 1
    ops=$(field "$line" ops)
    [[ -n "$ops" && "$ops" != 0 ]] || return 1
    if [[ "$tool" == perf ]]; then
        calls=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$tmp/sys.out")
        [[ "$calls" =~ ^[0-9]+$ ]] || return 1
        echo "server=$s workload=syscalls of=$of tool=perf calls=$calls ops=$ops" >>"$raw"
    else
        # strace -c: "% time seconds usecs/call calls [errors] syscall"; the
        # errors column may be empty, so the name is the last field.
        local parsed
        parsed=$(awk -v ops="$ops" '
            /^-/ || /^%/ || NF < 4 { next }
            $NF == "total" { total = $4; next }
            { n[$NF] = $4; order[++k] = $NF }
            END {
                out = ""
                for (i = 1; i <= k; i++) {
                    per = n[order[i]] / ops
                    if (per >= 0.05) out = out (out == "" ? "" : ",") order[i] ":" sprintf("%.2f", per)
                }
                printf "calls=%d breakdown=%s", total, out
            }' "$tmp/sys.out")
        echo "server=$s workload=syscalls of=$of tool=strace ops=$ops $parsed" >>"$raw"
    fi
}

if ((nserv == 0)); then
    : # only TLS servers: their system calls are not counted
elif ((have_perf || have_strace)); then
    log "bench: system calls per echoed message (ping-pong C=1, C=100) and per connection (connect C=50), ${sys_secs}s each"
    for s in ${servers[@]+"${servers[@]}"}; do
        for of in pp1 pp100 connect; do
            ((have_perf)) && { count_syscalls "$s" perf "$of" || log "  $s: perf count failed"; }
            ((have_strace)) && { count_syscalls "$s" strace "$of" || log "  $s: strace count failed"; }
        done
        log "  $s: $(grep "^server=$s workload=syscalls" "$raw" |
            awk '{ for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
                   printf "%s %.2f/%s  ", v["tool"], v["calls"] / v["ops"], v["of"] == "connect" ? "conn" : "msg" }')"
    done
else
    log "bench: neither perf nor strace works here: no system call counts"
fi

# ------------------------------------------------------------ timers
((nserv)) && log "bench: timers (1,000,000 added, half cancelled, half fired)"
for ((rep = 1; nserv && rep <= timer_reps; rep++)); do
    for lib in libem libuv; do
        line=$("$bin/timers" "$lib" 2>"$tmp/timers.err")
        if [[ $? -eq 0 && -n "$line" ]]; then
            echo "rep=$rep $line" >>"$raw"
            log "  rep $rep $(printf '%-6s' "$lib") $(field "$line" total_ms) ms (add $(field "$line" add_ms), cancel $(field "$line" cancel_ms), fire $(field "$line" fire_ms))"
        else
            log "  rep $rep $lib: skipped or failed ${line:-$(tail -n 1 "$tmp/timers.err")}"
        fi
    done
done

# ------------------------------------------------------------ report
pkgver() {
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"
}
cc_path=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$build_dir/CMakeCache.txt" 2>/dev/null)
elapsed=$((SECONDS - t_start))
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- src include 2>/dev/null; then
    commit="$commit + uncommitted changes in src/ or include/"
fi
cmdline="make bench"
[[ "$quick" == 1 ]] && cmdline="BENCH_QUICK=1 make bench"
{
    echo "# libem benchmark results"
    echo
    echo "Produced by \`$cmdline\` on $(date -u '+%Y-%m-%d %H:%M UTC') in ${elapsed} s;"
    echo "libem at commit $commit. $reps repetition(s), ${secs} s of load per server in"
    echo "each ping-pong, stream and connect run (all servers in one run, in slices;"
    echo "idle set-up CPU likewise, in chunks of 1000 connections),"
    if ((${#pin_server[@]})); then
        echo "idle N=$idle_n, TLS idle N=$tls_idle_n. Pinned: servers \`${pin_server[*]}\`, load generator \`${pin_load[*]}\`."
    else
        echo "idle N=$idle_n, TLS idle N=$tls_idle_n. Nothing pinned."
    fi
    echo "Servers skipped: ${skipped[*]:-none}."
    echo
    echo "## Machine"
    echo
    echo "- CPUs: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "- Memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- Kernel: $(uname -sr)"
    echo "- Compiler: $("${cc_path:-cc}" --version 2>/dev/null | head -n 1) (-O2 -g)"
    echo "- libuv $(pkgver libuv1-dev), libevent $(pkgver libevent-dev), libev $(pkgver libev-dev), liburing $(pkgver liburing-dev)"
    if ((ntserv)); then
        echo "- $(openssl version 2>/dev/null | cut -d' ' -f1-2) (TLS servers and load generator); certificate: self-signed, ECDSA P-256"
    fi
    if command -v ruby >/dev/null 2>&1; then
        echo "- $(ruby -v | cut -d' ' -f1-2), eventmachine $(pkgver ruby-eventmachine)"
    fi
    if ((nhserv)); then
        echo "- nginx $(pkgver nginx), wrk $(pkgver wrk), curl $(pkgver curl)"
    fi
    if ((npserv)); then
        echo "- HAProxy $(pkgver haproxy)"
    fi
    echo
    awk -v servers="${running[*]}" -v mt_pin="$mt_pin_note" -v ncpu="$(nproc)" \
        -v http_rounds="$http_rounds" -v downloads="$downloads" -f bench/report.awk "$raw"
} >"$tmp/LATEST.md"
cp "$tmp/LATEST.md" "$out_md"
cp "$raw" "${out_md%.md}.raw.txt"
echo
cat "$out_md"
echo
log "bench: written to $out_md (raw data: ${out_md%.md}.raw.txt) in ${elapsed} s"
