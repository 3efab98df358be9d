# Sourced by the test runners (run-tests.sh, tsan-tests.sh, fault-inject.sh):
# what a run's output and exit status say about it.

# The harness's closing line.
closing_re='([0-9]+) passed, ([0-9]+) failed[[:space:]]*$'

last_line() { # file: last non-empty line, without a trailing CR
    grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | tr -d '\r'
}

# closing_counts FILE...: sets pass, fail from the first FILE that ends with
# the closing line; returns 1 (pass = fail = 0) when none does.
closing_counts() {
    local f line
    pass=0 fail=0
    for f in "$@"; do
        line=$(last_line "$f")
        if [[ "$line" =~ $closing_re ]]; then
            pass=${BASH_REMATCH[1]} fail=${BASH_REMATCH[2]}
            return 0
        fi
    done
    return 1
}

# exit_problem RC SECS LIMIT: why an exit status is a failure; "" for 0.
# timeout(1) gives 124, or 137 when it had to kill.
exit_problem() {
    local rc=$1 secs=$2 limit=$3
    if ((rc == 124 || (rc == 137 && secs >= limit))); then
        echo "timed out after ${limit}s"
    elif ((rc > 128)); then
        echo "crashed (signal $((rc - 128)))"
    elif ((rc != 0)); then
        echo "exited with status $rc"
    fi
}

add_problem() { # text: appended to $problem
    [[ -z "$1" ]] || problem="${problem:+$problem, }$1"
}

show_tails() { # lines file...: the end of each file, after a failed run
    local n=$1 f
    shift
    for f in "$@"; do
        echo "---- $f (last $n lines)"
        tail -n "$n" "$f"
    done
    echo "----"
}
