# Turns bench/run.sh's raw key=value lines into the Markdown tables of
# bench/results/LATEST.md. POSIX awk (mawk and gawk).
#   awk -v servers="epoll libem ..." [-v http_rounds=N -v downloads=N] \
#       [-v mt_pin="how the libem-Nt servers ran" -v ncpu=N] \
#       -f bench/report.awk raw.txt
#
# Every cell is the median over the repetitions with [min–max] after it; a
# "x epoll" cell is the median of the per-repetition ratios to the raw epoll
# server measured in the same repetition ("x floor": to the OpenSSL + raw
# epoll server, tls-openssl, for the TLS servers, named tls-*; to
# http-floor for the file servers, http-*; to proxy-splice-floor for the
# proxies, proxy-*; "x nginx", "x HAProxy" likewise to those peers; "x 1
# thread": to libem-1t for libem on N reactor threads, libem-Nt).

function sortn(a, n,    i, j, t) {
    for (i = 2; i <= n; i++) {
        t = a[i]
        for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
        a[j + 1] = t
    }
}

# median / min / max of the values of key k over the repetitions; sets
# g_n (how many), g_min, g_max; returns the median.
function stat(s, w, k,    r, n, a) {
    n = 0
    for (r = 1; r <= maxrep; r++)
        if ((s SUBSEP w SUBSEP k SUBSEP r) in val) a[++n] = val[s, w, k, r] + 0
    g_n = n
    if (n == 0) return ""
    sortn(a, n)
    g_min = a[1]; g_max = a[n]
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}

# Median of the per-repetition ratios s/ref of key k (each pair measured in
# the same repetition, so the machine's drift between repetitions cancels).
function ratio_to(s, ref, w, k,    r, n, a) {
    n = 0
    for (r = 1; r <= maxrep; r++)
        if ((s SUBSEP w SUBSEP k SUBSEP r) in val && (ref SUBSEP w SUBSEP k SUBSEP r) in val &&
            val[ref, w, k, r] + 0 > 0)
            a[++n] = val[s, w, k, r] / val[ref, w, k, r]
    if (n == 0) return ""
    sortn(a, n)
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}

function ratio(s, w, k) { return ratio_to(s, "epoll", w, k) }

# "median [min–max]" formatted with fmt, or "failed" / "–".
function cell(s, w, k, fmt,    m) {
    m = stat(s, w, k)
    if (m == "") return ((s SUBSEP w) in failed) ? "failed" : "–"
    if (g_n == 1) return sprintf(fmt, m)
    return sprintf(fmt " [" fmt "–" fmt "]", m, g_min, g_max)
}

function rcell(s, w, k,    x) {
    x = ratio(s, w, k)
    return x == "" ? "–" : sprintf("%.2f", x)
}

function label(s) {
    if (s == "tls-openssl") return "OpenSSL + raw epoll"
    if (s == "http-floor") return "sendfile + raw epoll (floor)"
    if (s == "http-libem") return "libem (http_file_server)"
    if (s == "http-nginx") return "nginx"
    if (s == "proxy-splice-floor") return "splice + raw epoll (floor)"
    if (s == "proxy-copy-floor-64k") return "copy + raw epoll, 64 KiB buffer"
    if (s == "proxy-copy-floor-16k") return "copy + raw epoll, 16 KiB buffer"
    if (s == "proxy-libem") return "libem (tcp_proxy)"
    if (s == "proxy-libem-copy") return "libem (tcp_proxy), EM_SPLICE=0"
    if (s == "proxy-haproxy") return "HAProxy"
    if (s == "proxy-haproxy-splice") return "HAProxy, splice forced"
    if (s ~ /^tls-/) return substr(s, 5)
    if (s ~ /^libem-[0-9]+t$/) return "libem, " nthreads(s) (nthreads(s) == 1 ? " reactor thread" : " reactor threads")
    if (s == "em-libem") return "Ruby EventMachine on libem's extension"
    if (s == "uring") return "raw io_uring"
    if (s == "libem-uring") return "libem on io_uring"
    return s == "epoll" ? "raw epoll" : s == "em" ? "Ruby EventMachine" : s
}

function nthreads(s) { return substr(s, 7, length(s) - 7) + 0 }

function yesno(b) { return b ? "**holds**" : "**misses**" }

{
    delete kv
    for (i = 1; i <= NF; i++) {
        eq = index($i, "=")
        if (eq) kv[substr($i, 1, eq - 1)] = substr($i, eq + 1)
    }
    r = kv["rep"] + 0
    if (r > maxrep) maxrep = r
    if (kv["bench"] == "timers") {
        lib = kv["lib"]
        timer_libs[lib] = 1
        if (r > tmaxrep) tmaxrep = r
        for (k in kv) if (k ~ /_ms$/) val["timers", lib, k, r] = kv[k]
        next
    }
    s = kv["server"]; w = kv["workload"]
    if (w == "syscalls") {
        of = kv["of"] == "" ? "pp1" : kv["of"]
        if (kv["ops"] + 0 > 0) sys[s, of, kv["tool"]] = kv["calls"] / kv["ops"]
        if (kv["breakdown"] != "") breakdown[s, of] = kv["breakdown"]
        next
    }
    if (kv["failed"] == 1) { failed[s, w] = 1; next }
    for (k in kv) if (kv[k] ~ /^[0-9.]+$/) val[s, w, k, r] = kv[k]
    # Per MB forwarded: each echoed byte crosses the proxy twice.
    if (w == "proxy_stream" && kv["size"] + 0 > 0 && kv["server_cpu_us_per_op"] != "")
        val[s, w, "cpu_us_per_mb", r] = kv["server_cpu_us_per_op"] * 1e6 / (2 * kv["size"])
}

function syscalls(s, of) {
    if ((s SUBSEP of SUBSEP "perf") in sys) return sprintf("%.2f", sys[s, of, "perf"])
    if ((s SUBSEP of SUBSEP "strace") in sys) return sprintf("%.2f", sys[s, of, "strace"])
    return "–"
}

function names(s, of,    bd) {
    bd = breakdown[s, of]
    if (bd == "") return "–"
    gsub(/:/, " ", bd); gsub(/,/, ", ", bd)
    return bd
}

END {
    nall = split(servers, ALL, " ")
    ns = nt = nh = np = nm = 0
    for (i = 1; i <= nall; i++)
        if (ALL[i] ~ /^tls-/) T[++nt] = ALL[i]
        else if (ALL[i] ~ /^http-/) H[++nh] = ALL[i]
        else if (ALL[i] ~ /^proxy-/) P[++np] = ALL[i]
        else if (ALL[i] ~ /^libem-[0-9]+t$/) M[++nm] = ALL[i]
        else S[++ns] = ALL[i]
    allmaxrep = maxrep
    if (ns) plain_tables()
    maxrep = allmaxrep
    if (ns && nt) print ""
    if (nt) tls_tables()
    maxrep = allmaxrep
    if (nh) {
        if (ns || nt) print ""
        http_tables()
    }
    if (np) {
        if (ns || nt || nh) print ""
        proxy_tables()
    }
    if (nm) {
        if (ns || nt || nh || np) print ""
        mt_tables()
    }
}

function plain_tables(    i, j, s, w, l1, l1b, l2, l2b, saved, lib, tl, ntl, tr, a, b,
                          nw, W, wname, ok, txt, x, worst, who, seen, TW, TK, me, ep, m) {
    print "## Throughput"
    print ""
    print "Median [min–max] over the repetitions; \"x epoll\" is the median of the"
    print "per-repetition ratios to the raw epoll server (higher is better)."
    print ""
    print "| server | ping-pong C=1 (rt/s) | x epoll | ping-pong C=100 (rt/s) | x epoll | stream C=10, 16 KiB (MB/s) | x epoll | connect C=50 (conn/s) | x epoll |"
    print "|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= ns; i++) {
        s = S[i]
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label(s),
            cell(s, "pp1", "ops_per_s", "%.0f"), rcell(s, "pp1", "ops_per_s"),
            cell(s, "pp100", "ops_per_s", "%.0f"), rcell(s, "pp100", "ops_per_s"),
            cell(s, "stream", "mb_per_s", "%.0f"), rcell(s, "stream", "mb_per_s"),
            cell(s, "connect", "ops_per_s", "%.0f"), rcell(s, "connect", "ops_per_s")
    }
    print ""
    print "## Server CPU per operation"
    print ""
    print "µs of server CPU (time on a CPU of all its threads, /proc/PID/task/*/schedstat)"
    print "per round trip, per 16 KiB message echoed, per connection (lower is better);"
    print "idle setup: per connection set up while N are held, servers interleaved in"
    print "chunks; \"x epoll\" as above."
    print ""
    print "| server | ping-pong C=1 | x epoll | ping-pong C=100 | x epoll | stream | x epoll | connect | x epoll | idle setup | x epoll |"
    print "|---|---|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= ns; i++) {
        s = S[i]
        printf "| %s |", label(s)
        for (j = 1; j <= 5; j++) {
            w = j == 1 ? "pp1" : j == 2 ? "pp100" : j == 3 ? "stream" : j == 4 ? "connect" : "setup"
            printf " %s | %s |", cell(s, w, "server_cpu_us_per_op", "%.2f"), rcell(s, w, "server_cpu_us_per_op")
        }
        printf "\n"
    }
    print ""
    print "## Latency, idle memory, system calls"
    print ""
    print "Latency: median over the repetitions of each run's p50 / p99, µs. Idle: server"
    print "VmRSS growth per idle connection, bytes. System calls: server system calls"
    print "per echoed 64-byte message during a ping-pong C=1 run, then a C=100 one"
    print "(perf counts; strace names them, at C=1)."
    print ""
    print "| server | ping-pong C=1 p50 / p99 | ping-pong C=100 p50 / p99 | idle bytes/conn | syscalls/msg C=1 | C=100 | by name (per msg, C=1) |"
    print "|---|---|---|---|---|---|---|"
    for (i = 1; i <= ns; i++) {
        s = S[i]
        l1 = stat(s, "pp1", "p50_us"); l1b = stat(s, "pp1", "p99_us")
        l2 = stat(s, "pp100", "p50_us"); l2b = stat(s, "pp100", "p99_us")
        printf "| %s | %s | %s | %s | %s | %s | %s |\n", label(s),
            l1 == "" ? "–" : sprintf("%.0f / %.0f", l1, l1b),
            l2 == "" ? "–" : sprintf("%.0f / %.0f", l2, l2b),
            cell(s, "idle", "bytes_per_conn", "%.0f"),
            syscalls(s, "pp1"), syscalls(s, "pp100"), names(s, "pp1")
    }
    print ""
    print "System calls per connection: server system calls during a connect C=50 run"
    print "(open, 1-byte echo, close), divided by the connections."
    print ""
    print "| server | syscalls/conn | by name (per conn) |"
    print "|---|---|---|"
    for (i = 1; i <= ns; i++)
        printf "| %s | %s | %s |\n", label(S[i]), syscalls(S[i], "connect"), names(S[i], "connect")
    print ""
    print "## Timers"
    print ""
    print "1,000,000 one-shot timers added, every other one cancelled, the rest fired;"
    print "wall time in ms, median [min–max]."
    print ""
    print "| library | total | add | cancel | fire | x libuv (total) |"
    print "|---|---|---|---|---|---|"
    saved = maxrep; maxrep = tmaxrep
    for (lib in timer_libs) tl[++ntl] = lib
    sortn(tl, ntl)
    for (i = 1; i <= ntl; i++) {
        lib = tl[i]
        tr = ""
        if ("libuv" in timer_libs) {
            a = stat("timers", lib, "total_ms"); b = stat("timers", "libuv", "total_ms")
            if (b > 0) tr = sprintf("%.2f", a / b)
        }
        printf "| %s | %s | %s | %s | %s | %s |\n", lib,
            cell("timers", lib, "total_ms", "%.0f"), cell("timers", lib, "add_ms", "%.0f"),
            cell("timers", lib, "cancel_ms", "%.0f"), cell("timers", lib, "fire_ms", "%.0f"),
            tr == "" ? "–" : tr
    }
    if (ntl == 0) print "| (not run) | | | | | |"
    maxrep = saved
    print ""

    # ---------------------------------------------------------- targets
    print "## libem against the targets of issue 4"
    print ""
    nw = split("pp1 pp100 stream connect setup", W, " ")
    wname["pp1"] = "ping-pong C=1"; wname["pp100"] = "ping-pong C=100"; wname["stream"] = "stream"
    wname["connect"] = "connect"; wname["setup"] = "idle setup"
    ok = 1; txt = ""
    for (j = 1; j <= nw; j++) {
        x = ratio("libem", W[j], "server_cpu_us_per_op")
        if (x == "" || x > 1.05) ok = 0
        txt = txt sprintf("%s%s %s", j > 1 ? ", " : "", wname[W[j]], x == "" ? "–" : sprintf("%.2f", x))
    }
    print "- Server CPU per operation at most 1.05 x raw epoll on every workload: " yesno(ok) " (" txt ")."
    ok = 1; txt = ""; seen = 0
    for (j = 1; j <= nw; j++) {
        # the closest other library: the highest median of libem/it
        worst = ""; who = ""
        for (i = 1; i <= ns; i++) {
            s = S[i]
            # the floors are not libraries one would pick instead
            if (s == "libem" || s == "epoll" || s == "uring" || s == "libem-uring") continue
            x = ratio_to("libem", s, W[j], "server_cpu_us_per_op")
            if (x != "" && (worst == "" || x > worst)) { worst = x; who = s }
        }
        if (worst == "" || worst >= 1) ok = 0
        if (worst != "") seen++
        txt = txt sprintf("%s%s %s", j > 1 ? "; " : "", wname[W[j]],
            worst == "" ? "–" : sprintf("%.2f x %s", worst, label(who)))
    }
    if (!seen)
        print "- Server CPU per operation below every other library on every workload: not measured (no other library ran)."
    else
        print "- Server CPU per operation below every other library on every workload: " yesno(ok) " (libem's CPU divided by the closest other library's in the same repetition, median: " txt ")."
    ok = 1; txt = ""
    split("pp1 pp100 stream connect", TW, " "); split("ops_per_s ops_per_s mb_per_s ops_per_s", TK, " ")
    for (j = 1; j <= 4; j++) {
        x = ratio("libem", TW[j], TK[j])
        if (x == "" || x < 0.95) ok = 0
        txt = txt sprintf("%s%s %s", j > 1 ? ", " : "", wname[TW[j]], x == "" ? "–" : sprintf("%.2f", x))
    }
    print "- Throughput at least 0.95 x raw epoll on every workload: " yesno(ok) " (" txt ")."
    me = syscalls("libem", "pp1"); ep = syscalls("epoll", "pp1")
    if (me == "–" || ep == "–")
        print "- System calls per echoed message as few as raw epoll's: not measured."
    else
        print "- System calls per echoed message as few as raw epoll's: " yesno(me + 0 <= ep + 0.05) sprintf(" (libem %s, raw epoll %s; per connection: libem %s, raw epoll %s).", me, ep, syscalls("libem", "connect"), syscalls("epoll", "connect"))
    m = stat("libem", "idle", "bytes_per_conn")
    if (m == "")
        print "- Idle memory at most 128 bytes per connection: not measured."
    else
        print "- Idle memory at most 128 bytes per connection: " yesno(m <= 128) sprintf(" (%.0f B).", m)
    saved = maxrep; maxrep = tmaxrep
    a = stat("timers", "libem", "total_ms"); b = stat("timers", "libuv", "total_ms")
    if (a == "" || b == "")
        print "- One million timers faster than libuv: not measured."
    else
        print "- One million timers faster than libuv: " yesno(a < b) sprintf(" (libem %.0f ms, libuv %.0f ms).", a, b)
    maxrep = saved # the io_uring targets are over every repetition
    uring_targets()
}

# Issue 15: libem on io_uring against raw epoll and the raw io_uring server.
function uring_targets(    j, x, y, ok, txt, lim, m, nw, W, wname) {
    if (stat("libem-uring", "pp1", "server_cpu_us_per_op") == "") return
    nw = split("pp1 pp100 stream connect setup", W, " ")
    wname["pp1"] = "ping-pong C=1"; wname["pp100"] = "ping-pong C=100"; wname["stream"] = "stream"
    wname["connect"] = "connect"; wname["setup"] = "idle setup"
    print ""
    print "## libem on io_uring against the targets of issue 15"
    print ""
    lim["pp1"] = 1.02; lim["pp100"] = 0.90; lim["stream"] = 1.02; lim["connect"] = 0.95; lim["setup"] = 0.95
    for (j = 1; j <= nw; j++) {
        x = ratio("libem-uring", W[j], "server_cpu_us_per_op")
        printf "- Server CPU per operation, %s, at most %.2f x raw epoll: %s (%s).\n", wname[W[j]], lim[W[j]],
            x == "" ? "not measured" : yesno(x <= lim[W[j]]), x == "" ? "–" : sprintf("%.2f", x)
    }
    ok = 1; txt = ""
    for (j = 1; j <= nw; j++) {
        y = ratio_to("libem-uring", "uring", W[j], "server_cpu_us_per_op")
        if (y == "" || y > 1.05) ok = 0
        txt = txt sprintf("%s%s %s", j > 1 ? ", " : "", wname[W[j]], y == "" ? "–" : sprintf("%.2f", y))
    }
    print "- Server CPU per operation within 1.05 x the raw io_uring server everywhere: " yesno(ok) " (" txt ")."
    x = syscalls("libem-uring", "pp100")
    print "- System calls per echoed message at most 1 at ping-pong C=100: " (x == "–" ? "not measured." : yesno(x + 0 <= 1) " (" x "; raw io_uring " syscalls("uring", "pp100") ", raw epoll " syscalls("epoll", "pp100") ").")
    m = stat("libem-uring", "idle", "bytes_per_conn")
    print "- Idle memory at most 128 bytes per connection: " (m == "" ? "not measured." : yesno(m <= 128) sprintf(" (%.0f B).", m))
}

# Median over the repetitions of s's key k1 divided by its key k2.
function frac(s, w, k1, k2,    r, n, a) {
    n = 0
    for (r = 1; r <= maxrep; r++)
        if ((s SUBSEP w SUBSEP k1 SUBSEP r) in val && val[s, w, k2, r] + 0 > 0)
            a[++n] = val[s, w, k1, r] / val[s, w, k2, r]
    if (n == 0) return ""
    sortn(a, n)
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}

function tcell(s, w, k,    x) {
    x = ratio_to(s, "tls-openssl", w, k)
    return x == "" ? "–" : sprintf("%.2f", x)
}

function tls_tables(    i, j, s, W, K, F, l1, l1b, x) {
    split("tls_pp100 tls_stream tls_hs tls_hs_resumed", W, " ")
    split("ops_per_s mb_per_s ops_per_s ops_per_s", K, " ")
    print "## TLS"
    print ""
    print "TLS 1.3, TLS_AES_128_GCM_SHA256, X25519, an ECDSA P-256 certificate (the"
    print "load generator offers nothing else). Ping-pong and stream run over"
    print "connections whose handshake was done before the load; a handshake"
    print "operation is connect, handshake, 1-byte echo, close (close_notify from"
    print "the client); resumed handshakes offer the ticket of the previous"
    print "connection of the same loop (TLS 1.3 PSK with X25519). \"x floor\" is the"
    print "median of the per-repetition ratios to the OpenSSL + raw epoll server."
    print ""
    print "### TLS throughput"
    print ""
    print "| server | ping-pong C=100 (rt/s) | x floor | stream C=10, 16 KiB (MB/s) | x floor | full handshakes C=50 (/s) | x floor | resumed handshakes C=50 (/s) | x floor |"
    print "|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= nt; i++) {
        s = T[i]
        printf "| %s |", label(s)
        for (j = 1; j <= 4; j++)
            printf " %s | %s |", cell(s, W[j], K[j], "%.0f"), tcell(s, W[j], K[j])
        printf "\n"
    }
    print ""
    print "### TLS server CPU per operation"
    print ""
    print "µs of server CPU per round trip, per 16 KiB message echoed, per handshake"
    print "(lower is better); servers interleaved in slices as above."
    print ""
    print "| server | ping-pong C=100 | x floor | stream | x floor | full handshake | x floor | resumed handshake | x floor |"
    print "|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= nt; i++) {
        s = T[i]
        printf "| %s |", label(s)
        for (j = 1; j <= 4; j++)
            printf " %s | %s |", cell(s, W[j], "server_cpu_us_per_op", "%.2f"),
                tcell(s, W[j], "server_cpu_us_per_op")
        printf "\n"
    }
    print ""
    print "### TLS latency, idle memory, resumption"
    print ""
    print "Latency: median over the repetitions of each run's p50 / p99, µs. Idle:"
    print "server VmRSS growth per idle established TLS connection, bytes, one server"
    print "at a time. Resumed: share of the handshakes of the resumed run that did"
    print "resume (below 100%, that column measured full handshakes too)."
    print ""
    print "| server | ping-pong C=100 p50 / p99 | idle bytes/conn | x floor | resumed |"
    print "|---|---|---|---|---|"
    for (i = 1; i <= nt; i++) {
        s = T[i]
        l1 = stat(s, "tls_pp100", "p50_us"); l1b = stat(s, "tls_pp100", "p99_us")
        x = frac(s, "tls_hs_resumed", "resumed", "ops")
        printf "| %s | %s | %s | %s | %s |\n", label(s),
            l1 == "" ? "–" : sprintf("%.0f / %.0f", l1, l1b),
            cell(s, "tls_idle", "bytes_per_conn", "%.0f"), tcell(s, "tls_idle", "bytes_per_conn"),
            x == "" ? "–" : sprintf("%.0f%%", 100 * x)
    }
    print ""
    tls_targets(W)
}

# The TLS issue's targets for libem; "not measured" whenever a server they
# need did not run, never "holds".
function tls_targets(W,    have, j, x, ok, txt, wname, m, e) {
    wname["tls_pp100"] = "ping-pong C=100"; wname["tls_stream"] = "stream"
    wname["tls_hs"] = "full handshake"; wname["tls_hs_resumed"] = "resumed handshake"
    for (j = 1; j <= nt; j++) have[T[j]] = 1
    print "### libem against the TLS targets"
    print ""
    if (!("tls-libem" in have)) {
        print "- Not measured: libem's TLS server did not run (see \"Servers skipped\")."
        return
    }
    ok = 1; txt = ""
    for (j = 1; j <= 4; j++) {
        x = ratio_to("tls-libem", "tls-openssl", W[j], "server_cpu_us_per_op")
        if (x == "" || x > 1.10) ok = 0
        txt = txt sprintf("%s%s %s", j > 1 ? ", " : "", wname[W[j]], x == "" ? "–" : sprintf("%.2f", x))
    }
    print "- Server CPU per operation at most 1.10 x the OpenSSL + raw epoll server on every TLS workload: " yesno(ok) " (" txt ")."
    x = frac("tls-libem", "tls_hs_resumed", "resumed", "ops")
    if (x != "" && x < 0.99)
        print "  (libem resumed " sprintf("%.0f%%", 100 * x) " of the handshakes of the resumed run.)"
    if (!("tls-libevent" in have)) {
        print "- Server CPU per operation below libevent's on every TLS workload: not measured (libevent's TLS server did not run)."
        print "- Idle memory per TLS connection below libevent's: not measured (libevent's TLS server did not run)."
        return
    }
    ok = 1; txt = ""
    for (j = 1; j <= 4; j++) {
        x = ratio_to("tls-libem", "tls-libevent", W[j], "server_cpu_us_per_op")
        if (x == "" || x >= 1) ok = 0
        txt = txt sprintf("%s%s %s", j > 1 ? ", " : "", wname[W[j]], x == "" ? "–" : sprintf("%.2f", x))
    }
    print "- Server CPU per operation below libevent's on every TLS workload: " yesno(ok) " (libem's CPU divided by libevent's in the same repetition, median: " txt ")."
    m = stat("tls-libem", "tls_idle", "bytes_per_conn"); e = stat("tls-libevent", "tls_idle", "bytes_per_conn")
    if (m == "" || e == "")
        print "- Idle memory per TLS connection below libevent's: **misses** (not measured: a run failed)."
    else
        print "- Idle memory per TLS connection below libevent's: " yesno(m < e) sprintf(" (libem %.0f B, libevent %.0f B).", m, e)
}

# The ratio of s to ref on key k as a cell: "–" when either did not run.
function xcell(s, ref, w, k,    x) {
    x = ratio_to(s, ref, w, k)
    return x == "" ? "–" : sprintf("%.2f", x)
}

function lat(s, w,    a, b) {
    a = stat(s, w, "p50_us"); b = stat(s, w, "p99_us")
    return a == "" ? "–" : sprintf("%.0f / %.0f", a, b)
}

function http_tables(    i, j, s, W) {
    split("http_1k http_1m", W, " ")
    print "## File serving"
    print ""
    print "HTTP/1.1 GET of a file under keep-alive: wrk with one thread and 50"
    print "connections (`wrk -t1 -c50 -d1s --latency`) for a 1 KiB and a 1 MiB file, the"
    print "servers started together and taking 1 s turns (" (http_rounds == "" ? "?" : http_rounds) " per server and repetition,"
    print "the first of a round moving by one every round), then 1 GiB downloads with"
    print "`curl -o /dev/null` of a sparse file, read once before (" (downloads == "" ? "?" : downloads) " per server and repetition),"
    print "in turns too. Server CPU: its CPU time (as loadgen reads it) from right"
    print "before its turn to 0.1 s after, per request completed or per MB (10^6"
    print "bytes) sent. wrk and the server share the machine, so req/s tells as"
    print "much about wrk as about the server: the columns to compare are the CPU"
    print "per request or per MB and their ratios, medians of the per-repetition"
    print "ratios to the floor (`http_sendfile_epoll`) and to nginx (lower is better)."
    print ""
    print "### Requests per second and server CPU per request"
    print ""
    print "| server | 1 KiB (req/s) | CPU µs/req | x floor | x nginx | 1 MiB (req/s) | CPU µs/req | x floor | x nginx |"
    print "|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= nh; i++) {
        s = H[i]
        printf "| %s |", label(s)
        for (j = 1; j <= 2; j++)
            printf " %s | %s | %s | %s |", cell(s, W[j], "ops_per_s", "%.0f"),
                cell(s, W[j], "server_cpu_us_per_op", "%.2f"),
                xcell(s, "http-floor", W[j], "server_cpu_us_per_op"),
                xcell(s, "http-nginx", W[j], "server_cpu_us_per_op")
        printf "\n"
    }
    print ""
    print "### 1 GiB download, latency"
    print ""
    print "Download: MB/s of the downloads, MB sent per second of server CPU, and"
    print "server CPU per MB with its ratios. Latency: wrk's p50 / p99, µs, the mean"
    print "of the server's turns, median over the repetitions; socket errors as wrk"
    print "counts them (connect, read, write, timeout), summed over its turns."
    print ""
    print "| server | 1 GiB (MB/s) | MB per CPU-second | CPU µs/MB | x floor | x nginx | 1 KiB p50 / p99 | 1 MiB p50 / p99 | socket errors |"
    print "|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= nh; i++) {
        s = H[i]
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label(s),
            cell(s, "http_1g", "mb_per_s", "%.0f"), cell(s, "http_1g", "mb_per_cpu_s", "%.0f"),
            cell(s, "http_1g", "server_cpu_us_per_mb", "%.1f"),
            xcell(s, "http-floor", "http_1g", "server_cpu_us_per_mb"),
            xcell(s, "http-nginx", "http_1g", "server_cpu_us_per_mb"),
            lat(s, "http_1k"), lat(s, "http_1m"), errsum(s)
    }
}

# wrk's socket errors of s, over both wrk workloads and every repetition.
function errsum(s,    r, j, w, n, any) {
    n = 0; any = 0
    for (r = 1; r <= maxrep; r++)
        for (j = 1; j <= 2; j++) {
            w = j == 1 ? "http_1k" : "http_1m"
            if ((s SUBSEP w SUBSEP "errors" SUBSEP r) in val) {
                n += val[s, w, "errors", r]
                any = 1
            }
        }
    return any ? n : "–"
}

function proxy_tables(    i, s) {
    print "## Proxying"
    print ""
    print "TCP proxies on 127.0.0.1 in front of one raw epoll echo server (the sink,"
    print "`echo_epoll`, on the proxies' CPU). loadgen's stream (10 connections"
    print "writing 16 KiB messages, at most 64 KiB in flight each) and ping-pong"
    print "C=100 (64-byte messages) go through each proxy to the sink and back, the"
    print "proxies started together and interleaved in slices as the echo servers"
    print "are. CPU is the proxy process's alone. Per MB: µs of proxy CPU per 10^6"
    print "bytes forwarded, each echoed byte counting twice (to the sink and back);"
    print "per round trip: a 64-byte message each way. Ratios: medians of the"
    print "per-repetition ratios to the splice floor (`proxy_splice_epoll`), to"
    print "HAProxy (which copies by default) and to HAProxy with splicing forced"
    print "(lower is better for CPU, higher for throughput)."
    print ""
    print "### Stream C=10, 16 KiB, through the proxy"
    print ""
    print "| proxy | MB/s echoed | CPU µs/MB | x splice floor | x HAProxy | x HAProxy splice |"
    print "|---|---|---|---|---|---|"
    for (i = 1; i <= np; i++) {
        s = P[i]
        printf "| %s | %s | %s | %s | %s | %s |\n", label(s),
            cell(s, "proxy_stream", "mb_per_s", "%.0f"), cell(s, "proxy_stream", "cpu_us_per_mb", "%.1f"),
            xcell(s, "proxy-splice-floor", "proxy_stream", "cpu_us_per_mb"),
            xcell(s, "proxy-haproxy", "proxy_stream", "cpu_us_per_mb"),
            xcell(s, "proxy-haproxy-splice", "proxy_stream", "cpu_us_per_mb")
    }
    print ""
    print "### Ping-pong C=100, 64 B, through the proxy"
    print ""
    print "| proxy | rt/s | x HAProxy | p50 / p99 (µs) | CPU µs/rt | x splice floor | x HAProxy |"
    print "|---|---|---|---|---|---|---|"
    for (i = 1; i <= np; i++) {
        s = P[i]
        printf "| %s | %s | %s | %s | %s | %s | %s |\n", label(s),
            cell(s, "proxy_pp100", "ops_per_s", "%.0f"),
            xcell(s, "proxy-haproxy", "proxy_pp100", "ops_per_s"),
            lat(s, "proxy_pp100"), cell(s, "proxy_pp100", "server_cpu_us_per_op", "%.2f"),
            xcell(s, "proxy-splice-floor", "proxy_pp100", "server_cpu_us_per_op"),
            xcell(s, "proxy-haproxy", "proxy_pp100", "server_cpu_us_per_op")
    }
}

function mt_tables(    i, s, x) {
    print "## Multi-core: libem on N reactor threads"
    print ""
    print "The multi-core recipe: `echo_libem_mt PORT N` runs N reactors, one per"
    print "thread, each with its own listener on the port (`em_start_server_opts`"
    print "with `reuse_port`: the kernel spreads the connections over them), the"
    print "echo handler of `echo_libem`. Ping-pong C=100, 64 B, the servers started"
    print "together and loaded in turns as the echo servers are; server CPU summed"
    print "over its threads. \"x 1 thread\": median of the per-repetition ratios to"
    print "libem on 1 thread (`libem-1t`, the same program). Servers " (mt_pin == "" ? "not pinned" : mt_pin) ","
    print "on a machine of " (ncpu == "" ? "?" : ncpu) " CPUs. The load generator is one thread: when it,"
    print "not the server, sets the pace, more threads cannot show more round"
    print "trips, and with fewer CPUs than threads + 1 the threads share them with it."
    print ""
    print "| server | ping-pong C=100 (rt/s) | x 1 thread | CPU µs/rt | x 1 thread | p50 / p99 (µs) |"
    print "|---|---|---|---|---|---|"
    for (i = 1; i <= nm; i++) {
        s = M[i]
        printf "| %s | %s | %s | %s | %s | %s |\n", label(s),
            cell(s, "mt_pp100", "ops_per_s", "%.0f"), xcell(s, "libem-1t", "mt_pp100", "ops_per_s"),
            cell(s, "mt_pp100", "server_cpu_us_per_op", "%.2f"),
            xcell(s, "libem-1t", "mt_pp100", "server_cpu_us_per_op"), lat(s, "mt_pp100")
    }
}
