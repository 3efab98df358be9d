#!/usr/bin/env bash
# A program outside the tree against an installed libem, run by
# scripts/run-tests.sh for each build directory without sanitizers: the
# build is installed into a temporary prefix (cmake --install, what
# `make install PREFIX=...` runs), then tests/consumer/consumer.c, copied out
# of the tree, is built four ways and run: with pkg-config (shared, and
# --static against libem.a) and with CMake's find_package(libem)
# (libem::libem and libem::libem_static). Each must print the version and
# run a reactor for one timer tick; a shared build must load the installed
# libem.so.MAJOR, a static one no libem.so at all.
#
#   tests/consumer.sh [BUILD_DIR]     (default: build)
#
# Last line: "N passed, N failed", as every test executable prints.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
export LC_ALL=C

build=${1:-build}
step_limit=60
pass=0
fail=0

cache=$build/CMakeCache.txt
cached() { sed -n "s/^$1:[A-Z]*=//p" "$cache"; }
if [[ ! -f "$cache" || ! -f "$build/libem.a" ]]; then
    echo "FAIL consumer: $build is not built (run make first)"
    echo "0 passed, 1 failed"
    exit 1
fi
cc=$(cached CMAKE_C_COMPILER)
version=$(cached CMAKE_PROJECT_VERSION)
libdir=$(cached CMAKE_INSTALL_LIBDIR)
major=${version%%.*}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/libem-consumer.XXXXXX")
prefix=$tmp/prefix
# cmake --install rewrites the build's install_manifest.txt, which
# `make uninstall` reads: the one of the user's own last install is put back.
manifest=$build/install_manifest.txt
had_manifest=0
[[ -f "$manifest" ]] && cp -p "$manifest" "$tmp/manifest" && had_manifest=1
cleanup() {
    if ((had_manifest)); then cp -p "$tmp/manifest" "$manifest"; else rm -f "$manifest"; fi
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

run() { # log command...: the command, bounded, its output in log
    local log=$1
    shift
    timeout --kill-after=5 "$step_limit" "$@" >"$log" 2>&1
}

# check NAME EXE KIND: runs EXE and checks its output and which libem it loads
check() {
    local name=$1 exe=$2 kind=$3 out needed loaded
    out=$(LD_LIBRARY_PATH=$prefix/$libdir timeout --kill-after=5 "$step_limit" "$exe" 2>&1)
    if [[ "$out" != "libem $version: 1 tick" ]]; then
        result "$name" "printed '$out'"
        return
    fi
    needed=$(readelf -d "$exe" | sed -n 's/.*(NEEDED).*\[\(libem[^]]*\)\]/\1/p')
    loaded=$(LD_LIBRARY_PATH=$prefix/$libdir ldd "$exe")
    if [[ "$kind" == static && -n "$needed" ]]; then
        result "$name" "needs $needed"
    elif [[ "$kind" == shared && "$needed" != "libem.so.$major" ]]; then
        result "$name" "needs '$needed', not libem.so.$major"
    elif [[ "$kind" == shared && "$loaded" != *"libem.so.$major => $prefix/$libdir/"* ]]; then
        result "$name" "does not load $prefix/$libdir/libem.so.$major"
    else
        result "$name" ""
    fi
}

if ! run "$tmp/install.log" cmake --install "$build" --prefix "$prefix"; then
    result install "cmake --install failed: $(tail -5 "$tmp/install.log")"
    echo "$pass passed, $fail failed"
    exit 1
fi
so=$prefix/$libdir/libem.so.$version
soname=$(readelf -d "$so" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [[ "$soname" == "libem.so.$major" && -L $prefix/$libdir/libem.so.$major &&
    -L $prefix/$libdir/libem.so && -f $prefix/$libdir/libem.a &&
    -f $prefix/$libdir/cmake/libem/libemConfig.cmake ]]; then
    result install ""
else
    result install "soname '$soname'; installed: $(cd "$prefix" && find . | tr '\n' ' ')"
fi

# What the user types after an install to a prefix: man finds the page.
# (GNUInstallDirs caches an empty CMAKE_INSTALL_MANDIR for its default.)
mandir=$(cached CMAKE_INSTALL_MANDIR)
mandir=$prefix/${mandir:-share/man}
page=$(MANPATH=$mandir man -w 3 em_send_data 2>&1)
if [[ "$page" == "$mandir/man3/em_send_data.3"* ]] &&
    MANPATH=$mandir MANPAGER=cat man 3 em_send_data 2>/dev/null | grep -q "em_send_data .* queues a copy"; then
    result man ""
else
    result man "man -w 3 em_send_data with MANPATH=$mandir: '$page'"
fi

src=$tmp/src
mkdir -p "$src"
cp tests/consumer/consumer.c tests/consumer/CMakeLists.txt "$src/"

# pkg-config: -lem takes libem.so when both are there, so the static link
# names the archive and keeps the rest of --static's flags.
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
if cflags=$(pkg-config --cflags libem) && libs=$(pkg-config --libs libem) &&
    static_libs=$(pkg-config --static --libs libem); then
    # shellcheck disable=SC2086
    if run "$tmp/pc-shared.log" "$cc" $cflags "$src/consumer.c" $libs -o "$tmp/pc_shared"; then
        check pkg-config-shared "$tmp/pc_shared" shared
    else
        result pkg-config-shared "$(tail -5 "$tmp/pc-shared.log")"
    fi
    static_libs=$(sed 's/\(^\| \)-lem\( \|$\)/\1-l:libem.a\2/' <<<"$static_libs")
    # shellcheck disable=SC2086
    if run "$tmp/pc-static.log" "$cc" $cflags "$src/consumer.c" $static_libs -o "$tmp/pc_static"; then
        check pkg-config-static "$tmp/pc_static" static
    else
        result pkg-config-static "$(tail -5 "$tmp/pc-static.log")"
    fi
else
    result pkg-config "pkg-config does not find libem in $PKG_CONFIG_PATH"
fi
unset PKG_CONFIG_PATH

# find_package(libem): the consumer's own CMake project, out of the tree.
if run "$tmp/cmake.log" cmake -S "$src" -B "$tmp/b" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON &&
    run "$tmp/cmake-build.log" cmake --build "$tmp/b"; then
    check find_package-shared "$tmp/b/consumer_shared" shared
    check find_package-static "$tmp/b/consumer_static" static
else
    result find_package "$(tail -8 "$tmp/cmake.log" "$tmp/cmake-build.log" 2>/dev/null)"
fi

echo "$pass passed, $fail failed"
((fail == 0))
