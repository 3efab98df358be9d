#!/usr/bin/env bash
# Compiles every C snippet of docs/guide.md, run by scripts/run-tests.sh
# (suite guide_snippets, once, against the plain build).
#
# Each ```c block of the guide is a complete program: it is written to a
# file of its own and compiled and linked with the project's flags
# (-std=c11 -Wall -Wextra -Werror -Iinclude) against BUILD/libem.a and
# OpenSSL. A block that cannot be one (there should be none) is skipped when
# the line just before its fence is exactly
#     <!-- guide-snippets: skip -->
# A failure names the block by the guide's line of its fence and shows the
# compiler's output. The run fails when no block compiled. Then every em_ /
# EM_ name the guide mentions anywhere (prose, tables) must be declared in
# include/em.h (names of its own in the blocks compile anyway).
#
#   tests/guide_snippets.sh [BUILD_DIR]     (default: build)
#
# Last line: "N passed, N failed", as every test executable prints.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

build=${1:-build}
guide=${GUIDE:-docs/guide.md}
cc=${CC:-cc}
pass=0
fail=0
skipped=0
compiled=0
broken=0

if [[ ! -f "$build/libem.a" ]]; then
    echo "FAIL $build/libem.a is missing (run make first)"
    echo "0 passed, 1 failed"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/libem-guide.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Splits the guide into $tmp/L.c, L being the line of each block's fence;
# a skipped block's L goes to $tmp/skipped.
awk -v dir="$tmp" '
    in_block && /^```[ \t]*$/ { in_block = 0; close(file); next }
    in_block { print > file; next }
    /^```c[ \t]*$/ {
        if (prev == "<!-- guide-snippets: skip -->") {
            print NR >> (dir "/skipped"); skip = 1
        } else {
            skip = 0
        }
        in_block = 1; file = skip ? "/dev/null" : dir "/" NR ".c"; next
    }
    { prev = $0 }
' "$guide"

for src in $(find "$tmp" -name '*.c' | sort -V); do
    line=$(basename "$src" .c)
    log="$tmp/$line.log"
    if "$cc" -std=c11 -Wall -Wextra -Werror -Iinclude -o "$tmp/$line" "$src" \
        "$build/libem.a" $(cat "$build/static-libs") >"$log" 2>&1; then
        echo "PASS $guide:$line compiles"
        pass=$((pass + 1))
        compiled=$((compiled + 1))
    else
        echo "FAIL $guide:$line does not compile:"
        broken=$((broken + 1))
        sed 's/^/    /' "$log"
        fail=$((fail + 1))
    fi
done
[[ -f "$tmp/skipped" ]] && skipped=$(wc -l <"$tmp/skipped")

# every em_ / EM_ name of the guide exists in em.h
missing=""
while read -r name; do
    case "$name" in EM_BACKEND | EM_SPLICE) continue ;; esac # environment variables
    grep -q "\b$name\b" include/em.h || missing="$missing $name"
done < <(grep -o '\b[eE][mM]_[A-Za-z0-9_]*' "$guide" | sort -u)
if [[ -n "$missing" ]]; then
    echo "FAIL names in $guide that include/em.h does not declare:$missing"
    fail=$((fail + 1))
else
    echo "PASS every em_ and EM_ name of $guide is in include/em.h"
    pass=$((pass + 1))
fi

echo "compiled $compiled of $((compiled + broken)) C blocks of $guide ($skipped skipped)"
if ((compiled + broken == 0)); then
    echo "FAIL no C block found in $guide"
    fail=1
fi
echo "$pass passed, $fail failed"
((fail == 0))
