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
# Servers run on the last CPU and the load generator on the first when
# taskset exists and there are 2 CPUs or more. Prints a table at the end and
# writes it to bench/results/LATEST.md.
#
# Environment:
#   BENCH_QUICK=1        smoke run (~1 minute): 1 repetition, short runs
#   BENCH_REPS=N         repetitions (default 5; 1 when quick)
#   BENCH_SECONDS=T      seconds of load per server in each ping-pong, stream
#                        and connect run (default 2; 0.5 when quick)
#   BENCH_SERVERS="..."  subset of: epoll libem libuv libevent libev em
#                        tls-openssl tls-libem tls-libevent (epoll is required
#                        with any of the first six, tls-openssl with any TLS one)
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
else
    reps=${BENCH_REPS:-5}
    secs=${BENCH_SECONDS:-2}
    sys_secs=2
    timer_reps=3
    tls_idle_n=5000
fi
all_servers="epoll libem libuv libevent libev em tls-openssl tls-libem tls-libevent"
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
cleanup() {
    local p
    for p in $aux_pid ${srv_pid[@]+"${srv_pid[@]}"}; do
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
        log "bench: no dpkg; install libuv, libevent, libev, ruby-eventmachine yourself"
        return 0
    }
    local p missing=()
    # libevent-dev has libevent_openssl too (the TLS libevent server).
    for p in libuv1-dev libevent-dev libev-dev ruby-eventmachine strace; do
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

servers=()  # the plain ones
tservers=() # the TLS ones
skipped=()
tls_ok=""
for s in $want_servers; do
    if [[ "$s" == tls-* && -z "$tls_ok" ]]; then
        if make_cert; then tls_ok=1; else tls_ok=0; fi
    fi
    if [[ "$s" == em ]]; then
        if have_eventmachine; then servers+=(em); else skipped+=("em (ruby or eventmachine missing)"); fi
    elif [[ "$s" == tls-* && "$tls_ok" == 0 ]]; then
        skipped+=("$s (the openssl command could not make a certificate)")
    elif [[ ! -x "$(server_bin "$s")" ]]; then
        case $s in
        tls-libem) skipped+=("$s (not built: no em_start_tls in include/em.h yet, or no OpenSSL)") ;;
        tls-*) skipped+=("$s (not built: OpenSSL or libevent_openssl missing)") ;;
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
if ((${#servers[@]} + ${#tservers[@]} == 0)); then
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

server_cmd() { # name port
    case $1 in
    em) echo "ruby bench/servers/echo_em.rb $2" ;;
    tls-*) echo "$(server_bin "$1") $2 $cert $key" ;;
    *) echo "$(server_bin "$1") $2" ;;
    esac
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

# start_servers NAME...: starts them all at once (a Ruby interpreter takes a
# second or so to boot), each on a port of its own, and waits up to 20 s for
# every "ready" line. Sets srv_name[i], srv_pid[i] and srv_port[i]; srv_port[i]
# is empty for a server that did not start (the reason is logged).
nstarts=0
start_servers() {
    local i j n=$# port out
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
        # shellcheck disable=SC2046
        ${pin_server[@]+"${pin_server[@]}"} $(server_cmd "${srv_name[i]}" "$port") \
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
    pp100) echo "pingpong --conns 100 --size 64 --seconds $secs" ;;
    stream) echo "stream --conns 10 --size 16384 --seconds $secs" ;;
    connect) echo "connect --conns 50 --seconds $secs" ;;
    setup) echo "idle --conns $idle_n --chunk 1000" ;;
    idle) echo "idle --conns $idle_n --seconds 0.5" ;;
    tls_pp100) echo "pingpong --conns 100 --size 64 --seconds $secs --tls" ;;
    tls_stream) echo "stream --conns 10 --size 16384 --seconds $secs --tls" ;;
    tls_hs) echo "connect --conns 50 --seconds $secs --tls" ;;
    tls_hs_resumed) echo "connect --conns 50 --seconds $secs --tls --resume" ;;
    tls_idle) echo "idle --conns $tls_idle_n --seconds 0.5 --tls" ;;
    esac
}

field() { # line key
    sed -n "s/.*[[:space:]]$2=\([^[:space:]]*\).*/\1/p" <<<" $1"
}

summary() { # workload line
    case $1 in
    pp* | tls_pp*) echo "$(field "$2" ops_per_s) rt/s, p50 $(field "$2" p50_us) us, p99 $(field "$2" p99_us) us, cpu $(field "$2" server_cpu_us_per_op) us/op" ;;
    stream | tls_stream) echo "$(field "$2" mb_per_s) MB/s, cpu $(field "$2" server_cpu_us_per_op) us/op" ;;
    connect) echo "$(field "$2" ops_per_s) conn/s, cpu $(field "$2" server_cpu_us_per_op) us/conn, errors $(field "$2" errors)" ;;
    setup) echo "$(field "$2" ops_per_s) conn/s, cpu $(field "$2" server_cpu_us_per_op) us/conn" ;;
    tls_hs*) echo "$(field "$2" ops_per_s) hs/s, cpu $(field "$2" server_cpu_us_per_op) us/hs, errors $(field "$2" errors), resumed $(field "$2" resumed)" ;;
    idle | tls_idle) echo "$(field "$2" bytes_per_conn) B/conn" ;;
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

nserv=${#servers[@]}
ntserv=${#tservers[@]}
log "bench: servers: ${servers[*]} ${tservers[*]}${skipped[*]:+; skipped: ${skipped[*]}}"
log "bench: $reps repetition(s), ${secs}s of load per server and workload, idle N=$idle_n, TLS idle N=$tls_idle_n"
if ((${#pin_server[@]})); then
    log "bench: servers pinned with '${pin_server[*]}', the load generator with '${pin_load[*]}'"
else
    log "bench: nothing pinned (no taskset, or a single CPU)"
fi
for ((rep = 1; rep <= reps; rep++)); do
    order=()
    for ((k = 0; k < nserv; k++)); do
        order+=("${servers[$(((k + rep - 1) % nserv))]}")
    done
    torder=()
    for ((k = 0; k < ntserv; k++)); do
        torder+=("${tservers[$(((k + rep - 1) % ntserv))]}")
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
    for s in ${order[@]+"${order[@]}"}; do
        run_idle "$rep" "$s"
    done
    for s in ${torder[@]+"${torder[@]}"}; do
        run_idle "$rep" "$s" tls_idle
    done
done

# ------------------------------------------------------------ system calls
# Counted while a ping-pong C=1 run goes through the server (per echoed
# message), then a connect run (per connection): perf counts
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

sys_load_args() { # pp1|connect
    if [[ "$1" == connect ]]; then
        echo "connect --conns 50 --seconds $sys_secs"
    else
        echo "pingpong --conns 1 --size 64 --seconds $sys_secs"
    fi
}

count_syscalls() { # server tool pp1|connect
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
    log "bench: system calls per echoed message (ping-pong C=1) and per connection (connect C=50), ${sys_secs}s each"
    for s in ${servers[@]+"${servers[@]}"}; do
        for of in pp1 connect; do
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
    echo "- libuv $(pkgver libuv1-dev), libevent $(pkgver libevent-dev), libev $(pkgver libev-dev)"
    if ((ntserv)); then
        echo "- $(openssl version 2>/dev/null | cut -d' ' -f1-2) (TLS servers and load generator); certificate: self-signed, ECDSA P-256"
    fi
    if command -v ruby >/dev/null 2>&1; then
        echo "- $(ruby -v | cut -d' ' -f1-2), eventmachine $(pkgver ruby-eventmachine)"
    fi
    echo
    awk -v servers="${servers[*]} ${tservers[*]}" -f bench/report.awk "$raw"
} >"$tmp/LATEST.md"
cp "$tmp/LATEST.md" "$out_md"
cp "$raw" "${out_md%.md}.raw.txt"
echo
cat "$out_md"
echo
log "bench: written to $out_md (raw data: ${out_md%.md}.raw.txt) in ${elapsed} s"
