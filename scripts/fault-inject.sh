#!/usr/bin/env bash
# Syscall fault injection (issue 5, item 5): the echo-heavy test cases run
# under strace, which makes some of libem's system calls fail with EINTR,
# EAGAIN or EMFILE; they must still pass.
#
#   read                   EINTR, EAGAIN   (every 2nd read from the 5th on)
#   sendmsg, sendto, writev EINTR, EAGAIN  (every 2nd call; sockets, pipes)
#   sendfile               EINTR, EAGAIN   (with those: files sent)
#   accept4                EINTR, EAGAIN   (every 2nd call), EMFILE (every 25th)
#   epoll_wait, poll,      EINTR, EAGAIN   (every 2nd call; per backend)
#   io_uring_enter
#   splice                 EINTR, EAGAIN   (every 2nd call; a proxy's pipe)
#
# Counters are per process and per thread (strace counts per tracee): each
# forked test case starts again at 1. read starts at the 5th call because
# the dynamic loader's reads of the first process (4 in the plain build:
# libc, libcrypto, libssl, liburing) do not survive an error. write is left alone: stdio (the harness's "ok" lines)
# does not retry it; libem writes only its wake-up eventfd with write.
#
# TLS cases (test_tls_stream), and test_file (which makes certificates too):
# the runner makes the test certificates with the openssl command before the
# first case; there strace lets go of every process at its execve
# (-b execve), so nothing is injected into sh or openssl. In a
# case, OpenSSL reads its configuration, the CA file, the system CA bundle
# (a server context) and the key and certificate with stdio, which does not
# retry EINTR: its reads count 70 or so, then the sockets' begin. So read
# faults start at the 200th read there (the TLS records then, not the
# handshake); send faults start at the first call as elsewhere (handshake
# included: OpenSSL writes the socket through libem's BIO with send()).
#
# One line per run: PASS/FAIL, the build, the backend, the injection, the
# executable and case filter, the cases run and how many calls strace
# failed (a run in which nothing was injected fails: the filter is stale).
# The last line is "N passed, N failed", one count per run.
#
# Environment:
#   FAULT_BUILD=build     build directory (the plain build: the ASan runtime
#                         reads too much at start-up for these counters)
#   BACKENDS="epoll poll io_uring" values of EM_BACKEND
#   FAULT_TIMEOUT=120     seconds per run
#   FAULT_CASES=pattern   only the cases whose "executable filter" contains it
#                         (e.g. FAULT_CASES=test_tls_stream)
#   FAULT_INJECTIONS=pat  only the injections whose name contains it
#                         (e.g. FAULT_INJECTIONS=read=)
# Logs: BUILD/test-logs/faults/BACKEND-INJECTION-EXE-FILTER.{out,err,strace}
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

build=${FAULT_BUILD:-build}
backends=${BACKENDS:-epoll poll io_uring}
limit=${FAULT_TIMEOUT:-120}
logdir="$build/test-logs/faults"

# Cases: "executable filter" (argv[1] of the harness: a case-name substring).
# Echo through accepted and em_connect'ed connections, TCP and unix.
echo_cases=(
    "test_stream echo_64mib_random_chunks"
    "test_stream clean_eof_sends_queued_data"
    "test_stream thousand_connections"
    "test_connect connect_ipv"
    "test_connect connect_unix"
    "test_server server_ipv"
    "test_server unix_server_echo"
    "test_server attach_server"
)
# For read=: cases whose test process makes enough reads for the counter to
# reach libem's (the dynamic loader's reads come first; a short echo case now
# writes its reply straight from the read buffer and reads only 3 times).
read_cases=(
    "test_stream echo_64mib_random_chunks"
    "test_stream clean_eof_sends_queued_data"
    "test_stream thousand_connections"
    "test_server server_ipv"
    "test_server unix_server_echo"
    "test_server attach_server"
    "test_stream outbound_drained_after_partial_write"
    "test_server server_accepts_burst"
)
# More reads and accepts (no sendmsg in these: left out of send=).
recv_cases=(
    "test_stream outbound_drained_after_partial_write"
    "test_connect reconnect_from_unbind"
    "test_server server_accepts_burst"
)
# Attached pipes (libem writes them with writev) and a socketpair.
pipe_write_cases=(
    "test_attach attach_pipe"
    "test_attach attach_socketpair_echo"
)
# Slow (2 s of timers): only where its partial writes matter.
write_cases=(
    "test_stream close_after_writing_delivers_everything"
)
# Proxying: a read's bytes written on from the read buffer, and the hold
# released by the target's writes.
# test_proxy's cases run with EM_SPLICE=0: they are the copy path's (a
# plain proxy splices; test_splice's cases are the splice path's).
proxy_cases=(
    "test_proxy proxy_forwards_without_receive_data"
    "test_proxy proxy_backpressure_is_bounded"
)
# The held case reads in small pieces under read injection (7 s): reads get
# the forwarding case only.
proxy_read_cases=(
    "test_proxy proxy_forwards_without_receive_data"
)
# Splicing proxies: socket to pipe and pipe to socket, both ways at once.
splice_cases=(
    "test_splice splice_32mib_random_chunks_both_ways"
)
# TLS (test_tls_stream): echo, half-close and proxying through libem's TLS
# client and server, reads from the 200th on (see above).
tls_read_cases=(
    "test_tls_stream tls_echo_64mib"
    "test_tls_stream tls_echo_close_write_half_close"
    "test_tls_stream tls_proxy_tls_to_tls"
)
# TLS writes: records a send at a time, the handshake's too; tiny send
# buffers and close-after-writing make them wait.
tls_send_cases=(
    "test_tls_stream tls_echo_64mib"
    "test_tls_stream tls_tiny_sndbuf"
    "test_tls_stream tls_close_after_writing_big_queue"
    "test_tls_stream tls_proxy_"
)
# Files (test_file): sendfile from the file to TCP and unix sockets, the
# chunk framing and data around the file written with send/sendmsg, a
# paused file and one that ends a connection closed after writing.
# chunked_sizes_tcp fails under send=EAGAIN at 266fec1: done(0) of a
# chunked file whose last chunk was refused (see tests/test_file.c, 12).
file_cases=(
    "test_file stream_file_sizes_tcp4"
    "test_file send_file_sizes_unix"
    "test_file chunked_sizes_tcp"
    "test_file order_files_back_to_back"
    "test_file pause_stops_a_file"
    "test_file close_after_writing_waits_for_the_file"
)
# em_run: the loop itself must survive the poller's errors.
run_cases=(
    "test_reactor run_and_stop_from_timer"
    "test_reactor run_shutdown_unbinds_everything"
)

# name|backends|traced syscalls|injection|cases (names of the arrays above).
# EMFILE is sparse: after it the server stops accepting for 0.1 s on purpose
# (no spinning while out of descriptors), so every other call would make the
# thousand-connection case take minutes. An EAGAIN from the poller is
# returned by em_run_once, as documented, which the harness's run loops treat
# as fatal: it is injected only where em_run drives the loop. The reads,
# writes and accepts are the same system calls on every backend: they are
# injected under epoll, the EAGAIN ones under io_uring too, and each
# backend's wait has its own (poll keeps only those: the time the suite
# may take is shared by three backends).
injections=(
    "read=EINTR|epoll|read|read:error=EINTR:when=5+2|read_cases proxy_read_cases"
    "read=EAGAIN|epoll io_uring|read|read:error=EAGAIN:when=5+2|read_cases proxy_read_cases"
    "tls-read=EINTR|epoll|read|read:error=EINTR:when=200+2|tls_read_cases"
    "tls-read=EAGAIN|epoll io_uring|read|read:error=EAGAIN:when=200+2|tls_read_cases"
    "send=EINTR|epoll|sendmsg,sendto,writev,sendfile|sendmsg,sendto,writev,sendfile:error=EINTR:when=1+2|echo_cases write_cases pipe_write_cases proxy_cases tls_send_cases file_cases"
    "send=EAGAIN|epoll io_uring|sendmsg,sendto,writev,sendfile|sendmsg,sendto,writev,sendfile:error=EAGAIN:when=1+2|echo_cases write_cases pipe_write_cases proxy_cases tls_send_cases file_cases"
    "splice=EINTR|epoll|splice|splice:error=EINTR:when=1+2|splice_cases"
    "splice=EAGAIN|epoll io_uring|splice|splice:error=EAGAIN:when=1+2|splice_cases"
    "accept4=EINTR|epoll|accept4|accept4:error=EINTR:when=1+2|echo_cases recv_cases"
    "accept4=EAGAIN|epoll|accept4|accept4:error=EAGAIN:when=1+2|echo_cases recv_cases"
    "accept4=EMFILE|epoll io_uring|accept4|accept4:error=EMFILE:when=1+25|echo_cases recv_cases"
    "epoll_wait=EINTR|epoll|epoll_wait|epoll_wait:error=EINTR:when=1+2|echo_cases run_cases"
    "epoll_wait=EAGAIN|epoll|epoll_wait|epoll_wait:error=EAGAIN:when=1+2|run_cases"
    "poll=EINTR|poll|poll|poll:error=EINTR:when=1+2|echo_cases run_cases"
    "poll=EAGAIN|poll|poll|poll:error=EAGAIN:when=1+2|run_cases"
    "io_uring_enter=EINTR|io_uring|io_uring_enter|io_uring_enter:error=EINTR:when=1+2|echo_cases run_cases"
    "io_uring_enter=EAGAIN|io_uring|io_uring_enter|io_uring_enter:error=EAGAIN:when=1+2|run_cases"
)

# shellcheck source=scripts/results.sh
. scripts/results.sh

passed=0
failed=0

if ! command -v strace >/dev/null 2>&1; then
    echo "FAIL fault-inject: strace is not installed (scripts/install-deps.sh)"
    echo "0 passed, 1 failed"
    exit 1
fi
if ! strace -f -qq -o /dev/null true 2>/dev/null; then
    echo "FAIL fault-inject: strace cannot trace here (ptrace not permitted?)"
    echo "0 passed, 1 failed"
    exit 1
fi
mkdir -p "$logdir"

for backend in $backends; do
    for inj in "${injections[@]}"; do
        IFS='|' read -r name only traced spec lists <<<"$inj"
        [[ " $only " == *" $backend "* ]] || continue
        [[ -z ${FAULT_INJECTIONS:-} || $name == *"$FAULT_INJECTIONS"* ]] || continue
        cases=()
        for list in $lists; do
            declare -n ref=$list
            cases+=("${ref[@]}")
            unset -n ref
        done
        for c in "${cases[@]}"; do
            [[ -z ${FAULT_CASES:-} || $c == *"$FAULT_CASES"* ]] || continue
            read -r exe filter <<<"$c"
            if [[ ! -x "$build/tests/$exe" ]]; then
                echo "FAIL fault      $backend $name $exe:$filter -- no $build/tests/$exe"
                failed=$((failed + 1))
                continue
            fi
            base="$logdir/$backend-$name-$exe-$filter"
            # the TLS fixture runs the openssl command: let go of it (strace
            # then does without --seccomp-bpf, which -b excludes)
            trace_opts=(--seccomp-bpf)
            [[ $exe == test_tls* || $exe == test_file ]] && trace_opts=(-b execve)
            splice=1
            [[ $exe == test_proxy ]] && splice=0
            # io_uring's kernel accepts without accept4 (a multishot accept,
            # whose EMFILE is test_fdlimit's real shortage): accept4 is
            # injected into its other mode, listeners polled. Likewise it
            # sends plain connections' queues itself (tests/test_uring_send.c
            # fills real sockets): send is injected with the connections
            # writing for themselves
            uring_accept=1 uring_send=1
            [[ $name == accept4=* ]] && uring_accept=0
            [[ $name == send=* ]] && uring_send=0
            start=$SECONDS
            EM_URING_ACCEPT=$uring_accept EM_URING_SEND=$uring_send EM_SPLICE=$splice EM_BACKEND=$backend \
                timeout --kill-after=10 "$limit" \
                strace -f -qq "${trace_opts[@]}" -o "$base.strace" \
                -e trace="$traced" -e inject="$spec" \
                "$build/tests/$exe" "$filter" </dev/null >"$base.out" 2>"$base.err"
            rc=$?
            secs=$((SECONDS - start))
            injected=$(grep -c '(INJECTED)' "$base.strace" 2>/dev/null)
            problem=""
            closing_counts "$base.out" || add_problem "no closing line"
            cases_run=$((pass + fail))
            ((fail == 0)) || add_problem "$fail of $cases_run cases failed"
            add_problem "$(exit_problem "$rc" "$secs" "$limit")"
            ((cases_run > 0)) || add_problem "no case matched"
            ((${injected:-0} > 0)) || add_problem "nothing injected"
            if [[ -z "$problem" ]]; then
                status=PASS
                passed=$((passed + 1))
            else
                status=FAIL
                failed=$((failed + 1))
            fi
            printf '%s %-10s %-5s %-18s %-48s %d cases, %d injected (%ds)%s\n' \
                "$status" fault "$backend" "$name" "$exe:$filter" "$cases_run" \
                "${injected:-0}" "$secs" "${problem:+ -- $problem}"
            [[ "$status" == PASS ]] || show_tails 20 "$base.out" "$base.err"
        done
    done
done

echo "$passed passed, $failed failed"
((failed == 0))
