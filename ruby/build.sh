#!/usr/bin/env bash
# Builds rubyeventmachine.so, the EventMachine extension on libem.
#   bash ruby/build.sh BUILD_DIR [EXTRA_CFLAGS...]
# BUILD_DIR holds libem.a (make all: build/, make asan: build-asan/); the
# extension goes to BUILD_DIR/ruby. Extra flags (say -fsanitize=address)
# go to both compiling and linking. Ruby's headers come in with -isystem:
# they do not pass -Wextra, our files must.
set -euo pipefail

build=${1:?usage: build.sh BUILD_DIR [EXTRA_CFLAGS...]}
shift
extra=("$@")
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
out="$build/ruby"
cc=${CC:-cc}
ruby=${RUBY:-ruby}

if [[ ! -f "$build/libem.a" ]]; then
    echo "build.sh: no $build/libem.a (run make first)" >&2
    exit 1
fi
rbconf() { "$ruby" -rrbconfig -e "print RbConfig::CONFIG['$1']"; }
hdr=$(rbconf rubyhdrdir)
archhdr=$(rbconf rubyarchhdrdir)
libdir=$(rbconf libdir)
read -ra libruby <<<"$(rbconf LIBRUBYARG_SHARED)" # may be several words

mkdir -p "$out"
cflags=(-std=c11 -D_GNU_SOURCE -O2 -g -fPIC -fvisibility=hidden -Wall -Wextra -Werror
        -isystem "$hdr" -isystem "$archhdr" -I "$top/include")
objs=()
for src in "$here"/*.c; do
    obj="$out/$(basename "${src%.c}").o"
    "$cc" "${cflags[@]}" ${extra[@]+"${extra[@]}"} -c "$src" -o "$obj"
    objs+=("$obj")
done
# Only Init_rubyeventmachine is exported: libem stays inside the extension.
echo '{ global: Init_rubyeventmachine; local: *; };' > "$out/exports.map"
"$cc" -shared ${extra[@]+"${extra[@]}"} -o "$out/rubyeventmachine.so" "${objs[@]}" \
    "$build/libem.a" -Wl,--version-script="$out/exports.map" -Wl,-z,defs \
    -L "$libdir" ${libruby[@]+"${libruby[@]}"} $(cat "$build/static-libs")
echo "built $out/rubyeventmachine.so"
