#!/usr/bin/env bash
# The man pages made from include/em.h (scripts/gen-man.py): every exported
# function has a page, mandoc finds nothing to warn about, and a page shows
# its function's prototype as em.h declares it.
#
#   tests/docs.sh
#
# Prints one line per check and closes with "N passed, N failed".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

pass=0
fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
finish() { echo "$pass passed, $fail failed"; ((fail == 0)); exit $?; }

if ! command -v mandoc >/dev/null; then
    bad "mandoc is not installed (make deps installs it)"
    finish
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

if python3 scripts/gen-man.py include/em.h "$dir"; then
    ok "gen-man.py ran"
else
    bad "gen-man.py failed"
    finish
fi

# every function declared EM_EXPORT, also when its name is on the next line
decls() { # the EM_EXPORT declarations whose first line matches $1
    awk -v re="$1" '$0 ~ re { on = 1 } on { print } on && /;/ { on = 0 }' include/em.h
}
names=$(decls '^EM_EXPORT' | tr '\n' ' ' | tr ';' '\n' |
    sed -n 's/.*[^a-z_]\(em_[a-z0-9_]*\) *(.*/\1/p' | sort -u)
count=$(wc -w <<<"$names")
missing=""
for n in $names; do
    [[ -s "$dir/man3/$n.3" ]] || missing="$missing $n"
done
if ((count < 50)); then
    bad "only $count EM_EXPORT functions found in em.h: the test's parse is broken"
elif [[ -n "$missing" ]]; then
    bad "no page for:$missing"
else
    ok "a page for each of the $count functions"
fi
if [[ -s "$dir/man7/libem.7" && -s "$dir/man3/em_types.3" ]]; then
    ok "libem(7) and em_types(3)"
else
    bad "libem(7) or em_types(3) missing"
fi

lint=$(cd "$dir" && mandoc -T lint -W warning man3/*.3 man7/*.7 2>&1)
if [[ -z "$lint" ]]; then
    ok "mandoc -T lint -W warning: nothing"
else
    bad "mandoc -T lint -W warning:"
    echo "$lint" | head -20
fi

# the prototype as the header has it, with its whitespace reduced to spaces
proto=$(decls '^EM_EXPORT int em_send_data[(]' | tr '\n' ' ' |
    sed 's/^EM_EXPORT int //; s/  */ /g; s/ *$//')
page=$(mandoc -T ascii "$dir/man3/em_send_data.3" | col -b | tr '\n' ' ' | sed 's/  */ /g')
if [[ "$proto" == "em_send_data("*");" && "$page" == *"int $proto"* &&
    "$page" == *"#include <em.h>"* ]]; then
    ok "em_send_data(3) shows: int $proto"
else
    bad "em_send_data(3) does not show the prototype '$proto'"
fi

# a function of a family shares its page: the link must reach it
page=$(mandoc -T ascii "$dir/man3/em_resume.3" 2>&1 | col -b | tr '\n' ' ' | sed 's/  */ /g')
if [[ "$page" == *"em_resume(em_conn *c);"* ]]; then
    ok "em_resume(3) leads to the page of its family"
else
    bad "em_resume(3) does not show em_resume's prototype"
fi

finish
